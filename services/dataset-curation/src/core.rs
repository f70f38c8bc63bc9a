//! Datasets' core logic, shared by REST (and the curation jobs): validation, versions, reads.
//!
//! Writes are events with read-your-writes: a change is published on the dataset stream
//! (durable once acknowledged) and then applied to the store by this process at once, so the
//! SDK's read right after a write sees it. The dataset projector applies the same event
//! again, idempotently, which is what repairs the store if this process dies in between.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tracing::instrument;
use uuid::Uuid;

use sextant_bus::EventBus;
use sextant_core::dataset::{
    splits_of, DataType, DatasetChange, DatasetVersion, ExampleAttachment, ExampleChange, VersionDiff, DEFAULT_SPLIT,
    MAX_DATASET_NAME_BYTES, MAX_SPLIT_BYTES, MAX_TAG_BYTES, SPLIT_KEY,
};
use sextant_core::{Dataset, DatasetId, Example, ExampleId, RawJson, RunId, TenantId, Timestamp};
use sextant_events::{DatasetChangedV1, Envelope, Event};
pub use sextant_proto::error::{bus_error, storage_error};
use sextant_proto::ApiError;
use sextant_storage::{DatasetCreate, DatasetQuery, ExampleQuery, Storage, StorageError};

/// Most examples one write carries (the SDK batches by size well below this).
pub const MAX_EXAMPLES_PER_WRITE: usize = 10_000;
/// Most examples one list call returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// A dataset change is split into events of at most this size (JetStream's default message
/// limit is 1 MiB).
const MAX_EVENT_BYTES: usize = 900 * 1024;

/// Applies one change to the store; what the projector and the write-through path share.
pub async fn apply_change(store: &dyn Storage, tenant: TenantId, change: &DatasetChange) -> Result<(), StorageError> {
    match change {
        DatasetChange::Put(d) => match store.create_dataset(tenant, d).await? {
            DatasetCreate::Created(_) => Ok(()),
            DatasetCreate::AlreadyExists(_) => store.put_dataset(tenant, d).await.map(|_| ()),
            // A create that lost a name race after it was published: the other dataset keeps
            // the name; this one is not projected (its creator got a 409 or will on retry).
            DatasetCreate::NameTaken(_) => Ok(()),
        },
        DatasetChange::Delete { id, .. } => store.delete_dataset(tenant, *id).await.map(|_| ()),
        DatasetChange::Examples { dataset_id, as_of, changes } => store.apply_example_changes(tenant, *dataset_id, *as_of, changes).await,
        DatasetChange::Tag { dataset_id, tag, as_of, at } => store.set_tag(tenant, *dataset_id, tag, *as_of, *at).await,
    }
}

/// An example as a write asks for it, before it is versioned.
#[derive(Debug, Clone)]
pub struct ExampleInput {
    pub id: Option<ExampleId>,
    pub inputs: Option<Value>,
    pub outputs: Option<Value>,
    pub metadata: Option<Map<String, Value>>,
    /// `split` as sent: a string or a list of strings.
    pub split: Option<Value>,
    pub source_run_id: Option<RunId>,
    pub created_at: Option<Timestamp>,
    /// Attachments already stored as blobs.
    pub attachments: Vec<ExampleAttachment>,
    /// Attachments to keep from the current version (updates), by name. `None` (no
    /// `attachments_operations`) keeps them all, unless new attachments are given: those
    /// replace the set.
    pub retain_attachments: Option<Vec<String>>,
    /// Attachments of the current version to keep under a new name, `(old, new)`.
    pub rename_attachments: Vec<(String, String)>,
}

impl ExampleInput {
    /// From an SDK JSON object (`POST /examples`, `/examples/bulk`, `PATCH /examples/{id}`).
    /// `where_` names it in errors (`examples[3]`).
    pub fn from_json(v: &Value, where_: &str) -> Result<(Self, Option<DatasetId>), ApiError> {
        let o = v.as_object().ok_or_else(|| ApiError::unprocessable(format!("{where_}: expected an object")))?;
        let uuid_field = |k: &str| -> Result<Option<Uuid>, ApiError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => {
                    Uuid::parse_str(s).map(Some).map_err(|_| ApiError::unprocessable(format!("{where_}.{k}: {s:?} is not a UUID")))
                }
                Some(_) => Err(ApiError::unprocessable(format!("{where_}.{k}: expected a UUID string"))),
            }
        };
        let object = |k: &str| -> Result<Option<Value>, ApiError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
                Some(_) => Err(ApiError::unprocessable(format!("{where_}.{k}: expected a JSON object"))),
            }
        };
        let created_at = match o.get("created_at") {
            None => None,
            Some(v) => Timestamp::from_json(v).map_err(|e| ApiError::unprocessable(format!("{where_}.created_at: {e}")))?,
        };
        let outputs = match object("outputs")? {
            Some(v) => Some(v),
            None => object("reference_outputs")?,
        };
        Ok((
            Self {
                id: uuid_field("id")?.map(ExampleId),
                inputs: object("inputs")?,
                outputs,
                metadata: object("metadata")?.and_then(|v| v.as_object().cloned()),
                split: o.get("split").filter(|v| !v.is_null()).cloned(),
                source_run_id: uuid_field("source_run_id")?.map(RunId),
                created_at,
                attachments: Vec::new(),
                retain_attachments: None,
                rename_attachments: Vec::new(),
            },
            uuid_field("dataset_id")?.map(DatasetId),
        ))
    }
}

fn split_list(split: &Value, where_: &str) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = match split {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::unprocessable(format!("{where_}.split: expected a string or a list of strings")))?,
        _ => return Err(ApiError::unprocessable(format!("{where_}.split: expected a string or a list of strings"))),
    };
    for s in &list {
        if s.is_empty() || s.len() > MAX_SPLIT_BYTES {
            return Err(ApiError::unprocessable(format!("{where_}.split: names are 1 to {MAX_SPLIT_BYTES} bytes")));
        }
    }
    Ok(list)
}

/// A compiled JSON Schema with its source (for error messages).
struct Schema(jsonschema::Validator);

impl Schema {
    fn compile(which: &str, schema: &Value) -> Result<Self, ApiError> {
        jsonschema::validator_for(schema).map(Self).map_err(|e| ApiError::unprocessable(format!("{which}: not a valid JSON Schema: {e}")))
    }

    fn check(&self, doc: &Value, what: &str) -> Result<(), ApiError> {
        if let Some(e) = self.0.iter_errors(doc).next() {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() { String::new() } else { format!(" at {path}") };
            return Err(ApiError::unprocessable(format!("{what} does not match the dataset's schema{at}: {e}")));
        }
        Ok(())
    }
}

/// The dataset's schemas, compiled once per write.
struct Schemas {
    inputs: Option<Schema>,
    outputs: Option<Schema>,
}

impl Schemas {
    fn of(d: &Dataset) -> Result<Self, ApiError> {
        let compile = |which: &str, s: &Option<RawJson>| s.as_ref().map(|s| Schema::compile(which, &s.to_value_or_null())).transpose();
        Ok(Self { inputs: compile("inputs_schema", &d.inputs_schema)?, outputs: compile("outputs_schema", &d.outputs_schema)? })
    }
}

pub struct Datasets {
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Storage>,
}

/// The built-in version name: always the newest version (no tag can take the name).
pub const LATEST: &str = "latest";

/// A version named by the user: a time, or a tag ([`LATEST`] included).
pub enum VersionRef<'a> {
    Time(Timestamp),
    Tag(&'a str),
}

impl Datasets {
    pub fn new(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>) -> Self {
        Self { bus, store }
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// Publishes (durable) then applies (visible).
    async fn commit(&self, tenant: TenantId, changes: Vec<DatasetChange>) -> Result<(), ApiError> {
        let envs: Vec<Envelope> =
            changes.iter().map(|c| Envelope::new(tenant, Event::DatasetChangedV1(DatasetChangedV1 { change: c.clone() }))).collect();
        self.bus.publish(&envs).await.map_err(bus_error)?;
        for c in &changes {
            apply_change(self.store.as_ref(), tenant, c).await.map_err(storage_error)?;
        }
        metrics::counter!("sextant_dataset_changes_total").increment(changes.len() as u64);
        Ok(())
    }

    // ---- datasets ----

    #[instrument(name = "datasets.create", skip_all, fields(tenant = %tenant))]
    pub async fn create_dataset(&self, tenant: TenantId, body: &Value) -> Result<Dataset, ApiError> {
        let o = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let name = o.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable("name: required (a string)"))?;
        check_name(name)?;
        let id = match o.get("id") {
            None | Some(Value::Null) => DatasetId(Uuid::now_v7()),
            Some(Value::String(s)) => {
                DatasetId(Uuid::parse_str(s).map_err(|_| ApiError::unprocessable(format!("id: {s:?} is not a UUID")))?)
            }
            Some(_) => return Err(ApiError::unprocessable("id: expected a UUID string")),
        };
        let data_type = match o.get("data_type") {
            None | Some(Value::Null) => DataType::Kv,
            Some(Value::String(s)) => {
                DataType::parse(s).ok_or_else(|| ApiError::unprocessable(format!("data_type: {s:?} is not kv, llm or chat")))?
            }
            Some(_) => return Err(ApiError::unprocessable("data_type: expected \"kv\", \"llm\" or \"chat\"")),
        };
        let now = Timestamp::now();
        let metadata = o.get("extra").and_then(|e| e.get("metadata")).or_else(|| o.get("metadata")).filter(|v| !v.is_null());
        if metadata.is_some_and(|m| !m.is_object()) {
            return Err(ApiError::unprocessable("metadata: expected a JSON object"));
        }
        let d = Dataset {
            id,
            name: name.to_owned(),
            description: opt_str(o, "description")?,
            data_type,
            inputs_schema: schema_field(o, "inputs_schema_definition")?,
            outputs_schema: schema_field(o, "outputs_schema_definition")?,
            transformations: o.get("transformations").filter(|v| !v.is_null()).map(RawJson::from_value),
            metadata: metadata.map(RawJson::from_value),
            created_at: now,
            modified_at: now,
            rules: Vec::new(),
            evaluators: Vec::new(),
        };
        if let Some(existing) = self.store.dataset_by_name(tenant, &d.name).await.map_err(storage_error)? {
            return Err(ApiError::conflict(format!("a dataset named {:?} already exists (id {})", d.name, existing.id)));
        }
        if let Some(existing) = self.store.get_dataset(tenant, d.id).await.map_err(storage_error)? {
            return Err(ApiError::conflict(format!("dataset {} already exists (named {:?})", d.id, existing.name)));
        }
        self.commit(tenant, vec![DatasetChange::Put(d.clone())]).await?;
        // A concurrent create of the same name may have won between the check and the write.
        match self.store.dataset_by_name(tenant, &d.name).await.map_err(storage_error)? {
            Some(stored) if stored.id == d.id => Ok(stored),
            _ => Err(ApiError::conflict(format!("a dataset named {:?} already exists", d.name))),
        }
    }

    pub async fn get_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<Dataset, ApiError> {
        self.store
            .get_dataset(tenant, id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("dataset {id} not found")))
    }

    pub async fn list_datasets(&self, tenant: TenantId, q: DatasetQuery) -> Result<Vec<Dataset>, ApiError> {
        if q.limit == 0 || q.limit > MAX_LIST_LIMIT {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        self.store.list_datasets(tenant, &q).await.map_err(storage_error)
    }

    /// `PATCH /datasets/{id}`: name, description, schemas, metadata.
    #[instrument(name = "datasets.update", skip_all, fields(tenant = %tenant, dataset = %id))]
    pub async fn update_dataset(&self, tenant: TenantId, id: DatasetId, body: &Value) -> Result<Dataset, ApiError> {
        let o = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let mut d = self.get_dataset(tenant, id).await?;
        if let Some(name) = o.get("name").filter(|v| !v.is_null()) {
            let name = name.as_str().ok_or_else(|| ApiError::unprocessable("name: expected a string"))?;
            check_name(name)?;
            if name != d.name {
                if let Some(other) = self.store.dataset_by_name(tenant, name).await.map_err(storage_error)? {
                    return Err(ApiError::conflict(format!("a dataset named {name:?} already exists (id {})", other.id)));
                }
            }
            d.name = name.to_owned();
        }
        if o.contains_key("description") {
            d.description = opt_str(o, "description")?;
        }
        if o.contains_key("inputs_schema_definition") {
            d.inputs_schema = schema_field(o, "inputs_schema_definition")?;
        }
        if o.contains_key("outputs_schema_definition") {
            d.outputs_schema = schema_field(o, "outputs_schema_definition")?;
        }
        if let Some(md) = o.get("metadata") {
            if !(md.is_object() || md.is_null()) {
                return Err(ApiError::unprocessable("metadata: expected a JSON object"));
            }
            d.metadata = (!md.is_null()).then(|| RawJson::from_value(md));
        }
        self.put_definition(tenant, d).await
    }

    /// Stores a new definition (stamped now) of an existing dataset.
    pub async fn put_definition(&self, tenant: TenantId, mut d: Dataset) -> Result<Dataset, ApiError> {
        d.modified_at = Timestamp(Timestamp::now().micros().max(d.modified_at.micros() + 1));
        self.commit(tenant, vec![DatasetChange::Put(d.clone())]).await?;
        Ok(d)
    }

    #[instrument(name = "datasets.delete", skip_all, fields(tenant = %tenant, dataset = %id))]
    pub async fn delete_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<(), ApiError> {
        self.get_dataset(tenant, id).await?;
        self.commit(tenant, vec![DatasetChange::Delete { id, at: Timestamp::now() }]).await
    }

    pub async fn example_count(&self, tenant: TenantId, id: DatasetId) -> Result<u64, ApiError> {
        self.store.count_examples(tenant, id, None).await.map_err(storage_error)
    }

    // ---- versions ----

    /// A version stamp for a new change: now, and after every existing version.
    async fn next_version(&self, tenant: TenantId, id: DatasetId) -> Result<Timestamp, ApiError> {
        let latest = self.store.list_versions(tenant, id).await.map_err(storage_error)?.first().copied();
        let now = Timestamp::now().micros();
        Ok(Timestamp(latest.map_or(now, |l| now.max(l.micros() + 1))))
    }

    /// The version a user names: a time (not in the future) or a tag.
    pub async fn resolve(&self, tenant: TenantId, id: DatasetId, v: VersionRef<'_>) -> Result<Timestamp, ApiError> {
        match v {
            VersionRef::Time(t) if t > Timestamp::now() => Err(ApiError::unprocessable(format!("as_of: {} is in the future", t.to_iso()))),
            VersionRef::Time(t) => Ok(t),
            // The newest version; a dataset without one yet reads as of now (empty).
            VersionRef::Tag(LATEST) => {
                let newest = self.store.list_versions(tenant, id).await.map_err(storage_error)?.first().copied();
                Ok(newest.unwrap_or_else(Timestamp::now))
            }
            VersionRef::Tag(tag) => self
                .store
                .tags(tenant, id)
                .await
                .map_err(storage_error)?
                .into_iter()
                .find(|(t, _)| t == tag)
                .map(|(_, as_of)| as_of)
                .ok_or_else(|| ApiError::not_found(format!("dataset {id} has no tag {tag:?}"))),
        }
    }

    /// Parses `as_of` as the SDK sends it: an ISO time or a tag name.
    pub async fn resolve_str(&self, tenant: TenantId, id: DatasetId, s: &str) -> Result<Timestamp, ApiError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ApiError::unprocessable("as_of: empty"));
        }
        // A time starts with a digit (a year); tags that look like times are not supported.
        if s.as_bytes()[0].is_ascii_digit() {
            let t = Timestamp::parse(s).map_err(|e| ApiError::unprocessable(format!("as_of: {e}")))?;
            self.resolve(tenant, id, VersionRef::Time(t)).await
        } else {
            self.resolve(tenant, id, VersionRef::Tag(s)).await
        }
    }

    /// Versions newest first, with their tags.
    pub async fn versions(&self, tenant: TenantId, id: DatasetId) -> Result<Vec<DatasetVersion>, ApiError> {
        self.get_dataset(tenant, id).await?;
        let versions = self.store.list_versions(tenant, id).await.map_err(storage_error)?;
        let tags = self.store.tags(tenant, id).await.map_err(storage_error)?;
        Ok(versions
            .into_iter()
            .map(|as_of| DatasetVersion { as_of, tags: tags.iter().filter(|(_, t)| *t == as_of).map(|(n, _)| n.clone()).collect() })
            .collect())
    }

    /// The version in effect at a time (the newest at or before it) or a tag's version.
    pub async fn version_at(&self, tenant: TenantId, id: DatasetId, v: VersionRef<'_>) -> Result<DatasetVersion, ApiError> {
        let latest = matches!(v, VersionRef::Tag(LATEST));
        let at = self.resolve(tenant, id, v).await?;
        let all = self.versions(tenant, id).await?;
        if latest && all.is_empty() {
            // No example written yet: the dataset as created.
            return Ok(DatasetVersion { as_of: self.get_dataset(tenant, id).await?.created_at, tags: Vec::new() });
        }
        all.into_iter()
            .find(|v| v.as_of <= at)
            .ok_or_else(|| ApiError::not_found(format!("dataset {id} had no version at {}", at.to_iso())))
    }

    /// Points `tag` at the version in effect at `as_of`.
    #[instrument(name = "datasets.tag", skip_all, fields(tenant = %tenant, dataset = %id))]
    pub async fn set_tag(&self, tenant: TenantId, id: DatasetId, tag: &str, as_of: VersionRef<'_>) -> Result<DatasetVersion, ApiError> {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES || tag.chars().any(char::is_control) {
            return Err(ApiError::unprocessable(format!("tag: 1 to {MAX_TAG_BYTES} bytes without control characters")));
        }
        if tag.as_bytes()[0].is_ascii_digit() {
            return Err(ApiError::unprocessable("tag: must not start with a digit (it would read as a time in as_of)"));
        }
        if tag == LATEST {
            return Err(ApiError::unprocessable("tag: \"latest\" is built in (it always names the newest version)"));
        }
        let version = self.version_at(tenant, id, as_of).await?;
        self.commit(tenant, vec![DatasetChange::Tag { dataset_id: id, tag: tag.to_owned(), as_of: version.as_of, at: Timestamp::now() }])
            .await?;
        let mut tags = version.tags;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
        Ok(DatasetVersion { as_of: version.as_of, tags })
    }

    /// Examples added, removed and changed from one version to another.
    pub async fn diff(&self, tenant: TenantId, id: DatasetId, from: Timestamp, to: Timestamp) -> Result<VersionDiff, ApiError> {
        self.get_dataset(tenant, id).await?;
        let mut before: HashMap<ExampleId, Example> = HashMap::new();
        self.scan(tenant, id, Some(from), |e| {
            before.insert(e.id, e);
        })
        .await?;
        let mut diff = VersionDiff::default();
        let mut seen = HashSet::new();
        self.scan(tenant, id, Some(to), |e| {
            seen.insert(e.id);
            match before.get(&e.id) {
                None => diff.added.push(e.id),
                Some(b) if !b.same_content(&e) => diff.modified.push(e.id),
                Some(_) => {}
            }
        })
        .await?;
        diff.removed = before.into_keys().filter(|k| !seen.contains(k)).collect();
        diff.removed.sort();
        Ok(diff)
    }

    /// Every example as of a version, in id order, a page at a time (flat memory).
    pub async fn scan(
        &self,
        tenant: TenantId,
        id: DatasetId,
        as_of: Option<Timestamp>,
        mut f: impl FnMut(Example),
    ) -> Result<(), ApiError> {
        let mut after = None;
        loop {
            let q = ExampleQuery { as_of, after, limit: 1000, ..Default::default() };
            let page = self.store.list_examples(tenant, id, &q).await.map_err(storage_error)?;
            let n = page.len();
            after = page.last().map(|e| e.id);
            page.into_iter().for_each(&mut f);
            if n < 1000 {
                return Ok(());
            }
        }
    }

    pub async fn splits(&self, tenant: TenantId, id: DatasetId, as_of: Option<Timestamp>) -> Result<Vec<String>, ApiError> {
        self.get_dataset(tenant, id).await?;
        let mut splits = std::collections::BTreeSet::new();
        self.scan(tenant, id, as_of, |e| splits.extend(e.splits())).await?;
        Ok(splits.into_iter().collect())
    }

    // ---- examples ----

    /// Validates and versions new examples; all or nothing. Returns them and their version.
    pub async fn create_examples(
        &self,
        tenant: TenantId,
        id: DatasetId,
        inputs: Vec<ExampleInput>,
    ) -> Result<(Vec<Example>, Timestamp), ApiError> {
        self.create_examples_with_blobs(tenant, id, inputs, Vec::new()).await
    }

    /// [`Datasets::create_examples`] whose attachments reference `blobs` (keyed by
    /// [`blob_key`]): the bytes are stored only once every example is valid.
    #[instrument(name = "datasets.create_examples", skip_all, fields(tenant = %tenant, dataset = %id, examples = inputs.len()))]
    pub async fn create_examples_with_blobs(
        &self,
        tenant: TenantId,
        id: DatasetId,
        inputs: Vec<ExampleInput>,
        blobs: Vec<Bytes>,
    ) -> Result<(Vec<Example>, Timestamp), ApiError> {
        if inputs.len() > MAX_EXAMPLES_PER_WRITE {
            return Err(ApiError::new(
                sextant_proto::ErrorKind::PayloadTooLarge,
                format!("at most {MAX_EXAMPLES_PER_WRITE} examples per request"),
            ));
        }
        let d = self.get_dataset(tenant, id).await?;
        let schemas = Schemas::of(&d)?;
        let as_of = self.next_version(tenant, id).await?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            let where_ = format!("examples[{i}]");
            let eid = input.id.unwrap_or_else(|| ExampleId(Uuid::now_v7()));
            if !seen.insert(eid) {
                return Err(ApiError::unprocessable(format!("{where_}.id: {eid} appears twice in this request")));
            }
            let inputs_doc =
                input.inputs.clone().ok_or_else(|| ApiError::unprocessable(format!("{where_}.inputs: required (a JSON object)")))?;
            out.push(build_example(&schemas, &where_, eid, id, inputs_doc, input, as_of, None)?);
        }
        // Ids must be new (in any dataset: `GET /examples/{id}` finds an example by id alone).
        for e in &out {
            if let Some(existing) = self.store.get_example(tenant, e.id, None).await.map_err(storage_error)? {
                return Err(ApiError::conflict(format!("example {} already exists (in dataset {})", e.id, existing.dataset_id)));
            }
        }
        self.put_blobs(tenant, &blobs).await?;
        self.write_version(tenant, id, as_of, out.iter().cloned().map(ExampleChange::Put).collect()).await?;
        Ok((out, as_of))
    }

    /// Validates new examples one at a time for a write of unknown size (imports): the
    /// dataset's schemas compiled once, and the version they will all be written in.
    pub async fn new_example_validator(&self, tenant: TenantId, id: DatasetId) -> Result<NewExampleValidator, ApiError> {
        let d = self.get_dataset(tenant, id).await?;
        Ok(NewExampleValidator { schemas: Schemas::of(&d)?, dataset: id, as_of: self.next_version(tenant, id).await? })
    }

    /// Updates existing examples (fields not given are kept); all or nothing.
    pub async fn update_examples(&self, tenant: TenantId, updates: Vec<ExampleInput>) -> Result<(Vec<Example>, Timestamp), ApiError> {
        self.update_examples_in(tenant, None, updates, Vec::new()).await
    }

    /// [`Datasets::update_examples`] of examples that must be in `dataset` when it is given (a
    /// 409 naming both datasets otherwise), whose attachments reference `blobs` (stored only
    /// once the whole update is valid). Nothing is written unless every example is valid.
    #[instrument(name = "datasets.update_examples", skip_all, fields(tenant = %tenant, examples = updates.len()))]
    pub async fn update_examples_in(
        &self,
        tenant: TenantId,
        dataset: Option<DatasetId>,
        updates: Vec<ExampleInput>,
        blobs: Vec<Bytes>,
    ) -> Result<(Vec<Example>, Timestamp), ApiError> {
        if updates.is_empty() {
            return Err(ApiError::unprocessable("no examples to update"));
        }
        if updates.len() > MAX_EXAMPLES_PER_WRITE {
            return Err(ApiError::new(
                sextant_proto::ErrorKind::PayloadTooLarge,
                format!("at most {MAX_EXAMPLES_PER_WRITE} examples per request"),
            ));
        }
        let mut current = Vec::with_capacity(updates.len());
        for (i, u) in updates.iter().enumerate() {
            let eid = u.id.ok_or_else(|| ApiError::unprocessable(format!("examples[{i}].id: required")))?;
            let e = self
                .store
                .get_example(tenant, eid, None)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| ApiError::not_found(format!("example {eid} not found")))?;
            current.push(e);
        }
        if let Some(want) = dataset {
            if let Some(e) = current.iter().find(|e| e.dataset_id != want) {
                return Err(ApiError::conflict(format!("example {} is in dataset {}, not in dataset {want}", e.id, e.dataset_id)));
            }
        }
        let dataset = current[0].dataset_id;
        if let Some(e) = current.iter().find(|e| e.dataset_id != dataset) {
            return Err(ApiError::conflict(format!(
                "one update changes one dataset: example {} is in dataset {dataset}, example {} in dataset {}",
                current[0].id, e.id, e.dataset_id
            )));
        }
        let d = self.get_dataset(tenant, dataset).await?;
        let schemas = Schemas::of(&d)?;
        let as_of = self.next_version(tenant, dataset).await?;
        let mut out = Vec::with_capacity(updates.len());
        for (i, (u, cur)) in updates.into_iter().zip(current).enumerate() {
            let where_ = format!("examples[{i}]");
            let inputs_doc = u.inputs.clone().unwrap_or_else(|| cur.inputs.to_value_or_null());
            out.push(build_example(&schemas, &where_, cur.id, dataset, inputs_doc, u, as_of, Some(&cur))?);
        }
        self.put_blobs(tenant, &blobs).await?;
        self.write_version(tenant, dataset, as_of, out.iter().cloned().map(ExampleChange::Put).collect()).await?;
        Ok((out, as_of))
    }

    /// Removes examples (a new version without them; older versions keep them).
    #[instrument(name = "datasets.delete_examples", skip_all, fields(tenant = %tenant, examples = ids.len()))]
    pub async fn delete_examples(&self, tenant: TenantId, ids: &[ExampleId]) -> Result<Timestamp, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::unprocessable("example_ids: at least one"));
        }
        let mut by_dataset: HashMap<DatasetId, Vec<ExampleChange>> = HashMap::new();
        for id in ids {
            let e = self
                .store
                .get_example(tenant, *id, None)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| ApiError::not_found(format!("example {id} not found")))?;
            by_dataset.entry(e.dataset_id).or_default().push(ExampleChange::Delete(*id));
        }
        // Every dataset's new version in one publish.
        let mut last = Timestamp(0);
        let mut events = Vec::new();
        for (dataset, changes) in by_dataset {
            let as_of = self.next_version(tenant, dataset).await?;
            events.extend(version_events(dataset, as_of, changes));
            last = last.max(as_of);
        }
        self.commit(tenant, events).await?;
        Ok(last)
    }

    /// Adds examples to (or removes them from) a split, as one new version.
    pub async fn update_splits(
        &self,
        tenant: TenantId,
        id: DatasetId,
        split: &str,
        examples: &[ExampleId],
        remove: bool,
    ) -> Result<(), ApiError> {
        split_list(&Value::String(split.to_owned()), "split")?;
        self.get_dataset(tenant, id).await?;
        let as_of = self.next_version(tenant, id).await?;
        let mut changes = Vec::with_capacity(examples.len());
        for eid in examples {
            let mut e = self
                .store
                .get_example(tenant, *eid, None)
                .await
                .map_err(storage_error)?
                .filter(|e| e.dataset_id == id)
                .ok_or_else(|| ApiError::not_found(format!("example {eid} not found in dataset {id}")))?;
            let mut md = e.metadata.to_value_or_null();
            if !md.is_object() {
                md = json!({});
            }
            let mut splits = splits_of(&md);
            if remove {
                splits.retain(|s| s != split);
            } else if !splits.iter().any(|s| s == split) {
                splits.retain(|s| s != DEFAULT_SPLIT);
                splits.push(split.to_owned());
            }
            md[SPLIT_KEY] = json!(splits);
            e.metadata = RawJson::from_value(&md);
            e.modified_at = as_of;
            changes.push(ExampleChange::Put(e));
        }
        self.write_version(tenant, id, as_of, changes).await
    }

    /// `PATCH /v1/platform/datasets/{id}/examples/metadata`: applies `ops` in order to the
    /// metadata of each listed example of the dataset, all in one new version. Returns, per
    /// submitted id (in order), whether it was updated; ids not in the dataset are skipped.
    #[instrument(name = "datasets.update_metadata", skip_all, fields(tenant = %tenant, dataset = %id, examples = example_ids.len()))]
    pub async fn update_metadata(
        &self,
        tenant: TenantId,
        id: DatasetId,
        example_ids: &[ExampleId],
        ops: &[MetadataOp],
    ) -> Result<Vec<(ExampleId, bool)>, ApiError> {
        // "dataset not found" in so many words: the SDK reads any other 404 here as a server
        // without this route and falls back to the legacy splits route.
        let found = self.store.get_dataset(tenant, id).await.map_err(storage_error)?;
        if found.is_none() {
            return Err(ApiError::not_found(format!("dataset not found: {id}")));
        }
        let as_of = self.next_version(tenant, id).await?;
        let mut done: HashSet<ExampleId> = HashSet::new();
        let mut changes = Vec::new();
        for eid in example_ids {
            if done.contains(eid) {
                continue;
            }
            let Some(mut e) = self.store.get_example(tenant, *eid, None).await.map_err(storage_error)?.filter(|e| e.dataset_id == id)
            else {
                continue;
            };
            let mut md = e.metadata.to_value_or_null().as_object().cloned().unwrap_or_default();
            apply_metadata_ops(&mut md, ops);
            // The same limits as any example write (nothing is written yet if one fails).
            if let Some(s) = md.get(SPLIT_KEY) {
                split_list(s, "operations")?;
            }
            if sextant_core::json::depth_of_object(&md) > sextant_core::json::MAX_JSON_DEPTH {
                return Err(ApiError::unprocessable(format!(
                    "operations: the metadata of example {eid} would nest deeper than {} levels",
                    sextant_core::json::MAX_JSON_DEPTH
                )));
            }
            e.metadata = RawJson::from_value(&Value::Object(md));
            e.modified_at = as_of;
            done.insert(*eid);
            changes.push(ExampleChange::Put(e));
        }
        if !changes.is_empty() {
            self.write_version(tenant, id, as_of, changes).await?;
        }
        Ok(example_ids.iter().map(|e| (*e, done.contains(e))).collect())
    }

    /// One version's changes, in as many events as their size needs.
    pub async fn write_version(
        &self,
        tenant: TenantId,
        id: DatasetId,
        as_of: Timestamp,
        changes: Vec<ExampleChange>,
    ) -> Result<(), ApiError> {
        self.commit(tenant, version_events(id, as_of, changes)).await
    }

    pub async fn get_example(&self, tenant: TenantId, id: ExampleId, as_of: Option<&str>) -> Result<Example, ApiError> {
        let current = self.store.get_example(tenant, id, None).await.map_err(storage_error)?;
        let as_of = match (as_of, &current) {
            (Some(s), Some(e)) => Some(self.resolve_str(tenant, e.dataset_id, s).await?),
            _ => None,
        };
        let found = match as_of {
            Some(_) => self.store.get_example(tenant, id, as_of).await.map_err(storage_error)?,
            None => current,
        };
        found.ok_or_else(|| ApiError::not_found(format!("example {id} not found")))
    }

    pub async fn list_examples(&self, tenant: TenantId, id: DatasetId, q: ExampleQuery) -> Result<Vec<Example>, ApiError> {
        if q.limit == 0 || q.limit > MAX_LIST_LIMIT {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        self.get_dataset(tenant, id).await?;
        self.store.list_examples(tenant, id, &q).await.map_err(storage_error)
    }

    /// The attachment bytes of an example's version.
    pub async fn blob(&self, tenant: TenantId, sha256: &str) -> Result<Vec<u8>, ApiError> {
        self.store.get_blob(tenant, sha256).await.map_err(storage_error)?.ok_or_else(|| ApiError::not_found("attachment not found"))
    }

    /// Stores attachment bytes; returns their key.
    pub async fn put_blob(&self, tenant: TenantId, bytes: &[u8]) -> Result<String, ApiError> {
        let sha = blob_key(bytes);
        self.store.put_blob(tenant, &sha, bytes).await.map_err(storage_error)?;
        Ok(sha)
    }

    async fn put_blobs(&self, tenant: TenantId, blobs: &[Bytes]) -> Result<(), ApiError> {
        for b in blobs {
            self.put_blob(tenant, b).await?;
        }
        Ok(())
    }
}

/// The key attachment bytes are stored under (their SHA-256, in hex).
pub fn blob_key(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// One version's changes as dataset events, split as their size needs.
fn version_events(id: DatasetId, as_of: Timestamp, changes: Vec<ExampleChange>) -> Vec<DatasetChange> {
    let mut events = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0;
    for c in changes {
        let s = match &c {
            ExampleChange::Put(e) => {
                e.inputs.as_str().len() + e.outputs.as_ref().map_or(0, |o| o.as_str().len()) + e.metadata.as_str().len() + 256
            }
            ExampleChange::Delete(_) => 32,
        };
        if !chunk.is_empty() && size + s > MAX_EVENT_BYTES {
            events.push(DatasetChange::Examples { dataset_id: id, as_of, changes: std::mem::take(&mut chunk) });
            size = 0;
        }
        size += s;
        chunk.push(c);
    }
    events.push(DatasetChange::Examples { dataset_id: id, as_of, changes: chunk });
    events
}

/// One example version from a write: validated against the schemas, splits folded into
/// metadata (`dataset_split`), fields not given taken from `current`.
#[allow(clippy::too_many_arguments)]
/// See [`Datasets::new_example_validator`].
pub struct NewExampleValidator {
    schemas: Schemas,
    dataset: DatasetId,
    pub as_of: Timestamp,
}

impl NewExampleValidator {
    /// The example a new row makes (an id is drawn if it has none), or why it is invalid.
    /// Does not check that the id is unused.
    pub fn build(&self, where_: &str, input: ExampleInput) -> Result<Example, ApiError> {
        let id = input.id.unwrap_or_else(|| ExampleId(Uuid::now_v7()));
        let inputs = input.inputs.clone().ok_or_else(|| ApiError::unprocessable(format!("{where_}.inputs: required (a JSON object)")))?;
        build_example(&self.schemas, where_, id, self.dataset, inputs, input, self.as_of, None)
    }
}

fn build_example(
    schemas: &Schemas,
    where_: &str,
    id: ExampleId,
    dataset: DatasetId,
    inputs: Value,
    input: ExampleInput,
    as_of: Timestamp,
    current: Option<&Example>,
) -> Result<Example, ApiError> {
    if !inputs.is_object() {
        return Err(ApiError::unprocessable(format!("{where_}.inputs: expected a JSON object")));
    }
    let kept = kept_attachments(where_, current, &input)?;
    let too_deep = |field: &str, doc: &Value| {
        sextant_core::json::check_depth(doc).map_err(|e| ApiError::unprocessable(format!("{where_}.{field}: {e}")))
    };
    too_deep("inputs", &inputs)?;
    if let Some(o) = &input.outputs {
        too_deep("outputs", o)?;
    }
    if input.metadata.as_ref().is_some_and(|m| sextant_core::json::depth_of_object(m) > sextant_core::json::MAX_JSON_DEPTH) {
        return Err(ApiError::unprocessable(format!(
            "{where_}.metadata: JSON nested deeper than {} levels",
            sextant_core::json::MAX_JSON_DEPTH
        )));
    }
    if let Some(s) = &schemas.inputs {
        s.check(&inputs, &format!("{where_}.inputs"))?;
    }
    let outputs = match (input.outputs, current) {
        (Some(o), _) => Some(o),
        (None, Some(c)) => c.outputs.as_ref().map(RawJson::to_value_or_null),
        (None, None) => None,
    };
    if let (Some(s), Some(o)) = (&schemas.outputs, &outputs) {
        s.check(o, &format!("{where_}.outputs"))?;
    }
    let mut metadata = match (input.metadata, current) {
        (Some(m), _) => m,
        (None, Some(c)) => c.metadata.to_value_or_null().as_object().cloned().unwrap_or_default(),
        (None, None) => Map::new(),
    };
    if let Some(split) = &input.split {
        metadata.insert(SPLIT_KEY.into(), json!(split_list(split, where_)?));
    } else if let Some(s) = metadata.get(SPLIT_KEY) {
        split_list(s, &format!("{where_}.metadata"))?;
    } else if let Some(c) = current {
        metadata.insert(SPLIT_KEY.into(), json!(c.splits()));
    } else {
        metadata.insert(SPLIT_KEY.into(), json!([DEFAULT_SPLIT]));
    }
    let mut attachments = kept;
    for a in input.attachments {
        attachments.retain(|x| x.name != a.name);
        attachments.push(a);
    }
    Ok(Example {
        id,
        dataset_id: dataset,
        inputs: RawJson::from_value(&inputs),
        outputs: outputs.as_ref().map(RawJson::from_value),
        metadata: RawJson::from_value(&Value::Object(metadata)),
        source_run_id: input.source_run_id.or(current.and_then(|c| c.source_run_id)),
        attachments,
        created_at: current.map_or(input.created_at.unwrap_or(as_of), |c| c.created_at),
        modified_at: as_of,
    })
}

/// One change of a bulk metadata update (already validated by the transport).
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataOp {
    /// Replaces the value at `key` (for `dataset_split`, a list of split names).
    Set { key: String, value: Value },
    /// Adds the values missing from the list at `key`.
    ArrayAdd { key: String, values: Vec<String> },
    /// Removes the values from the list at `key`.
    ArrayRemove { key: String, values: Vec<String> },
}

/// Applies the operations in order. A missing or non-list value starts an array operation
/// as an empty list, except `dataset_split`, which starts as the splits the example is in
/// (`base` when none). Split lists follow the legacy splits route: joining a named split
/// leaves `base`, and leaving the last split returns the example to `base`.
pub fn apply_metadata_ops(md: &mut Map<String, Value>, ops: &[MetadataOp]) {
    for op in ops {
        let (key, values, add) = match op {
            MetadataOp::Set { key, value } => {
                md.insert(key.clone(), value.clone());
                continue;
            }
            MetadataOp::ArrayAdd { key, values } => (key, values, true),
            MetadataOp::ArrayRemove { key, values } => (key, values, false),
        };
        let split = key == SPLIT_KEY;
        let mut list: Vec<Value> = match md.get(key) {
            Some(Value::Array(a)) => a.clone(),
            _ if split => splits_of(&Value::Object(md.clone())).into_iter().map(Value::String).collect(),
            _ => Vec::new(),
        };
        for v in values {
            let v = Value::String(v.clone());
            if add && !list.contains(&v) {
                list.push(v);
            } else if !add {
                list.retain(|x| x != &v);
            }
        }
        if split {
            let base = Value::String(DEFAULT_SPLIT.to_owned());
            if list.iter().any(|s| s != &base) {
                list.retain(|s| s != &base);
            }
            if list.is_empty() {
                list.push(base);
            }
        }
        md.insert(key.clone(), Value::Array(list));
    }
}

/// The current version's attachments an update keeps (before its new ones are added), as
/// LangSmith's `attachments_operations` define it: with operations, only the retained ones and
/// the renamed ones (under their new names) survive; without, new attachments replace the
/// whole set and an update without attachments keeps it.
fn kept_attachments(where_: &str, current: Option<&Example>, input: &ExampleInput) -> Result<Vec<ExampleAttachment>, ApiError> {
    let Some(c) = current else { return Ok(Vec::new()) };
    let Some(retain) = &input.retain_attachments else {
        return Ok(if input.attachments.is_empty() { c.attachments.clone() } else { Vec::new() });
    };
    let renamed: HashSet<&str> = input.rename_attachments.iter().map(|(old, _)| old.as_str()).collect();
    let mut kept: Vec<ExampleAttachment> =
        c.attachments.iter().filter(|a| retain.contains(&a.name) && !renamed.contains(a.name.as_str())).cloned().collect();
    for (old, new) in &input.rename_attachments {
        let mut a = c.attachments.iter().find(|a| &a.name == old).cloned().ok_or_else(|| {
            ApiError::unprocessable(format!("{where_}.attachments_operations.rename: the example has no attachment {old:?}"))
        })?;
        if kept.iter().any(|k| &k.name == new) {
            return Err(ApiError::unprocessable(format!("{where_}.attachments_operations.rename: two attachments would be named {new:?}")));
        }
        a.name = new.clone();
        kept.push(a);
    }
    Ok(kept)
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > MAX_DATASET_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(format!("name: 1 to {MAX_DATASET_NAME_BYTES} bytes without control characters")));
    }
    Ok(())
}

fn opt_str(o: &Map<String, Value>, k: &str) -> Result<Option<String>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > 64 * 1024 => Err(ApiError::unprocessable(format!("{k}: longer than 64 KiB"))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::unprocessable(format!("{k}: expected a string"))),
    }
}

/// A JSON Schema field: must compile, so a bad schema is refused when the dataset is written,
/// not on the first example.
fn schema_field(o: &Map<String, Value>, k: &str) -> Result<Option<RawJson>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ (Value::Object(_) | Value::Bool(_))) => {
            Schema::compile(k, v)?;
            Ok(Some(RawJson::from_value(v)))
        }
        Some(_) => Err(ApiError::unprocessable(format!("{k}: expected a JSON Schema object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_ops_apply_in_order_and_keep_splits_a_list() {
        let mut md = json!({"tier": 1}).as_object().cloned().unwrap();
        let add = |k: &str, v: &[&str]| MetadataOp::ArrayAdd { key: k.into(), values: v.iter().map(|s| s.to_string()).collect() };
        let remove = |k: &str, v: &[&str]| MetadataOp::ArrayRemove { key: k.into(), values: v.iter().map(|s| s.to_string()).collect() };
        apply_metadata_ops(
            &mut md,
            &[
                add(SPLIT_KEY, &["train"]),
                add("labels", &["x", "y", "x"]),
                remove("labels", &["x"]),
                MetadataOp::Set { key: "owner".into(), value: json!("me") },
            ],
        );
        assert_eq!(Value::Object(md.clone()), json!({"tier": 1, "dataset_split": ["train"], "labels": ["y"], "owner": "me"}));
        apply_metadata_ops(&mut md, &[remove(SPLIT_KEY, &["train"])]);
        assert_eq!(md[SPLIT_KEY], json!([DEFAULT_SPLIT]), "leaving the last split returns to base");
    }
}
