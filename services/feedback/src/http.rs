//! The feedback service's REST layer: LangSmith's feedback and annotation-queue routes
//! (spec §5, §10), served at `/` and `/api/v1`, plus the public token routes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use sextant_auth::Authenticator;
use sextant_core::annotation::ItemStatus;
use sextant_core::{FeedbackId, ProjectId, QueueId, Run, RunId, Timestamp};
use sextant_proto::http::{json_body, require_principal, uuid_param, Caller, QueryParams};
use sextant_proto::ApiError;
use sextant_storage::{FeedbackQuery, QueueQuery};

use crate::core::FeedbackService;
use crate::queues::{item_json, queue_json, rule_json, Queues, DEFAULT_LEASE_SECS};

/// Largest JSON body these routes take.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most tokens one `POST /feedback/tokens` creates.
const MAX_TOKENS_PER_REQUEST: usize = 100;

#[derive(Clone)]
pub struct FeedbackState {
    pub feedback: Arc<FeedbackService>,
    pub queues: Arc<Queues>,
    /// Where clients reach this server (`https://host[/path]`, no trailing `/`), from the
    /// configuration: token URLs point here. Never taken from request headers, which the
    /// client controls.
    pub public_url: Arc<str>,
}

pub fn router(state: FeedbackState, auth: Arc<Authenticator>) -> Router {
    let api = Router::new()
        .route("/feedback", post(create_feedback).get(list_feedback))
        .route("/feedback/tokens", post(create_tokens).get(list_tokens))
        .route(
            "/feedback-configs",
            post(create_feedback_config).get(list_feedback_configs).patch(update_feedback_config).delete(delete_feedback_config),
        )
        .route("/feedback/{id}", get(read_feedback).patch(update_feedback).delete(delete_feedback))
        .route("/annotation-queues", post(create_queue).get(list_queues))
        .route("/annotation-queues/{id}", get(read_queue).patch(update_queue).delete(delete_queue))
        .route("/annotation-queues/{id}/runs", post(add_runs).get(list_queue_runs))
        .route("/annotation-queues/{id}/runs/by-key", post(add_runs_by_key))
        .route("/annotation-queues/{id}/runs/{run_id}", axum::routing::delete(delete_queue_run))
        .route("/annotation-queues/{id}/run/{index}", get(queue_run_at))
        .route("/annotation-queues/{id}/next", post(next_item))
        .route("/annotation-queues/{id}/items/{item_id}/review", post(review_item))
        .route("/annotation-queues/{id}/agreement", get(queue_agreement))
        .route("/annotation-queues/{id}/size", get(queue_size))
        .route("/annotation-queues/{id}/rules", post(add_rule).get(list_rules))
        .route("/annotation-queues/{id}/rules/{rule_id}", axum::routing::delete(delete_rule))
        .route("/platform/annotation-queues/{id}/items", post(platform_add_items).get(platform_list_items))
        .route("/platform/annotation-queues/{id}/items/delete", post(platform_delete_items))
        .route("/platform/annotation-queues/{id}/items/count", get(platform_count_items))
        .route("/platform/annotation-queues/{id}/items/{item_id}", axum::routing::patch(platform_update_item))
        .route_layer(middleware::from_fn_with_state(auth, require_principal))
        .with_state(state.clone());
    let public = Router::new().route("/feedback/tokens/{token}", get(token_get).post(token_post)).with_state(state);
    Router::new().merge(api.clone()).nest("/api/v1", api).merge(public.clone()).nest("/api/v1", public)
}

fn ok() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

// ---- feedback ----

async fn create_feedback(State(s): State<FeedbackState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let f = s.feedback.create(p.tenant, &body).await?;
    Ok(Json(f.to_json()).into_response())
}

async fn read_feedback(State(s): State<FeedbackState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let f = s.feedback.get(p.tenant, FeedbackId(uuid_param("feedback id", &id)?)).await?;
    Ok(Json(f.to_json()).into_response())
}

async fn list_feedback(State(s): State<FeedbackState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let query = FeedbackQuery {
        runs: q.uuids("run")?.into_iter().map(RunId).collect(),
        keys: q.all("key").to_vec(),
        sources: q.all("source").to_vec(),
        projects: q.uuids("session")?.into_iter().map(ProjectId).collect(),
        offset: q.usize("offset")?.unwrap_or(0),
        limit: q.usize("limit")?.unwrap_or(100),
    };
    let list = s.feedback.list(p.tenant, query).await?;
    Ok(Json(list.iter().map(|f| f.to_json()).collect::<Vec<_>>()).into_response())
}

async fn update_feedback(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = FeedbackId(uuid_param("feedback id", &id)?);
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let f = s.feedback.update(p.tenant, id, &body).await?;
    Ok(Json(f.to_json()).into_response())
}

async fn delete_feedback(State(s): State<FeedbackState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    s.feedback.delete(p.tenant, FeedbackId(uuid_param("feedback id", &id)?)).await?;
    Ok(ok())
}

async fn create_tokens(State(s): State<FeedbackState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let base = s.public_url.clone();
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    match &body {
        Value::Array(reqs) => {
            if reqs.len() > MAX_TOKENS_PER_REQUEST {
                return Err(ApiError::unprocessable(format!("at most {MAX_TOKENS_PER_REQUEST} tokens per request")));
            }
            let mut out = Vec::with_capacity(reqs.len());
            for r in reqs {
                out.push(s.feedback.create_token(p.tenant, r, &base).await?);
            }
            Ok(Json(out).into_response())
        }
        other => Ok(Json(s.feedback.create_token(p.tenant, other, &base).await?).into_response()),
    }
}

async fn list_tokens(State(s): State<FeedbackState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let run = q.get("run_id").ok_or_else(|| ApiError::unprocessable("run_id: required (the run whose tokens to list)"))?;
    let run = RunId(uuid_param("run_id", run)?);
    let offset = q.usize("offset")?.unwrap_or(0);
    let limit = q.usize("limit")?.unwrap_or(100).clamp(1, 1000);
    Ok(Json(s.feedback.list_tokens(p.tenant, run, &s.public_url, offset, limit).await?).into_response())
}

async fn token_get(State(s): State<FeedbackState>, Path(token): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let mut fields = Map::new();
    if let Some(score) = q.get("score") {
        let v = match score.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            n => n
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| ApiError::unprocessable(format!("score: {score:?} is not a number or a boolean")))?,
        };
        fields.insert("score".into(), v);
    }
    for k in ["value", "comment"] {
        if let Some(v) = q.get(k) {
            fields.insert(k.into(), Value::String(v.to_owned()));
        }
    }
    if let Some(c) = q.get("correction") {
        fields.insert("correction".into(), serde_json::from_str(c).unwrap_or_else(|_| Value::String(c.to_owned())));
    }
    let f = s.feedback.create_with_token(&token, &fields).await?;
    Ok(Json(f.to_json()).into_response())
}

async fn token_post(
    State(s): State<FeedbackState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let fields = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
    let f = s.feedback.create_with_token(&token, fields).await?;
    Ok(Json(f.to_json()).into_response())
}

// ---- feedback configs ----

async fn create_feedback_config(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    Ok(Json(s.feedback.create_config(p.tenant, &body).await?).into_response())
}

async fn list_feedback_configs(State(s): State<FeedbackState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let query = crate::configs::ConfigQuery {
        keys: q.all("key").iter().filter(|k| !k.is_empty()).cloned().collect(),
        name_contains: q.get("name_contains").map(str::to_owned),
        include_all: q.bool("include_all_configs")?.unwrap_or(false),
        is_enforced: q.bool("is_enforced")?,
        offset: q.usize("offset")?.unwrap_or(0),
        limit: q.usize("limit")?.unwrap_or(100).clamp(1, 1000),
    };
    Ok(Json(s.feedback.list_configs(p.tenant, &query).await?).into_response())
}

async fn update_feedback_config(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    Ok(Json(s.feedback.update_config(p.tenant, &body).await?).into_response())
}

async fn delete_feedback_config(State(s): State<FeedbackState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let id = q.get("id").map(|id| uuid_param("id", id)).transpose()?;
    s.feedback.delete_config(p.tenant, q.get("feedback_key"), id).await?;
    Ok(ok())
}

// ---- annotation queues ----

fn queue_id(s: &str) -> Result<QueueId, ApiError> {
    uuid_param("queue id", s).map(QueueId)
}

async fn create_queue(State(s): State<FeedbackState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let q = s.queues.create(p.tenant, &body).await?;
    Ok(Json(queue_json(p.tenant, &q)).into_response())
}

async fn read_queue(State(s): State<FeedbackState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let q = s.queues.get(p.tenant, queue_id(&id)?).await?;
    Ok(Json(queue_json(p.tenant, &q)).into_response())
}

async fn list_queues(State(s): State<FeedbackState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let query = QueueQuery {
        ids: q.uuids("ids")?.into_iter().map(QueueId).collect(),
        name: q.get("name").map(str::to_owned),
        name_contains: q.get("name_contains").map(str::to_owned),
        offset: q.usize("offset")?.unwrap_or(0),
        limit: q.usize("limit")?.unwrap_or(100).clamp(1, 1000),
    };
    let list = s.queues.list(p.tenant, query).await?;
    Ok(Json(list.iter().map(|q| queue_json(p.tenant, q)).collect::<Vec<_>>()).into_response())
}

async fn update_queue(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let q = s.queues.update(p.tenant, queue_id(&id)?, &body).await?;
    Ok(Json(queue_json(p.tenant, &q)).into_response())
}

async fn delete_queue(State(s): State<FeedbackState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    s.queues.delete(p.tenant, queue_id(&id)?).await?;
    Ok(ok())
}

fn run_ids(v: &Value, what: &str) -> Result<Vec<RunId>, ApiError> {
    let arr = v.as_array().ok_or_else(|| ApiError::unprocessable(format!("{what}: expected an array")))?;
    arr.iter()
        .enumerate()
        .map(|(i, r)| {
            let s = r
                .as_str()
                .or_else(|| r.get("run_id").and_then(Value::as_str))
                .ok_or_else(|| ApiError::unprocessable(format!("{what}[{i}]: expected a run id")))?;
            uuid_param(&format!("{what}[{i}]"), s).map(RunId)
        })
        .collect()
}

async fn add_runs(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let runs = run_ids(&body, "body")?;
    let items = s.queues.add_runs(p.tenant, queue_id(&id)?, &runs).await?;
    Ok(Json(items.iter().map(|i| item_json(i, 1)).collect::<Vec<_>>()).into_response())
}

async fn add_runs_by_key(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    add_runs(State(s), Caller(p), Path(id), headers, body).await
}

/// RunWithAnnotationQueueInfo: the run's fields plus when it was added and last reviewed.
fn queue_run_json(run: &Run, it: &sextant_core::annotation::QueueItem) -> Value {
    let raw = |r: &Option<sextant_core::RawJson>| r.as_ref().map_or(Value::Null, sextant_core::RawJson::to_value_or_null);
    json!({
        "id": run.id,
        "name": run.name.as_deref().unwrap_or(""),
        "run_type": run.run_type.as_deref().unwrap_or("chain"),
        "start_time": run.start_time.or(run.end_time).unwrap_or(Timestamp(0)).to_iso(),
        "end_time": run.end_time.map(Timestamp::to_iso),
        "trace_id": run.trace(),
        "dotted_order": run.dotted_order_or_default(),
        "parent_run_id": run.parent_run_id,
        "session_id": run.project_id,
        "status": run.status().as_str(),
        "inputs": raw(&run.inputs),
        "outputs": raw(&run.outputs),
        "error": run.error,
        "extra": run.extra,
        "tags": run.tags,
        "added_at": it.added_at.to_iso(),
        "last_reviewed_time": it.last_reviewed_time.map(Timestamp::to_iso),
        "queue_item_id": it.id,
    })
}

async fn list_queue_runs(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let status = q
        .get("status")
        .map(|st| {
            ItemStatus::parse(st)
                .ok_or_else(|| ApiError::unprocessable(format!("status: {st:?} is not needs_my_review, needs_others_review or completed")))
        })
        .transpose()?;
    let offset = q.usize("offset")?.unwrap_or(0);
    let limit = q.usize("limit")?.unwrap_or(100).clamp(1, 1000);
    let (_, items) = s.queues.items_with_status(p.tenant, queue_id(&id)?, status, q.get("reviewer")).await?;
    let mut out = Vec::new();
    for it in items.iter().skip(offset).take(limit) {
        if let Some(run) = s.feedback.store().get_run(p.tenant, it.run_id).await.map_err(crate::core::storage_error)? {
            out.push(queue_run_json(&run, it));
        }
    }
    Ok(Json(out).into_response())
}

async fn queue_run_at(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index: usize = index.parse().map_err(|_| ApiError::unprocessable(format!("index: {index:?} is not a non-negative integer")))?;
    let (_, items) = s.queues.items(p.tenant, queue_id(&id)?).await?;
    let it = items.get(index).ok_or_else(|| ApiError::not_found(format!("the queue has {} items; no index {index}", items.len())))?;
    let run = s
        .feedback
        .store()
        .get_run(p.tenant, it.run_id)
        .await
        .map_err(crate::core::storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("run {} not found", it.run_id)))?;
    Ok(Json(queue_run_json(&run, it)).into_response())
}

async fn delete_queue_run(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path((id, run)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    s.queues.delete_run(p.tenant, queue_id(&id)?, RunId(uuid_param("run id", &run)?)).await?;
    Ok(ok())
}

async fn next_item(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let reviewer = body.get("reviewer").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable("reviewer: required (a string)"))?;
    let lease = match body.get("lease_seconds") {
        None | Some(Value::Null) => DEFAULT_LEASE_SECS,
        Some(v) => v.as_u64().ok_or_else(|| ApiError::unprocessable("lease_seconds: expected a positive integer"))?,
    };
    match s.queues.next(p.tenant, queue_id(&id)?, reviewer, lease).await? {
        None => Ok((StatusCode::NO_CONTENT, ()).into_response()),
        Some((q, item, run)) => Ok(Json(json!({
            "item": item_json(&item, q.num_reviewers_per_item),
            "lease_expires_at": item.lease.as_ref().map(|l| l.until.to_iso()),
            "run": run.as_ref().map(|r| queue_run_json(r, &item)),
            "rubric_instructions": q.rubric_instructions,
            "rubric_items": q.rubric_items.as_ref().map_or(json!([]), sextant_core::RawJson::to_value_or_null),
        }))
        .into_response()),
    }
}

async fn review_item(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path((id, item)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let q = queue_id(&id)?;
    let it = s.queues.review(p.tenant, q, uuid_param("item id", &item)?, &body).await?;
    let needed = s.queues.get(p.tenant, q).await?.num_reviewers_per_item;
    Ok(Json(item_json(&it, needed)).into_response())
}

async fn queue_agreement(State(s): State<FeedbackState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let a = s.queues.agreement(p.tenant, queue_id(&id)?).await?;
    Ok(Json(json!({ "queue_id": id, "keys": a })).into_response())
}

/// `GET /annotation-queues/{id}/size`: how many items the queue holds (in a status, if asked).
async fn queue_size(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let status =
        match q.get("status") {
            None | Some("") => None,
            Some(st) => Some(ItemStatus::parse(st).ok_or_else(|| {
                ApiError::unprocessable(format!("status: {st:?} is not needs_my_review, needs_others_review or completed"))
            })?),
        };
    let (_, items) = s.queues.items_with_status(p.tenant, queue_id(&id)?, status, q.get("reviewer")).await?;
    Ok(Json(json!({ "size": items.len() })).into_response())
}

async fn add_rule(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let r = s.queues.add_rule(p.tenant, queue_id(&id)?, &body).await?;
    Ok(Json(rule_json(&r)).into_response())
}

async fn list_rules(State(s): State<FeedbackState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let q = s.queues.get(p.tenant, queue_id(&id)?).await?;
    Ok(Json(q.rules.iter().map(rule_json).collect::<Vec<_>>()).into_response())
}

async fn delete_rule(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path((id, rule)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    s.queues.delete_rule(p.tenant, queue_id(&id)?, uuid_param("rule id", &rule)?).await?;
    Ok(ok())
}

// ---- platform items API ----

async fn platform_add_items(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let items = body.get("items").ok_or_else(|| ApiError::unprocessable("items: required"))?;
    for (i, it) in items.as_array().into_iter().flatten().enumerate() {
        if let Some(t) = it.get("item_type").and_then(Value::as_str) {
            if t != "RUN" {
                return Err(ApiError::unprocessable(format!("items[{i}].item_type: only RUN items are supported")));
            }
        }
    }
    let runs = run_ids(items, "items")?;
    let q = queue_id(&id)?;
    let added = s.queues.add_runs(p.tenant, q, &runs).await?;
    Ok(Json(json!({ "items": added.iter().map(|i| item_json(i, 1)).collect::<Vec<_>>() })).into_response())
}

async fn platform_list_items(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let status = q
        .get("status")
        .map(|st| {
            ItemStatus::parse(st)
                .ok_or_else(|| ApiError::unprocessable(format!("status: {st:?} is not needs_my_review, needs_others_review or archived")))
        })
        .transpose()?;
    let page = q.usize("page_size")?.unwrap_or(100).clamp(1, 1000);
    let start = match q.get("cursor").filter(|c| !c.is_empty()) {
        Some(c) => c.parse::<usize>().map_err(|_| ApiError::unprocessable("cursor: not one this server issued"))?,
        None => 0,
    };
    let (queue, items) = s.queues.items_with_status(p.tenant, queue_id(&id)?, status, q.get("reviewer")).await?;
    let slice: Vec<Value> = items.iter().skip(start).take(page).map(|i| item_json(i, queue.num_reviewers_per_item)).collect();
    let next = (start + page < items.len()).then(|| (start + page).to_string());
    Ok(Json(json!({ "items": slice, "next_cursor": next })).into_response())
}

async fn platform_count_items(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let status = match q.get("status") {
        None | Some("all") => None,
        Some(st) => Some(ItemStatus::parse(st).ok_or_else(|| ApiError::unprocessable(format!("status: {st:?} is not a status")))?),
    };
    let (_, items) = s.queues.items_with_status(p.tenant, queue_id(&id)?, status, q.get("reviewer")).await?;
    Ok(Json(json!({ "count": items.len() })).into_response())
}

async fn platform_update_item(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path((id, item)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let q = queue_id(&id)?;
    let item = uuid_param("item id", &item)?;
    let done = match body.get("status").and_then(Value::as_str) {
        Some("archived" | "completed") => Some(true),
        Some("needs_review" | "needs_my_review") => Some(false),
        Some(other) => return Err(ApiError::unprocessable(format!("status: {other:?} is not archived or needs_review"))),
        None => None,
    };
    let it = match done {
        Some(d) => s.queues.set_done(p.tenant, q, item, d).await?,
        None => s
            .feedback
            .store()
            .get_queue_item(p.tenant, q, item)
            .await
            .map_err(crate::core::storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("item {item} not found")))?,
    };
    Ok(Json(item_json(&it, 1)).into_response())
}

async fn platform_delete_items(
    State(s): State<FeedbackState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_BODY_BYTES).await?;
    let ids =
        body.get("item_ids").and_then(Value::as_array).ok_or_else(|| ApiError::unprocessable("item_ids: required (an array of UUIDs)"))?;
    let ids = ids
        .iter()
        .enumerate()
        .map(|(i, v)| uuid_param(&format!("item_ids[{i}]"), v.as_str().unwrap_or("")))
        .collect::<Result<Vec<_>, _>>()?;
    let n = s.queues.delete_items(p.tenant, queue_id(&id)?, &ids).await?;
    Ok(Json(json!({ "deleted": n })).into_response())
}
