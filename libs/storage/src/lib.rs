//! The storage port: the read models services query, projected from events.
//!
//! Keys are designed for both adapters: every partition starts with the tenant (and the
//! project where there is one), and runs cluster by start time within a project, so the
//! embedded adapter's key prefixes map one to one onto ScyllaDB partition and clustering keys
//! (`((tenant, project), start_time, run_id)`).
//!
//! Contract (checked by [`testsuite`] against every adapter):
//! * `apply_run_fragments` merges with [`sextant_core::Run::apply`]'s rules and is idempotent:
//!   re-applying any fragment (a redelivered event) changes nothing.
//! * A run keeps the project it was first stored under.
//! * Every read is scoped to a tenant; nothing of tenant A is visible to tenant B.
//! * `sync` returns once everything applied before it is durable.
//! * Project names are unique per tenant; `create_project` is idempotent on the id.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sextant_core::annotation::{Queue, QueueItem};
use sextant_core::dataset::{CurationJob, DataType, ExampleChange};
use sextant_core::evaluator::OnlineEvaluatorDef;
use sextant_core::feedback::{FeedbackConfigDef, FeedbackToken};
use sextant_core::prompt::{PromptCommit, PromptRepo, TagMove};
use sextant_core::{
    Dataset, DatasetId, Example, ExampleId, Feedback, FeedbackChange, FeedbackId, FeedbackStats, Project, ProjectId, ProjectPatch, QueueId,
    RepoId, Run, RunFragment, RunId, RunShare, TenantId, Timestamp,
};

pub mod embedded;
#[cfg(feature = "scylla")]
pub mod scylla;
#[cfg(feature = "testsuite")]
pub mod testsuite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The backend cannot serve the request now; retrying may help.
    Unavailable,
    /// The caller asked for something that conflicts with stored state (duplicate name).
    Conflict,
    /// Bad arguments, e.g. a cursor that does not decode.
    Invalid,
    /// Corruption or a bug.
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind:?} storage error: {message}")]
pub struct StorageError {
    pub kind: StorageErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StorageError {
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }
    pub fn with_source(kind: StorageErrorKind, message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { kind, message: message.into(), source: Some(Box::new(source)) }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A predicate over runs (the compiled filter language lives outside storage).
pub trait RunMatcher: Send + Sync {
    /// `feedback` holds the run's live feedback when [`RunMatcher::needs_feedback`] says so,
    /// and is empty otherwise.
    fn matches(&self, run: &Run, feedback: &[Feedback]) -> bool;
    /// Whether the predicate looks at feedback (so the store loads it).
    fn needs_feedback(&self) -> bool {
        false
    }
}

impl<F: Fn(&Run) -> bool + Send + Sync> RunMatcher for F {
    fn matches(&self, run: &Run, _feedback: &[Feedback]) -> bool {
        self(run)
    }
}

/// Where a page of runs ends: runs are returned newest first by `(start_time, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCursor {
    pub start_us: i64,
    pub id: RunId,
}

impl RunCursor {
    /// Opaque to clients.
    pub fn encode(&self) -> String {
        format!("v1.{:x}.{}", self.start_us as u64, self.id.0.simple())
    }

    pub fn decode(s: &str) -> Result<Self> {
        let bad = || StorageError::new(StorageErrorKind::Invalid, "cursor is not one this server issued");
        let mut it = s.splitn(3, '.');
        if it.next() != Some("v1") {
            return Err(bad());
        }
        let start = u64::from_str_radix(it.next().ok_or_else(bad)?, 16).map_err(|_| bad())? as i64;
        let id = Uuid::parse_str(it.next().ok_or_else(bad)?).map_err(|_| bad())?;
        Ok(Self { start_us: start, id: RunId(id) })
    }
}

/// A run query. Structured fields narrow the scan; the matchers are evaluated on each
/// candidate. All conditions are ANDed.
#[derive(Clone, Default)]
pub struct RunQuery {
    /// Projects to search; empty means every project of the tenant.
    pub projects: Vec<ProjectId>,
    /// Exactly these runs (other conditions still apply).
    pub ids: Option<Vec<RunId>>,
    pub trace: Option<RunId>,
    pub parent_run: Option<RunId>,
    pub is_root: Option<bool>,
    pub run_type: Option<String>,
    pub error: Option<bool>,
    pub reference_examples: Vec<Uuid>,
    /// Inclusive lower bound on start time.
    pub start_from: Option<Timestamp>,
    /// Exclusive upper bound on start time.
    pub start_before: Option<Timestamp>,
    /// Top-level `extra.metadata[key]` is exactly this JSON string (served by an index).
    pub metadata_pair: Option<(String, String)>,
    /// Applies to the run itself.
    pub filter: Option<Arc<dyn RunMatcher>>,
    /// Applies to the root run of the run's trace.
    pub trace_filter: Option<Arc<dyn RunMatcher>>,
    /// Some run of the run's trace must match.
    pub tree_filter: Option<Arc<dyn RunMatcher>>,
    pub limit: usize,
    pub cursor: Option<RunCursor>,
}

impl std::fmt::Debug for RunQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunQuery")
            .field("projects", &self.projects)
            .field("ids", &self.ids.as_ref().map(Vec::len))
            .field("trace", &self.trace)
            .field("limit", &self.limit)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunPage {
    pub runs: Vec<Run>,
    pub next: Option<RunCursor>,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectQuery {
    pub ids: Vec<ProjectId>,
    pub name: Option<String>,
    pub name_contains: Option<String>,
    pub reference_dataset: Vec<Uuid>,
    /// `Some(true)`: only projects without a reference dataset (not experiments).
    pub reference_free: Option<bool>,
    /// Every key/value must be present in `extra.metadata`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    Created(Project),
    /// A project with this id already exists (a redelivered create): it is returned.
    AlreadyExists(Project),
    /// Another project already has this name.
    NameTaken(Project),
}

/// Aggregates over a project's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProjectStats {
    pub run_count: u64,
    pub root_run_count: u64,
    pub error_count: u64,
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    pub first_token_p50: Option<f64>,
    pub first_token_p99: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub prompt_cost: f64,
    pub completion_cost: f64,
    pub total_cost: f64,
    pub last_run_start_time: Option<Timestamp>,
    /// Filled from [`FeedbackStore::project_feedback_stats`] by the service, not by
    /// `project_stats`.
    pub feedback: FeedbackStats,
}

#[async_trait]
pub trait ProjectStore: Send + Sync + 'static {
    async fn create_project(&self, project: &Project) -> Result<CreateOutcome>;
    async fn get_project(&self, tenant: TenantId, id: ProjectId) -> Result<Option<Project>>;
    async fn project_by_name(&self, tenant: TenantId, name: &str) -> Result<Option<Project>>;
    /// Newest first (by start time, then id), offset-paged.
    async fn list_projects(&self, tenant: TenantId, q: &ProjectQuery) -> Result<Vec<Project>>;
    /// `Ok(None)` when the project does not exist; `Conflict` when renaming onto a taken name.
    async fn update_project(&self, tenant: TenantId, id: ProjectId, patch: &ProjectPatch) -> Result<Option<Project>>;
    /// Deletes the project and every run in it. `Ok(false)` when it did not exist.
    async fn delete_project(&self, tenant: TenantId, id: ProjectId) -> Result<bool>;
    async fn project_stats(&self, tenant: TenantId, id: ProjectId) -> Result<ProjectStats>;
}

#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Merges fragments into stored runs of `project` (see the crate docs).
    async fn apply_run_fragments(&self, tenant: TenantId, project: ProjectId, fragments: Vec<RunFragment>) -> Result<()>;
    async fn get_run(&self, tenant: TenantId, id: RunId) -> Result<Option<Run>>;
    async fn query_runs(&self, tenant: TenantId, q: &RunQuery) -> Result<RunPage>;
    /// Every run of a trace, ordered by `dotted_order`. No cap.
    async fn trace_runs(&self, tenant: TenantId, trace: RunId) -> Result<Vec<Run>>;
    /// An attachment's MIME type and bytes.
    async fn get_attachment(&self, tenant: TenantId, run: RunId, name: &str) -> Result<Option<(String, Vec<u8>)>>;
    /// Shares `run` by public link (`Some`) or unshares it (`None`; its old token stops
    /// working). One share per run.
    /// `at` orders changes: of a share and an unshare, the later one wins in any order.
    async fn put_run_share(&self, tenant: TenantId, run: RunId, share: Option<&RunShare>, at: Timestamp) -> Result<()>;
    async fn run_share(&self, tenant: TenantId, run: RunId) -> Result<Option<RunShare>>;
    /// The share a public link's token names, whichever tenant it belongs to (the token is the
    /// only credential a public reader has).
    async fn run_share_by_token(&self, token: Uuid) -> Result<Option<(TenantId, RunShare)>>;
    /// Makes everything applied so far durable.
    async fn sync(&self) -> Result<()>;
}

/// Which feedback `GET /feedback` lists. Empty lists mean "any"; entries are returned in
/// id order (UUIDv7: creation order), offset-paged.
#[derive(Debug, Clone, Default)]
pub struct FeedbackQuery {
    pub runs: Vec<RunId>,
    pub keys: Vec<String>,
    /// `feedback_source.type` values.
    pub sources: Vec<String>,
    /// Projects the feedback counts towards (named or resolved from its run).
    pub projects: Vec<ProjectId>,
    pub offset: usize,
    pub limit: usize,
}

/// Feedback, projected from the feedback stream, with each run's and project's
/// `feedback_stats` maintained incrementally.
///
/// Contract (checked by [`testsuite`]):
/// * `apply_feedback` applies [`sextant_core::FeedbackRecord::apply`] with the change's event
///   id as the stamp; re-applying a change, or applying changes in another order, leaves the
///   same entries and the same stats.
/// * Stats count live entries only: an update moves its entry's contribution, a delete
///   removes it.
/// * Feedback for a run that is not stored yet counts towards the run's project as soon as
///   the run is stored.
#[async_trait]
pub trait FeedbackStore: Send + Sync + 'static {
    async fn apply_feedback(&self, tenant: TenantId, stamp: Uuid, change: &FeedbackChange) -> Result<()>;
    /// Applies several changes as [`FeedbackStore::apply_feedback`] would one by one, in
    /// order; adapters may do it in one atomic write. Each element is `(tenant, stamp, change)`.
    async fn apply_feedback_batch(&self, changes: &[(TenantId, Uuid, FeedbackChange)]) -> Result<()> {
        for (t, stamp, change) in changes {
            self.apply_feedback(*t, *stamp, change).await?;
        }
        Ok(())
    }
    async fn get_feedback(&self, tenant: TenantId, id: FeedbackId) -> Result<Option<Feedback>>;
    async fn list_feedback(&self, tenant: TenantId, q: &FeedbackQuery) -> Result<Vec<Feedback>>;
    /// `feedback_stats` of each run that has any feedback.
    async fn run_feedback_stats(&self, tenant: TenantId, runs: &[RunId]) -> Result<std::collections::HashMap<RunId, FeedbackStats>>;
    async fn project_feedback_stats(&self, tenant: TenantId, project: ProjectId) -> Result<FeedbackStats>;
    /// Stores a presigned feedback token. Idempotent: a token never changes once issued.
    async fn put_feedback_token(&self, tenant: TenantId, token: &FeedbackToken) -> Result<()>;
    /// The token with this id and the tenant that issued it. The one read not scoped to a
    /// tenant: redeeming a token carries nothing but its id (a random bearer secret).
    async fn feedback_token(&self, id: Uuid) -> Result<Option<(TenantId, FeedbackToken)>>;
    /// The tokens issued for a run, in id order.
    async fn list_feedback_tokens(&self, tenant: TenantId, run: RunId) -> Result<Vec<FeedbackToken>>;
    /// Stores a feedback config version unless the stored one's `modified_at` is as new or
    /// newer (so redelivered and reordered versions converge on the newest).
    async fn put_feedback_config(&self, tenant: TenantId, config: &FeedbackConfigDef) -> Result<()>;
    /// Every feedback config of the tenant, deleted ones included, in id order.
    async fn list_feedback_configs(&self, tenant: TenantId) -> Result<Vec<FeedbackConfigDef>>;
}

#[derive(Debug, Clone, Default)]
pub struct QueueQuery {
    pub ids: Vec<QueueId>,
    pub name: Option<String>,
    pub name_contains: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

/// Changes one queue item inside the store's read-modify-write (an LWT loop in ScyllaDB, so
/// it may run more than once). Returns `Ok(false)` to leave the item unchanged.
pub type ItemUpdate = Box<dyn FnMut(&mut QueueItem) -> Result<bool> + Send>;

/// Annotation queues and their items. Queue definitions and item state (leases, reviews) are
/// written here directly, with compare-and-set: a lease must be exclusive the moment it is
/// granted, which an eventually consistent projection cannot promise.
///
/// Contract (checked by [`testsuite`]):
/// * `add_queue_items` is idempotent per `(queue, run)`: a run is in a queue at most once.
/// * `take_next_item` never leases one item to two reviewers at once, even when called
///   concurrently; an expired lease may be taken over.
/// * Items list in the order they were added.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Idempotent on the id: an existing queue is returned unchanged.
    async fn create_queue(&self, tenant: TenantId, queue: &Queue) -> Result<Queue>;
    async fn get_queue(&self, tenant: TenantId, id: QueueId) -> Result<Option<Queue>>;
    /// Newest first, offset-paged.
    async fn list_queues(&self, tenant: TenantId, q: &QueueQuery) -> Result<Vec<Queue>>;
    /// Replaces the stored queue definition (`Ok(None)` when it does not exist).
    async fn put_queue(&self, tenant: TenantId, queue: &Queue) -> Result<Option<Queue>>;
    /// Deletes the queue and its items. `Ok(false)` when it did not exist.
    async fn delete_queue(&self, tenant: TenantId, id: QueueId) -> Result<bool>;
    /// Every queue that has routing rules, of every tenant (the router's working set).
    async fn queues_with_rules(&self) -> Result<Vec<(TenantId, Queue)>>;
    /// Adds items; for a run already in the queue the existing item is returned instead.
    async fn add_queue_items(&self, tenant: TenantId, queue: QueueId, items: Vec<QueueItem>) -> Result<Vec<QueueItem>>;
    /// Every item of the queue in the order added.
    async fn list_queue_items(&self, tenant: TenantId, queue: QueueId) -> Result<Vec<QueueItem>>;
    async fn get_queue_item(&self, tenant: TenantId, queue: QueueId, item: Uuid) -> Result<Option<QueueItem>>;
    /// Read-modify-write of one item; `Ok(None)` when it does not exist.
    async fn update_queue_item(&self, tenant: TenantId, queue: QueueId, item: Uuid, update: ItemUpdate) -> Result<Option<QueueItem>>;
    /// Removes items (by item id). Returns how many existed.
    async fn delete_queue_items(&self, tenant: TenantId, queue: QueueId, items: &[Uuid]) -> Result<usize>;
    /// Leases the first item (in added order) that `reviewer` may take, until `until`.
    async fn take_next_item(
        &self,
        tenant: TenantId,
        queue: QueueId,
        reviewer: &str,
        now: Timestamp,
        until: Timestamp,
        reviewers_needed: u32,
    ) -> Result<Option<QueueItem>>;
}

#[derive(Debug, Clone, Default)]
pub struct DatasetQuery {
    pub ids: Vec<DatasetId>,
    pub name: Option<String>,
    pub name_contains: Option<String>,
    pub data_type: Option<DataType>,
    /// Datasets whose `metadata` has every one of these keys with an equal value.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub offset: usize,
    pub limit: usize,
}

/// Which examples of one dataset, as of which version. Examples come in id order.
#[derive(Debug, Clone, Default)]
pub struct ExampleQuery {
    /// The version to read; `None` means the newest.
    pub as_of: Option<Timestamp>,
    pub ids: Vec<ExampleId>,
    /// Examples in any of these splits.
    pub splits: Vec<String>,
    /// Examples whose metadata has every one of these keys with an equal value.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Keyset paging (exports): only examples with a greater id.
    pub after: Option<ExampleId>,
    pub offset: usize,
    pub limit: usize,
}

/// Outcome of creating a dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetCreate {
    Created(Dataset),
    /// A dataset with this id already exists (a redelivered create): it is returned.
    AlreadyExists(Dataset),
    /// Another dataset already has this name.
    NameTaken(Dataset),
}

/// Datasets, their versioned examples, tags, attachment blobs and curation jobs, projected
/// from the dataset stream (and written through by the service, so a write is readable as
/// soon as it is acknowledged).
///
/// Contract (checked by [`testsuite`]):
/// * `apply_example_changes` is idempotent per (example, `as_of`) and order-independent: the
///   state as of a time is each example's newest version at or before it.
/// * `put_dataset` keeps the definition with the newest `modified_at`; `set_tag` the newest `at`.
/// * Examples list in id order, and a page is never short while more examples match.
/// * Dataset names are unique per tenant.
#[async_trait]
pub trait DatasetStore: Send + Sync {
    async fn create_dataset(&self, tenant: TenantId, dataset: &Dataset) -> Result<DatasetCreate>;
    /// Replaces the definition unless the stored one is newer. `Ok(false)` when it does not
    /// exist; a name another dataset has is a `Conflict`.
    async fn put_dataset(&self, tenant: TenantId, dataset: &Dataset) -> Result<bool>;
    async fn get_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<Option<Dataset>>;
    async fn dataset_by_name(&self, tenant: TenantId, name: &str) -> Result<Option<Dataset>>;
    /// Newest first.
    async fn list_datasets(&self, tenant: TenantId, q: &DatasetQuery) -> Result<Vec<Dataset>>;
    /// Deletes the dataset with its examples, versions and tags. `Ok(false)` if it did not exist.
    async fn delete_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<bool>;
    /// Every dataset that has curation rules, of every tenant (the rule consumer's working set).
    async fn datasets_with_rules(&self) -> Result<Vec<(TenantId, Dataset)>>;
    /// Records the version `as_of` of these examples.
    async fn apply_example_changes(&self, tenant: TenantId, dataset: DatasetId, as_of: Timestamp, changes: &[ExampleChange]) -> Result<()>;
    async fn list_examples(&self, tenant: TenantId, dataset: DatasetId, q: &ExampleQuery) -> Result<Vec<Example>>;
    /// Examples present as of the version (`None`: the newest).
    async fn count_examples(&self, tenant: TenantId, dataset: DatasetId, as_of: Option<Timestamp>) -> Result<u64>;
    /// One example as of a version, wherever it is (`GET /examples/{id}`).
    async fn get_example(&self, tenant: TenantId, id: ExampleId, as_of: Option<Timestamp>) -> Result<Option<Example>>;
    /// Every version of the dataset (the `as_of` of each change), newest first.
    async fn list_versions(&self, tenant: TenantId, dataset: DatasetId) -> Result<Vec<Timestamp>>;
    /// Points `tag` at `as_of` unless a newer move (`at`) is stored.
    async fn set_tag(&self, tenant: TenantId, dataset: DatasetId, tag: &str, as_of: Timestamp, at: Timestamp) -> Result<()>;
    /// `(tag, as_of)` of every tag of the dataset.
    async fn tags(&self, tenant: TenantId, dataset: DatasetId) -> Result<Vec<(String, Timestamp)>>;
    /// Stores bytes under their SHA-256 (idempotent).
    async fn put_blob(&self, tenant: TenantId, sha256: &str, bytes: &[u8]) -> Result<()>;
    async fn get_blob(&self, tenant: TenantId, sha256: &str) -> Result<Option<Vec<u8>>>;
    async fn put_curation_job(&self, tenant: TenantId, job: &CurationJob) -> Result<()>;
    async fn get_curation_job(&self, tenant: TenantId, id: Uuid) -> Result<Option<CurationJob>>;
}

/// Outcome of creating a prompt repository.
#[derive(Debug, Clone, PartialEq)]
pub enum RepoCreate {
    Created(PromptRepo),
    /// A repository with this id already exists (a redelivered create): it is returned.
    AlreadyExists(PromptRepo),
    /// Another repository already has this handle.
    NameTaken(PromptRepo),
    /// This id was deleted (a create redelivered after the delete): it stays deleted.
    Deleted,
}

/// A page of a repository's commits, newest first, and how many it has in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitPage {
    pub commits: Vec<PromptCommit>,
    pub total: u64,
}

/// The prompt hub: repositories, their commits, commit-tag histories and likes, projected
/// from the prompt stream (and written through by the service, so a push is pullable as soon
/// as it is acknowledged).
///
/// Contract (checked by [`testsuite`]):
/// * `put_commit` is idempotent (a commit is keyed by its hash and never changes);
///   `put_tag_move` is idempotent per (tag, `at`); both may arrive in any order.
/// * `put_repo` keeps the definition with the newest `updated_at`; a handle never changes.
/// * Handles are unique per tenant; `create_repo` is idempotent on the id.
/// * `delete_repo` removes the repository, its handle, commits, tag moves and likes written
///   at or before `at`; a repository id is never reused.
/// * Commits list newest first (by `created_at`), and a page is never short while more remain.
#[async_trait]
pub trait PromptStore: Send + Sync {
    async fn create_repo(&self, tenant: TenantId, repo: &PromptRepo) -> Result<RepoCreate>;
    /// Replaces the definition unless the stored one is newer. `Ok(false)` when it does not exist.
    async fn put_repo(&self, tenant: TenantId, repo: &PromptRepo) -> Result<bool>;
    async fn get_repo(&self, tenant: TenantId, id: RepoId) -> Result<Option<PromptRepo>>;
    async fn repo_by_handle(&self, tenant: TenantId, handle: &str) -> Result<Option<PromptRepo>>;
    /// Every repository of the tenant, in no particular order (the service filters and sorts).
    async fn list_repos(&self, tenant: TenantId) -> Result<Vec<PromptRepo>>;
    /// `Ok(false)` when it did not exist.
    async fn delete_repo(&self, tenant: TenantId, id: RepoId, at: Timestamp) -> Result<bool>;
    async fn put_commit(&self, tenant: TenantId, commit: &PromptCommit) -> Result<()>;
    /// The commit with this full hash.
    async fn get_commit(&self, tenant: TenantId, repo: RepoId, hash: &str) -> Result<Option<PromptCommit>>;
    /// Up to `limit` commits whose hash starts with `prefix` (lowercase hex), in hash order.
    async fn commits_by_prefix(&self, tenant: TenantId, repo: RepoId, prefix: &str, limit: usize) -> Result<Vec<PromptCommit>>;
    /// Newest first, offset-paged.
    async fn list_commits(&self, tenant: TenantId, repo: RepoId, offset: usize, limit: usize) -> Result<CommitPage>;
    async fn put_tag_move(&self, tenant: TenantId, tag_move: &TagMove) -> Result<()>;
    /// Every move of the repository's tags (of one tag if given), by tag then time.
    async fn tag_moves(&self, tenant: TenantId, repo: RepoId, tag: Option<&str>) -> Result<Vec<TagMove>>;
    /// Records that `by` likes (or no longer likes) the repository, unless a newer change is stored.
    async fn set_like(&self, tenant: TenantId, repo: RepoId, by: TenantId, liked: bool, at: Timestamp) -> Result<()>;
    /// The tenants that like the repository.
    async fn likes(&self, tenant: TenantId, repo: RepoId) -> Result<Vec<TenantId>>;
}

/// Online evaluators (`/platform/evaluators`), as versions of whole definitions.
///
/// Contract (checked by [`testsuite`]): `put_online_evaluator` keeps the version with the
/// newest `updated_at` (redelivered and reordered versions converge); a delete is a version
/// marked `deleted`, kept and listed; tenants are apart.
#[async_trait]
pub trait EvaluatorStore: Send + Sync {
    async fn put_online_evaluator(&self, tenant: TenantId, evaluator: &OnlineEvaluatorDef) -> Result<()>;
    async fn get_online_evaluator(&self, tenant: TenantId, id: Uuid) -> Result<Option<OnlineEvaluatorDef>>;
    /// Every online evaluator of the tenant, deleted ones included, in id order.
    async fn list_online_evaluators(&self, tenant: TenantId) -> Result<Vec<OnlineEvaluatorDef>>;
}

/// Every store; what a service holds.
pub trait Storage: ProjectStore + RunStore + FeedbackStore + QueueStore + DatasetStore + PromptStore + EvaluatorStore {}
impl<T: ProjectStore + RunStore + FeedbackStore + QueueStore + DatasetStore + PromptStore + EvaluatorStore> Storage for T {}
