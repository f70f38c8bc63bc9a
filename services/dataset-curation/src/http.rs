//! The REST layer: the dataset and example routes the LangSmith SDK calls (spec §7), both
//! example write paths (JSON and multipart with attachments), and signed attachment downloads.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{middleware, Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use uuid::Uuid;

use sextant_auth::Authenticator;
use sextant_core::dataset::{DataType, DatasetVersion, ExampleAttachment};
use sextant_core::{Dataset, DatasetId, Example, ExampleId, RawJson, TenantId, Timestamp};
use sextant_proto::http::{json_body, read_body, require_principal, uuid_param, Caller, QueryParams};
use sextant_proto::{truncate, ApiError, ErrorKind};
use sextant_storage::{DatasetQuery, ExampleQuery};

use crate::core::{Datasets, ExampleInput, VersionRef};

/// Largest JSON body (a bulk write of examples).
const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;
/// Largest multipart body (examples with attachments).
const MAX_MULTIPART_BYTES: usize = 256 * 1024 * 1024;
const MAX_PARTS: usize = 100_000;
/// How long a signed attachment URL works.
const URL_LIFETIME_SECS: i64 = 3600;
/// Largest import file (streamed to a temporary file, never held in memory).
const MAX_IMPORT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Clone)]
pub struct DatasetState {
    pub datasets: Arc<Datasets>,
    /// Signs attachment URLs (the SDK downloads them without credentials).
    pub url_key: Arc<Vec<u8>>,
}

pub fn router(state: DatasetState, auth: Arc<Authenticator>) -> Router {
    let api = Router::new()
        .route("/datasets", post(create_dataset).get(list_datasets))
        .route("/datasets/upload", post(upload_csv))
        .route("/datasets/{id}", get(read_dataset).patch(update_dataset).delete(delete_dataset))
        .route("/datasets/{id}/tags", put(set_tag))
        .route("/datasets/{id}/versions", get(list_versions))
        .route("/datasets/{id}/version", get(read_version))
        .route("/datasets/{id}/versions/diff", get(diff_versions))
        .route("/datasets/{id}/splits", get(list_splits).put(update_splits))
        .route("/datasets/{id}/export", get(export))
        .route("/datasets/{id}/import", post(import))
        .route("/datasets/{id}/curate", post(start_curation))
        .route("/datasets/{id}/curate/{job}", get(read_curation))
        .route("/datasets/{id}/curation-rules", post(add_curation_rule).get(list_curation_rules))
        .route("/datasets/{id}/curation-rules/{rule}", axum::routing::delete(delete_curation_rule))
        .route("/examples", post(create_example).get(list_examples).delete(delete_examples))
        .route("/examples/bulk", post(create_examples_bulk).patch(update_examples_bulk))
        .route("/examples/{id}", get(read_example).patch(update_example).delete(delete_example))
        .route_layer(middleware::from_fn_with_state(auth.clone(), require_principal))
        .with_state(state.clone());
    let platform = Router::new()
        .route("/platform/datasets/{id}/examples", post(multipart_create).patch(multipart_update))
        .route("/platform/datasets/examples/delete", post(platform_delete_examples))
        .route("/platform/datasets/{id}/examples/metadata", patch(update_examples_metadata))
        .route_layer(middleware::from_fn_with_state(auth.clone(), require_principal))
        .with_state(state.clone());
    // The generated (Stainless) clients call v2 routes at the root, whatever the endpoint.
    let v2 = Router::new()
        .route("/datasets/{id}/experiment-runs", post(experiment_runs))
        .route_layer(middleware::from_fn_with_state(auth, require_principal))
        .with_state(state.clone());
    let public = Router::new().route("/public/dataset-attachments/{tenant}/{sha}", get(download)).with_state(state);
    Router::new()
        .merge(api.clone())
        .nest("/api/v1", api)
        .nest("/v1", platform.clone())
        .nest("/api/v1", platform)
        .nest("/api/v2", v2)
        .merge(public.clone())
        .nest("/api/v1", public)
}

fn dataset_id(s: &str) -> Result<DatasetId, ApiError> {
    uuid_param("dataset id", s).map(DatasetId)
}

fn raw(j: &Option<RawJson>) -> Value {
    j.as_ref().map_or(Value::Null, RawJson::to_value_or_null)
}

// ---- JSON shapes the SDK parses ----

fn dataset_json(tenant: TenantId, d: &Dataset, example_count: Option<u64>) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "data_type": d.data_type.as_str(),
        "created_at": d.created_at.to_iso(),
        "modified_at": d.modified_at.to_iso(),
        "tenant_id": tenant,
        "inputs_schema_definition": raw(&d.inputs_schema),
        "outputs_schema_definition": raw(&d.outputs_schema),
        "transformations": raw(&d.transformations),
        "metadata": raw(&d.metadata),
        "example_count": example_count,
        "session_count": 0,
    })
}

/// The MAC that authorises downloading one blob, with its content type, until `expires`.
fn url_mac(key: &[u8], tenant: TenantId, sha: &str, mime: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("dataset-attachment/{tenant}/{sha}/{mime}/{expires}").as_bytes());
    mac
}

fn sign(key: &[u8], tenant: TenantId, sha: &str, mime: &str, expires: i64) -> String {
    hex::encode(url_mac(key, tenant, sha, mime, expires).finalize().into_bytes())
}

/// What the SDK expects back from a write of several examples.
fn upsert_response(examples: &[Example], as_of: Timestamp) -> Response {
    Json(json!({"example_ids": examples.iter().map(|e| e.id).collect::<Vec<_>>(), "count": examples.len(), "as_of": as_of.to_iso()}))
        .into_response()
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn example_json(s: &DatasetState, tenant: TenantId, e: &Example) -> Value {
    let expires = Timestamp::now().millis() / 1000 + URL_LIFETIME_SECS;
    let urls: Map<String, Value> = e
        .attachments
        .iter()
        .map(|a| {
            let sig = sign(&s.url_key, tenant, &a.sha256, &a.mime_type, expires);
            let url = format!(
                "/public/dataset-attachments/{tenant}/{}?mime={}&expires={expires}&signature={sig}",
                a.sha256,
                query_escape(&a.mime_type)
            );
            (format!("attachment.{}", a.name), json!({"presigned_url": url, "mime_type": a.mime_type}))
        })
        .collect();
    json!({
        "id": e.id,
        "dataset_id": e.dataset_id,
        "inputs": e.inputs.to_value_or_null(),
        "outputs": raw(&e.outputs),
        "metadata": e.metadata.to_value_or_null(),
        "created_at": e.created_at.to_iso(),
        "modified_at": e.modified_at.to_iso(),
        "source_run_id": e.source_run_id,
        "attachment_urls": if urls.is_empty() { Value::Null } else { Value::Object(urls) },
    })
}

fn version_json(v: &DatasetVersion) -> Value {
    json!({"as_of": v.as_of.to_iso(), "tags": v.tags})
}

// ---- datasets ----

async fn create_dataset(State(s): State<DatasetState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let d = s.datasets.create_dataset(p.tenant, &body).await?;
    Ok(Json(dataset_json(p.tenant, &d, Some(0))).into_response())
}

async fn read_dataset(State(s): State<DatasetState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = dataset_id(&id)?;
    let d = s.datasets.get_dataset(p.tenant, id).await?;
    let n = s.datasets.example_count(p.tenant, id).await?;
    Ok(Json(dataset_json(p.tenant, &d, Some(n))).into_response())
}

async fn list_datasets(State(s): State<DatasetState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let metadata = match q.get("metadata") {
        None => None,
        Some(m) => Some(
            serde_json::from_str::<Map<String, Value>>(m)
                .map_err(|e| ApiError::unprocessable(format!("metadata: expected a JSON object: {e}")))?,
        ),
    };
    let data_type = match q.get("data_type") {
        None => None,
        Some(t) => Some(
            DataType::parse(t).ok_or_else(|| ApiError::unprocessable(format!("data_type: {:?} is not kv, llm or chat", truncate(t))))?,
        ),
    };
    let query = DatasetQuery {
        ids: q.uuids("id")?.into_iter().map(DatasetId).collect(),
        name: q.get("name").map(str::to_owned),
        name_contains: q.get("name_contains").map(str::to_owned),
        data_type,
        metadata,
        offset: q.usize("offset")?.unwrap_or(0),
        limit: q.usize("limit")?.unwrap_or(100),
    };
    let list = s.datasets.list_datasets(p.tenant, query).await?;
    let mut out = Vec::with_capacity(list.len());
    for d in &list {
        let n = s.datasets.example_count(p.tenant, d.id).await?;
        out.push(dataset_json(p.tenant, d, Some(n)));
    }
    Ok(Json(out).into_response())
}

async fn update_dataset(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let d = s.datasets.update_dataset(p.tenant, dataset_id(&id)?, &body).await?;
    Ok(Json(dataset_json(p.tenant, &d, None)).into_response())
}

async fn delete_dataset(State(s): State<DatasetState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    s.datasets.delete_dataset(p.tenant, dataset_id(&id)?).await?;
    Ok(Json(json!({})).into_response())
}

// ---- versions, tags, splits ----

async fn set_tag(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let id = dataset_id(&id)?;
    let tag = body.get("tag").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable("tag: required (a string)"))?;
    let as_of =
        body.get("as_of").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable("as_of: required (an ISO time or a tag)"))?;
    let as_of = s.datasets.resolve_str(p.tenant, id, as_of).await?;
    let v = s.datasets.set_tag(p.tenant, id, tag, VersionRef::Time(as_of)).await?;
    Ok(Json(version_json(&v)).into_response())
}

async fn list_versions(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let offset = q.usize("offset")?.unwrap_or(0);
    let limit = q.usize("limit")?.unwrap_or(100).clamp(1, 1000);
    let search = q.get("search");
    let versions = s.datasets.versions(p.tenant, dataset_id(&id)?).await?;
    let out: Vec<Value> = versions
        .iter()
        .filter(|v| search.is_none_or(|s| v.tags.iter().any(|t| t.contains(s))))
        .skip(offset)
        .take(limit)
        .map(version_json)
        .collect();
    Ok(Json(out).into_response())
}

async fn read_version(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let id = dataset_id(&id)?;
    let v = match (q.get("as_of"), q.get("tag")) {
        // The JS SDK passes a string `asOf` through: a tag name (or `latest`) works there too.
        (Some(a), None) if !a.trim().is_empty() && !a.trim_start().starts_with(|c: char| c.is_ascii_digit()) => {
            s.datasets.version_at(p.tenant, id, VersionRef::Tag(a.trim())).await?
        }
        (Some(a), None) => {
            let t = Timestamp::parse(a).map_err(|e| ApiError::unprocessable(format!("as_of: {e}")))?;
            s.datasets.version_at(p.tenant, id, VersionRef::Time(t)).await?
        }
        (None, Some(tag)) => s.datasets.version_at(p.tenant, id, VersionRef::Tag(tag)).await?,
        _ => return Err(ApiError::unprocessable("give exactly one of as_of and tag")),
    };
    Ok(Json(version_json(&v)).into_response())
}

async fn diff_versions(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let id = dataset_id(&id)?;
    let from = q.get("from_version").ok_or_else(|| ApiError::unprocessable("from_version: required (an ISO time or a tag)"))?;
    let to = q.get("to_version").ok_or_else(|| ApiError::unprocessable("to_version: required (an ISO time or a tag)"))?;
    let from = s.datasets.resolve_str(p.tenant, id, from).await?;
    let to = s.datasets.resolve_str(p.tenant, id, to).await?;
    let d = s.datasets.diff(p.tenant, id, from, to).await?;
    Ok(Json(json!({"examples_added": d.added, "examples_removed": d.removed, "examples_modified": d.modified})).into_response())
}

async fn list_splits(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let id = dataset_id(&id)?;
    let as_of = match q.get("as_of") {
        Some(a) => Some(s.datasets.resolve_str(p.tenant, id, a).await?),
        None => None,
    };
    Ok(Json(s.datasets.splits(p.tenant, id, as_of).await?).into_response())
}

async fn update_splits(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let split = body.get("split_name").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable("split_name: required (a string)"))?;
    let examples = uuid_list(body.get("examples"), "examples")?;
    let remove = body.get("remove").and_then(Value::as_bool).unwrap_or(false);
    s.datasets.update_splits(p.tenant, dataset_id(&id)?, split, &examples, remove).await?;
    Ok(Json(json!({})).into_response())
}

fn uuid_list(v: Option<&Value>, what: &str) -> Result<Vec<ExampleId>, ApiError> {
    let a = v.and_then(Value::as_array).ok_or_else(|| ApiError::unprocessable(format!("{what}: required (a list of example ids)")))?;
    a.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .map(ExampleId)
                .ok_or_else(|| ApiError::unprocessable(format!("{what}[{i}]: expected an example id (UUID)")))
        })
        .collect()
}

// ---- examples: JSON path ----

fn inputs_for(body: &Value, where_: &str, dataset: Option<DatasetId>) -> Result<(ExampleInput, DatasetId), ApiError> {
    let (input, d) = ExampleInput::from_json(body, where_)?;
    let d = d.or(dataset).ok_or_else(|| ApiError::unprocessable(format!("{where_}.dataset_id: required")))?;
    Ok((input, d))
}

async fn create_example(State(s): State<DatasetState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let (input, d) = inputs_for(&body, "example", None)?;
    let (mut created, _) = s.datasets.create_examples(p.tenant, d, vec![input]).await?;
    Ok(Json(example_json(&s, p.tenant, &created.remove(0))).into_response())
}

async fn create_examples_bulk(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let list = body.as_array().ok_or_else(|| ApiError::unprocessable("body: expected a list of examples"))?;
    if list.is_empty() {
        return Ok(Json(json!([])).into_response());
    }
    let mut inputs = Vec::with_capacity(list.len());
    let mut dataset = None;
    for (i, v) in list.iter().enumerate() {
        let (input, d) = inputs_for(v, &format!("examples[{i}]"), dataset)?;
        if dataset.is_some_and(|x| x != d) {
            return Err(ApiError::unprocessable(format!("examples[{i}].dataset_id: one request writes to one dataset")));
        }
        dataset = Some(d);
        inputs.push(input);
    }
    let (created, _) = s.datasets.create_examples(p.tenant, dataset.expect("non-empty"), inputs).await?;
    Ok(Json(created.iter().map(|e| example_json(&s, p.tenant, e)).collect::<Vec<_>>()).into_response())
}

async fn update_example(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let id = ExampleId(uuid_param("example id", &id)?);
    let (mut input, _) = ExampleInput::from_json(&body, "example")?;
    if input.id.is_some_and(|i| i != id) {
        return Err(ApiError::unprocessable("id: differs from the id in the path"));
    }
    input.id = Some(id);
    let (updated, _) = s.datasets.update_examples(p.tenant, vec![input]).await?;
    Ok(Json(example_json(&s, p.tenant, &updated[0])).into_response())
}

async fn update_examples_bulk(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let list = body.as_array().ok_or_else(|| ApiError::unprocessable("body: expected a list of example updates"))?;
    let updates = list
        .iter()
        .enumerate()
        .map(|(i, v)| ExampleInput::from_json(v, &format!("examples[{i}]")).map(|(u, _)| u))
        .collect::<Result<Vec<_>, _>>()?;
    let (updated, as_of) = s.datasets.update_examples(p.tenant, updates).await?;
    Ok(upsert_response(&updated, as_of))
}

async fn read_example(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let e = s.datasets.get_example(p.tenant, ExampleId(uuid_param("example id", &id)?), q.get("as_of")).await?;
    Ok(Json(example_json(&s, p.tenant, &e)).into_response())
}

async fn list_examples(State(s): State<DatasetState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let dataset = match q.get("dataset") {
        Some(d) => dataset_id(d)?,
        None => return Err(ApiError::unprocessable("dataset: required (listing examples across datasets is not supported)")),
    };
    let as_of = match q.get("as_of") {
        Some(a) => Some(s.datasets.resolve_str(p.tenant, dataset, a).await?),
        None => None,
    };
    let metadata = match q.get("metadata") {
        None => None,
        Some(m) => Some(
            serde_json::from_str::<Map<String, Value>>(m)
                .map_err(|e| ApiError::unprocessable(format!("metadata: expected a JSON object: {e}")))?,
        ),
    };
    let filter = match q.get("filter").map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => Some(crate::example_filter::ExampleFilter::parse(f)?),
        None => None,
    };
    let query = ExampleQuery {
        as_of,
        ids: q.uuids("id")?.into_iter().map(ExampleId).collect(),
        splits: q.all("splits").to_vec(),
        metadata,
        after: None,
        offset: q.usize("offset")?.unwrap_or(0),
        limit: q.usize("limit")?.unwrap_or(100),
    };
    let list = match &filter {
        Some(f) => s.datasets.list_examples_filtered(p.tenant, dataset, query, f).await?,
        None => s.datasets.list_examples(p.tenant, dataset, query).await?,
    };
    Ok(Json(list.iter().map(|e| example_json(&s, p.tenant, e)).collect::<Vec<_>>()).into_response())
}

async fn delete_example(State(s): State<DatasetState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    s.datasets.delete_examples(p.tenant, &[ExampleId(uuid_param("example id", &id)?)]).await?;
    Ok(Json(json!({})).into_response())
}

async fn delete_examples(State(s): State<DatasetState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let ids: Vec<ExampleId> = q.uuids("example_ids")?.into_iter().map(ExampleId).collect();
    s.datasets.delete_examples(p.tenant, &ids).await?;
    Ok(Json(json!({})).into_response())
}

async fn platform_delete_examples(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let ids = uuid_list(body.get("example_ids"), "example_ids")?;
    s.datasets.delete_examples(p.tenant, &ids).await?;
    Ok(Json(json!({})).into_response())
}

// ---- examples: multipart path ----

/// One example assembled from its parts.
#[derive(Default)]
struct PartsOf {
    body: Option<Value>,
    inputs: Option<Value>,
    outputs: Option<Value>,
    attachments: Vec<(String, String, Bytes)>,
    operations: Option<Value>,
}

/// The boundary of a `multipart/form-data` request, or a 415 saying what is wrong.
fn multipart_boundary(headers: &HeaderMap) -> Result<String, ApiError> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::new(ErrorKind::UnsupportedMediaType, "Content-Type multipart/form-data with a boundary is required"))?;
    multer::parse_boundary(ct).map_err(|_| {
        ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Type {:?} is not multipart/form-data with a boundary", truncate(ct)),
        )
    })
}

async fn parse_multipart(headers: &HeaderMap, body: Body) -> Result<Vec<(ExampleId, PartsOf)>, ApiError> {
    let boundary = multipart_boundary(headers)?;
    let raw = read_body(headers, body, MAX_MULTIPART_BYTES).await?;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(raw) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut order: Vec<ExampleId> = Vec::new();
    let mut parts: std::collections::HashMap<ExampleId, PartsOf> = std::collections::HashMap::new();
    let mut n = 0;
    let bad = ApiError::bad_request;
    while let Some(field) = mp.next_field().await.map_err(|e| bad(format!("malformed multipart body: {e}")))? {
        n += 1;
        if n > MAX_PARTS {
            return Err(ApiError::new(ErrorKind::PayloadTooLarge, format!("more than {MAX_PARTS} parts in one request")));
        }
        let name = field.name().map(str::to_owned).ok_or_else(|| bad(format!("part {n} has no name")))?;
        let shown = truncate(&name);
        let mime = field.content_type().map(|m| m.essence_str().to_owned()).unwrap_or_else(|| "application/octet-stream".into());
        let data = field.bytes().await.map_err(|e| bad(format!("part {shown}: {e}")))?;
        let (id_str, rest) = match name.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (name.as_str(), None),
        };
        let id = ExampleId(
            Uuid::parse_str(id_str).map_err(|_| bad(format!("part {shown}: {:?} is not an example id (UUID)", truncate(id_str))))?,
        );
        if !parts.contains_key(&id) {
            order.push(id);
        }
        let slot = parts.entry(id).or_default();
        let json = |what: &str| -> Result<Value, ApiError> {
            sextant_core::json::body_from_slice(&data).map_err(|e| match e {
                sextant_core::json::InvalidJson::Syntax(e) => {
                    ApiError::unprocessable(format!("part {shown}: {what} is not valid JSON: {e}"))
                }
                too_deep => ApiError::unprocessable(format!("part {shown}: {what}: {too_deep}")),
            })
        };
        match rest {
            None => slot.body = Some(json("the example")?),
            Some("inputs") => slot.inputs = Some(json("inputs")?),
            Some("outputs") => slot.outputs = Some(json("outputs")?),
            Some("attachments_operations") => slot.operations = Some(json("attachments_operations")?),
            Some(r) if r.starts_with("attachment.") && r.len() > "attachment.".len() => {
                slot.attachments.push((r["attachment.".len()..].to_owned(), mime, data));
            }
            Some(_) => {
                return Err(bad(format!(
                    "part {shown}: expected <id>, <id>.inputs, <id>.outputs, <id>.attachment.<name> or <id>.attachments_operations"
                )))
            }
        }
    }
    Ok(order.into_iter().map(|id| (id, parts.remove(&id).expect("inserted above"))).collect())
}

/// The examples a multipart body describes, and the attachment bytes they reference (stored
/// by the core only once the whole write is valid).
fn multipart_inputs(parsed: Vec<(ExampleId, PartsOf)>) -> Result<(Vec<ExampleInput>, Vec<Bytes>), ApiError> {
    let mut out = Vec::with_capacity(parsed.len());
    let mut blobs = Vec::new();
    for (i, (id, p)) in parsed.into_iter().enumerate() {
        let where_ = format!("example {id}");
        let mut body = match p.body {
            Some(Value::Object(o)) => o,
            Some(_) => return Err(ApiError::unprocessable(format!("{where_}: the <id> part must be a JSON object"))),
            None => Map::new(),
        };
        if body.get("use_source_run_io").and_then(Value::as_bool).unwrap_or(false) {
            return Err(ApiError::unprocessable(format!("{where_}: use_source_run_io is not supported; send inputs and outputs")));
        }
        body.insert("id".into(), json!(id));
        if let Some(v) = p.inputs {
            body.insert("inputs".into(), v);
        }
        if let Some(v) = p.outputs {
            body.insert("outputs".into(), v);
        }
        let (mut input, _) = ExampleInput::from_json(&Value::Object(body), &format!("examples[{i}]"))?;
        for (name, mime, data) in p.attachments {
            let sha = crate::core::blob_key(&data);
            input.attachments.push(ExampleAttachment { name, mime_type: mime, size: data.len() as u64, sha256: sha });
            blobs.push(data);
        }
        if let Some(ops) = p.operations {
            // `{"rename": {old: new}, "retain": [names]}`: only what is retained or renamed is
            // kept (a missing `retain` is empty, as the SDK's model defaults it).
            let (retain, rename) = attachment_operations(&ops, &where_)?;
            input.retain_attachments = Some(retain);
            input.rename_attachments = rename;
        }
        out.push(input);
    }
    Ok((out, blobs))
}

/// Attachment names to retain, and `(old, new)` renames.
type AttachmentOps = (Vec<String>, Vec<(String, String)>);

/// `attachments_operations` as `(retain, rename)`.
fn attachment_operations(ops: &Value, where_: &str) -> Result<AttachmentOps, ApiError> {
    let bad = |what: &str| ApiError::unprocessable(format!("{where_}.attachments_operations{what}"));
    let o = ops.as_object().ok_or_else(|| bad(": expected an object with rename and retain"))?;
    let retain = match o.get("retain") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(".retain: expected a list of names"))?,
        Some(_) => return Err(bad(".retain: expected a list of names")),
    };
    let rename = match o.get("rename") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| v.as_str().filter(|n| !n.is_empty()).map(|n| (k.clone(), n.to_owned())))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(".rename: expected an object of old name to new name"))?,
        Some(_) => return Err(bad(".rename: expected an object of old name to new name")),
    };
    Ok((retain, rename))
}

async fn multipart_create(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let dataset = dataset_id(&id)?;
    s.datasets.get_dataset(p.tenant, dataset).await?;
    let parsed = parse_multipart(&headers, body).await?;
    let (inputs, blobs) = multipart_inputs(parsed)?;
    let (created, as_of) = s.datasets.create_examples_with_blobs(p.tenant, dataset, inputs, blobs).await?;
    Ok(upsert_response(&created, as_of))
}

async fn multipart_update(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let dataset = dataset_id(&id)?;
    let parsed = parse_multipart(&headers, body).await?;
    let (inputs, blobs) = multipart_inputs(parsed)?;
    // Checked before anything is written: every example must be in this dataset.
    let (updated, as_of) = s.datasets.update_examples_in(p.tenant, Some(dataset), inputs, blobs).await?;
    Ok(upsert_response(&updated, as_of))
}

/// A signed attachment URL: no credentials, the signature authorises one blob for an hour.
async fn download(
    State(s): State<DatasetState>,
    Path((tenant, sha)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let tenant = TenantId(uuid_param("tenant", &tenant)?);
    let mime = q.get("mime").unwrap_or("application/octet-stream");
    let expires: i64 = q.get("expires").and_then(|e| e.parse().ok()).ok_or_else(|| ApiError::unprocessable("expires: required"))?;
    let given = q.get("signature").unwrap_or_default();
    let forbidden = || ApiError::new(ErrorKind::Forbidden, "the link is invalid or has expired");
    if expires < Timestamp::now().millis() / 1000 {
        return Err(forbidden());
    }
    let sig = hex::decode(given).map_err(|_| forbidden())?;
    url_mac(&s.url_key, tenant, &sha, mime, expires).verify_slice(&sig).map_err(|_| forbidden())?;
    let bytes = s.datasets.blob(tenant, &sha).await?;
    Ok((StatusCode::OK, [("content-type", mime.to_owned())], bytes).into_response())
}

// ---- bulk metadata, CSV upload, experiment runs ----

/// Limits of `PATCH .../examples/metadata`, as LangSmith documents them.
const MAX_METADATA_IDS: usize = 10_000;
const MAX_METADATA_OPS: usize = 50;
const MAX_ARRAY_OPS: usize = 10;
const MAX_METADATA_KEY_BYTES: usize = 255;
const MAX_ARRAY_VALUES: usize = 1000;
const MAX_SET_VALUE_BYTES: usize = 64 * 1024;

fn metadata_ops(v: Option<&Value>) -> Result<Vec<crate::core::MetadataOp>, ApiError> {
    use crate::core::MetadataOp;
    let list = v.and_then(Value::as_array).ok_or_else(|| ApiError::unprocessable("operations: required (a list of operations)"))?;
    if list.is_empty() || list.len() > MAX_METADATA_OPS {
        return Err(ApiError::unprocessable(format!("operations: 1 to {MAX_METADATA_OPS} operations")));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, op) in list.iter().enumerate() {
        let at = format!("operations[{i}]");
        let o = op.as_object().ok_or_else(|| ApiError::unprocessable(format!("{at}: expected an object")))?;
        let key = o.get("key").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable(format!("{at}.key: required (a string)")))?;
        if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES {
            return Err(ApiError::unprocessable(format!("{at}.key: 1 to {MAX_METADATA_KEY_BYTES} bytes")));
        }
        let kind = o.get("operation").and_then(Value::as_str).unwrap_or_default().to_ascii_uppercase();
        let values = || -> Result<Vec<String>, ApiError> {
            let bad = || {
                ApiError::unprocessable(format!(
                    "{at}.values: required for {kind}: up to {MAX_ARRAY_VALUES} strings of at most {MAX_METADATA_KEY_BYTES} bytes"
                ))
            };
            let a = o.get("values").and_then(Value::as_array).ok_or_else(bad)?;
            if a.len() > MAX_ARRAY_VALUES {
                return Err(bad());
            }
            a.iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty() && s.len() <= MAX_METADATA_KEY_BYTES).map(str::to_owned).ok_or_else(bad))
                .collect()
        };
        out.push(match kind.as_str() {
            "SET" => {
                let mut value = o.get("value").cloned().ok_or_else(|| ApiError::unprocessable(format!("{at}.value: required for SET")))?;
                if value.to_string().len() > MAX_SET_VALUE_BYTES {
                    return Err(ApiError::unprocessable(format!("{at}.value: larger than 64 KB")));
                }
                sextant_core::json::check_depth(&value).map_err(|e| ApiError::unprocessable(format!("{at}.value: {e}")))?;
                if key == sextant_core::dataset::SPLIT_KEY {
                    // Splits are a list of names, however they are given.
                    let names: Option<Vec<String>> = match &value {
                        Value::String(s) => Some(vec![s.clone()]),
                        Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
                        _ => None,
                    };
                    let names = names.filter(|n| !n.is_empty() && n.iter().all(|s| !s.is_empty() && s.len() <= MAX_METADATA_KEY_BYTES));
                    value = json!(names.ok_or_else(|| ApiError::unprocessable(format!(
                        "{at}.value: dataset_split takes a split name or a list of them"
                    )))?);
                }
                MetadataOp::Set { key: key.to_owned(), value }
            }
            "ARRAY_ADD" => MetadataOp::ArrayAdd { key: key.to_owned(), values: values()? },
            "ARRAY_REMOVE" => MetadataOp::ArrayRemove { key: key.to_owned(), values: values()? },
            _ => {
                return Err(ApiError::unprocessable(format!(
                    "{at}.operation: {} is not SET, ARRAY_ADD or ARRAY_REMOVE",
                    truncate(&o.get("operation").map(Value::to_string).unwrap_or_else(|| "missing".into()))
                )))
            }
        });
    }
    let arrays = out.iter().filter(|o| !matches!(o, crate::core::MetadataOp::Set { .. })).count();
    if arrays > MAX_ARRAY_OPS {
        return Err(ApiError::unprocessable(format!("operations: at most {MAX_ARRAY_OPS} array operations")));
    }
    Ok(out)
}

/// `PATCH /v1/platform/datasets/{id}/examples/metadata`: the same metadata operations on
/// many examples, one version; 207 with a status per submitted id.
async fn update_examples_metadata(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let dataset = dataset_id(&id)?;
    let ids = uuid_list(body.get("example_ids"), "example_ids")?;
    if ids.is_empty() || ids.len() > MAX_METADATA_IDS {
        return Err(ApiError::unprocessable(format!("example_ids: 1 to {MAX_METADATA_IDS} example ids")));
    }
    let ops = metadata_ops(body.get("operations"))?;
    let done = s.datasets.update_metadata(p.tenant, dataset, &ids, &ops).await?;
    let statuses: Vec<Value> = done
        .iter()
        .map(|(e, updated)| {
            if *updated {
                json!({"id": e, "status": "UPDATED"})
            } else {
                json!({"id": e, "status": "NOT_FOUND", "description": format!("example {e} is not in dataset {dataset}")})
            }
        })
        .collect();
    Ok((StatusCode::MULTI_STATUS, Json(json!({"statuses": statuses}))).into_response())
}

/// `POST /datasets/upload` (SDK `upload_csv`): multipart with the CSV `file`, repeated
/// `input_keys` and `output_keys`, `name`, `description`, `data_type` and `id`. Creates the
/// dataset and one example per row; nothing is kept unless every row is valid.
async fn upload_csv(State(s): State<DatasetState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    use crate::import::{CsvColumns, ImportFormat};
    use tokio::io::AsyncWriteExt;
    let boundary = multipart_boundary(&headers)?;
    let io = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot spool an upload to a temporary file");
        ApiError::unavailable("cannot store the upload temporarily; retry shortly")
    };
    let bad = ApiError::bad_request;
    let mut mp = multer::Multipart::new(body.into_data_stream(), boundary);
    let (mut fields, mut input_keys, mut output_keys) = (Map::new(), Vec::new(), Vec::new());
    let mut file: Option<(std::fs::File, Option<String>)> = None;
    while let Some(mut field) = mp.next_field().await.map_err(|e| bad(format!("malformed multipart body: {e}")))? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let file_name = field.file_name().map(str::to_owned);
            let tmp = tokio::task::spawn_blocking(tempfile::tempfile).await.map_err(|_| ApiError::internal())?.map_err(io)?;
            let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(tmp));
            let mut written = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| bad(format!("part file: {e}")))? {
                written += chunk.len() as u64;
                if written > MAX_IMPORT_BYTES {
                    return Err(ApiError::new(
                        ErrorKind::PayloadTooLarge,
                        format!("the file exceeds the import limit of {} GiB", MAX_IMPORT_BYTES >> 30),
                    ));
                }
                out.write_all(&chunk).await.map_err(io)?;
            }
            out.flush().await.map_err(io)?;
            let mut f = out.into_inner().into_std().await;
            std::io::Seek::rewind(&mut f).map_err(io)?;
            file = Some((f, file_name));
            continue;
        }
        let text = field.text().await.map_err(|e| bad(format!("part {}: {e}", truncate(&name))))?;
        match name.as_str() {
            "input_keys" => input_keys.push(text),
            "output_keys" => output_keys.push(text),
            "name" | "description" | "data_type" | "id" => {
                fields.insert(name, Value::String(text));
            }
            // Other form fields (future SDK options) do not change what is uploaded.
            _ => {}
        }
    }
    let (file, file_name) = file.ok_or_else(|| ApiError::unprocessable("file: required (the CSV file part)"))?;
    if input_keys.is_empty() {
        return Err(ApiError::unprocessable("input_keys: at least one column"));
    }
    if !fields.contains_key("name") {
        // As LangSmith: the dataset is named after the file.
        let n = file_name.filter(|n| !n.is_empty()).ok_or_else(|| ApiError::unprocessable("name: required (or a file name)"))?;
        fields.insert("name".into(), Value::String(n));
    }
    let d = s.datasets.create_dataset(p.tenant, &Value::Object(fields)).await?;
    let format = ImportFormat::Csv(CsvColumns { input_keys, output_keys, metadata_keys: Vec::new() });
    let report = match s.datasets.import_examples(p.tenant, d.id, file, format, true, false).await {
        Ok(r) if r.rejected == 0 => r,
        failed => {
            // All or nothing: a file that cannot be imported leaves no dataset behind.
            if let Err(e) = s.datasets.delete_dataset(p.tenant, d.id).await {
                tracing::warn!(error = %e.message, dataset = %d.id, "could not remove the dataset of a failed upload");
            }
            let r = failed?;
            let first = r.errors.first().map(|e| e.error.as_str()).unwrap_or_default();
            let mut out = r.to_json();
            out["detail"] = json!(format!("{} of {} rows are invalid; nothing was uploaded (first: {first})", r.rejected, r.rows));
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(out)).into_response());
        }
    };
    Ok(Json(dataset_json(p.tenant, &d, Some(report.imported))).into_response())
}

/// `POST /api/v2/datasets/{id}/experiment-runs`: examples with their experiment runs.
async fn experiment_runs(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use crate::experiment_runs::{run_json, ExperimentRunsQuery};
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let q = ExperimentRunsQuery::from_json(&body)?;
    let dataset = dataset_id(&id)?;
    let page = s.datasets.experiment_runs(p.tenant, dataset, &q).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|(e, runs)| {
            let mut v = example_json(&s, p.tenant, e);
            v["name"] = Value::Null;
            // RFC 3339 in the v2 shape.
            v["created_at"] = json!(format!("{}Z", e.created_at.to_iso()));
            v["modified_at"] = json!(format!("{}Z", e.modified_at.to_iso()));
            v["runs"] = runs.iter().map(|r| run_json(r, dataset, &q.selects, page.stats.get(&r.id))).collect();
            v
        })
        .collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response())
}

// ---- curation and export (Sextant extensions) ----

async fn start_curation(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let selection = crate::curation::selection_from_json(&body)?;
    let job = s.datasets.start_curation(p.tenant, dataset_id(&id)?, selection).await?;
    Ok((StatusCode::ACCEPTED, Json(crate::curation::job_json(&job))).into_response())
}

async fn read_curation(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path((id, job)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = s.datasets.curation_job(p.tenant, dataset_id(&id)?, uuid_param("job id", &job)?).await?;
    Ok(Json(crate::curation::job_json(&job)).into_response())
}

async fn add_curation_rule(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let selection = crate::curation::selection_from_json(&body)?;
    let id = dataset_id(&id)?;
    let rule = s.datasets.add_curation_rule(p.tenant, id, selection).await?;
    Ok((StatusCode::CREATED, Json(crate::rules::rule_json(id, &rule))).into_response())
}

async fn list_curation_rules(State(s): State<DatasetState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let d = s.datasets.get_dataset(p.tenant, dataset_id(&id)?).await?;
    Ok(Json(d.rules.iter().map(|r| crate::rules::rule_json(d.id, r)).collect::<Vec<_>>()).into_response())
}

async fn delete_curation_rule(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path((id, rule)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    s.datasets.delete_curation_rule(p.tenant, dataset_id(&id)?, uuid_param("rule id", &rule)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /datasets/{id}/import?format=jsonl|csv&atomic=true|false[&input_keys=a,b&output_keys=c
/// &metadata_keys=d][&ids=keep|new]`: the body is the file. Atomic (the default) writes nothing unless every
/// row is valid (422 listing the bad rows by line); partial writes the valid rows and lists the
/// rest.
async fn import(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    use crate::import::{CsvColumns, ImportFormat};
    let q = QueryParams::parse(q.as_deref());
    let id = dataset_id(&id)?;
    let keys = |k: &str| -> Vec<String> {
        q.all(k).iter().flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
    };
    let format = match q.get("format").unwrap_or("jsonl") {
        "jsonl" => ImportFormat::Jsonl,
        "csv" => ImportFormat::Csv(CsvColumns {
            input_keys: keys("input_keys"),
            output_keys: keys("output_keys"),
            metadata_keys: keys("metadata_keys"),
        }),
        other => return Err(ApiError::unprocessable(format!("format: {:?} is not jsonl or csv", truncate(other)))),
    };
    if matches!(&format, ImportFormat::Csv(c) if c.input_keys.is_empty() && !(c.output_keys.is_empty() && c.metadata_keys.is_empty())) {
        return Err(ApiError::unprocessable("input_keys: required when output_keys or metadata_keys are given"));
    }
    let atomic = q.bool("atomic")?.unwrap_or(true);
    let fresh_ids = match q.get("ids").unwrap_or("keep") {
        "keep" => false,
        "new" => true,
        other => return Err(ApiError::unprocessable(format!("ids: {:?} is not keep or new", truncate(other)))),
    };
    // Fail fast on an unknown dataset, before reading a large body.
    s.datasets.get_dataset(p.tenant, id).await?;
    let file = spool_body(body, MAX_IMPORT_BYTES).await?;
    let report = s.datasets.import_examples(p.tenant, id, file, format, atomic, fresh_ids).await?;
    let mut out = report.to_json();
    if atomic && report.rejected > 0 {
        let first = report.errors.first().map(|e| e.error.as_str()).unwrap_or_default();
        out["detail"] = json!(format!("{} of {} rows are invalid; nothing was imported (first: {first})", report.rejected, report.rows));
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(out)).into_response());
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Writes a request body to an anonymous temporary file, refusing more than `limit` bytes.
async fn spool_body(body: Body, limit: u64) -> Result<std::fs::File, ApiError> {
    use futures::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot spool an upload to a temporary file");
        ApiError::unavailable("cannot store the upload temporarily; retry shortly")
    };
    let file = tokio::task::spawn_blocking(tempfile::tempfile).await.map_err(|_| ApiError::internal())?.map_err(io)?;
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file));
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.try_next().await.map_err(|e| ApiError::bad_request(format!("could not read request body: {e}")))? {
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::new(ErrorKind::PayloadTooLarge, format!("the file exceeds the import limit of {} GiB", limit >> 30)));
        }
        out.write_all(&chunk).await.map_err(io)?;
    }
    out.flush().await.map_err(io)?;
    let mut file = out.into_inner().into_std().await;
    std::io::Seek::rewind(&mut file).map_err(io)?;
    Ok(file)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Jsonl,
    Csv,
}

/// Streams the dataset (as of a version) as JSONL or CSV, a page of examples at a time, so
/// memory stays flat however large the dataset is.
async fn export(
    State(s): State<DatasetState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let id = dataset_id(&id)?;
    let format = match q.get("format").unwrap_or("jsonl") {
        "jsonl" => Format::Jsonl,
        "csv" => Format::Csv,
        other => return Err(ApiError::unprocessable(format!("format: {:?} is not jsonl or csv", truncate(other)))),
    };
    let d = s.datasets.get_dataset(p.tenant, id).await?;
    let as_of = match q.get("as_of") {
        Some(a) => Some(s.datasets.resolve_str(p.tenant, id, a).await?),
        None => None,
    };
    let tenant = p.tenant;
    let store = s.datasets.store().clone();
    // State: (next page starts after this id, header written, finished).
    let pages = futures::stream::unfold((None::<ExampleId>, false, false), move |(after, header, done)| {
        let store = store.clone();
        async move {
            if done {
                return None;
            }
            let q = ExampleQuery { as_of, after, limit: EXPORT_PAGE, ..Default::default() };
            let page = match store.list_examples(tenant, id, &q).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "export failed mid-stream");
                    return Some((Err(std::io::Error::other("the store failed during the export")), (after, header, true)));
                }
            };
            let last = page.last().map(|e| e.id);
            let finished = page.len() < EXPORT_PAGE;
            let mut buf = Vec::with_capacity(page.len() * 256);
            match format {
                Format::Jsonl => {
                    for e in &page {
                        serde_json::to_writer(&mut buf, &export_row(e)).expect("JSON values serialise");
                        buf.push(b'\n');
                    }
                }
                Format::Csv => {
                    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(&mut buf);
                    if !header {
                        w.write_record(["id", "inputs", "outputs", "metadata", "source_run_id", "created_at", "modified_at"])
                            .expect("in memory");
                    }
                    for e in &page {
                        let outputs = e.outputs.as_ref().map_or("", |o| o.as_str());
                        let source = e.source_run_id.map(|r| r.to_string()).unwrap_or_default();
                        w.write_record([
                            e.id.to_string().as_str(),
                            e.inputs.as_str(),
                            outputs,
                            e.metadata.as_str(),
                            source.as_str(),
                            e.created_at.to_iso().as_str(),
                            e.modified_at.to_iso().as_str(),
                        ])
                        .expect("in memory");
                    }
                    w.flush().expect("in memory");
                    drop(w);
                }
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (last.or(after), true, finished)))
        }
    });
    let (ct, ext) = match format {
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let disposition = format!("attachment; filename=\"{}.{ext}\"", d.name.replace(['"', '\\', '\r', '\n'], "_"));
    Ok((StatusCode::OK, [("content-type", ct.to_owned()), ("content-disposition", disposition)], Body::from_stream(pages)).into_response())
}

const EXPORT_PAGE: usize = 1000;

fn export_row(e: &Example) -> Value {
    json!({
        "id": e.id,
        "inputs": e.inputs.as_raw(),
        "outputs": e.outputs.as_ref().map(RawJson::as_raw),
        "metadata": e.metadata.as_raw(),
        "source_run_id": e.source_run_id,
        "created_at": e.created_at.to_iso(),
        "modified_at": e.modified_at.to_iso(),
    })
}
