//! Runs shared by public link: LangSmith's `PUT|GET|DELETE /runs/{id}/share` and the public,
//! key-less reads `GET /public/{token}/run[/{run_id}]` and `POST /public/{token}/runs/query`
//! (the SDKs' `share_run`, `read_shared_run`, `list_shared_runs`), and their v2 forms
//! (`client.runs.share`, `client.public.runs.*`). A link shows the shared run and the runs
//! below it, nothing else of the tenant; unsharing revokes it at once.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use sextant_core::{ProjectId, Run, RunId, RunShare};
use sextant_proto::http::{read_body, Caller, QueryParams};
use sextant_proto::ApiError;

use crate::http::HttpState;
use crate::v2::uuid;
use crate::view::{RunJson, Select};
use crate::wire::parse_json;

fn share_json(share: &RunShare) -> Value {
    json!({"run_id": share.run_id, "share_token": share.token})
}

/// Routes that need an API key (mounted at `/` and `/api/v1`).
pub fn routes() -> Router<HttpState> {
    Router::new().route("/runs/{id}/share", put(share).get(read_share).delete(unshare))
}

/// Routes that need an API key, relative to `/api/v2`.
pub fn v2_routes() -> Router<HttpState> {
    Router::new().route("/runs/{id}/share", post(share_v2).delete(unshare_v2))
}

/// Key-less routes: the token in the path is the credential (mounted at `/` and `/api/v1`).
pub fn public_routes() -> Router<HttpState> {
    Router::new()
        .route("/public/{token}/run", get(public_run))
        .route("/public/{token}/run/{run_id}", get(public_run_in_tree))
        .route("/public/{token}/runs/query", post(public_query))
}

/// Key-less routes relative to `/api/v2`.
pub fn v2_public_routes() -> Router<HttpState> {
    Router::new().route("/public/{token}/run/{run_id}", get(public_run_v2)).route("/public/{token}/runs/query", post(public_query_v2))
}

#[derive(Debug, Default, Deserialize)]
struct ShareBody {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    share_token: Option<String>,
}

async fn share(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let run = RunId(uuid("run_id", &id)?);
    let raw = read_body(&headers, body, 64 * 1024).await?;
    let b: ShareBody = if raw.is_empty() { ShareBody::default() } else { parse_json("body", &raw)? };
    if let Some(body_run) = b.run_id.as_deref() {
        if uuid("run_id", body_run)? != run.0 {
            return Err(ApiError::unprocessable(format!("body run_id {body_run} does not match {}", run.0)));
        }
    }
    let token = b.share_token.as_deref().map(|t| uuid("share_token", t)).transpose()?;
    let share = s.ingest.share_run(p.tenant, run, token).await?;
    Ok(Json(share_json(&share)).into_response())
}

async fn read_share(State(s): State<HttpState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = RunId(uuid("run_id", &id)?);
    let share = s.ingest.run_share(p.tenant, run).await?;
    Ok(Json(share.as_ref().map(share_json).unwrap_or(Value::Null)).into_response())
}

async fn unshare(State(s): State<HttpState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    s.ingest.unshare_run(p.tenant, RunId(uuid("run_id", &id)?)).await?;
    Ok(Json(json!({})).into_response())
}

#[derive(Debug, Deserialize)]
struct ShareV2Body {
    session_id: String,
    trace_id: String,
}

/// A run of the caller's tenant in `project` (the v2 API names the project of every run).
async fn run_in_project(s: &HttpState, p: &sextant_auth::Principal, run: RunId, project: &str) -> Result<Run, ApiError> {
    let project = ProjectId(uuid("session_id", project)?);
    let found = s.ingest.get_run(p.tenant, run).await?;
    if found.project_id != project {
        return Err(ApiError::not_found(format!("run {} not found in project {}", run.0, project.0)));
    }
    Ok(found)
}

async fn share_v2(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let run = RunId(uuid("run_id", &id)?);
    let raw = read_body(&headers, body, 64 * 1024).await?;
    let b: ShareV2Body = parse_json("body", &raw)?;
    let found = run_in_project(&s, &p, run, &b.session_id).await?;
    if found.trace().0 != uuid("trace_id", &b.trace_id)? {
        return Err(ApiError::unprocessable(format!("trace_id {} is not the trace of run {}", b.trace_id, run.0)));
    }
    let share = s.ingest.share_run(p.tenant, run, None).await?;
    Ok(Json(json!({"share_token": share.token})).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct UnshareV2Body {
    #[serde(default)]
    session_id: Option<String>,
}

/// The generated clients send `session_id` in a DELETE body; a query parameter works too.
async fn unshare_v2(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let run = RunId(uuid("trace_id", &id)?);
    let raw = read_body(&headers, body, 64 * 1024).await?;
    let b: UnshareV2Body = if raw.is_empty() { UnshareV2Body::default() } else { parse_json("body", &raw)? };
    let project = b.session_id.as_deref().or(q.get("session_id")).ok_or_else(|| ApiError::unprocessable("session_id is required"))?;
    run_in_project(&s, &p, run, project).await?;
    s.ingest.unshare_run(p.tenant, run).await?;
    Ok(Json(json!({})).into_response())
}

fn token_of(raw: &str) -> Result<uuid::Uuid, ApiError> {
    // An unparseable token names no share: the same 404 as a revoked one.
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::not_found("no run is shared with this token"))
}

fn run_json(s: &HttpState, tenant: sextant_core::TenantId, run: &Run) -> Value {
    let all = Select::all();
    serde_json::to_value(RunJson { run, tenant, select: &all, signer: &s.signer, feedback_stats: None }).unwrap_or(Value::Null)
}

async fn public_run(State(s): State<HttpState>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let (tenant, run) = s.ingest.shared_run(token_of(&token)?).await?;
    Ok(Json(run_json(&s, tenant, &run)).into_response())
}

async fn public_run_in_tree(State(s): State<HttpState>, Path((token, run_id)): Path<(String, String)>) -> Result<Response, ApiError> {
    let wanted = RunId(uuid("run_id", &run_id)?);
    let (tenant, runs) = s.ingest.shared_subtree(token_of(&token)?).await?;
    let run =
        runs.iter().find(|r| r.id == wanted).ok_or_else(|| ApiError::not_found(format!("run {} is not in the shared run", wanted.0)))?;
    Ok(Json(run_json(&s, tenant, run)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct PublicQuery {
    #[serde(default)]
    id: Option<Vec<String>>,
}

async fn public_query(State(s): State<HttpState>, Path(token): Path<String>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let q: PublicQuery = if raw.is_empty() { PublicQuery::default() } else { parse_json("body", &raw)? };
    let ids: Option<Vec<uuid::Uuid>> = q.id.map(|ids| ids.iter().map(|i| uuid("id", i)).collect::<Result<_, _>>()).transpose()?;
    let (tenant, runs) = s.ingest.shared_subtree(token_of(&token)?).await?;
    let runs: Vec<Value> =
        runs.iter().filter(|r| ids.as_ref().is_none_or(|ids| ids.contains(&r.id.0))).map(|r| run_json(&s, tenant, r)).collect();
    // One page: a shared tree is one trace.
    Ok(Json(json!({"runs": runs, "cursors": {"next": null, "prev": null}})).into_response())
}

async fn public_run_v2(
    State(s): State<HttpState>,
    Path((token, run_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let wanted = RunId(uuid("run_id", &run_id)?);
    let (tenant, runs) = s.ingest.shared_subtree(token_of(&token)?).await?;
    let run =
        runs.iter().find(|r| r.id == wanted).ok_or_else(|| ApiError::not_found(format!("run {} is not in the shared run", wanted.0)))?;
    let selects = crate::v2::Selects::parse(q.all("selects"))?;
    Ok(Json(crate::v2::run_v2(&s, tenant, run, &selects, None)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct PublicQueryV2 {
    #[serde(default)]
    selects: Option<Vec<String>>,
}

async fn public_query_v2(
    State(s): State<HttpState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let q: PublicQueryV2 = if raw.is_empty() { PublicQueryV2::default() } else { parse_json("body", &raw)? };
    let selects = crate::v2::Selects::parse(&q.selects.unwrap_or_default())?;
    let (tenant, runs) = s.ingest.shared_subtree(token_of(&token)?).await?;
    let items: Vec<Value> = runs.iter().map(|r| Value::Object(crate::v2::run_v2(&s, tenant, r, &selects, None))).collect();
    Ok(Json(json!({"items": items})).into_response())
}
