//! The gRPC `DatasetService` (`proto/sextant/v1/datasets.proto`): a thin transport over
//! [`Datasets`], like `http.rs`. Requests become the JSON bodies REST receives, so both
//! transports share one validation; failures become statuses through [`ApiError`].

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};
use tracing::{field, instrument};

use sextant_auth::Authenticator;
use sextant_core::dataset::{CurationJob, CurationRule, DataType, DatasetVersion, RunSelection};
use sextant_core::{Dataset, DatasetId, Example, ExampleId, RawJson, TenantId};
use sextant_proto::grpc::{
    authenticate, json_text, non_empty, opt_timestamp, required_uuid, rfc3339, timestamp_to_pb, uuids, ClientErrors,
};
use sextant_proto::pb;
use sextant_proto::pb::dataset_service_server::{DatasetService, DatasetServiceServer};
use sextant_proto::{truncate, ApiError};
use sextant_storage::{DatasetQuery, ExampleQuery};

use crate::core::{Datasets, ExampleInput};
use crate::curation::selection_from_json;

/// A write of examples is at most [`crate::core::MAX_EXAMPLES_PER_WRITE`] documents.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

pub struct DatasetGrpc {
    datasets: Arc<Datasets>,
    auth: Arc<Authenticator>,
}

/// The gRPC `DatasetService` over `datasets`, authenticating with `auth`.
pub fn dataset_service(datasets: Arc<Datasets>, auth: Arc<Authenticator>) -> ClientErrors<DatasetServiceServer<DatasetGrpc>> {
    sextant_proto::tuned_server!(DatasetServiceServer::new(DatasetGrpc { datasets, auth }), MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES)
}

fn dataset_id(field: &str, v: &str) -> Result<DatasetId, ApiError> {
    required_uuid(field, v).map(DatasetId)
}

fn json_str(j: &Option<RawJson>) -> Option<String> {
    j.as_ref().map(|j| j.as_str().to_owned())
}

/// An optional `*_json` field as a JSON value in `o` (under `key`).
fn put_json(o: &mut Map<String, Value>, key: &str, field: &str, v: Option<String>) -> Result<(), ApiError> {
    if let Some(text) = v {
        o.insert(key.into(), json_text(field, &text)?);
    }
    Ok(())
}

fn selection_body(s: Option<pb::RunSelection>) -> Result<RunSelection, ApiError> {
    let s = s.ok_or_else(|| ApiError::unprocessable("selection is required"))?;
    // Times go in as the RFC 3339 text a REST body carries (exact: both keep microseconds).
    let start_time = opt_timestamp("selection.start_time", s.start_time.as_ref())?.map(rfc3339);
    let end_time = opt_timestamp("selection.end_time", s.end_time.as_ref())?.map(rfc3339);
    selection_from_json(&json!({
        "filter": s.filter,
        "project_ids": s.project_ids,
        "start_time": start_time,
        "end_time": end_time,
        "root_only": s.root_only,
    }))
}

fn selection_to_pb(s: &RunSelection) -> pb::RunSelection {
    pb::RunSelection {
        filter: s.filter.clone(),
        project_ids: s.project_ids.iter().map(ToString::to_string).collect(),
        start_time: s.start_time.map(timestamp_to_pb),
        end_time: s.end_time.map(timestamp_to_pb),
        root_only: Some(s.root_only),
    }
}

fn rule_to_pb(dataset: DatasetId, r: &CurationRule) -> pb::CurationRule {
    pb::CurationRule {
        id: r.id.to_string(),
        dataset_id: dataset.to_string(),
        selection: Some(selection_to_pb(&r.selection)),
        created_at: Some(timestamp_to_pb(r.created_at)),
    }
}

fn dataset_to_pb(d: &Dataset, example_count: u64) -> pb::Dataset {
    pb::Dataset {
        id: d.id.to_string(),
        name: d.name.clone(),
        description: d.description.clone(),
        data_type: d.data_type.as_str().to_owned(),
        inputs_schema_json: json_str(&d.inputs_schema),
        outputs_schema_json: json_str(&d.outputs_schema),
        metadata_json: json_str(&d.metadata),
        created_at: Some(timestamp_to_pb(d.created_at)),
        modified_at: Some(timestamp_to_pb(d.modified_at)),
        example_count,
        curation_rules: d.rules.iter().map(|r| rule_to_pb(d.id, r)).collect(),
    }
}

fn example_to_pb(e: &Example) -> pb::Example {
    pb::Example {
        id: e.id.to_string(),
        dataset_id: e.dataset_id.to_string(),
        inputs_json: e.inputs.as_str().to_owned(),
        outputs_json: json_str(&e.outputs),
        metadata_json: Some(e.metadata.as_str().to_owned()),
        splits: e.splits(),
        source_run_id: e.source_run_id.map(|r| r.to_string()),
        created_at: Some(timestamp_to_pb(e.created_at)),
        modified_at: Some(timestamp_to_pb(e.modified_at)),
    }
}

fn version_to_pb(v: &DatasetVersion) -> pb::DatasetVersion {
    pb::DatasetVersion { as_of: Some(timestamp_to_pb(v.as_of)), tags: v.tags.clone() }
}

fn job_to_pb(j: &CurationJob) -> pb::CurationJob {
    pb::CurationJob {
        id: j.id.to_string(),
        dataset_id: j.dataset_id.to_string(),
        state: j.state.as_str().to_owned(),
        selection: Some(selection_to_pb(&j.selection)),
        scanned: j.scanned,
        added: j.added,
        skipped_no_io: j.skipped_no_io,
        skipped_duplicate: j.skipped_duplicate,
        error: j.error.clone(),
        progress: j.progress,
        as_of: j.as_of.map(timestamp_to_pb),
        created_at: Some(timestamp_to_pb(j.created_at)),
        finished_at: j.finished_at.map(timestamp_to_pb),
    }
}

/// An example as the JSON object `POST /examples` takes.
fn example_input(i: usize, e: pb::Example) -> Result<ExampleInput, ApiError> {
    let where_ = format!("examples[{i}]");
    let mut o = Map::new();
    if !e.id.is_empty() {
        o.insert("id".into(), json!(e.id));
    }
    if e.inputs_json.is_empty() {
        return Err(ApiError::unprocessable(format!("{where_}.inputs_json is required (a JSON object)")));
    }
    o.insert("inputs".into(), json_text(&format!("{where_}.inputs_json"), &e.inputs_json)?);
    put_json(&mut o, "outputs", &format!("{where_}.outputs_json"), e.outputs_json)?;
    put_json(&mut o, "metadata", &format!("{where_}.metadata_json"), e.metadata_json)?;
    if !e.splits.is_empty() {
        o.insert("split".into(), json!(e.splits));
    }
    if let Some(r) = e.source_run_id {
        o.insert("source_run_id".into(), json!(r));
    }
    ExampleInput::from_json(&Value::Object(o), &where_).map(|(input, _)| input)
}

fn limit(v: u32, default: usize) -> usize {
    if v == 0 {
        default
    } else {
        v as usize
    }
}

impl DatasetGrpc {
    async fn with_count(&self, tenant: TenantId, d: &Dataset) -> Result<pb::Dataset, ApiError> {
        Ok(dataset_to_pb(d, self.datasets.example_count(tenant, d.id).await?))
    }
}

#[tonic::async_trait]
impl DatasetService for DatasetGrpc {
    #[instrument(name = "grpc.create_dataset", skip_all, fields(tenant = field::Empty))]
    async fn create_dataset(&self, req: Request<pb::CreateDatasetRequest>) -> Result<Response<pb::Dataset>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let mut o = Map::new();
        o.insert("name".into(), json!(r.name));
        if let Some(d) = r.description {
            o.insert("description".into(), json!(d));
        }
        if let Some(t) = r.data_type {
            o.insert("data_type".into(), json!(t));
        }
        if let Some(id) = non_empty(r.id) {
            o.insert("id".into(), json!(id));
        }
        put_json(&mut o, "inputs_schema_definition", "inputs_schema_json", r.inputs_schema_json)?;
        put_json(&mut o, "outputs_schema_definition", "outputs_schema_json", r.outputs_schema_json)?;
        put_json(&mut o, "metadata", "metadata_json", r.metadata_json)?;
        let d = self.datasets.create_dataset(p.tenant, &Value::Object(o)).await?;
        Ok(Response::new(dataset_to_pb(&d, 0)))
    }

    #[instrument(name = "grpc.get_dataset", skip_all, fields(tenant = field::Empty))]
    async fn get_dataset(&self, req: Request<pb::GetDatasetRequest>) -> Result<Response<pb::Dataset>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let d = match (r.id.is_empty(), r.name.is_empty()) {
            (false, _) => self.datasets.get_dataset(p.tenant, dataset_id("id", &r.id)?).await?,
            (true, false) => {
                let q = DatasetQuery { name: Some(r.name.clone()), limit: 1, ..Default::default() };
                self.datasets
                    .list_datasets(p.tenant, q)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| ApiError::not_found(format!("no dataset named {:?}", truncate(&r.name))))?
            }
            (true, true) => return Err(ApiError::unprocessable("id or name is required").into()),
        };
        Ok(Response::new(self.with_count(p.tenant, &d).await?))
    }

    #[instrument(name = "grpc.list_datasets", skip_all, fields(tenant = field::Empty))]
    async fn list_datasets(&self, req: Request<pb::ListDatasetsRequest>) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let data_type = match &r.data_type {
            None => None,
            Some(t) => Some(
                DataType::parse(t)
                    .ok_or_else(|| ApiError::unprocessable(format!("data_type: {:?} is not kv, llm or chat", truncate(t))))?,
            ),
        };
        let q = DatasetQuery {
            name: r.name,
            name_contains: r.name_contains,
            data_type,
            offset: r.offset as usize,
            limit: limit(r.limit, 100),
            ..Default::default()
        };
        let mut datasets = Vec::new();
        for d in self.datasets.list_datasets(p.tenant, q).await? {
            datasets.push(self.with_count(p.tenant, &d).await?);
        }
        Ok(Response::new(pb::ListDatasetsResponse { datasets }))
    }

    #[instrument(name = "grpc.delete_dataset", skip_all, fields(tenant = field::Empty))]
    async fn delete_dataset(&self, req: Request<pb::DeleteDatasetRequest>) -> Result<Response<pb::DeleteDatasetResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        self.datasets.delete_dataset(p.tenant, dataset_id("id", &req.get_ref().id)?).await?;
        Ok(Response::new(pb::DeleteDatasetResponse {}))
    }

    #[instrument(name = "grpc.create_examples", skip_all, fields(tenant = field::Empty))]
    async fn create_examples(&self, req: Request<pb::CreateExamplesRequest>) -> Result<Response<pb::CreateExamplesResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = dataset_id("dataset_id", &r.dataset_id)?;
        if r.examples.is_empty() {
            return Err(ApiError::unprocessable("examples: at least one is required").into());
        }
        let inputs = r.examples.into_iter().enumerate().map(|(i, e)| example_input(i, e)).collect::<Result<Vec<_>, _>>()?;
        let (examples, as_of) = self.datasets.create_examples(p.tenant, id, inputs).await?;
        Ok(Response::new(pb::CreateExamplesResponse {
            examples: examples.iter().map(example_to_pb).collect(),
            as_of: Some(timestamp_to_pb(as_of)),
        }))
    }

    #[instrument(name = "grpc.list_examples", skip_all, fields(tenant = field::Empty))]
    async fn list_examples(&self, req: Request<pb::ListExamplesRequest>) -> Result<Response<pb::ListExamplesResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = dataset_id("dataset_id", &r.dataset_id)?;
        let as_of = match non_empty(r.as_of) {
            Some(a) => Some(self.datasets.resolve_str(p.tenant, id, &a).await?),
            None => None,
        };
        let q = ExampleQuery {
            as_of,
            ids: uuids("ids", &r.ids)?.into_iter().map(ExampleId).collect(),
            splits: r.splits,
            offset: r.offset as usize,
            limit: limit(r.limit, 100),
            ..Default::default()
        };
        let examples = self.datasets.list_examples(p.tenant, id, q).await?;
        Ok(Response::new(pb::ListExamplesResponse { examples: examples.iter().map(example_to_pb).collect() }))
    }

    #[instrument(name = "grpc.set_tag", skip_all, fields(tenant = field::Empty))]
    async fn set_tag(&self, req: Request<pb::SetDatasetTagRequest>) -> Result<Response<pb::DatasetVersion>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = dataset_id("dataset_id", &r.dataset_id)?;
        if r.as_of.is_empty() {
            return Err(ApiError::unprocessable("as_of is required (a time or a tag)").into());
        }
        let as_of = self.datasets.resolve_str(p.tenant, id, &r.as_of).await?;
        let v = self.datasets.set_tag(p.tenant, id, &r.tag, crate::core::VersionRef::Time(as_of)).await?;
        Ok(Response::new(version_to_pb(&v)))
    }

    #[instrument(name = "grpc.list_versions", skip_all, fields(tenant = field::Empty))]
    async fn list_versions(&self, req: Request<pb::ListVersionsRequest>) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let versions = self.datasets.versions(p.tenant, dataset_id("dataset_id", &req.get_ref().dataset_id)?).await?;
        Ok(Response::new(pb::ListVersionsResponse { versions: versions.iter().map(version_to_pb).collect() }))
    }

    #[instrument(name = "grpc.diff_versions", skip_all, fields(tenant = field::Empty))]
    async fn diff_versions(&self, req: Request<pb::DiffVersionsRequest>) -> Result<Response<pb::DiffVersionsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = dataset_id("dataset_id", &r.dataset_id)?;
        for (field, v) in [("from_version", &r.from_version), ("to_version", &r.to_version)] {
            if v.is_empty() {
                return Err(ApiError::unprocessable(format!("{field} is required (a time or a tag)")).into());
            }
        }
        let from = self.datasets.resolve_str(p.tenant, id, &r.from_version).await?;
        let to = self.datasets.resolve_str(p.tenant, id, &r.to_version).await?;
        let d = self.datasets.diff(p.tenant, id, from, to).await?;
        let ids = |v: &[ExampleId]| v.iter().map(ToString::to_string).collect();
        Ok(Response::new(pb::DiffVersionsResponse {
            examples_added: ids(&d.added),
            examples_removed: ids(&d.removed),
            examples_modified: ids(&d.modified),
        }))
    }

    #[instrument(name = "grpc.start_curation", skip_all, fields(tenant = field::Empty))]
    async fn start_curation(&self, req: Request<pb::StartCurationRequest>) -> Result<Response<pb::CurationJob>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = dataset_id("dataset_id", &r.dataset_id)?;
        let job = self.datasets.start_curation(p.tenant, id, selection_body(r.selection)?).await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    #[instrument(name = "grpc.get_curation_job", skip_all, fields(tenant = field::Empty))]
    async fn get_curation_job(&self, req: Request<pb::GetCurationJobRequest>) -> Result<Response<pb::CurationJob>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.get_ref();
        let job =
            self.datasets.curation_job(p.tenant, dataset_id("dataset_id", &r.dataset_id)?, required_uuid("job_id", &r.job_id)?).await?;
        Ok(Response::new(job_to_pb(&job)))
    }

    #[instrument(name = "grpc.add_curation_rule", skip_all, fields(tenant = field::Empty))]
    async fn add_curation_rule(&self, req: Request<pb::AddCurationRuleRequest>) -> Result<Response<pb::CurationRule>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = dataset_id("dataset_id", &r.dataset_id)?;
        let rule = self.datasets.add_curation_rule(p.tenant, id, selection_body(r.selection)?).await?;
        Ok(Response::new(rule_to_pb(id, &rule)))
    }

    #[instrument(name = "grpc.delete_curation_rule", skip_all, fields(tenant = field::Empty))]
    async fn delete_curation_rule(
        &self,
        req: Request<pb::DeleteCurationRuleRequest>,
    ) -> Result<Response<pb::DeleteCurationRuleResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.get_ref();
        self.datasets
            .delete_curation_rule(p.tenant, dataset_id("dataset_id", &r.dataset_id)?, required_uuid("rule_id", &r.rule_id)?)
            .await?;
        Ok(Response::new(pb::DeleteCurationRuleResponse {}))
    }
}
