//! Operator endpoints under `/admin`, authenticated by `auth.admin_keys` (open only when the
//! server runs without any keys): the dead letters of every consumer, and their replay.
//! `sextant dlq list` / `sextant dlq replay` are their client.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use sextant_auth::{AuthError, Authenticator};
use sextant_bus::{EventBus, Replayed};
use sextant_events::Stream;
use sextant_proto::{ApiError, ErrorKind};

#[derive(Clone)]
struct AdminState {
    bus: Arc<dyn EventBus>,
    auth: Arc<Authenticator>,
}

pub fn router(bus: Arc<dyn EventBus>, auth: Arc<Authenticator>) -> Router {
    let state = AdminState { bus, auth };
    Router::new()
        .route("/admin/dead-letters", get(list_dead_letters))
        .route("/admin/dead-letters/replay", post(replay_dead_letter))
        .with_state(state)
}

fn operator(s: &AdminState, headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    s.auth.authenticate_admin(key).map_err(|e| match e {
        AuthError::MissingKey | AuthError::InvalidKey => ApiError::new(ErrorKind::Unauthenticated, format!("admin: {e}")),
        _ => ApiError::new(ErrorKind::Forbidden, e.to_string()),
    })
}

fn bus_error(e: sextant_bus::BusError) -> ApiError {
    match e.kind {
        sextant_bus::BusErrorKind::Invalid => ApiError::unprocessable(e.message),
        _ => ApiError::new(ErrorKind::Unavailable, format!("event bus: {}", e.message)),
    }
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
}

async fn list_dead_letters(State(s): State<AdminState>, headers: HeaderMap, Query(p): Query<ListParams>) -> Result<Response, ApiError> {
    let who = operator(&s, &headers)?;
    let limit = p.limit.unwrap_or(100).clamp(1, 10_000);
    let dead = s.bus.dead_letters(limit).await.map_err(bus_error)?;
    tracing::info!(operator = %who, count = dead.len(), "dead letters listed");
    let rows: Vec<_> = dead
        .iter()
        .map(|d| {
            json!({
                "stream": d.stream.name(),
                "sequence": d.sequence,
                "consumer": d.consumer,
                "reason": d.reason,
                "payload_bytes": d.payload_bytes,
                "replayable": d.payload_bytes > 0,
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": rows })).into_response())
}

#[derive(Deserialize)]
struct ReplayRequest {
    stream: String,
    sequence: u64,
    consumer: String,
}

async fn replay_dead_letter(State(s): State<AdminState>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let who = operator(&s, &headers)?;
    let req: ReplayRequest = sextant_core::json::body_from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body: expected {{stream, sequence, consumer}}: {e}")))?;
    let stream = Stream::ALL.into_iter().find(|st| st.name() == req.stream).ok_or_else(|| {
        ApiError::unprocessable(format!("stream: {:?} is not one of the event streams", sextant_proto::truncate(&req.stream)))
    })?;
    match s.bus.replay_dead_letter(stream, req.sequence, &req.consumer).await.map_err(bus_error)? {
        Replayed::Republished { event_id } => {
            tracing::info!(operator = %who, stream = stream.name(), sequence = req.sequence, consumer = %req.consumer, %event_id, "dead letter replayed");
            Ok(Json(json!({"replayed": true, "event_id": event_id})).into_response())
        }
        Replayed::NotFound => Err(ApiError::not_found(format!(
            "no dead letter of consumer {:?} at {} #{}",
            sextant_proto::truncate(&req.consumer),
            stream.name(),
            req.sequence
        ))),
    }
}
