//! The prompt-hub service: prompts versioned like code, because they change more often than
//! code and break production as easily.
//!
//! * [`core::Prompts`]: repositories; commits addressed by a SHA-256 of their canonical
//!   manifest and parent (a push identical to its parent is refused); pulls by `latest`, tag or
//!   hash (full or a prefix); tags whose every move is kept, so any past state can be read;
//!   diffs; A/B variants with stable assignment by user id. Writes are `PromptChangedV1` events,
//!   applied at once for read-your-writes. Agents and skills are repositories whose commits
//!   are directories of files and links (`core::directories`). Owners are tenant handles
//!   (`sextant_core::prompt::tenant_handle`), what `GET /settings` gives the SDK.
//! * [`projector`]: folds the prompt stream into the store (idempotent; repairs what a crashed
//!   writer did not apply, feeds other processes' stores).
//! * [`http`]: the REST routes the LangSmith SDK uses (`/repos`, `/commits`, `/likes`) and
//!   Sextant's tags, history, diffs, variants and assignment; cacheable pulls (`ETag`); the
//!   hub's directories (`/v1/platform/hub/repos/{owner}/{repo}/directories`).
//! * [`grpc`]: the same operations as `sextant.v1.PromptService`.

pub mod core;
pub mod grpc;
pub mod http;
pub mod projector;

pub use crate::core::Prompts;
