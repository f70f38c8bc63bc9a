//! HTTP glue every service's REST layer shares: authentication middleware, bounded body
//! reading with clear 413s, and query strings as the SDK encodes them (repeated keys for
//! lists, Python-style `True`/`False`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use sextant_auth::{AuthError, Authenticator, Principal};

use crate::error::{ApiError, ErrorKind};

/// Authenticates every request it wraps and stores the [`Principal`] in its extensions.
pub async fn require_principal(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let headers = req.headers();
    let key = header(headers, "x-api-key")
        .or_else(|| header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))));
    let principal = auth.authenticate(key, header(headers, "x-tenant-id")).map_err(|e| match e {
        AuthError::MissingKey | AuthError::InvalidKey => ApiError::new(ErrorKind::Unauthenticated, e.to_string()),
        AuthError::TenantMismatch(_) | AuthError::NoAdminKeys => ApiError::new(ErrorKind::Forbidden, e.to_string()),
    })?;
    tracing::Span::current().record("tenant", tracing::field::display(principal.tenant));
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The authenticated caller (requires [`require_principal`] on the route).
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::new(ErrorKind::Unauthenticated, "authentication required"))
    }
}

/// How much of an oversized body is read and discarded before answering 413, and for how
/// long: a client still writing when the server closes gets a broken pipe instead of the 413
/// (nginx's "lingering close" solves the same problem).
const DRAIN_MAX_BYTES: usize = 256 * 1024 * 1024;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The most [`read_body`] allocates up front for a body that declares its length.
const INITIAL_BODY_CAPACITY: usize = 1024 * 1024;

/// A body that failed to arrive: too slowly (the server's body-read timeouts: 408, and the
/// connection is closed) or broken off (400).
fn body_error(e: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(
                ErrorKind::RequestTimeout,
                "the request body arrived too slowly (server.body_read_timeout_secs between bytes, \
                 server.body_read_deadline_secs in all)",
            );
        }
        source = s.source();
    }
    ApiError::bad_request(format!("could not read request body: {e}"))
}

/// Reads a whole body, refusing more than `limit` bytes with a 413 that states the limit.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;

    let too_large = || {
        ApiError::new(ErrorKind::PayloadTooLarge, format!("request body exceeds the limit of {limit} bytes ({} MB)", limit / (1024 * 1024)))
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = body;
    if declared.is_none_or(|len| len <= limit) {
        // Grown as the body arrives: a declared length is a claim, not memory to set aside.
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(INITIAL_BODY_CAPACITY));
        loop {
            match body.frame().await {
                None => return Ok(buf.freeze()),
                Some(Err(e)) => return Err(body_error(&e)),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if buf.len() + data.len() > limit {
                        break;
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    // Over the limit: discard what the client is still sending (bounded), then answer.
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
    Err(too_large())
}

/// A JSON body of at most `limit` bytes: an empty body is a 422, malformed JSON a 400.
pub async fn json_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<serde_json::Value, ApiError> {
    let raw = read_body(headers, body, limit).await?;
    if raw.is_empty() {
        return Err(ApiError::unprocessable("body: expected JSON, got nothing"));
    }
    // Depth-checked before parsing, trailing content refused.
    sextant_core::json::body_from_slice(&raw).map_err(|e| match e {
        sextant_core::json::InvalidJson::Syntax(e) => ApiError::bad_request(format!("body is not valid JSON: {e}")),
        too_deep => ApiError::unprocessable(format!("body: {too_deep}")),
    })
}

/// A UUID path segment; the error names `what` and quotes (the start of) the value.
pub fn uuid_param(what: &str, s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::unprocessable(format!("{what}: {:?} is not a UUID", crate::truncate(s))))
}

/// A query string with repeated keys kept.
#[derive(Debug, Default, Clone)]
pub struct QueryParams(HashMap<String, Vec<String>>);

impl QueryParams {
    pub fn parse(query: Option<&str>) -> Self {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            m.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Self(m)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    pub fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `true`/`True`/`1` and `false`/`False`/`0`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(ApiError::unprocessable(format!("query parameter {key}: {v:?} is not a boolean"))),
            },
        }
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::unprocessable(format!("query parameter {key}: {v:?} is not a non-negative integer"))),
        }
    }

    pub fn uuids(&self, key: &str) -> Result<Vec<uuid::Uuid>, ApiError> {
        self.all(key)
            .iter()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.is_empty())
            .map(|v| uuid::Uuid::parse_str(v).map_err(|_| ApiError::unprocessable(format!("query parameter {key}: {v:?} is not a UUID"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_follow_the_sdk_encoding() {
        let q = QueryParams::parse(Some("id=a&id=b&include_stats=False&upsert=True&limit=10&name=x%20y"));
        assert_eq!(q.all("id"), ["a", "b"]);
        assert_eq!(q.bool("include_stats").unwrap(), Some(false));
        assert_eq!(q.bool("upsert").unwrap(), Some(true));
        assert_eq!(q.usize("limit").unwrap(), Some(10));
        assert_eq!(q.get("name"), Some("x y"));
        assert!(q.bool("name").is_err());
        assert!(QueryParams::parse(Some("limit=-1")).usize("limit").is_err());
    }
}
