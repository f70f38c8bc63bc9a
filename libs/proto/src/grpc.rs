//! Glue every service's gRPC layer shares: authentication from metadata (the REST headers'
//! rules), field parsing with errors that name the field, times as `google.protobuf.Timestamp`
//! ([`timestamp_to_pb`], [`timestamp_from_pb`]), and the domain types every API returns
//! ([`run_to_pb`]).

use serde_json::Value;
use tonic::Request;
use tracing::{field, Span};
use uuid::Uuid;

use sextant_auth::{AuthError, Authenticator, Principal};
use sextant_core::{RawJson, Run, Timestamp};

use crate::error::{ApiError, ErrorKind};
use crate::pb;

/// Authenticates a request from its metadata, as REST does from its headers: `x-api-key`
/// (or `authorization: Bearer <key>`) and an optional `x-tenant-id`. Records the tenant on
/// the current span.
pub fn authenticate<T>(auth: &Authenticator, req: &Request<T>) -> Result<Principal, ApiError> {
    let md = req.metadata();
    let get = |name: &str| md.get(name).and_then(|v| v.to_str().ok());
    let key =
        get("x-api-key").or_else(|| get("authorization").and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))));
    let principal = auth.authenticate(key, get("x-tenant-id")).map_err(|e| match e {
        AuthError::MissingKey | AuthError::InvalidKey => ApiError::new(ErrorKind::Unauthenticated, e.to_string()),
        AuthError::TenantMismatch(_) | AuthError::NoAdminKeys => ApiError::new(ErrorKind::Forbidden, e.to_string()),
    })?;
    Span::current().record("tenant", field::display(principal.tenant));
    Ok(principal)
}

/// The first 60 characters of a value quoted in an error.
pub fn truncate(s: &str) -> String {
    let mut t: String = s.chars().take(60).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

pub fn uuid(field: &str, v: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(v).map_err(|_| ApiError::unprocessable(format!("{field}: {:?} is not a UUID", truncate(v))))
}

/// A required id: the empty string is an error naming the field.
pub fn required_uuid(field: &str, v: &str) -> Result<Uuid, ApiError> {
    if v.is_empty() {
        return Err(ApiError::unprocessable(format!("{field} is required")));
    }
    uuid(field, v)
}

/// An optional id: the empty string means not given.
pub fn opt_uuid(field: &str, v: &str) -> Result<Option<Uuid>, ApiError> {
    if v.is_empty() {
        Ok(None)
    } else {
        uuid(field, v).map(Some)
    }
}

pub fn uuids(field: &str, values: &[String]) -> Result<Vec<Uuid>, ApiError> {
    values.iter().enumerate().map(|(i, v)| uuid(&format!("{field}[{i}]"), v)).collect()
}

/// The range `google.protobuf.Timestamp` allows: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z (its documented contract, which every language's helpers
/// enforce), in seconds since the epoch.
const PB_MIN_SECONDS: i64 = -62_135_596_800;
const PB_MAX_SECONDS: i64 = 253_402_300_799;

/// A stored time as a `google.protobuf.Timestamp` (exact: Sextant keeps microseconds).
pub fn timestamp_to_pb(t: Timestamp) -> prost_types::Timestamp {
    let us = t.micros();
    // rem_euclid keeps `nanos` in 0..1e9 for times before 1970 too, as the type requires.
    prost_types::Timestamp { seconds: us.div_euclid(1_000_000), nanos: (us.rem_euclid(1_000_000) * 1000) as i32 }
}

/// A `google.protobuf.Timestamp` from a request as a stored time. Digits finer than a
/// microsecond are dropped (what is stored, as REST drops them). A value the type forbids
/// (nanos outside 0..=999999999, a time outside the years 0001-9999) is an error naming the
/// field.
pub fn timestamp_from_pb(field: &str, t: &prost_types::Timestamp) -> Result<Timestamp, ApiError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(ApiError::unprocessable(format!("{field}: nanos {} is outside 0..=999999999", t.nanos)));
    }
    if !(PB_MIN_SECONDS..=PB_MAX_SECONDS).contains(&t.seconds) {
        return Err(ApiError::unprocessable(format!(
            "{field}: seconds {} is outside the years 0001-9999 a google.protobuf.Timestamp allows",
            t.seconds
        )));
    }
    Ok(Timestamp::from_micros(t.seconds * 1_000_000 + i64::from(t.nanos / 1000)))
}

/// An optional time from a request: absent means not given.
pub fn opt_timestamp(field: &str, t: Option<&prost_types::Timestamp>) -> Result<Option<Timestamp>, ApiError> {
    t.map(|t| timestamp_from_pb(field, t)).transpose()
}

/// JSON text carried in a `*_json` field, parsed so the core validates it as it validates a
/// REST body.
pub fn json_text(field: &str, v: &str) -> Result<Value, ApiError> {
    // The REST body rules: depth checked first, trailing content refused.
    sextant_core::json::body_from_slice(v.as_bytes()).map_err(|e| match e {
        sextant_core::json::InvalidJson::Syntax(e) => ApiError::unprocessable(format!("{field}: invalid JSON: {e}")),
        too_deep => ApiError::unprocessable(format!("{field}: {too_deep}")),
    })
}

pub fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// RFC 3339 in UTC, microseconds (how a time is written where a string names a version).
pub fn rfc3339(t: Timestamp) -> String {
    format!("{}Z", t.to_iso())
}

fn json_field(j: &Option<RawJson>) -> Option<String> {
    j.as_ref().map(|j| j.as_str().to_owned())
}

/// A stored run as the proto `Run`. Trace id and dotted order are filled as REST fills them.
pub fn run_to_pb(r: Run) -> pb::Run {
    pb::Run {
        id: r.id.to_string(),
        trace_id: Some(r.trace().to_string()),
        parent_run_id: r.parent_run_id.map(|p| p.to_string()),
        dotted_order: Some(r.dotted_order_or_default()),
        parent_run_ids: r.parent_run_ids().iter().map(ToString::to_string).collect(),
        session_id: Some(r.project_id.to_string()),
        session_name: None,
        name: r.name.clone(),
        run_type: r.run_type.clone(),
        start_time: r.start_time.map(timestamp_to_pb),
        end_time: r.end_time.map(timestamp_to_pb),
        first_token_time: r.first_token_time.map(timestamp_to_pb),
        inputs_json: json_field(&r.inputs),
        outputs_json: json_field(&r.outputs),
        error: r.error.clone(),
        extra_json: Some(serde_json::to_string(&r.extra).expect("a JSON map serialises")),
        events_json: json_field(&r.events),
        serialized_json: json_field(&r.serialized),
        reference_example_id: r.reference_example_id.map(|u| u.to_string()),
        status: Some(r.status().as_str().to_string()),
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        total_tokens: r.total_tokens,
        prompt_cost: r.prompt_cost,
        completion_cost: r.completion_cost,
        total_cost: r.total_cost,
        attachments: r
            .attachments
            .iter()
            .map(|a| pb::Attachment { name: a.name.clone(), mime_type: a.mime_type.clone(), size: a.size })
            .collect(),
        tags: r.tags,
    }
}

/// Sets a generated tonic server's message limits and compression (zstd and gzip, both ways),
/// the same for every Sextant service, and wraps it in [`ClientErrors`]:
/// `tuned_server!(FooServiceServer::new(svc), max_request, max_response)`.
#[macro_export]
macro_rules! tuned_server {
    ($server:expr, $max_request:expr, $max_response:expr) => {
        $crate::grpc::ClientErrors(
            $server
                .max_decoding_message_size($max_request)
                .max_encoding_message_size($max_response)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .send_compressed(tonic::codec::CompressionEncoding::Zstd)
                .send_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
    };
}

/// A generated gRPC server whose undecodable requests are the client's fault. tonic answers a
/// request it cannot decode (malformed protobuf, a frame cut short, no message at all, a
/// compressed frame that does not decompress) with INTERNAL, as if the server had failed;
/// this answers INVALID_ARGUMENT instead, with a message that says what was wrong. Statuses
/// the service itself returns are left alone.
#[derive(Debug, Clone)]
pub struct ClientErrors<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for ClientErrors<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> tonic::codegen::Service<http::Request<B>> for ClientErrors<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            reclassify_decode_error(&mut resp);
            Ok(resp)
        })
    }
}

/// What tonic's request decoding says when the request (not the server) is at fault, and what
/// the client is told instead.
fn decode_error_message(internal: &str) -> Option<String> {
    if internal.starts_with("failed to decode Protobuf message") {
        Some(format!("the request is not a valid protobuf message ({internal})"))
    } else if internal.starts_with("Unexpected EOF decoding stream") {
        Some("the request body ends inside a gRPC message frame (truncated)".into())
    } else if internal.starts_with("Missing request message") {
        Some("the request body holds no gRPC message frame".into())
    } else if internal.starts_with("protocol error: received message with invalid compression flag") {
        Some(format!("malformed gRPC message frame: {internal}"))
    } else if internal.starts_with("Error decompressing") {
        Some(format!("the request message does not decompress: {internal}"))
    } else {
        None
    }
}

fn reclassify_decode_error<B>(resp: &mut http::Response<B>) {
    let Some(status) = tonic::Status::from_header_map(resp.headers()) else { return };
    if status.code() != tonic::Code::Internal {
        return;
    }
    let Some(message) = decode_error_message(status.message()) else { return };
    let replacement = tonic::Status::invalid_argument(message);
    let headers = resp.headers_mut();
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    // `add_header` sets grpc-status and grpc-message; should it fail, the response keeps its
    // INTERNAL status.
    if replacement.add_header(headers).is_ok() {
        resp.extensions_mut().insert(replacement);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_exactly_both_ways() {
        for iso in ["2026-11-25T02:25:38.269290", "1969-12-31T23:59:59.999999", "0001-01-01T00:00:00.000000", "9999-12-31T23:59:59.999999"]
        {
            let t = Timestamp::parse(iso).unwrap();
            let pb = timestamp_to_pb(t);
            assert!((0..1_000_000_000).contains(&pb.nanos), "{iso}: {pb:?}");
            assert_eq!(timestamp_from_pb("t", &pb).unwrap(), t, "{iso}");
            // What other languages' helpers print is what Sextant reads.
            assert_eq!(Timestamp::parse(&pb.to_string()).unwrap(), t, "{iso}: {pb}");
        }
        let pb = timestamp_to_pb(Timestamp::parse("2026-11-25T02:25:38.269290Z").unwrap());
        assert_eq!((pb.seconds, pb.nanos), (1_795_573_538, 269_290_000));
    }

    #[test]
    fn sub_microsecond_digits_are_dropped_and_invalid_timestamps_named() {
        let t = timestamp_from_pb("t", &prost_types::Timestamp { seconds: 10, nanos: 999_999_999 }).unwrap();
        assert_eq!(t.micros(), 10_999_999);
        let bad = |seconds, nanos| timestamp_from_pb("post[2].start_time", &prost_types::Timestamp { seconds, nanos }).unwrap_err();
        for e in [bad(0, -1), bad(0, 1_000_000_000), bad(i64::MAX, 0), bad(i64::MIN, 0), bad(PB_MAX_SECONDS + 1, 0)] {
            assert_eq!(e.kind, ErrorKind::Unprocessable);
            assert!(e.message.starts_with("post[2].start_time: "), "{}", e.message);
        }
        assert_eq!(opt_timestamp("t", None).unwrap(), None);
    }
}
