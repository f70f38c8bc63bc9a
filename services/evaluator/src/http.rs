//! The evaluator's REST routes: `POST /experiments/compare` (the gate's comparison) and
//! `POST /experiments/{id}/evaluate` (server-side evaluators, progress streamed as NDJSON).
//! Also dataset evaluators (`/datasets/{id}/evaluators`) and LangSmith's online-evaluators
//! API (`/v1/platform/evaluators`, `/api/v1/platform/evaluators`; see [`crate::platform`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::RawQuery;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use futures::StreamExt;
use serde_json::Value;

use sextant_auth::Authenticator;
use sextant_proto::http::{json_body, require_principal, uuid_param, Caller, QueryParams};
use sextant_proto::ApiError;
use sextant_storage::Storage;

use crate::compare::{compare, options_from_json, to_json};

#[derive(Clone)]
pub struct EvaluatorState {
    pub store: Arc<dyn Storage>,
    pub runner: Arc<crate::run::EvalRunner>,
    pub dataset_evaluators: Arc<crate::dataset_evaluators::DatasetEvaluators>,
    pub platform: Arc<crate::platform::PlatformEvaluators>,
}

pub fn router(state: EvaluatorState, auth: Arc<Authenticator>) -> Router {
    let api = Router::new()
        .route("/experiments/compare", post(compare_experiments))
        .route("/experiments/{id}/evaluate", post(evaluate_experiment))
        .route("/datasets/{id}/evaluators", post(set_dataset_evaluator).get(list_dataset_evaluators))
        .route("/datasets/{id}/evaluators/{key}", axum::routing::delete(retire_dataset_evaluator))
        .route_layer(middleware::from_fn_with_state(auth.clone(), require_principal))
        .with_state(state.clone());
    // LangSmith's platform API, at `/v1` and `/api/v1` as the dataset service's platform routes.
    let platform = Router::new()
        .route(
            "/platform/evaluators",
            post(create_platform_evaluator).get(list_platform_evaluators).delete(bulk_delete_platform_evaluators),
        )
        .route("/platform/evaluators/spend", get(platform_evaluator_spend))
        .route("/platform/evaluators/{id}", get(get_platform_evaluator).patch(update_platform_evaluator).delete(delete_platform_evaluator))
        .route_layer(middleware::from_fn_with_state(auth, require_principal))
        .with_state(state);
    Router::new().merge(api.clone()).nest("/api/v1", api).nest("/v1", platform.clone()).nest("/api/v1", platform)
}

/// `{baseline, candidate, confidence?, resamples?, lower_is_better?, thresholds?}`: each
/// experiment by id or name. 200 with the report whether or not the gate passes (`passed`).
async fn compare_experiments(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, 64 * 1024).await?;
    let o = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
    let name = |k: &str| -> Result<String, ApiError> {
        o.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::unprocessable(format!("{k}: required (an experiment id or name)")))
    };
    let (baseline, candidate) = (name("baseline")?, name("candidate")?);
    let opts = options_from_json(o)?;
    let c = compare(s.store.as_ref(), p.tenant, &baseline, &candidate, &opts).await?;
    Ok(Json(to_json(&c)).into_response())
}

/// `{evaluators: [config, ...]}`. Bad configs or an unknown experiment are refused before
/// anything runs; then the response streams one JSON progress line per batch, the last with
/// `done: true` (or `error`). The run goes on if the client leaves; running it again resumes.
async fn evaluate_experiment(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    Path(experiment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, 1024 * 1024).await?;
    let configs = body.get("evaluators").cloned().unwrap_or(Value::Null);
    let evaluators = s.runner.parse(&configs)?;
    crate::compare::find_experiment(s.store.as_ref(), p.tenant, &experiment).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<ApiError>();
    let runner = s.runner.clone();
    tokio::spawn(async move {
        if let Err(e) = runner.run(p.tenant, &experiment, evaluators, tx).await {
            let _ = err_tx.send(e);
        }
    });
    let progress = tokio_stream::wrappers::ReceiverStream::new(rx).map(|p| {
        let mut line = serde_json::to_vec(&p).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
    });
    // After the progress ends: the run's error, if it failed.
    let tail = futures::stream::once(async move {
        let line = match err_rx.await {
            Ok(e) => format!("{}\n", serde_json::json!({"error": e.message, "done": true})),
            Err(_) => String::new(),
        };
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(progress.chain(tail))).into_response())
}

fn dataset_id(s: &str) -> Result<sextant_core::DatasetId, ApiError> {
    sextant_proto::http::uuid_param("dataset id", s).map(sextant_core::DatasetId)
}

/// The body is an evaluator config; a config under an existing key becomes its new version.
async fn set_dataset_evaluator(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, 1024 * 1024).await?;
    let id = dataset_id(&id)?;
    let e = s.dataset_evaluators.set(p.tenant, id, &body).await?;
    Ok((axum::http::StatusCode::CREATED, Json(crate::dataset_evaluators::evaluator_json(id, &e))).into_response())
}

/// Every version of every evaluator of the dataset (`active` marks the ones that score).
async fn list_dataset_evaluators(State(s): State<EvaluatorState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = dataset_id(&id)?;
    let list = s.dataset_evaluators.list(p.tenant, id).await?;
    Ok(Json(list.iter().map(|e| crate::dataset_evaluators::evaluator_json(id, e)).collect::<Vec<_>>()).into_response())
}

async fn retire_dataset_evaluator(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    s.dataset_evaluators.retire(p.tenant, dataset_id(&id)?, &key).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// The online evaluators of `/platform/evaluators` (see [`crate::platform`]).
async fn create_platform_evaluator(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, 1024 * 1024).await?;
    let created = s.platform.create(p.tenant, &body).await?;
    Ok((axum::http::StatusCode::CREATED, Json(created)).into_response())
}

async fn list_platform_evaluators(State(s): State<EvaluatorState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = crate::platform::ListQuery::from_params(&QueryParams::parse(q.as_deref()))?;
    Ok(Json(s.platform.list(p.tenant, &q).await?).into_response())
}

async fn bulk_delete_platform_evaluators(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    q.bool("delete_run_rules")?;
    Ok(Json(s.platform.bulk_delete(p.tenant, q.all("evaluator_ids")).await?).into_response())
}

async fn platform_evaluator_spend(State(s): State<EvaluatorState>, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    Ok(Json(s.platform.spend(p.tenant, &QueryParams::parse(q.as_deref())).await?).into_response())
}

async fn get_platform_evaluator(State(s): State<EvaluatorState>, Caller(p): Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(s.platform.get(p.tenant, uuid_param("evaluator id", &id)?).await?).into_response())
}

async fn update_platform_evaluator(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = uuid_param("evaluator id", &id)?;
    let body = json_body(&headers, body, 1024 * 1024).await?;
    Ok(Json(s.platform.update(p.tenant, id, &body).await?).into_response())
}

async fn delete_platform_evaluator(
    State(s): State<EvaluatorState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = uuid_param("evaluator id", &id)?;
    QueryParams::parse(q.as_deref()).bool("delete_run_rules")?;
    s.platform.delete(p.tenant, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
