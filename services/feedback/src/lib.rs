//! The feedback service: what the LangSmith SDK's feedback and annotation-queue calls need.
//!
//! * [`core::FeedbackService`]: validates feedback and publishes it as `FeedbackChangedV1`
//!   events; reads come from the projection (entries and `feedback_stats`).
//! * [`projector`]: folds the feedback stream (`FeedbackChangedV1`, and the
//!   `FeedbackPartReceivedV1` parts ingest captured from `/runs/multipart`) into the store.
//! * [`tokens`]: presigned feedback tokens, so a frontend can post a thumbs-up without a key.
//! * [`configs`]: feedback configs (how a key's feedback is interpreted), event-sourced.
//! * [`queues::Queues`]: annotation queues, leases, reviews (stored as feedback) and
//!   reviewer agreement; [`router`] adds runs to queues by rule, from the run stream.
//! * [`http`] and [`grpc`]: the REST and gRPC layers over both.

pub mod configs;
pub mod core;
pub mod grpc;
pub mod http;
pub mod projector;
pub mod queues;
pub mod router;
pub mod tokens;

pub use crate::core::FeedbackService;
pub use crate::queues::Queues;
