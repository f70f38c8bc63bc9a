//! Sextant's API surface shared by every service: the gRPC definitions generated from
//! `proto/sextant/v1`, and [`ErrorKind`], the one place where a failure becomes an HTTP or a
//! gRPC status.

pub mod error;
pub mod grpc;
pub mod http;

/// Messages, server traits and clients (`RunService`, `FeedbackService`,
/// `AnnotationQueueService`, `PromptService`), generated from `proto/sextant/v1/*.proto`
/// (package `sextant.v1`).
pub mod pb {
    tonic::include_proto!("sextant.v1");
}

pub use error::{ApiError, ErrorKind};
pub use grpc::truncate;
