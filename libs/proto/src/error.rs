//! Errors as clients see them. Each service maps its own error enum to an [`ErrorKind`] and a
//! client-safe message; this module turns that into a status exactly once per transport.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed or invalid input.
    BadRequest,
    /// Well-formed input that is semantically wrong (wrong types, failed validation).
    Unprocessable,
    Unauthenticated,
    Forbidden,
    NotFound,
    /// Duplicate name or state conflict.
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    /// The client sent its request too slowly (a body that stopped arriving).
    RequestTimeout,
    /// A dependency (bus, store) is down; the client should retry.
    Unavailable,
    /// The disk is (nearly) full: nothing more can be made durable until space is freed.
    InsufficientStorage,
    /// A documented option this server does not offer (e.g. LangSmith's `ai_search`).
    NotImplemented,
    Internal,
}

impl ErrorKind {
    pub fn http(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc(self) -> tonic::Code {
        match self {
            Self::BadRequest | Self::Unprocessable | Self::UnsupportedMediaType => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::Forbidden => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::Conflict => tonic::Code::AlreadyExists,
            Self::PayloadTooLarge => tonic::Code::ResourceExhausted,
            Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::RequestTimeout => tonic::Code::DeadlineExceeded,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::InsufficientStorage => tonic::Code::ResourceExhausted,
            Self::NotImplemented => tonic::Code::Unimplemented,
            Self::Internal => tonic::Code::Internal,
        }
    }
}

/// An error with a message safe to show the client. Internals are logged, never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unprocessable, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "internal error; see the server log")
    }

    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind.grpc(), self.message.clone())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `detail` is what LangSmith clients print.
        let body = serde_json::json!({ "detail": self.message, "error": format!("{:?}", self.kind) });
        let mut resp = (self.kind.http(), axum::Json(body)).into_response();
        if matches!(self.kind, ErrorKind::Unavailable | ErrorKind::InsufficientStorage) {
            resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        if self.kind == ErrorKind::RequestTimeout {
            // The rest of the body may still come: the connection cannot carry another request.
            resp.headers_mut().insert("connection", HeaderValue::from_static("close"));
        }
        resp.extensions_mut().insert(self);
        resp
    }
}

/// A store failure as clients see it: invalid input 422, a clash 409, the store down 503 (the
/// client retries); anything else is logged and a bare 500.
pub fn storage_error(e: sextant_storage::StorageError) -> ApiError {
    use sextant_storage::StorageErrorKind;
    match e.kind {
        StorageErrorKind::Invalid => ApiError::unprocessable(e.message),
        StorageErrorKind::Conflict => ApiError::conflict(e.message),
        StorageErrorKind::Unavailable => {
            tracing::warn!(error = %e, "store unavailable");
            ApiError::unavailable("the store is unavailable; retry shortly")
        }
        StorageErrorKind::Internal => {
            tracing::error!(error = %e, "store failure");
            ApiError::internal()
        }
    }
}

/// An event-bus failure as clients see it: an invalid event 422, the bus down 503; anything
/// else is logged and a bare 500.
pub fn bus_error(e: sextant_bus::BusError) -> ApiError {
    use sextant_bus::BusErrorKind;
    match e.kind {
        BusErrorKind::Invalid => ApiError::unprocessable(e.to_string()),
        BusErrorKind::Unavailable => ApiError::unavailable("the event bus is unavailable; retry shortly"),
        BusErrorKind::StorageFull => ApiError::new(ErrorKind::InsufficientStorage, e.message),
        _ => {
            tracing::error!(error = %e, "event bus failure");
            ApiError::internal()
        }
    }
}
