//! The evaluator's REST routes: `POST /experiments/compare` (the gate's comparison).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{middleware, Json, Router};
use serde_json::Value;

use sextant_auth::Authenticator;
use sextant_proto::http::{json_body, require_principal, Caller};
use sextant_proto::ApiError;
use sextant_storage::Storage;

use crate::compare::{compare, options_from_json, to_json};

#[derive(Clone)]
pub struct EvaluatorState {
    pub store: Arc<dyn Storage>,
}

pub fn router(state: EvaluatorState, auth: Arc<Authenticator>) -> Router {
    let api = Router::new()
        .route("/experiments/compare", post(compare_experiments))
        .route_layer(middleware::from_fn_with_state(auth, require_principal))
        .with_state(state);
    Router::new().merge(api.clone()).nest("/api/v1", api)
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
