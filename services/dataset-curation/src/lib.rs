//! The dataset-curation service: datasets as the team's regression suite.
//!
//! * [`core::Datasets`]: datasets, examples and their versions (every write is a version;
//!   any past version can be read), tags, diffs and splits, validated against the dataset's
//!   JSON Schemas. Writes are `DatasetChangedV1` events, applied at once for read-your-writes.
//! * [`projector`]: folds the dataset stream into the store (idempotent; repairs what a
//!   crashed writer did not apply).
//! * [`curation`]: jobs that turn production runs matching a filter into examples
//!   (deduplicated by a hash of the inputs, with the source run and its feedback kept).
//! * [`rules`]: curation rules, the same continuously: consumers of the run and feedback
//!   streams add each run that matches a dataset's rule as it finishes or gets feedback.
//! * [`import`]: streaming JSONL/CSV import, row-numbered errors, atomic or partial.
//! * [`example_filter`]: the filter language over examples (`GET /examples?filter=`).
//! * [`experiment_runs`]: a dataset's examples with the runs experiments made on them
//!   (`POST /api/v2/datasets/{id}/experiment-runs`), read from the run store.
//! * [`grpc`]: the same operations over gRPC (`DatasetService`).
//! * [`http`]: the REST routes the LangSmith SDK uses, both example write paths; curation
//!   jobs and streaming JSONL/CSV export.

pub mod core;
pub mod curation;
pub mod example_filter;
pub mod experiment_runs;
pub mod grpc;
pub mod http;
pub mod import;
pub mod projector;
pub mod rules;

pub use crate::core::Datasets;
