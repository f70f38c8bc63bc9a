//! LangSmith's v2 run API (`/api/v2/runs`, `/api/v2/traces`), which the SDKs' generated
//! clients call (`client.runs.query()`, `.retrieve()`, `client.traces.*`). It is the v1 query
//! with another vocabulary: projections are named by upper-case `selects` (only `id` when none
//! are given), enums are upper-case, pages are `{items, next_cursor}`, and the start-time window
//! defaults to the last 24 hours. The query itself is [`Ingest::query_runs`], so filters, paging
//! and tenancy behave exactly as on `/runs/query`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use sextant_core::{FeedbackStats, ProjectId, Run, RunId, Timestamp, WireTime};
use sextant_proto::http::{read_body, Caller, QueryParams};
use sextant_proto::ApiError;
use sextant_storage::ProjectQuery;

use crate::core::RunQueryRequest;
use crate::http::HttpState;
use crate::view::{RunJson, Select};
use crate::wire::parse_json;

/// How far back the start-time window reaches when the caller gives no `min_start_time`
/// (LangSmith's documented default).
const DEFAULT_WINDOW_MICROS: i64 = 24 * 3600 * 1_000_000;

/// Fields that live under `trace_aggregates` in a trace item rather than on its root run.
const TRACE_AGGREGATE_FIELDS: [&str; 3] = ["total_tokens", "total_cost", "first_token_time"];

/// The routes, relative to `/api/v2` (the caller nests them and applies authentication).
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/runs/query", post(query_runs))
        .route("/runs/{id}", get(retrieve_run))
        .route("/runs/{id}/url", get(run_url))
        .route("/traces/query", post(query_traces))
        .route("/traces/{id}/runs", get(trace_runs))
}

/// `selects` as the v2 API names them (`"TOTAL_TOKENS"`), lower-cased to field names.
#[derive(Debug, Default)]
pub(crate) struct Selects(Vec<String>);

impl Selects {
    pub(crate) fn parse(raw: &[String]) -> Result<Self, ApiError> {
        let mut out = Vec::with_capacity(raw.len() + 1);
        out.push("id".to_string());
        for s in raw {
            let name = s.to_ascii_lowercase();
            if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') || name.is_empty() || name.len() > 64 {
                return Err(ApiError::unprocessable(format!("selects: {:?} is not a run field", sextant_proto::truncate(s))));
            }
            out.push(name);
        }
        Ok(Self(out))
    }

    fn wants(&self, field: &str) -> bool {
        self.0.iter().any(|f| f == field)
    }
}

/// One run in the v2 shape, with just the selected fields.
pub(crate) fn run_v2(
    s: &HttpState,
    tenant: sextant_core::TenantId,
    run: &Run,
    selects: &Selects,
    stats: Option<&FeedbackStats>,
) -> Map<String, Value> {
    // The v1 rendering is the single source of each field's value; v2 renames and re-cases.
    let all = Select::all();
    let v1 = serde_json::to_value(RunJson { run, tenant, select: &all, signer: &s.signer, feedback_stats: stats }).unwrap_or(Value::Null);
    let Value::Object(mut v1) = v1 else { return Map::new() };
    let rfc3339 = |t: Option<Timestamp>| t.map(|t| format!("{}Z", t.to_iso()));
    let mut out = Map::new();
    for field in &selects.0 {
        let value = match field.as_str() {
            "run_type" => Value::String(run.run_type.as_deref().unwrap_or("chain").to_ascii_uppercase()),
            "status" => Value::String(run.status().as_str().to_ascii_uppercase()),
            "start_time" => json!(rfc3339(run.start_time.or(run.end_time))),
            "end_time" => json!(rfc3339(run.end_time)),
            "first_token_time" => json!(rfc3339(run.first_token_time)),
            "latency_seconds" => json!(run.latency_secs()),
            "project_id" => json!(run.project_id),
            "is_root" => json!(run.is_root()),
            "metadata" => run.metadata().map(|m| Value::Object(m.clone())).unwrap_or(Value::Null),
            "thread_id" => json!(sextant_filter::thread_id(run)),
            "error_preview" => json!(run.error.as_deref().map(preview)),
            "inputs_preview" => json!(v1.get("inputs").map(|v| preview(&v.to_string()))),
            "outputs_preview" => json!(v1.get("outputs").filter(|v| !v.is_null()).map(|v| preview(&v.to_string()))),
            "attachments" => {
                let urls: Map<String, Value> =
                    run.attachments.iter().map(|a| (a.name.clone(), json!(s.signer.attachment_url(tenant, run.id, &a.name)))).collect();
                Value::Object(urls)
            }
            "is_in_dataset" => json!(false),
            other => match v1.remove(other) {
                Some(v) => v,
                // A field Sextant does not record (manifest, price_model_id, ...) is omitted,
                // as LangSmith omits unset fields.
                None => continue,
            },
        };
        out.insert(field.clone(), value);
    }
    out
}

fn preview(text: &str) -> String {
    const MAX: usize = 280;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A UUID named by a request field, or a 422 naming the field.
pub(crate) fn uuid(field: &str, s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::unprocessable(format!("{field}: {:?} is not a UUID", sextant_proto::truncate(s))))
}

/// The v2 API's start-time window: `max_start_time` defaults to now, `min_start_time` to a day
/// before it (as LangSmith documents for runs, traces and threads).
pub(crate) fn window(min: Option<WireTime>, max: Option<WireTime>) -> Result<(Timestamp, Timestamp), ApiError> {
    let at =
        |f: &str, t: Option<WireTime>| t.map(|t| t.to_timestamp().map_err(|e| ApiError::unprocessable(format!("{f}: {e}")))).transpose();
    let max = at("max_start_time", max)?.unwrap_or_else(Timestamp::now);
    let min = at("min_start_time", min)?.unwrap_or(Timestamp(max.0.saturating_sub(DEFAULT_WINDOW_MICROS)));
    Ok((min, max))
}

fn page_size(n: Option<i64>) -> Result<Option<usize>, ApiError> {
    match n {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::unprocessable(format!("page_size must be positive, got {n}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQueryV2 {
    #[serde(default)]
    project_ids: Option<Vec<String>>,
    #[serde(default)]
    reference_dataset_id: Option<String>,
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    is_root: Option<bool>,
    #[serde(default)]
    has_error: Option<bool>,
    #[serde(default)]
    run_type: Option<String>,
    #[serde(default)]
    reference_examples: Option<Vec<String>>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    trace_filter: Option<String>,
    #[serde(default)]
    tree_filter: Option<String>,
    #[serde(default)]
    min_start_time: Option<WireTime>,
    #[serde(default)]
    max_start_time: Option<WireTime>,
    #[serde(default)]
    selects: Option<Vec<String>>,
    #[serde(default)]
    page_size: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    include_subtree_usage: Option<bool>,
    #[serde(default)]
    ai_search: Option<String>,
    #[serde(default)]
    min_feedback_modified_at: Option<WireTime>,
    #[serde(default)]
    max_feedback_modified_at: Option<WireTime>,
}

async fn query_runs(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let b: RunQueryV2 = parse_json("body", &raw)?;
    unsupported(b.ai_search.is_some(), "ai_search")?;
    unsupported(b.include_subtree_usage == Some(true), "include_subtree_usage")?;
    unsupported(b.min_feedback_modified_at.is_some() || b.max_feedback_modified_at.is_some(), "min/max_feedback_modified_at")?;
    let mut projects: Vec<ProjectId> =
        b.project_ids.unwrap_or_default().iter().map(|id| uuid("project_ids", id).map(ProjectId)).collect::<Result<_, _>>()?;
    let mut min_start = b.min_start_time;
    match (&b.reference_dataset_id, projects.is_empty()) {
        (Some(_), false) => return Err(ApiError::unprocessable("set exactly one of project_ids and reference_dataset_id")),
        (None, true) => return Err(ApiError::unprocessable("project_ids is required (or reference_dataset_id)")),
        (Some(ds), true) => {
            let q = ProjectQuery { reference_dataset: vec![uuid("reference_dataset_id", ds)?], limit: 10_000, ..Default::default() };
            let experiments = s.ingest.list_projects(p.tenant, &q).await?;
            if experiments.is_empty() {
                return Ok(Json(json!({"items": [], "next_cursor": null})).into_response());
            }
            // As documented: without a lower bound the window starts at the earliest experiment.
            if min_start.is_none() {
                min_start = experiments.iter().map(|e| e.start_time).min().map(|t| WireTime::Epoch(t.0 as f64 / 1e6));
            }
            projects = experiments.iter().map(|e| e.id).collect();
        }
        (None, false) => {}
    }
    let (min, max) = window(min_start, b.max_start_time)?;
    let selects = Selects::parse(&b.selects.unwrap_or_default())?;
    let req = RunQueryRequest {
        projects,
        ids: b.ids.map(|ids| ids.iter().map(|i| uuid("ids", i).map(RunId)).collect::<Result<_, _>>()).transpose()?,
        trace: b.trace_id.as_deref().map(|t| uuid("trace_id", t).map(RunId)).transpose()?,
        parent_run: None,
        is_root: b.is_root,
        run_type: b.run_type.map(|t| t.to_ascii_lowercase()),
        error: b.has_error,
        reference_examples: b
            .reference_examples
            .unwrap_or_default()
            .iter()
            .map(|e| uuid("reference_examples", e))
            .collect::<Result<_, _>>()?,
        start_time: Some(min),
        end_time: Some(max),
        filter: b.filter,
        trace_filter: b.trace_filter,
        tree_filter: b.tree_filter,
        query: None,
        limit: page_size(b.page_size)?,
        cursor: b.cursor,
    };
    let page = s.ingest.query_runs(p.tenant, req).await?;
    let stats = feedback_stats(&s, p.tenant, &page.runs, &selects).await?;
    let items: Vec<Value> = page.runs.iter().map(|r| Value::Object(run_v2(&s, p.tenant, r, &selects, stats.get(&r.id)))).collect();
    Ok(Json(json!({"items": items, "next_cursor": page.next.map(|c| c.encode())})).into_response())
}

fn unsupported(asked: bool, what: &str) -> Result<(), ApiError> {
    if asked {
        return Err(ApiError::new(sextant_proto::ErrorKind::NotImplemented, format!("{what} is not supported by this server")));
    }
    Ok(())
}

async fn feedback_stats(
    s: &HttpState,
    tenant: sextant_core::TenantId,
    runs: &[Run],
    selects: &Selects,
) -> Result<HashMap<RunId, FeedbackStats>, ApiError> {
    if !selects.wants("feedback_stats") {
        return Ok(HashMap::new());
    }
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    s.ingest.run_feedback_stats(tenant, &ids).await
}

/// A run that exists for the caller's tenant and belongs to `project_id` (the v2 API scopes
/// every read to a project, and a run of another project is not found).
async fn run_in_project(s: &HttpState, tenant: sextant_core::TenantId, id: &str, q: &QueryParams) -> Result<Run, ApiError> {
    let id = RunId(uuid("run_id", id)?);
    let project = q.get("project_id").ok_or_else(|| ApiError::unprocessable("project_id is required"))?;
    let project = ProjectId(uuid("project_id", project)?);
    let run = s.ingest.get_run(tenant, id).await?;
    if run.project_id != project {
        return Err(ApiError::not_found(format!("run {id} not found in project {}", project.0)));
    }
    Ok(run)
}

async fn retrieve_run(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let run = run_in_project(&s, p.tenant, &id, &q).await?;
    let selects = Selects::parse(q.all("selects"))?;
    let stats = feedback_stats(&s, p.tenant, std::slice::from_ref(&run), &selects).await?;
    Ok(Json(run_v2(&s, p.tenant, &run, &selects, stats.get(&run.id))).into_response())
}

async fn run_url(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let run = run_in_project(&s, p.tenant, &id, &q).await?;
    let selects = Selects::parse(&["APP_PATH".to_string()])?;
    let app_path = run_v2(&s, p.tenant, &run, &selects, None).remove("app_path").unwrap_or(Value::Null);
    Ok(Json(json!({"url": app_path})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceQueryV2 {
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    trace_ids: Option<Vec<String>>,
    #[serde(default)]
    trace_filter: Option<String>,
    #[serde(default)]
    tree_filter: Option<String>,
    #[serde(default)]
    min_start_time: Option<WireTime>,
    #[serde(default)]
    max_start_time: Option<WireTime>,
    #[serde(default)]
    selects: Option<Vec<String>>,
    #[serde(default)]
    page_size: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    ai_search: Option<String>,
    #[serde(default)]
    min_feedback_modified_at: Option<WireTime>,
    #[serde(default)]
    max_feedback_modified_at: Option<WireTime>,
}

async fn query_traces(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let b: TraceQueryV2 = parse_json("body", &raw)?;
    unsupported(b.ai_search.is_some(), "ai_search")?;
    unsupported(b.min_feedback_modified_at.is_some() || b.max_feedback_modified_at.is_some(), "min/max_feedback_modified_at")?;
    let project = b.project_id.as_deref().ok_or_else(|| ApiError::unprocessable("project_id is required"))?;
    let project = ProjectId(uuid("project_id", project)?);
    let (min, max) = window(b.min_start_time, b.max_start_time)?;
    let selects = Selects::parse(&b.selects.unwrap_or_default())?;
    let trace_ids: Option<Vec<RunId>> =
        b.trace_ids.map(|ids| ids.iter().map(|i| uuid("trace_ids", i).map(RunId)).collect::<Result<_, _>>()).transpose()?;
    let req = RunQueryRequest {
        projects: vec![project],
        // A trace's id is its root run's id.
        ids: trace_ids,
        trace: None,
        parent_run: None,
        is_root: Some(true),
        run_type: None,
        error: None,
        reference_examples: Vec::new(),
        start_time: Some(min),
        end_time: Some(max),
        // `trace_filter` targets root runs, which are exactly what this query returns.
        filter: b.trace_filter,
        trace_filter: None,
        tree_filter: b.tree_filter,
        query: None,
        limit: page_size(b.page_size)?,
        cursor: b.cursor,
    };
    let page = s.ingest.query_runs(p.tenant, req).await?;
    let stats = feedback_stats(&s, p.tenant, &page.runs, &selects).await?;
    let root_selects = Selects(selects.0.iter().filter(|f| !TRACE_AGGREGATE_FIELDS.contains(&f.as_str())).cloned().collect());
    let wants_aggregates = TRACE_AGGREGATE_FIELDS.iter().any(|f| selects.wants(f));
    let mut items = Vec::with_capacity(page.runs.len());
    for root in &page.runs {
        let mut item = json!({"root_run": run_v2(&s, p.tenant, root, &root_selects, stats.get(&root.id))});
        if wants_aggregates {
            let runs = s.ingest.trace_runs(p.tenant, root.trace()).await?;
            let mut agg = Map::new();
            if selects.wants("total_tokens") {
                agg.insert("total_tokens".into(), json!(runs.iter().filter_map(|r| r.total_tokens).sum::<i64>()));
            }
            if selects.wants("total_cost") {
                agg.insert("total_cost".into(), json!(runs.iter().filter_map(|r| r.total_cost).sum::<f64>()));
            }
            if selects.wants("first_token_time") {
                let first = runs.iter().filter_map(|r| r.first_token_time).min();
                agg.insert("first_token_time".into(), json!(first.map(|t| format!("{}Z", t.to_iso()))));
            }
            item["trace_aggregates"] = Value::Object(agg);
        }
        items.push(item);
    }
    Ok(Json(json!({"items": items, "next_cursor": page.next.map(|c| c.encode())})).into_response())
}

async fn trace_runs(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let trace = RunId(uuid("trace_id", &id)?);
    let project = q.get("project_id").ok_or_else(|| ApiError::unprocessable("project_id is required"))?;
    let project = ProjectId(uuid("project_id", project)?);
    let selects = Selects::parse(q.all("selects"))?;
    let filter = q.get("filter").map(str::trim).filter(|f| !f.is_empty());
    let matcher = filter.map(|f| sextant_filter::parse(f).map_err(|e| ApiError::unprocessable(format!("filter: {e}")))).transpose()?;
    let bound = |k: &str| q.get(k).map(|t| Timestamp::parse(t).map_err(|e| ApiError::unprocessable(format!("{k}: {e}")))).transpose();
    let (min, max) = (bound("min_start_time")?, bound("max_start_time")?);
    let mut runs: Vec<Run> = s
        .ingest
        .trace_runs(p.tenant, trace)
        .await?
        .into_iter()
        .filter(|r| r.project_id == project)
        .filter(|r| min.is_none_or(|m| r.start_time.is_some_and(|t| t >= m)))
        .filter(|r| max.is_none_or(|m| r.start_time.is_some_and(|t| t < m)))
        .filter(|r| matcher.as_ref().is_none_or(|f| f.matches(&sextant_filter::RunView::new(r, &[]))))
        .collect();
    if runs.is_empty() && matcher.is_none() {
        return Err(ApiError::not_found(format!("trace {} not found in project {}", trace.0, project.0)));
    }
    runs.sort_by_key(Run::dotted_order_or_default);
    let stats = feedback_stats(&s, p.tenant, &runs, &selects).await?;
    let items: Vec<Value> = runs.iter().map(|r| Value::Object(run_v2(&s, p.tenant, r, &selects, stats.get(&r.id)))).collect();
    Ok(Json(json!({"items": items})).into_response())
}
