//! The dataset-curation service: datasets as the team's regression suite.
//!
//! * [`core::Datasets`]: datasets, examples and their versions (every write is a version;
//!   any past version can be read), tags, diffs and splits, validated against the dataset's
//!   JSON Schemas. Writes are `DatasetChangedV1` events, applied at once for read-your-writes.
//! * [`projector`]: folds the dataset stream into the store (idempotent; repairs what a
//!   crashed writer did not apply).
//! * [`http`]: the REST routes the LangSmith SDK uses, both example write paths.

pub mod core;
pub mod http;
pub mod projector;

pub use crate::core::Datasets;
