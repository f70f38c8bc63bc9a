//! The dataset-curation service: datasets as the team's regression suite.
//!
//! * [`core::Datasets`]: datasets, examples and their versions (every write is a version;
//!   any past version can be read), tags, diffs and splits, validated against the dataset's
//!   JSON Schemas. Writes are `DatasetChangedV1` events, applied at once for read-your-writes.
//! * [`projector`]: folds the dataset stream into the store (idempotent; repairs what a
//!   crashed writer did not apply).
//! * [`curation`]: jobs that turn production runs matching a filter into examples
//!   (deduplicated by a hash of the inputs, with the source run and its feedback kept).
//! * [`http`]: the REST routes the LangSmith SDK uses, both example write paths; curation
//!   jobs and streaming JSONL/CSV export.

pub mod core;
pub mod curation;
pub mod http;
pub mod projector;

pub use crate::core::Datasets;
