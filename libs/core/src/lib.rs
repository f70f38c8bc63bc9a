//! Sextant's domain: tenants, projects (LangSmith "sessions") and runs, plus the pure rules
//! that turn the SDK's run fragments (posts and patches, in any order, any number of times)
//! into one stored run; feedback, annotation queues, versioned datasets, and prompts versioned
//! by commit. No I/O lives here.

pub mod annotation;
pub mod dataset;
pub mod evaluator;
pub mod feedback;
pub mod ids;
pub mod json;
pub mod project;
pub mod prompt;
pub mod run;
pub mod time;

pub use dataset::{Dataset, Example};
pub use feedback::{Feedback, FeedbackChange, FeedbackRecord, FeedbackStats};
pub use ids::{DatasetId, ExampleId, FeedbackId, ProjectId, QueueId, RepoId, RunId, TenantId};
pub use json::RawJson;
pub use project::{Project, ProjectPatch};
pub use run::{FragmentKind, Run, RunFragment, RunShare, RunStatus};
pub use time::{Timestamp, WireTime};

/// The tenant used when `sextant serve` runs without any API key configured.
pub const LOCAL_TENANT: TenantId = TenantId(uuid::Uuid::from_u128(0x5e87_a170_0000_4000_8000_0000_0000_0001));
