//! The ingest service: LangSmith-compatible run ingestion (`/runs/multipart`, `/runs/batch`,
//! `/runs`), run reads and queries with the filter language, projects (`/sessions`), the run
//! projector that folds run events into the store, and the gRPC `RunService`.

pub mod core;
pub mod decode;
pub mod form_data;
pub mod grpc;
pub mod http;
pub mod multipart;
pub mod projector;
pub mod shares;
pub mod signing;
pub mod threads;
pub mod v2;
pub mod view;
pub mod wire;

pub use crate::core::{Ingest, IngestLimits};
