//! Datasets on ScyllaDB: definitions, versioned examples, tags, attachment blobs and curation
//! jobs. Semantics are the embedded adapter's (`embedded/datasets.rs`), checked by the same
//! conformance suite.
//!
//! Tables (T = tenant, D = dataset, E = example id (blob: byte order), V = version time `as_of`,
//! S = shard of E):
//! * `datasets`         ((T), D)          → body, version — definitions, by compare-and-set
//! * `dataset_names`    ((T, name))       → D, claimed_at
//! * `dataset_rules`    ((scope), T, D)    — datasets with curation rules, of every tenant
//! * `example_versions` ((T, D, S), E, V↓) → present, body — every version of every example
//! * `example_loc`      ((T, E), D)        — the dataset of an example id
//! * `dataset_versions` ((T, D), V↓)       — the versions of a dataset
//! * `dataset_tags`     ((T, D), tag)     → V, moved_at
//! * `blobs`            ((T, sha256))     → bytes
//! * `curation_jobs`    ((T, job))        → body
//!
//! # Versions
//! An example version is one row, keyed by `(E, V)` and written `USING TIMESTAMP` V (as are
//! its `example_loc` row and the dataset's `dataset_versions` row): redelivering a version
//! rewrites the same cells with the same timestamp, which changes nothing, and versions may
//! arrive in any order because readers pick, per example, the newest version at or before the
//! time they read as of. Nothing is read before writing, so writes never contend.
//!
//! A dataset's versions are spread over [`SHARDS`] partitions by the last byte of the example
//! id, so a dataset of millions of examples (and their histories) is no single huge partition
//! and its writes spread over the cluster. Each shard lists its examples in id order (a blob
//! clustering column orders by bytes, as the embedded adapter does; CQL's `uuid` comparator
//! would not), and readers merge the shards back into id order a page at a time
//! ([`ExampleScan`]): an example's versions are all in one shard, so the merge yields whole
//! histories and holds at most a page per shard, however large the dataset.
//!
//! Listing reads keys only (`example_id, as_of, present`) when the query has no condition on
//! content, and then the bodies of the page it returns; splits and metadata conditions read
//! bodies as they scan. `count_examples` reads the keys of the whole dataset (16 partitions in
//! parallel): linear in the number of versions, never a body. A counter would be cheaper but
//! cannot be kept exact when versions arrive out of order and more than once.
//!
//! # Definitions and names
//! Definitions are written like projects (see the parent module): `INSERT ... IF NOT EXISTS`
//! creates, `UPDATE ... IF version = ?` replaces, and the newer `modified_at` is chosen between
//! the read and the compare-and-set, so the newest definition wins whatever the order. Names
//! are claimed with `INSERT INTO dataset_names ... IF NOT EXISTS` before a definition takes
//! them and released (`DELETE ... IF dataset_id = ?`) after it leaves them. A claim carries
//! `claimed_at`, renewed by every write that relies on a claim it already held: a claim whose
//! dataset does not (or no longer) have the name and that nobody renewed for [`STALE_CLAIM_US`]
//! was left behind by an interrupted write, and the next claimant removes it (`DELETE ... IF
//! claimed_at = ?`, so a renewal in between wins). Readers check the name against the
//! definition they find, so a leftover claim names nothing.
//!
//! Tags are written `USING TIMESTAMP` of the move, so the newest move wins in any order.
//! `dataset_rules` is the rule consumer's working set, kept like `routed_queues`: entered
//! before a definition with rules is written, left with the dataset, checked when read.
//!
//! # Deletes
//! Examples (their `example_loc` rows, then their shards), versions and tags go first, the
//! definition last: an interrupted delete is finished by calling it again. The partitions are
//! deleted `USING TIMESTAMP` one past the newest version or tag move they hold, so a version
//! redelivered after the delete stays deleted; one newer than anything deleted is kept.
//!
//! # Costs
//! `apply_example_changes`: two writes per example and one per version, in parallel, no reads.
//! `list_examples`: the keys of the examples up to the page's end (merged from the shards),
//! plus one read per example returned; by ids, one read per id. `get_example`: two reads.
//! `create_dataset`: a read and two compare-and-sets (name, definition); `put_dataset`: a read
//! and a compare-and-set, two more when it renames. `list_datasets`: the tenant's
//! definitions. `delete_dataset`: every key of the dataset, one delete per example, one per
//! partition. `set_tag`, `put_blob`, `put_curation_job`: one write; their reads, one read.
//!
//! A lightweight transaction that fails without an answer (a timeout) may have applied; it is
//! returned as `Unavailable`, never resent, and every write here is idempotent, so the
//! caller's retry (or the event's redelivery) finishes it.
//!
//! # Limits
//! A blob is one cell: ScyllaDB refuses a mutation over half a commit log segment (16 MB by
//! default). Curation job writes are ordered by the writing process's clock (the latest write
//! wins), which is exact for the one runner that updates a job.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::response::query_result::QueryRowsResult;
use scylla::response::PagingState;
use scylla::value::{CqlValue, Row};
use serde_json::{Map, Value};
use tracing::{debug, instrument};
use uuid::Uuid;

use sextant_core::dataset::{CurationJob, ExampleChange};
use sextant_core::{Dataset, DatasetId, Example, ExampleId, RawJson, TenantId, Timestamp};

use super::statements::*;
use super::{dec, enc, internal, lwt_outcome, now_us, rows, ScyllaStore, FANOUT, MAX_MERGE_ATTEMPTS};
use crate::{DatasetCreate, DatasetQuery, DatasetStore, ExampleQuery, Result, StorageError, StorageErrorKind};

/// Partitions of a dataset's example versions. Part of the schema: never change it.
const SHARDS: u8 = 16;
/// The partition of `dataset_rules`.
const RULES: &str = "rules";
/// Age after which a name claim that its dataset does not use is taken for one left behind by
/// an interrupted write (a write in progress renews its claim just before it relies on it).
const STALE_CLAIM_US: i64 = 60_000_000;
/// Attempts at claiming a name, each after removing a claim left behind.
const CLAIM_ATTEMPTS: u32 = 4;
/// `example_loc` rows deleted at once.
const DELETE_CHUNK: usize = 256;

fn shard_of(id: ExampleId) -> i32 {
    i32::from(id.as_bytes()[15] % SHARDS)
}

fn all_shards() -> std::ops::Range<i32> {
    0..i32::from(SHARDS)
}

fn example_id(bytes: Vec<u8>) -> Result<ExampleId> {
    let b: [u8; 16] = bytes.try_into().map_err(|_| StorageError::new(StorageErrorKind::Internal, "scylla: example id is not 16 bytes"))?;
    Ok(ExampleId::from_bytes(b))
}

/// Write timestamps of curation jobs: the wall clock, strictly increasing within the process,
/// so the later of two writes of a job wins even within one microsecond.
fn job_write_ts() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now_us().max(prev.saturating_add(1));
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// A column of an LWT's not-applied row (the current value).
fn lwt_value(rows: &QueryRowsResult, column: &str, what: &str) -> Result<Option<CqlValue>> {
    let Some((idx, _)) = rows.column_specs().get_by_name(column) else { return Ok(None) };
    let row: Row = rows.first_row().map_err(|e| internal(what, e))?;
    Ok(row.columns.into_iter().nth(idx).flatten())
}

/// One stored version of an example.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    as_of: i64,
    present: bool,
    /// The encoded [`ExampleChange`], when it was read.
    body: Option<Vec<u8>>,
}

/// The versions of one example of a dataset.
#[derive(Debug, Clone, PartialEq)]
struct History {
    id: ExampleId,
    versions: Vec<Version>,
}

impl History {
    /// The version in force as of `as_of` (`None`: the newest), if the example is present in it.
    fn at(&self, as_of: Option<Timestamp>) -> Option<&Version> {
        self.versions.iter().filter(|v| as_of.is_none_or(|a| v.as_of <= a.micros())).max_by_key(|v| v.as_of).filter(|v| v.present)
    }
}

/// The example a version wrote (`None` for a deletion, or when its body was not read).
fn example_of(v: &Version) -> Result<Option<Example>> {
    let Some(body) = &v.body else { return Ok(None) };
    Ok(match dec::<ExampleChange>("example version", body)? {
        ExampleChange::Put(e) => Some(e),
        ExampleChange::Delete(_) => None,
    })
}

fn example_matches(e: &Example, q: &ExampleQuery) -> bool {
    (q.splits.is_empty() || e.splits().iter().any(|s| q.splits.contains(s))) && q.metadata.as_ref().is_none_or(|m| e.metadata_matches(m))
}

fn dataset_matches(q: &DatasetQuery, d: &Dataset) -> bool {
    let metadata_matches = |want: &Map<String, Value>| {
        let md = d.metadata.as_ref().map(RawJson::to_value_or_null).unwrap_or(Value::Null);
        want.iter().all(|(k, v)| md.get(k) == Some(v))
    };
    (q.ids.is_empty() || q.ids.contains(&d.id))
        && q.name.as_ref().is_none_or(|n| &d.name == n)
        && q.name_contains.as_ref().is_none_or(|n| d.name.to_lowercase().contains(&n.to_lowercase()))
        && q.data_type.is_none_or(|t| d.data_type == t)
        && q.metadata.as_ref().is_none_or(metadata_matches)
}

/// The changes of a version, one per example: the last one given, as the embedded adapter's
/// batch would leave them.
fn last_per_example(changes: &[ExampleChange]) -> Vec<&ExampleChange> {
    let last: HashMap<ExampleId, usize> = changes.iter().enumerate().map(|(i, c)| (c.id(), i)).collect();
    changes.iter().enumerate().filter(|(i, c)| last[&c.id()] == *i).map(|(_, c)| c).collect()
}

/// What [`ExampleScan`] reads of each shard.
#[derive(Clone, Copy)]
struct ScanSpec<'a> {
    store: &'a ScyllaStore,
    tenant: TenantId,
    dataset: DatasetId,
    /// Only examples with greater ids.
    after: Option<ExampleId>,
    /// Whether to read the versions' bodies (otherwise keys and presence only).
    bodies: bool,
}

impl ScanSpec<'_> {
    /// One page of one shard's versions, in `(example id, as_of)` clustering order.
    async fn page(&self, shard: i32, page: PagingState) -> Result<(Vec<(ExampleId, Version)>, Option<PagingState>)> {
        const WHAT: &str = "scan examples";
        let (t, d, s) = (self.tenant.0, self.dataset.0, self.store);
        let key = ExampleShard { tenant: t, dataset_id: d, shard };
        let after = |a: ExampleId| ExampleShardAfter { tenant: t, dataset_id: d, shard, example_id: a.as_bytes().to_vec() };
        let (res, next) = match (self.bodies, self.after) {
            (false, None) => s.exec_page(&SCAN_EXAMPLE_KEYS, &key, Some(page)).await?,
            (false, Some(a)) => s.exec_page(&SCAN_EXAMPLE_KEYS_AFTER, &after(a), Some(page)).await?,
            (true, None) => s.exec_page(&SCAN_EXAMPLES, &key, Some(page)).await?,
            (true, Some(a)) => s.exec_page(&SCAN_EXAMPLES_AFTER, &after(a), Some(page)).await?,
        };
        let rows = rows(res, WHAT)?;
        let versions = if self.bodies {
            rows.rows::<(Vec<u8>, i64, bool, Option<Vec<u8>>)>()
                .map_err(|e| internal(WHAT, e))?
                .map(|r| {
                    let (id, as_of, present, body) = r.map_err(|e| internal(WHAT, e))?;
                    Ok((example_id(id)?, Version { as_of, present, body }))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            rows.rows::<(Vec<u8>, i64, bool)>()
                .map_err(|e| internal(WHAT, e))?
                .map(|r| {
                    let (id, as_of, present) = r.map_err(|e| internal(WHAT, e))?;
                    Ok((example_id(id)?, Version { as_of, present, body: None }))
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok((versions, next))
    }
}

/// One shard of a scan: the versions read but not yet merged, and the next page.
struct ShardCursor {
    shard: i32,
    buf: VecDeque<(ExampleId, Version)>,
    /// `None`: read to the end.
    next: Option<PagingState>,
}

/// The example histories of a dataset in example-id order, merged from its shards, each read
/// a page at a time as the merge reaches it.
struct ExampleScan<'a> {
    spec: ScanSpec<'a>,
    shards: Vec<ShardCursor>,
}

impl<'a> ExampleScan<'a> {
    fn new(spec: ScanSpec<'a>, shards: impl IntoIterator<Item = i32>) -> Self {
        let shards =
            shards.into_iter().map(|shard| ShardCursor { shard, buf: VecDeque::new(), next: Some(PagingState::start()) }).collect();
        Self { spec, shards }
    }

    /// The next example's history; `None` at the end.
    async fn next(&mut self) -> Result<Option<History>> {
        self.fill().await?;
        let Some(i) = (0..self.shards.len()).filter(|i| !self.shards[*i].buf.is_empty()).min_by_key(|i| self.shards[*i].buf[0].0) else {
            return Ok(None);
        };
        let id = self.shards[i].buf[0].0;
        let mut versions = Vec::new();
        loop {
            let cursor = &mut self.shards[i];
            while cursor.buf.front().is_some_and(|(e, _)| *e == id) {
                versions.push(cursor.buf.pop_front().expect("not empty").1);
            }
            // The example's versions may go on in the shard's next page.
            if cursor.buf.is_empty() && cursor.next.is_some() {
                self.fetch(i).await?;
                continue;
            }
            return Ok(Some(History { id, versions }));
        }
    }

    async fn fetch(&mut self, i: usize) -> Result<()> {
        let cursor = &mut self.shards[i];
        let Some(page) = cursor.next.take() else { return Ok(()) };
        let (versions, next) = self.spec.page(cursor.shard, page).await?;
        cursor.buf.extend(versions);
        cursor.next = next;
        Ok(())
    }

    /// Reads until every shard has a version buffered or is read to the end.
    async fn fill(&mut self) -> Result<()> {
        loop {
            let wanted: Vec<(usize, i32, PagingState)> = self
                .shards
                .iter_mut()
                .enumerate()
                .filter(|(_, c)| c.buf.is_empty())
                .filter_map(|(i, c)| c.next.take().map(|p| (i, c.shard, p)))
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            let spec = self.spec;
            let pages: Vec<_> = futures::stream::iter(wanted)
                .map(|(i, shard, page)| async move { spec.page(shard, page).await.map(|(versions, next)| (i, versions, next)) })
                .buffer_unordered(FANOUT)
                .try_collect()
                .await?;
            for (i, versions, next) in pages {
                self.shards[i].buf.extend(versions);
                self.shards[i].next = next;
            }
        }
    }
}

/// Offset and limit over the examples a listing accepts, in the order found.
struct Page<T> {
    skip: usize,
    limit: usize,
    out: Vec<T>,
}

impl<T> Page<T> {
    fn new(offset: usize, limit: usize) -> Self {
        Self { skip: offset, limit: limit.max(1), out: Vec::new() }
    }

    /// Takes one accepted item; `false` once the page is full.
    fn push(&mut self, item: T) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
        } else if self.out.len() < self.limit {
            self.out.push(item);
        }
        self.out.len() < self.limit
    }
}

impl ScyllaStore {
    async fn dataset_versioned(&self, t: TenantId, id: DatasetId, serial: bool) -> Result<Option<(Dataset, i64)>> {
        let stmt = if serial { &GET_DATASET_SERIAL } else { &GET_DATASET };
        let res = self.exec(stmt, &DatasetKey { tenant: t.0, dataset_id: id.0 }).await?;
        match rows(res, "read dataset")?.maybe_first_row::<(Vec<u8>, i64)>().map_err(|e| internal("read dataset", e))? {
            Some((body, version)) => Ok(Some((dec("dataset", &body)?, version))),
            None => Ok(None),
        }
    }

    /// Claims `name` for dataset `id`: `Ok(None)` when it is now (or already was) its name,
    /// else the dataset that has it. See the module docs.
    async fn claim_dataset_name(&self, t: TenantId, name: &str, id: DatasetId) -> Result<Option<Dataset>> {
        const WHAT: &str = "claim dataset name";
        for attempt in 0..CLAIM_ATTEMPTS {
            let now = now_us();
            let claim = DatasetNameClaim { tenant: t.0, name: name.to_string(), dataset_id: id.0, claimed_at: now };
            let (applied, rows) = lwt_outcome(self.exec(&CLAIM_DATASET_NAME, &claim).await?, WHAT)?;
            if applied {
                return Ok(None);
            }
            let owner = match lwt_value(&rows, "dataset_id", WHAT)? {
                Some(CqlValue::Uuid(u)) => DatasetId(u),
                _ => return Err(StorageError::new(StorageErrorKind::Internal, "scylla: a dataset name claim has no owner")),
            };
            let claimed_at = match lwt_value(&rows, "claimed_at", WHAT)? {
                Some(CqlValue::BigInt(at)) => at,
                _ => i64::MIN,
            };
            if owner == id {
                // Ours already (a redelivery, or a concurrent write of the same definition):
                // renewed, so nobody takes it for one left behind while we rely on it.
                let (renewed, _) = lwt_outcome(self.exec(&RENEW_DATASET_NAME, &claim).await?, "renew dataset name")?;
                if renewed {
                    return Ok(None);
                }
                continue;
            }
            if let Some((holder, _)) = self.dataset_versioned(t, owner, true).await? {
                if holder.name == name {
                    return Ok(Some(holder));
                }
            }
            if now.saturating_sub(claimed_at) < STALE_CLAIM_US {
                return Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the dataset name is being claimed by another write"));
            }
            debug!(dataset = %owner, attempt, "removing a dataset name claim left behind");
            let stale = DatasetNameStale { tenant: t.0, name: name.to_string(), claimed_at };
            self.exec(&DROP_STALE_DATASET_NAME, &stale).await?;
        }
        Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the dataset name is contended"))
    }

    async fn release_dataset_name(&self, t: TenantId, name: &str, id: DatasetId) -> Result<()> {
        // Not applied means someone else holds it now: nothing of ours to release.
        self.exec(&RELEASE_DATASET_NAME, &DatasetNameOwner { tenant: t.0, name: name.to_string(), dataset_id: id.0 }).await?;
        Ok(())
    }

    /// Enters a dataset with rules in the rule consumer's working set (before its definition
    /// is written, so the consumer never misses it).
    async fn enter_rules(&self, t: TenantId, d: &Dataset) -> Result<()> {
        if !d.rules.is_empty() {
            self.exec(&INSERT_DATASET_RULES, &DatasetRulesRow { scope: RULES.into(), tenant: t.0, dataset_id: d.id.0 }).await?;
        }
        Ok(())
    }

    /// Every version of one example of a dataset, with bodies (paged: an example edited
    /// often has a long history).
    async fn example_history(&self, t: TenantId, d: DatasetId, id: ExampleId) -> Result<History> {
        const WHAT: &str = "read example";
        let key = ExampleKey { tenant: t.0, dataset_id: d.0, shard: shard_of(id), example_id: id.as_bytes().to_vec() };
        let mut versions = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&GET_EXAMPLE_VERSIONS, &key, Some(page)).await?;
            for r in rows(res, WHAT)?.rows::<(Vec<u8>, i64, bool, Option<Vec<u8>>)>().map_err(|e| internal(WHAT, e))? {
                let (_, as_of, present, body) = r.map_err(|e| internal(WHAT, e))?;
                versions.push(Version { as_of, present, body });
            }
            match next {
                Some(s) => page = s,
                None => return Ok(History { id, versions }),
            }
        }
    }

    /// The example one version wrote (`None`: a deletion, or gone).
    async fn example_version(&self, t: TenantId, d: DatasetId, id: ExampleId, as_of: i64) -> Result<Option<Example>> {
        const WHAT: &str = "read example version";
        let key = ExampleVersionKey { tenant: t.0, dataset_id: d.0, shard: shard_of(id), example_id: id.as_bytes().to_vec(), as_of };
        match rows(self.exec(&GET_EXAMPLE_VERSION, &key).await?, WHAT)?
            .maybe_first_row::<(Option<Vec<u8>>,)>()
            .map_err(|e| internal(WHAT, e))?
        {
            Some((body,)) => example_of(&Version { as_of, present: true, body }),
            None => Ok(None),
        }
    }

    async fn dataset_versions(&self, t: TenantId, d: DatasetId) -> Result<Vec<i64>> {
        let key = DatasetKey { tenant: t.0, dataset_id: d.0 };
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_DATASET_VERSIONS, &key, Some(page)).await?;
            for r in rows(res, "list dataset versions")?.rows::<(i64,)>().map_err(|e| internal("list dataset versions", e))? {
                out.push(r.map_err(|e| internal("list dataset versions", e))?.0);
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }

    /// `(tag, as_of, moved_at)` of every tag of a dataset.
    async fn dataset_tags(&self, t: TenantId, d: DatasetId) -> Result<Vec<(String, i64, i64)>> {
        let key = DatasetKey { tenant: t.0, dataset_id: d.0 };
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_DATASET_TAGS, &key, Some(page)).await?;
            for r in rows(res, "list dataset tags")?.rows::<(String, i64, i64)>().map_err(|e| internal("list dataset tags", e))? {
                out.push(r.map_err(|e| internal("list dataset tags", e))?);
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }

    /// Deletes `example_loc` rows, each at the timestamp given.
    async fn delete_example_locs(&self, locs: Vec<ExampleLocAt>) -> Result<()> {
        futures::stream::iter(locs)
            .map(|v| async move { self.exec(&DELETE_EXAMPLE_LOC, &v).await })
            .buffer_unordered(FANOUT)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl DatasetStore for ScyllaStore {
    #[instrument(name = "storage.scylla.create_dataset", skip_all, fields(tenant = %tenant, dataset = %dataset.id))]
    async fn create_dataset(&self, tenant: TenantId, dataset: &Dataset) -> Result<DatasetCreate> {
        let t = tenant;
        if let Some((existing, _)) = self.dataset_versioned(t, dataset.id, false).await? {
            return Ok(DatasetCreate::AlreadyExists(existing));
        }
        if let Some(holder) = self.claim_dataset_name(t, &dataset.name, dataset.id).await? {
            return Ok(DatasetCreate::NameTaken(holder));
        }
        self.enter_rules(t, dataset).await?;
        let values = InsertDataset { tenant: t.0, dataset_id: dataset.id.0, body: enc(dataset), version: 1 };
        let (created, _) = lwt_outcome(self.exec(&INSERT_DATASET, &values).await?, "create dataset")?;
        if created {
            return Ok(DatasetCreate::Created(dataset.clone()));
        }
        match self.dataset_versioned(t, dataset.id, true).await? {
            Some((existing, _)) => Ok(DatasetCreate::AlreadyExists(existing)),
            None => Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the dataset was deleted while being created")),
        }
    }

    #[instrument(name = "storage.scylla.put_dataset", skip_all, fields(tenant = %tenant, dataset = %dataset.id))]
    async fn put_dataset(&self, tenant: TenantId, dataset: &Dataset) -> Result<bool> {
        let (t, id) = (tenant, dataset.id);
        // Whether this call holds a claim on the new name, given back if the name ends up unused.
        let mut claimed = false;
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            let Some((stored, version)) = self.dataset_versioned(t, id, attempt > 0).await? else {
                if claimed {
                    self.release_dataset_name(t, &dataset.name, id).await?;
                }
                return Ok(false);
            };
            if stored.modified_at > dataset.modified_at || stored == *dataset {
                if claimed && stored.name != dataset.name {
                    self.release_dataset_name(t, &dataset.name, id).await?;
                }
                return Ok(true);
            }
            let renamed = stored.name != dataset.name;
            if renamed && !claimed {
                if self.claim_dataset_name(t, &dataset.name, id).await?.is_some() {
                    return Err(StorageError::new(
                        StorageErrorKind::Conflict,
                        format!("a dataset named {:?} already exists", dataset.name),
                    ));
                }
                claimed = true;
            }
            self.enter_rules(t, dataset).await?;
            let values =
                UpdateDataset { tenant: t.0, dataset_id: id.0, body: enc(dataset), version: version + 1, expected_version: version };
            // A timeout is returned, not retried: the caller's retry is a put like this one.
            let (applied, _) = lwt_outcome(self.exec(&UPDATE_DATASET, &values).await?, "replace dataset")?;
            if applied {
                if renamed {
                    self.release_dataset_name(t, &stored.name, id).await?;
                }
                return Ok(true);
            }
            debug!(dataset = %id, attempt, "lost a dataset compare-and-set, reading again");
        }
        Err(StorageError::new(
            StorageErrorKind::Unavailable,
            format!("scylla: dataset {id} is contended: {MAX_MERGE_ATTEMPTS} compare-and-sets lost"),
        ))
    }

    #[instrument(name = "storage.scylla.get_dataset", skip_all, fields(tenant = %tenant, dataset = %id))]
    async fn get_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<Option<Dataset>> {
        Ok(self.dataset_versioned(tenant, id, false).await?.map(|(d, _)| d))
    }

    #[instrument(name = "storage.scylla.dataset_by_name", skip_all, fields(tenant = %tenant))]
    async fn dataset_by_name(&self, tenant: TenantId, name: &str) -> Result<Option<Dataset>> {
        const WHAT: &str = "read dataset name";
        let res = self.exec(&GET_DATASET_NAME, &NameKey { tenant: tenant.0, name: name.to_string() }).await?;
        let Some((owner,)) = rows(res, WHAT)?.maybe_first_row::<(Uuid,)>().map_err(|e| internal(WHAT, e))? else { return Ok(None) };
        // A claim whose dataset is gone or renamed (an interrupted write) names nothing.
        Ok(self.get_dataset(tenant, DatasetId(owner)).await?.filter(|d| d.name == name))
    }

    #[instrument(name = "storage.scylla.list_datasets", skip_all, fields(tenant = %tenant))]
    async fn list_datasets(&self, tenant: TenantId, q: &DatasetQuery) -> Result<Vec<Dataset>> {
        let mut all: Vec<Dataset> = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_DATASETS, &TenantKey { tenant: tenant.0 }, Some(page)).await?;
            for r in rows(res, "list datasets")?.rows::<(Vec<u8>,)>().map_err(|e| internal("list datasets", e))? {
                let d: Dataset = dec("dataset", &r.map_err(|e| internal("list datasets", e))?.0)?;
                if dataset_matches(q, &d) {
                    all.push(d);
                }
            }
            match next {
                Some(s) => page = s,
                None => break,
            }
        }
        all.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id)));
        Ok(all.into_iter().skip(q.offset).take(q.limit.max(1)).collect())
    }

    #[instrument(name = "storage.scylla.delete_dataset", skip_all, fields(tenant = %tenant, dataset = %id))]
    async fn delete_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<bool> {
        let t = tenant;
        let Some(dataset) = self.get_dataset(t, id).await? else { return Ok(false) };
        // Every row below is written at a version or tag-move time: deleting one past the
        // newest of them removes them all, and keeps anything newer (see the module docs).
        let mut newest = 0i64;
        let mut scan = ExampleScan::new(ScanSpec { store: self, tenant: t, dataset: id, after: None, bodies: false }, all_shards());
        let mut locs = Vec::new();
        while let Some(h) = scan.next().await? {
            let ts = h.versions.iter().map(|v| v.as_of).max().unwrap_or(0);
            newest = newest.max(ts);
            locs.push(ExampleLocAt { tenant: t.0, example_id: h.id.0, dataset_id: id.0, write_ts: ts.saturating_add(1) });
            if locs.len() >= DELETE_CHUNK {
                self.delete_example_locs(std::mem::take(&mut locs)).await?;
            }
        }
        self.delete_example_locs(locs).await?;
        newest = newest.max(self.dataset_versions(t, id).await?.into_iter().max().unwrap_or(0));
        newest = newest.max(self.dataset_tags(t, id).await?.into_iter().map(|(_, _, moved_at)| moved_at).max().unwrap_or(0));
        let write_ts = newest.saturating_add(1);
        futures::stream::iter(all_shards())
            .map(|shard| async move {
                self.exec(&DELETE_EXAMPLE_SHARD, &ExampleShardAt { tenant: t.0, dataset_id: id.0, shard, write_ts }).await
            })
            .buffer_unordered(FANOUT)
            .try_collect::<Vec<_>>()
            .await?;
        let key_at = DatasetKeyAt { tenant: t.0, dataset_id: id.0, write_ts };
        futures::try_join!(self.exec(&DELETE_DATASET_VERSIONS, &key_at), self.exec(&DELETE_DATASET_TAGS, &key_at))?;
        let (deleted, _) = lwt_outcome(self.exec(&DELETE_DATASET, &DatasetKey { tenant: t.0, dataset_id: id.0 }).await?, "delete dataset")?;
        self.release_dataset_name(t, &dataset.name, id).await?;
        self.exec(&DELETE_DATASET_RULES, &DatasetRulesRow { scope: RULES.into(), tenant: t.0, dataset_id: id.0 }).await?;
        Ok(deleted)
    }

    #[instrument(name = "storage.scylla.datasets_with_rules", skip_all)]
    async fn datasets_with_rules(&self) -> Result<Vec<(TenantId, Dataset)>> {
        let mut keys = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_DATASET_RULES, &ScopeKey { scope: RULES.into() }, Some(page)).await?;
            for r in rows(res, "list datasets with rules")?.rows::<(Uuid, Uuid)>().map_err(|e| internal("list datasets with rules", e))? {
                let (t, d) = r.map_err(|e| internal("list datasets with rules", e))?;
                keys.push((TenantId(t), DatasetId(d)));
            }
            match next {
                Some(s) => page = s,
                None => break,
            }
        }
        let datasets: Vec<_> = futures::stream::iter(keys)
            .map(|(t, d)| async move { self.get_dataset(t, d).await.map(|d| d.map(|d| (t, d))) })
            .buffered(FANOUT)
            .try_collect()
            .await?;
        Ok(datasets.into_iter().flatten().filter(|(_, d)| !d.rules.is_empty()).collect())
    }

    #[instrument(name = "storage.scylla.apply_example_changes", skip_all, fields(tenant = %tenant, dataset = %dataset, changes = changes.len()))]
    async fn apply_example_changes(&self, tenant: TenantId, dataset: DatasetId, as_of: Timestamp, changes: &[ExampleChange]) -> Result<()> {
        let (t, d, write_ts) = (tenant.0, dataset.0, as_of.micros());
        let rows: Vec<(ExampleVersionRow, ExampleLocAt)> = last_per_example(changes)
            .into_iter()
            .map(|change| {
                let id = change.id();
                let version = ExampleVersionRow {
                    tenant: t,
                    dataset_id: d,
                    shard: shard_of(id),
                    example_id: id.as_bytes().to_vec(),
                    as_of: write_ts,
                    present: matches!(change, ExampleChange::Put(_)),
                    body: enc(change),
                    write_ts,
                };
                (version, ExampleLocAt { tenant: t, example_id: id.0, dataset_id: d, write_ts })
            })
            .collect();
        futures::stream::iter(rows)
            .map(|(version, loc)| async move {
                futures::try_join!(self.exec(&INSERT_EXAMPLE_VERSION, &version), self.exec(&INSERT_EXAMPLE_LOC, &loc)).map(|_| ())
            })
            .buffer_unordered(FANOUT)
            .try_collect::<Vec<()>>()
            .await?;
        // Listed last: a version that is listed has all its examples written.
        self.exec(&INSERT_DATASET_VERSION, &DatasetVersionRow { tenant: t, dataset_id: d, as_of: write_ts, write_ts }).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.list_examples", skip_all, fields(tenant = %tenant, dataset = %dataset, limit = q.limit))]
    async fn list_examples(&self, tenant: TenantId, dataset: DatasetId, q: &ExampleQuery) -> Result<Vec<Example>> {
        let (t, d) = (tenant, dataset);
        let mut page = Page::new(q.offset, q.limit);
        if !q.ids.is_empty() {
            let mut ids = q.ids.clone();
            ids.sort();
            ids.dedup();
            ids.retain(|id| q.after.is_none_or(|a| *id > a));
            let mut histories = futures::stream::iter(ids).map(|id| self.example_history(t, d, id)).buffered(FANOUT);
            while let Some(h) = histories.try_next().await? {
                let Some(e) = h.at(q.as_of).map(example_of).transpose()?.flatten() else { continue };
                if example_matches(&e, q) && !page.push(e) {
                    break;
                }
            }
            return Ok(page.out);
        }
        let on_content = !q.splits.is_empty() || q.metadata.as_ref().is_some_and(|m| !m.is_empty());
        let spec = ScanSpec { store: self, tenant: t, dataset: d, after: q.after, bodies: on_content };
        let mut scan = ExampleScan::new(spec, all_shards());
        if on_content {
            while let Some(h) = scan.next().await? {
                let Some(e) = h.at(q.as_of).map(example_of).transpose()?.flatten() else { continue };
                if example_matches(&e, q) && !page.push(e) {
                    break;
                }
            }
            return Ok(page.out);
        }
        // No condition on content: find the page by keys, then read only its bodies.
        let mut keys = Page::new(q.offset, q.limit);
        while let Some(h) = scan.next().await? {
            if let Some(v) = h.at(q.as_of) {
                if !keys.push((h.id, v.as_of)) {
                    break;
                }
            }
        }
        let examples: Vec<Option<Example>> =
            futures::stream::iter(keys.out).map(|(id, as_of)| self.example_version(t, d, id, as_of)).buffered(FANOUT).try_collect().await?;
        Ok(examples.into_iter().flatten().collect())
    }

    #[instrument(name = "storage.scylla.count_examples", skip_all, fields(tenant = %tenant, dataset = %dataset))]
    async fn count_examples(&self, tenant: TenantId, dataset: DatasetId, as_of: Option<Timestamp>) -> Result<u64> {
        let spec = ScanSpec { store: self, tenant, dataset, after: None, bodies: false };
        // Shards hold disjoint examples: counted apart, in parallel.
        let counts: Vec<u64> = futures::stream::iter(all_shards())
            .map(|shard| async move {
                let mut scan = ExampleScan::new(spec, [shard]);
                let mut n = 0;
                while let Some(h) = scan.next().await? {
                    n += u64::from(h.at(as_of).is_some());
                }
                Ok::<_, StorageError>(n)
            })
            .buffer_unordered(usize::from(SHARDS))
            .try_collect()
            .await?;
        Ok(counts.into_iter().sum())
    }

    #[instrument(name = "storage.scylla.get_example", skip_all, fields(tenant = %tenant, example = %id))]
    async fn get_example(&self, tenant: TenantId, id: ExampleId, as_of: Option<Timestamp>) -> Result<Option<Example>> {
        const WHAT: &str = "read example location";
        let res = self.exec(&GET_EXAMPLE_LOC, &ExampleLocKey { tenant: tenant.0, example_id: id.0 }).await?;
        let datasets = rows(res, WHAT)?
            .rows::<(Uuid,)>()
            .map_err(|e| internal(WHAT, e))?
            .map(|r| r.map(|(d,)| DatasetId(d)).map_err(|e| internal(WHAT, e)))
            .collect::<Result<Vec<_>>>()?;
        for d in datasets {
            let h = self.example_history(tenant, d, id).await?;
            if let Some(e) = h.at(as_of).map(example_of).transpose()?.flatten() {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    #[instrument(name = "storage.scylla.list_versions", skip_all, fields(tenant = %tenant, dataset = %dataset))]
    async fn list_versions(&self, tenant: TenantId, dataset: DatasetId) -> Result<Vec<Timestamp>> {
        let mut versions = self.dataset_versions(tenant, dataset).await?;
        versions.sort_unstable_by(|a, b| b.cmp(a));
        versions.dedup();
        Ok(versions.into_iter().map(Timestamp).collect())
    }

    #[instrument(name = "storage.scylla.set_tag", skip_all, fields(tenant = %tenant, dataset = %dataset))]
    async fn set_tag(&self, tenant: TenantId, dataset: DatasetId, tag: &str, as_of: Timestamp, at: Timestamp) -> Result<()> {
        let values = DatasetTagRow {
            tenant: tenant.0,
            dataset_id: dataset.0,
            tag: tag.to_string(),
            as_of: as_of.micros(),
            moved_at: at.micros(),
            write_ts: at.micros(),
        };
        self.exec(&SET_DATASET_TAG, &values).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.tags", skip_all, fields(tenant = %tenant, dataset = %dataset))]
    async fn tags(&self, tenant: TenantId, dataset: DatasetId) -> Result<Vec<(String, Timestamp)>> {
        let mut tags: Vec<(String, Timestamp)> =
            self.dataset_tags(tenant, dataset).await?.into_iter().map(|(tag, as_of, _)| (tag, Timestamp(as_of))).collect();
        tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(tags)
    }

    #[instrument(name = "storage.scylla.put_blob", skip_all, fields(tenant = %tenant, bytes = bytes.len()))]
    async fn put_blob(&self, tenant: TenantId, sha256: &str, bytes: &[u8]) -> Result<()> {
        self.exec(&INSERT_BLOB, &BlobRow { tenant: tenant.0, sha256: sha256.to_string(), data: bytes.to_vec() }).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.get_blob", skip_all, fields(tenant = %tenant))]
    async fn get_blob(&self, tenant: TenantId, sha256: &str) -> Result<Option<Vec<u8>>> {
        let res = self.exec(&GET_BLOB, &BlobKey { tenant: tenant.0, sha256: sha256.to_string() }).await?;
        Ok(rows(res, "read blob")?.maybe_first_row::<(Vec<u8>,)>().map_err(|e| internal("read blob", e))?.map(|(b,)| b))
    }

    #[instrument(name = "storage.scylla.put_curation_job", skip_all, fields(tenant = %tenant, job = %job.id))]
    async fn put_curation_job(&self, tenant: TenantId, job: &CurationJob) -> Result<()> {
        let values = CurationJobRow { tenant: tenant.0, job_id: job.id, body: enc(job), write_ts: job_write_ts() };
        self.exec(&PUT_CURATION_JOB, &values).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.get_curation_job", skip_all, fields(tenant = %tenant, job = %id))]
    async fn get_curation_job(&self, tenant: TenantId, id: Uuid) -> Result<Option<CurationJob>> {
        let res = self.exec(&GET_CURATION_JOB, &CurationJobKey { tenant: tenant.0, job_id: id }).await?;
        match rows(res, "read curation job")?.maybe_first_row::<(Vec<u8>,)>().map_err(|e| internal("read curation job", e))? {
            Some((body,)) => Ok(Some(dec("curation job", &body)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn version(as_of: i64, present: bool) -> Version {
        Version { as_of, present, body: None }
    }

    fn example(n: u128, split: &str) -> Example {
        Example {
            id: ExampleId(Uuid::from_u128(n)),
            dataset_id: DatasetId(Uuid::nil()),
            inputs: RawJson::from_value(&json!({"q": n as u64})),
            outputs: None,
            metadata: RawJson::from_value(&json!({"dataset_split": [split], "n": n as u64})),
            source_run_id: None,
            attachments: Vec::new(),
            created_at: Timestamp(1),
            modified_at: Timestamp(1),
        }
    }

    #[test]
    fn a_history_reads_as_of_its_newest_version_at_or_before() {
        // In any order: readers must not rely on the clustering order of versions.
        let h = History { id: ExampleId(Uuid::nil()), versions: vec![version(30, false), version(10, true), version(20, true)] };
        assert_eq!(h.at(Some(Timestamp(9))), None, "not there yet");
        assert_eq!(h.at(Some(Timestamp(10))).map(|v| v.as_of), Some(10));
        assert_eq!(h.at(Some(Timestamp(29))).map(|v| v.as_of), Some(20));
        assert_eq!(h.at(Some(Timestamp(30))), None, "deleted then");
        assert_eq!(h.at(None), None, "deleted now");
        let back = History { versions: vec![version(40, true), version(30, false)], ..h };
        assert_eq!(back.at(None).map(|v| v.as_of), Some(40), "written again after the delete");
    }

    #[test]
    fn versions_decode_to_the_example_they_wrote() {
        let e = example(7, "test");
        let put = Version { as_of: 1, present: true, body: Some(enc(&ExampleChange::Put(e.clone()))) };
        assert_eq!(example_of(&put).unwrap(), Some(e.clone()));
        let delete = Version { as_of: 2, present: false, body: Some(enc(&ExampleChange::Delete(e.id))) };
        assert_eq!(example_of(&delete).unwrap(), None);
        let corrupt = Version { as_of: 3, present: true, body: Some(vec![0xc1]) };
        assert_eq!(example_of(&corrupt).unwrap_err().kind, StorageErrorKind::Internal, "bad data is an error, not a panic");
        assert_eq!(example_id(vec![1, 2, 3]).unwrap_err().kind, StorageErrorKind::Internal);
    }

    #[test]
    fn the_last_change_of_an_example_in_a_version_wins() {
        let (a, b) = (example(1, "base"), example(2, "base"));
        let mut a2 = a.clone();
        a2.inputs = RawJson::from_value(&json!({"q": "edited"}));
        let changes =
            vec![ExampleChange::Put(a), ExampleChange::Put(b.clone()), ExampleChange::Put(a2.clone()), ExampleChange::Delete(b.id)];
        let kept: Vec<_> = last_per_example(&changes).into_iter().cloned().collect();
        assert_eq!(kept, [ExampleChange::Put(a2), ExampleChange::Delete(b.id)]);
    }

    #[test]
    fn examples_match_splits_and_metadata() {
        let e = example(7, "test");
        assert!(example_matches(&e, &ExampleQuery::default()));
        assert!(example_matches(&e, &ExampleQuery { splits: vec!["train".into(), "test".into()], ..Default::default() }));
        assert!(!example_matches(&e, &ExampleQuery { splits: vec!["train".into()], ..Default::default() }));
        let md = |v: Value| Some(v.as_object().unwrap().clone());
        assert!(example_matches(&e, &ExampleQuery { metadata: md(json!({"n": 7})), ..Default::default() }));
        assert!(!example_matches(&e, &ExampleQuery { metadata: md(json!({"n": 8})), ..Default::default() }));
    }

    #[test]
    fn datasets_match_queries() {
        let d = Dataset {
            id: DatasetId(Uuid::now_v7()),
            name: "Golden Set".into(),
            description: None,
            data_type: sextant_core::dataset::DataType::Kv,
            inputs_schema: None,
            outputs_schema: None,
            transformations: None,
            metadata: Some(RawJson::from_value(&json!({"team": "support"}))),
            created_at: Timestamp(1),
            modified_at: Timestamp(1),
            rules: Vec::new(),
            evaluators: Vec::new(),
        };
        assert!(dataset_matches(&DatasetQuery::default(), &d));
        assert!(dataset_matches(&DatasetQuery { name_contains: Some("golden".into()), ..Default::default() }, &d));
        assert!(!dataset_matches(&DatasetQuery { name: Some("golden set".into()), ..Default::default() }, &d), "exact name");
        assert!(!dataset_matches(&DatasetQuery { data_type: Some(sextant_core::dataset::DataType::Chat), ..Default::default() }, &d));
        let md = |v: Value| Some(v.as_object().unwrap().clone());
        assert!(dataset_matches(&DatasetQuery { metadata: md(json!({"team": "support"})), ..Default::default() }, &d));
        assert!(!dataset_matches(&DatasetQuery { metadata: md(json!({"team": "sales"})), ..Default::default() }, &d));
        let bare = Dataset { metadata: None, ..d };
        assert!(!dataset_matches(&DatasetQuery { metadata: md(json!({"team": "support"})), ..Default::default() }, &bare));
    }

    #[test]
    fn pages_skip_the_offset_and_stop_at_the_limit() {
        let mut p = Page::new(2, 3);
        let more: Vec<bool> = (0..6).map(|i| p.push(i)).collect();
        assert_eq!(p.out, [2, 3, 4]);
        assert_eq!(more, [true, true, true, true, false, false]);
        let mut p = Page::new(0, 0);
        assert!(!p.push(1), "a limit of 0 is a page of 1, as everywhere in the adapter");
    }

    #[test]
    fn shards_cover_every_example() {
        let shards: std::collections::HashSet<i32> = (0..1000).map(|_| shard_of(ExampleId(Uuid::now_v7()))).collect();
        assert_eq!(shards.len(), usize::from(SHARDS), "UUIDv7 ids spread over every shard");
        assert!((0..256u128).map(|n| shard_of(ExampleId(Uuid::from_u128(n)))).all(|s| all_shards().contains(&s)));
    }

    #[test]
    fn job_writes_are_ordered_within_the_process() {
        let a = job_write_ts();
        let b = job_write_ts();
        assert!(b > a);
        assert!(a >= now_us() - 1_000_000);
    }
}
