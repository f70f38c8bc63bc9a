//! The ingest service's REST layer: LangSmith's routes (spec §1–§6) over [`Ingest`].
//! Served at `/` and under `/api/v1`, as the SDK addresses both forms.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use sextant_auth::Authenticator;
use sextant_core::{FragmentKind, Project, ProjectId, ProjectPatch, RunId, TenantId, Timestamp, WireTime};
use sextant_events::{Envelope, Event, FeedbackPartReceivedV1};
use sextant_proto::http::{read_body, require_principal, Caller, QueryParams};
use sextant_proto::ApiError;
use sextant_storage::ProjectQuery;

use crate::core::{Ingest, RunQueryRequest};
use crate::multipart;
use crate::signing::UrlSigner;
use crate::view::{project_json, RunJson, Select};
use crate::wire::{parse_json, WireBatch, WireRun};

#[derive(Clone)]
pub struct HttpState {
    pub ingest: Arc<Ingest>,
    pub signer: UrlSigner,
    pub bus: Arc<dyn sextant_bus::EventBus>,
}

/// Routes that need an API key, mounted at `/` and `/api/v1`; plus the public attachment
/// route (authorised by its signature).
pub fn router(state: HttpState, auth: Arc<Authenticator>) -> Router {
    let api = Router::new()
        .route("/settings", get(settings))
        .route("/runs/multipart", post(runs_multipart))
        .route("/runs/batch", post(runs_batch))
        .route("/runs", post(create_run))
        .route("/runs/query", post(query_runs))
        .route("/runs/stats", post(run_stats))
        .route("/runs/{id}", get(read_run).patch(update_run))
        .route("/sessions", get(list_sessions).post(create_session))
        .route("/sessions/{id}", get(read_session).patch(update_session).delete(delete_session))
        .merge(crate::shares::routes())
        .route_layer(middleware::from_fn_with_state(auth.clone(), require_principal))
        .route("/info", get(info))
        .with_state(state.clone());
    let v2 = crate::v2::routes()
        .merge(crate::threads::routes())
        .merge(crate::shares::v2_routes())
        .route_layer(middleware::from_fn_with_state(auth, require_principal))
        .merge(crate::shares::v2_public_routes())
        .with_state(state.clone());
    let public = Router::new().route("/public/attachments/{tenant}/{run}/{name}", get(download_attachment)).with_state(state.clone());
    // Shared-run links are read by whoever holds the token, at `/` and `/api/v1` like the API.
    let shared = crate::shares::public_routes().with_state(state);
    Router::new().merge(api.clone()).nest("/api/v1", api).nest("/api/v2", v2).merge(public).merge(shared.clone()).nest("/api/v1", shared)
}

/// The LangSmith version the SDKs compare against when they use a newer API (they warn below
/// it). 0.16.0 is the one whose v2 endpoints this server implements (`/api/v2/runs`,
/// `/api/v2/traces`); newer ones (0.16.14's generated annotation-queue client, 0.18's
/// sessions) are not claimed.
const LANGSMITH_API_VERSION: &str = "0.16.0";

/// `/info`: what the SDKs read to choose endpoints and batch limits. Every flag is true only
/// when the feature exists here; `sdb_query_enabled` stays false so the SDKs keep their v1
/// query paths (the v2 ones also work, for clients that call them directly).
async fn info() -> Json<Value> {
    Json(json!({
        "version": LANGSMITH_API_VERSION,
        "sextant_version": env!("CARGO_PKG_VERSION"),
        "license_expiration_time": null,
        "batch_ingest_config": {
            "use_multipart_endpoint": true,
            "scale_up_qsize_trigger": 1000,
            "scale_up_nthreads_limit": 16,
            "scale_down_nempty_trigger": 4,
            "size_limit": 100,
            "size_limit_bytes": 20_971_520
        },
        "instance_flags": {
            "zstd_compression_enabled": true,
            "gzip_body_enabled": true,
            "ch_query_enabled": true,
            "sdb_query_enabled": false,
            "dataset_examples_multipart_enabled": true,
            "examples_multipart_enabled": false
        }
    }))
}

async fn settings(Caller(p): Caller) -> Json<Value> {
    Json(json!({
        "id": p.tenant,
        "display_name": "Sextant",
        "created_at": Timestamp(0).to_iso(),
        // The prompt hub's owner for this tenant (`owner/prompt`): the SDKs compare it with
        // the owner of an identifier, and need one to make a prompt public.
        "tenant_handle": sextant_core::prompt::tenant_handle(p.tenant)
    }))
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn runs_multipart(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let limits = &s.ingest.limits;
    let raw = read_body(&headers, body, limits.max_body_bytes).await?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    // `decoded` holds its share of the decode budget until the request is done.
    let decoded = crate::decode::decode_body(encoding, raw, limits.max_decoded_bytes, &s.ingest.decode_budget).await?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let parsed = multipart::parse(ct, decoded.bytes.clone(), limits.max_parts).await?;
    let feedback: Vec<Envelope> = parsed
        .feedback
        .into_iter()
        .map(|(id, bytes)| {
            let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::unprocessable(format!("part feedback.{id}: not UTF-8")))?;
            let json = sextant_core::RawJson::parse_body(text).map_err(|e| ApiError::unprocessable(format!("part feedback.{id}: {e}")))?;
            // Checked now, with the rules the feedback projector applies, so the client hears
            // about bad feedback instead of the event being dead-lettered later.
            let doc = json.to_value().map_err(|e| ApiError::unprocessable(format!("part feedback.{id}: {e}")))?;
            sextant_core::Feedback::from_wire(&doc, sextant_core::FeedbackId(id), Timestamp::now())
                .map_err(|e| ApiError::unprocessable(format!("part feedback.{id}: {}", e.0)))?;
            Ok(Envelope::new(p.tenant, Event::FeedbackPartReceivedV1(FeedbackPartReceivedV1 { feedback_id: id, json })))
        })
        .collect::<Result<_, ApiError>>()?;
    // Runs and feedback in one publish, after every part was checked.
    s.ingest.ingest_with(p.tenant, parsed.fragments, feedback).await?;
    metrics::counter!("sextant_ingest_requests_total", "path" => "multipart").increment(1);
    Ok(accepted())
}

async fn runs_batch(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, s.ingest.limits.max_body_bytes).await?;
    let batch: WireBatch = parse_json("body", &raw)?;
    let mut fragments = Vec::new();
    for (kind, label, runs) in [(FragmentKind::Post, "post", batch.post), (FragmentKind::Patch, "patch", batch.patch)] {
        for (i, run) in runs.unwrap_or_default().into_iter().enumerate() {
            fragments.push(run.into_fragment(kind, &format!("{label}[{i}]"), None)?);
        }
    }
    if !fragments.is_empty() {
        s.ingest.ingest(p.tenant, fragments).await?;
    }
    metrics::counter!("sextant_ingest_requests_total", "path" => "batch").increment(1);
    Ok(accepted())
}

async fn create_run(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, s.ingest.limits.max_body_bytes).await?;
    let run: WireRun = parse_json("body", &raw)?;
    let fragment = run.into_fragment(FragmentKind::Post, "run", None)?;
    s.ingest.ingest(p.tenant, vec![fragment]).await?;
    Ok(accepted())
}

async fn update_run(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_run_id(&id)?;
    let raw = read_body(&headers, body, s.ingest.limits.max_body_bytes).await?;
    let run: WireRun = parse_json("body", &raw)?;
    let fragment = run.into_fragment(FragmentKind::Patch, "run", Some(id))?;
    s.ingest.ingest(p.tenant, vec![fragment]).await?;
    Ok(accepted())
}

fn parse_run_id(s: &str) -> Result<RunId, ApiError> {
    s.parse().map_err(|_| ApiError::unprocessable(format!("{:?} is not a run id (UUID)", sextant_proto::truncate(s))))
}

fn parse_project_id(s: &str) -> Result<ProjectId, ApiError> {
    s.parse().map_err(|_| ApiError::unprocessable(format!("{:?} is not a project id (UUID)", sextant_proto::truncate(s))))
}

async fn read_run(State(s): State<HttpState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = s.ingest.get_run(p.tenant, parse_run_id(&id)?).await?;
    let select = Select::all();
    let stats = s.ingest.run_feedback_stats(p.tenant, &[run.id]).await?;
    Ok(Json(RunJson { run: &run, tenant: p.tenant, select: &select, signer: &s.signer, feedback_stats: stats.get(&run.id) })
        .into_response())
}

/// Accepts a single value or a list (the SDK sends `session_id` as either).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct QueryBody {
    #[serde(default)]
    session: Option<OneOrMany>,
    #[serde(default)]
    session_id: Option<OneOrMany>,
    #[serde(default)]
    id: Option<Vec<String>>,
    #[serde(default)]
    trace: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    parent_run: Option<String>,
    #[serde(default)]
    is_root: Option<bool>,
    #[serde(default)]
    run_type: Option<String>,
    #[serde(default)]
    error: Option<bool>,
    #[serde(default)]
    reference_example: Option<OneOrMany>,
    #[serde(default)]
    start_time: Option<WireTime>,
    #[serde(default)]
    end_time: Option<WireTime>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    trace_filter: Option<String>,
    #[serde(default)]
    tree_filter: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    select: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    /// Legacy: `1` selects top-level runs (the only value LangSmith accepts).
    #[serde(default)]
    execution_order: Option<i64>,
    /// `"desc"` (newest first, the default) or `"asc"`.
    #[serde(default)]
    order: Option<String>,
}

fn uuids(field: &str, values: Vec<String>) -> Result<Vec<uuid::Uuid>, ApiError> {
    values
        .iter()
        .map(|v| {
            uuid::Uuid::parse_str(v)
                .map_err(|_| ApiError::unprocessable(format!("{field}: {:?} is not a UUID", sextant_proto::truncate(v))))
        })
        .collect()
}

fn one_uuid(field: &str, v: Option<String>) -> Result<Option<uuid::Uuid>, ApiError> {
    Ok(uuids(field, v.into_iter().collect())?.pop())
}

fn time(field: &str, v: Option<WireTime>) -> Result<Option<Timestamp>, ApiError> {
    v.map(|t| t.to_timestamp().map_err(|e| ApiError::unprocessable(format!("{field}: {e}")))).transpose()
}

/// The conditions of a `/runs/query` or `/runs/stats` body (not `select`), validated.
fn query_request(b: QueryBody) -> Result<RunQueryRequest, ApiError> {
    let mut projects = Vec::new();
    for v in [b.session, b.session_id].into_iter().flatten() {
        projects.extend(uuids("session", v.into_vec())?.into_iter().map(ProjectId));
    }
    let limit = match b.limit {
        None => None,
        Some(l) if l >= 1 => Some(l as usize),
        Some(l) => return Err(ApiError::unprocessable(format!("limit must be positive, got {l}"))),
    };
    let mut req = RunQueryRequest {
        projects,
        ids: b.id.map(|ids| uuids("id", ids)).transpose()?.map(|v| v.into_iter().map(RunId).collect()),
        trace: one_uuid("trace", b.trace.or(b.trace_id))?.map(RunId),
        parent_run: one_uuid("parent_run", b.parent_run)?.map(RunId),
        is_root: b.is_root,
        run_type: b.run_type,
        error: b.error,
        reference_examples: b.reference_example.map(|r| uuids("reference_example", r.into_vec())).transpose()?.unwrap_or_default(),
        start_time: time("start_time", b.start_time)?,
        end_time: time("end_time", b.end_time)?,
        filter: b.filter,
        trace_filter: b.trace_filter,
        tree_filter: b.tree_filter,
        query: b.query,
        limit,
        cursor: b.cursor,
    };
    match b.execution_order {
        None => {}
        // A root is the first run of its trace; asking for roots and non-roots at once
        // matches nothing, which an empty id list expresses.
        Some(1) if req.is_root == Some(false) => req.ids = Some(Vec::new()),
        Some(1) => req.is_root = Some(true),
        Some(n) => return Err(ApiError::unprocessable(format!("execution_order must be 1 (top-level runs), got {n}"))),
    }
    Ok(req)
}

/// `POST /runs/stats` (`get_run_stats`): aggregates over what the same body would query.
async fn run_stats(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let b: QueryBody = parse_json("body", &raw)?;
    let stats = s.ingest.run_stats(p.tenant, query_request(b)?).await?;
    Ok(Json(crate::view::run_stats_json(stats)).into_response())
}

async fn query_runs(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let b: QueryBody = parse_json("body", &raw)?;
    let select = Select::only(b.select.clone().unwrap_or_default());
    let ascending = match b.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => return Err(ApiError::unprocessable(format!("order must be \"asc\" or \"desc\", got {:?}", sextant_proto::truncate(o)))),
    };
    let req = query_request(b)?;
    let page = if ascending { s.ingest.query_runs_ascending(p.tenant, req).await? } else { s.ingest.query_runs(p.tenant, req).await? };
    let stats = if select.wants("feedback_stats") {
        let ids: Vec<sextant_core::RunId> = page.runs.iter().map(|r| r.id).collect();
        s.ingest.run_feedback_stats(p.tenant, &ids).await?
    } else {
        Default::default()
    };
    let runs: Vec<RunJson> = page
        .runs
        .iter()
        .map(|r| RunJson { run: r, tenant: p.tenant, select: &select, signer: &s.signer, feedback_stats: stats.get(&r.id) })
        .collect();
    // A struct, not `json!`: converting runs into a `Value` would re-parse every document.
    #[derive(serde::Serialize)]
    struct Page<'a> {
        runs: Vec<RunJson<'a>>,
        cursors: Cursors,
    }
    #[derive(serde::Serialize)]
    struct Cursors {
        next: Option<String>,
        prev: Option<String>,
    }
    Ok(Json(Page { runs, cursors: Cursors { next: page.next.map(|c| c.encode()), prev: None } }).into_response())
}

async fn download_attachment(
    State(s): State<HttpState>,
    Path((tenant, run, name)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let forbidden = || ApiError::new(sextant_proto::ErrorKind::Forbidden, "invalid or expired attachment link");
    let tenant: TenantId = tenant.parse().map_err(|_| forbidden())?;
    let run = parse_run_id(&run)?;
    let expires: i64 = q.get("expires").and_then(|e| e.parse().ok()).ok_or_else(forbidden)?;
    let sig = q.get("signature").ok_or_else(forbidden)?;
    if !s.signer.verify(tenant, run, &name, expires, sig) {
        return Err(forbidden());
    }
    let (mime, bytes) = s.ingest.attachment(tenant, run, &name).await?;
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

// ---- projects (`/sessions`) ----

fn string_field(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::unprocessable(format!("{key}: expected a string, got {other}"))),
    }
}

/// A time field of a JSON object: ISO 8601 text or an epoch number (as the JS SDK sends).
fn time_value(m: &Map<String, Value>, key: &str) -> Result<Option<Timestamp>, ApiError> {
    m.get(key).map(|v| Timestamp::from_json(v).map_err(|e| ApiError::unprocessable(format!("{key}: {e}")))).transpose().map(Option::flatten)
}

fn object_field(m: &Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(_) => Err(ApiError::unprocessable(format!("{key}: expected an object"))),
    }
}

async fn create_session(
    State(s): State<HttpState>,
    Caller(p): Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let upsert = q.bool("upsert")?.unwrap_or(false);
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let m: Map<String, Value> = parse_json("body", &raw)?;
    let name = string_field(&m, "name")?.ok_or_else(|| ApiError::unprocessable("name is required"))?;
    let id = match string_field(&m, "id")? {
        Some(id) => parse_project_id(&id)?,
        None => ProjectId(uuid::Uuid::new_v4()),
    };
    let mut project = Project::new(p.tenant, id, name);
    project.description = string_field(&m, "description")?;
    project.extra = object_field(&m, "extra")?.unwrap_or_default();
    project.reference_dataset_id = one_uuid("reference_dataset_id", string_field(&m, "reference_dataset_id")?)?;
    if let Some(t) = time_value(&m, "start_time")? {
        project.start_time = t;
    }
    project.end_time = time_value(&m, "end_time")?;
    for key in ["num_examples", "num_repetitions", "evaluator_keys", "tag_value_ids"] {
        if let Some(v) = m.get(key).filter(|v| !v.is_null()) {
            project.experiment.insert(key.into(), v.clone());
        }
    }
    let created = s.ingest.create_project(project, upsert).await?;
    Ok(Json(project_json(&created, None)).into_response())
}

async fn list_sessions(State(s): State<HttpState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let metadata = match q.get("metadata") {
        None => Map::new(),
        Some(m) => serde_json::from_str(m).map_err(|e| ApiError::unprocessable(format!("metadata: not a JSON object: {e}")))?,
    };
    let query = ProjectQuery {
        ids: q.uuids("id")?.into_iter().map(ProjectId).collect(),
        name: q.get("name").map(str::to_string),
        name_contains: q.get("name_contains").map(str::to_string),
        reference_dataset: q.uuids("reference_dataset")?,
        reference_free: q.bool("reference_free")?,
        metadata,
        offset: q.usize("offset")?.unwrap_or(0),
        limit: q.usize("limit")?.unwrap_or(100).clamp(1, 1000),
    };
    let include_stats = q.bool("include_stats")?.unwrap_or(false);
    let projects = s.ingest.list_projects(p.tenant, &query).await?;
    let mut out = Vec::with_capacity(projects.len());
    for project in &projects {
        let stats = if include_stats { Some(s.ingest.project_stats(p.tenant, project.id).await?) } else { None };
        out.push(project_json(project, stats.as_ref()));
    }
    Ok(Json(out).into_response())
}

async fn read_session(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let id = parse_project_id(&id)?;
    let project = s.ingest.get_project(p.tenant, id).await?;
    let stats = if q.bool("include_stats")?.unwrap_or(false) { Some(s.ingest.project_stats(p.tenant, id).await?) } else { None };
    Ok(Json(project_json(&project, stats.as_ref())).into_response())
}

async fn update_session(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_project_id(&id)?;
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let m: Map<String, Value> = parse_json("body", &raw)?;
    let patch = ProjectPatch {
        name: string_field(&m, "name")?,
        description: string_field(&m, "description")?,
        extra: object_field(&m, "extra")?,
        end_time: time_value(&m, "end_time")?.map(Some),
    };
    let updated = s.ingest.update_project(p.tenant, id, patch).await?;
    Ok(Json(project_json(&updated, None)).into_response())
}

async fn delete_session(State(s): State<HttpState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    s.ingest.delete_project(p.tenant, parse_project_id(&id)?).await?;
    Ok(accepted())
}
