//! Every CQL statement the adapter runs, each typed with the values it binds.
//!
//! Markers are named (`:tenant`), and each statement's values are a `SerializeRow` struct whose
//! fields carry the same names: the driver matches values to markers by name, so a value can
//! never land in the wrong marker, and `Stmt<V>` makes binding the wrong struct a compile error.
//! The unit tests check every statement against the schema in `cql/` (see `shape.rs`).

use std::marker::PhantomData;

use scylla::SerializeRow;
use uuid::Uuid;

/// A statement whose values are a `V`.
pub(crate) struct Stmt<V> {
    pub(crate) id: Id,
    _values: PhantomData<fn(&V)>,
}

impl<V> Stmt<V> {
    const fn new(id: Id) -> Self {
        Self { id, _values: PhantomData }
    }
    pub(crate) fn index(&self) -> usize {
        self.id as usize
    }
    pub(crate) fn name(&self) -> &'static str {
        ALL[self.index()].0
    }
}

macro_rules! statements {
    ($($name:ident: $values:ty = $cql:expr;)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Id { $($name),* }

        $(pub(crate) const $name: Stmt<$values> = Stmt::new(Id::$name);)*

        /// `(name, cql)` of every statement, indexed by `Id`.
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $cql)),*];

        /// Calls `f` with each statement and a sample of its values (for shape tests).
        #[cfg(test)]
        pub(crate) fn for_each_with_sample(f: &mut dyn FnMut(&str, &str, &dyn scylla::serialize::row::SerializeRow)) {
            $(f(stringify!($name), $cql, &<$values as Default>::default());)*
        }
    };
}

statements! {
    // Runs by id: the source of truth, versioned by compare-and-set.
    GET_HEAD: RunKey = "SELECT body, version, write_ts FROM run_by_id WHERE tenant = :tenant AND run_id = :run_id";
    // The same read through Paxos (LOCAL_SERIAL), after a lost compare-and-set.
    GET_HEAD_SERIAL: RunKey = "SELECT body, version, write_ts FROM run_by_id WHERE tenant = :tenant AND run_id = :run_id";
    INSERT_HEAD: InsertHead = "INSERT INTO run_by_id (tenant, run_id, body, version, write_ts) \
        VALUES (:tenant, :run_id, :body, :version, :write_ts) IF NOT EXISTS USING TTL :run_ttl";
    UPDATE_HEAD: UpdateHead = "UPDATE run_by_id USING TTL :run_ttl SET body = :body, version = :version, write_ts = :write_ts \
        WHERE tenant = :tenant AND run_id = :run_id IF version = :expected_version";
    // Through Paxos too: a plain delete's timestamp could lose to the last ballot's under clock skew.
    DELETE_HEAD: RunKey = "DELETE FROM run_by_id WHERE tenant = :tenant AND run_id = :run_id IF EXISTS";

    // The hour buckets of a project that hold runs.
    LIST_BUCKETS: BucketRange = "SELECT bucket FROM run_buckets WHERE tenant = :tenant AND project = :project \
        AND bucket >= :lo_bucket AND bucket <= :hi_bucket";
    INSERT_BUCKET: BucketRow = "INSERT INTO run_buckets (tenant, project, bucket) VALUES (:tenant, :project, :bucket) \
        USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_BUCKETS: ProjectKeyAt = "DELETE FROM run_buckets USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project";

    // A project's runs, newest first, within one bucket.
    SCAN_RUNS: KeyRange = "SELECT start_us, run_id FROM runs WHERE tenant = :tenant AND project = :project AND bucket = :bucket \
        AND (start_us, run_id) >= (:lo_start, :lo_run) AND (start_us, run_id) < (:hi_start, :hi_run)";
    INSERT_RUN_KEY: TimeKeyRow = "INSERT INTO runs (tenant, project, bucket, start_us, run_id) \
        VALUES (:tenant, :project, :bucket, :start_us, :run_id) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_RUN_KEY: TimeKeyAt = "DELETE FROM runs USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project \
        AND bucket = :bucket AND start_us = :start_us AND run_id = :run_id";
    DELETE_RUN_BUCKET: BucketAt = "DELETE FROM runs USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project AND bucket = :bucket";

    // Root runs, keyed like runs.
    SCAN_ROOTS: KeyRange = "SELECT start_us, run_id FROM roots WHERE tenant = :tenant AND project = :project AND bucket = :bucket \
        AND (start_us, run_id) >= (:lo_start, :lo_run) AND (start_us, run_id) < (:hi_start, :hi_run)";
    INSERT_ROOT_KEY: TimeKeyRow = "INSERT INTO roots (tenant, project, bucket, start_us, run_id) \
        VALUES (:tenant, :project, :bucket, :start_us, :run_id) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_ROOT_KEY: TimeKeyAt = "DELETE FROM roots USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project \
        AND bucket = :bucket AND start_us = :start_us AND run_id = :run_id";
    DELETE_ROOT_BUCKET: BucketAt = "DELETE FROM roots USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project AND bucket = :bucket";

    // The runs of a trace.
    TRACE_MEMBERS: TraceKey = "SELECT run_id FROM trace_idx WHERE tenant = :tenant AND trace_id = :trace_id";
    INSERT_TRACE_MEMBER: TraceRow = "INSERT INTO trace_idx (tenant, trace_id, run_id) VALUES (:tenant, :trace_id, :run_id) \
        USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_TRACE_MEMBER: TraceRowAt = "DELETE FROM trace_idx USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND trace_id = :trace_id AND run_id = :run_id";

    // Metadata pairs.
    SCAN_META: MetaRange = "SELECT start_us, run_id FROM meta_idx WHERE tenant = :tenant AND project = :project \
        AND meta_key = :meta_key AND meta_value = :meta_value \
        AND (start_us, run_id) >= (:lo_start, :lo_run) AND (start_us, run_id) < (:hi_start, :hi_run)";
    INSERT_META: MetaRow = "INSERT INTO meta_idx (tenant, project, meta_key, meta_value, start_us, run_id) \
        VALUES (:tenant, :project, :meta_key, :meta_value, :start_us, :run_id) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_META: MetaRowAt = "DELETE FROM meta_idx USING TIMESTAMP :write_ts WHERE tenant = :tenant AND project = :project \
        AND meta_key = :meta_key AND meta_value = :meta_value AND start_us = :start_us AND run_id = :run_id";

    // Attachments.
    GET_ATTACHMENT: AttachmentKey = "SELECT mime_type, data FROM attachments WHERE tenant = :tenant AND run_id = :run_id AND name = :name";
    INSERT_ATTACHMENT: AttachmentRow = "INSERT INTO attachments (tenant, run_id, name, mime_type, data) \
        VALUES (:tenant, :run_id, :name, :mime_type, :data) USING TTL :run_ttl AND TIMESTAMP :write_ts";
    DELETE_ATTACHMENTS: RunKeyAt = "DELETE FROM attachments USING TIMESTAMP :write_ts WHERE tenant = :tenant AND run_id = :run_id";

    // Projects, versioned by compare-and-set.
    GET_PROJECT: ProjectKey = "SELECT body, version FROM projects WHERE tenant = :tenant AND project = :project";
    LIST_PROJECTS: TenantKey = "SELECT body FROM projects WHERE tenant = :tenant";
    INSERT_PROJECT: InsertProject = "INSERT INTO projects (tenant, project, body, version) \
        VALUES (:tenant, :project, :body, :version) IF NOT EXISTS";
    UPDATE_PROJECT: UpdateProject = "UPDATE projects SET body = :body, version = :version \
        WHERE tenant = :tenant AND project = :project IF version = :expected_version";
    DELETE_PROJECT: ProjectKey = "DELETE FROM projects WHERE tenant = :tenant AND project = :project IF EXISTS";

    // Project names, claimed and released by compare-and-set.
    GET_PROJECT_NAME: NameKey = "SELECT project FROM project_names WHERE tenant = :tenant AND name = :name";
    CLAIM_NAME: NameClaim = "INSERT INTO project_names (tenant, name, project) VALUES (:tenant, :name, :project) IF NOT EXISTS";
    RELEASE_NAME: NameClaim = "DELETE FROM project_names WHERE tenant = :tenant AND name = :name IF project = :project";

    // Feedback records by id: the source of truth, versioned by compare-and-set.
    GET_FEEDBACK: FeedbackKey = "SELECT body, version FROM feedback_by_id WHERE tenant = :tenant AND feedback_id = :feedback_id";
    // The same read through Paxos (LOCAL_SERIAL), after a lost compare-and-set.
    GET_FEEDBACK_SERIAL: FeedbackKey = "SELECT body, version FROM feedback_by_id WHERE tenant = :tenant AND feedback_id = :feedback_id";
    INSERT_FEEDBACK: InsertVersioned = "INSERT INTO feedback_by_id (tenant, feedback_id, body, version) \
        VALUES (:tenant, :feedback_id, :body, :version) IF NOT EXISTS";
    UPDATE_FEEDBACK: UpdateVersioned = "UPDATE feedback_by_id SET body = :body, version = :version \
        WHERE tenant = :tenant AND feedback_id = :feedback_id IF version = :expected_version";

    // Feedback indexes (keys only; readers check each entry against its record).
    SCAN_FEEDBACK_BY_RUN: RunKey = "SELECT feedback_id FROM feedback_by_run WHERE tenant = :tenant AND run_id = :run_id";
    INSERT_FEEDBACK_BY_RUN: FeedbackRunRow = "INSERT INTO feedback_by_run (tenant, run_id, feedback_id) \
        VALUES (:tenant, :run_id, :feedback_id)";
    SCAN_FEEDBACK_BY_PROJECT: FeedbackProjectShard = "SELECT feedback_id FROM feedback_by_project \
        WHERE tenant = :tenant AND project = :project AND shard = :shard";
    INSERT_FEEDBACK_BY_PROJECT: FeedbackProjectRow = "INSERT INTO feedback_by_project (tenant, project, shard, feedback_id) \
        VALUES (:tenant, :project, :shard, :feedback_id)";
    SCAN_FEEDBACK_BY_TENANT: FeedbackTenantShard = "SELECT feedback_id FROM feedback_by_tenant WHERE tenant = :tenant AND shard = :shard";
    INSERT_FEEDBACK_BY_TENANT: FeedbackTenantRow = "INSERT INTO feedback_by_tenant (tenant, shard, feedback_id) \
        VALUES (:tenant, :shard, :feedback_id)";

    // Feedback waiting for its run.
    SCAN_ORPHANS: RunKey = "SELECT feedback_id FROM feedback_orphans WHERE tenant = :tenant AND run_id = :run_id";
    INSERT_ORPHAN: OrphanRow = "INSERT INTO feedback_orphans (tenant, run_id, feedback_id) VALUES (:tenant, :run_id, :feedback_id)";
    DELETE_ORPHAN: OrphanRow = "DELETE FROM feedback_orphans WHERE tenant = :tenant AND run_id = :run_id AND feedback_id = :feedback_id";

    // feedback_stats rows of runs and projects, versioned by compare-and-set.
    GET_STATS: StatsKey = "SELECT body, version FROM feedback_stats WHERE tenant = :tenant AND kind = :kind AND owner = :owner";
    GET_STATS_SERIAL: StatsKey = "SELECT body, version FROM feedback_stats WHERE tenant = :tenant AND kind = :kind AND owner = :owner";
    INSERT_STATS: InsertStats = "INSERT INTO feedback_stats (tenant, kind, owner, body, version) \
        VALUES (:tenant, :kind, :owner, :body, :version) IF NOT EXISTS";
    UPDATE_STATS: UpdateStats = "UPDATE feedback_stats SET body = :body, version = :version \
        WHERE tenant = :tenant AND kind = :kind AND owner = :owner IF version = :expected_version";

    // Presigned feedback tokens by id (any tenant's) and by run; tokens never change.
    INSERT_FEEDBACK_TOKEN: TokenRow = "INSERT INTO feedback_tokens (token_id, tenant, body) VALUES (:token_id, :tenant, :body)";
    GET_FEEDBACK_TOKEN: TokenKey = "SELECT tenant, body FROM feedback_tokens WHERE token_id = :token_id";
    INSERT_RUN_TOKEN: RunTokenRow = "INSERT INTO feedback_tokens_by_run (tenant, run_id, token_id, body) \
        VALUES (:tenant, :run_id, :token_id, :body)";
    LIST_RUN_TOKENS: RunKey = "SELECT body FROM feedback_tokens_by_run WHERE tenant = :tenant AND run_id = :run_id";

    // Runs shared by public link, by run and by token; share and unshare at the change's time.
    PUT_RUN_SHARE: RunShareRow = "INSERT INTO run_shares (tenant, run_id, body) VALUES (:tenant, :run_id, :body) \
        USING TIMESTAMP :write_ts";
    GET_RUN_SHARE: RunKey = "SELECT body FROM run_shares WHERE tenant = :tenant AND run_id = :run_id";
    DELETE_RUN_SHARE: RunKeyAt = "DELETE FROM run_shares USING TIMESTAMP :write_ts WHERE tenant = :tenant AND run_id = :run_id";
    PUT_SHARE_TOKEN: ShareTokenRow = "INSERT INTO run_shares_by_token (token_id, tenant, body) VALUES (:token_id, :tenant, :body) \
        USING TIMESTAMP :write_ts";
    GET_SHARE_TOKEN: TokenKey = "SELECT tenant, body FROM run_shares_by_token WHERE token_id = :token_id";
    DELETE_SHARE_TOKEN: TokenKeyAt = "DELETE FROM run_shares_by_token USING TIMESTAMP :write_ts WHERE token_id = :token_id";

    // Feedback config versions, written at their modified_at: the newest wins.
    PUT_FEEDBACK_CONFIG: FeedbackConfigRow = "INSERT INTO feedback_configs (tenant, config_id, body) \
        VALUES (:tenant, :config_id, :body) USING TIMESTAMP :write_ts";
    LIST_FEEDBACK_CONFIGS: TenantKey = "SELECT body FROM feedback_configs WHERE tenant = :tenant";

    // Online evaluator versions, written at their updated_at: the newest wins.
    PUT_ONLINE_EVALUATOR: OnlineEvaluatorRow = "INSERT INTO online_evaluators (tenant, evaluator_id, body) \
        VALUES (:tenant, :evaluator_id, :body) USING TIMESTAMP :write_ts";
    GET_ONLINE_EVALUATOR: OnlineEvaluatorKey = "SELECT body FROM online_evaluators WHERE tenant = :tenant AND evaluator_id = :evaluator_id";
    LIST_ONLINE_EVALUATORS: TenantKey = "SELECT body FROM online_evaluators WHERE tenant = :tenant";

    // Annotation queue definitions, written by compare-and-set.
    GET_QUEUE: QueueKey = "SELECT body FROM queues WHERE tenant = :tenant AND queue_id = :queue_id";
    LIST_QUEUES: TenantKey = "SELECT body FROM queues WHERE tenant = :tenant";
    INSERT_QUEUE: QueueRow = "INSERT INTO queues (tenant, queue_id, body) VALUES (:tenant, :queue_id, :body) IF NOT EXISTS";
    UPDATE_QUEUE: QueueRow = "UPDATE queues SET body = :body WHERE tenant = :tenant AND queue_id = :queue_id IF EXISTS";
    DELETE_QUEUE: QueueKey = "DELETE FROM queues WHERE tenant = :tenant AND queue_id = :queue_id IF EXISTS";

    // Queues with routing rules, of every tenant.
    LIST_ROUTED: ScopeKey = "SELECT tenant, queue_id FROM routed_queues WHERE scope = :scope";
    INSERT_ROUTED: RoutedRow = "INSERT INTO routed_queues (scope, tenant, queue_id) VALUES (:scope, :tenant, :queue_id)";
    DELETE_ROUTED: RoutedRow = "DELETE FROM routed_queues WHERE scope = :scope AND tenant = :tenant AND queue_id = :queue_id";

    // Queue items in the order added, versioned by compare-and-set.
    LIST_ITEMS: QueueKey = "SELECT body, version FROM queue_items WHERE tenant = :tenant AND queue_id = :queue_id";
    GET_ITEM: ItemKey = "SELECT body, version FROM queue_items WHERE tenant = :tenant AND queue_id = :queue_id AND item_id = :item_id";
    GET_ITEM_SERIAL: ItemKey = "SELECT body, version FROM queue_items \
        WHERE tenant = :tenant AND queue_id = :queue_id AND item_id = :item_id";
    INSERT_ITEM: InsertItem = "INSERT INTO queue_items (tenant, queue_id, item_id, body, version) \
        VALUES (:tenant, :queue_id, :item_id, :body, :version) IF NOT EXISTS";
    UPDATE_ITEM: UpdateItem = "UPDATE queue_items SET body = :body, version = :version \
        WHERE tenant = :tenant AND queue_id = :queue_id AND item_id = :item_id IF version = :expected_version";
    DELETE_ITEM: ItemKey = "DELETE FROM queue_items WHERE tenant = :tenant AND queue_id = :queue_id AND item_id = :item_id IF EXISTS";

    // A run's item in a queue, claimed and released by compare-and-set.
    CLAIM_RUN: RunClaim = "INSERT INTO queue_runs (tenant, queue_id, run_id, item_id, item) \
        VALUES (:tenant, :queue_id, :run_id, :item_id, :item) IF NOT EXISTS";
    RELEASE_RUN: RunRelease = "DELETE FROM queue_runs WHERE tenant = :tenant AND queue_id = :queue_id AND run_id = :run_id \
        IF item_id = :item_id";

    // Dataset definitions, versioned by compare-and-set.
    GET_DATASET: DatasetKey = "SELECT body, version FROM datasets WHERE tenant = :tenant AND dataset_id = :dataset_id";
    // The same read through Paxos (LOCAL_SERIAL), after a lost compare-and-set.
    GET_DATASET_SERIAL: DatasetKey = "SELECT body, version FROM datasets WHERE tenant = :tenant AND dataset_id = :dataset_id";
    LIST_DATASETS: TenantKey = "SELECT body FROM datasets WHERE tenant = :tenant";
    INSERT_DATASET: InsertDataset = "INSERT INTO datasets (tenant, dataset_id, body, version) \
        VALUES (:tenant, :dataset_id, :body, :version) IF NOT EXISTS";
    UPDATE_DATASET: UpdateDataset = "UPDATE datasets SET body = :body, version = :version \
        WHERE tenant = :tenant AND dataset_id = :dataset_id IF version = :expected_version";
    DELETE_DATASET: DatasetKey = "DELETE FROM datasets WHERE tenant = :tenant AND dataset_id = :dataset_id IF EXISTS";

    // Dataset names, claimed, renewed and released by compare-and-set.
    GET_DATASET_NAME: NameKey = "SELECT dataset_id FROM dataset_names WHERE tenant = :tenant AND name = :name";
    CLAIM_DATASET_NAME: DatasetNameClaim = "INSERT INTO dataset_names (tenant, name, dataset_id, claimed_at) \
        VALUES (:tenant, :name, :dataset_id, :claimed_at) IF NOT EXISTS";
    RENEW_DATASET_NAME: DatasetNameClaim = "UPDATE dataset_names SET claimed_at = :claimed_at \
        WHERE tenant = :tenant AND name = :name IF dataset_id = :dataset_id";
    RELEASE_DATASET_NAME: DatasetNameOwner = "DELETE FROM dataset_names WHERE tenant = :tenant AND name = :name \
        IF dataset_id = :dataset_id";
    // A claim left behind by an interrupted write, removed only if nobody renewed it since.
    DROP_STALE_DATASET_NAME: DatasetNameStale = "DELETE FROM dataset_names WHERE tenant = :tenant AND name = :name \
        IF claimed_at = :claimed_at";

    // Datasets with curation rules, of every tenant.
    LIST_DATASET_RULES: ScopeKey = "SELECT tenant, dataset_id FROM dataset_rules WHERE scope = :scope";
    INSERT_DATASET_RULES: DatasetRulesRow = "INSERT INTO dataset_rules (scope, tenant, dataset_id) VALUES (:scope, :tenant, :dataset_id)";
    DELETE_DATASET_RULES: DatasetRulesRow = "DELETE FROM dataset_rules WHERE scope = :scope AND tenant = :tenant AND dataset_id = :dataset_id";

    // Example versions, one shard of a dataset in example-id order: keys only, or with bodies.
    SCAN_EXAMPLE_KEYS: ExampleShard = "SELECT example_id, as_of, present FROM example_versions \
        WHERE tenant = :tenant AND dataset_id = :dataset_id AND shard = :shard";
    SCAN_EXAMPLE_KEYS_AFTER: ExampleShardAfter = "SELECT example_id, as_of, present FROM example_versions \
        WHERE tenant = :tenant AND dataset_id = :dataset_id AND shard = :shard AND example_id > :example_id";
    SCAN_EXAMPLES: ExampleShard = "SELECT example_id, as_of, present, body FROM example_versions \
        WHERE tenant = :tenant AND dataset_id = :dataset_id AND shard = :shard";
    SCAN_EXAMPLES_AFTER: ExampleShardAfter = "SELECT example_id, as_of, present, body FROM example_versions \
        WHERE tenant = :tenant AND dataset_id = :dataset_id AND shard = :shard AND example_id > :example_id";
    // Every version of one example.
    GET_EXAMPLE_VERSIONS: ExampleKey = "SELECT example_id, as_of, present, body FROM example_versions \
        WHERE tenant = :tenant AND dataset_id = :dataset_id AND shard = :shard AND example_id = :example_id";
    GET_EXAMPLE_VERSION: ExampleVersionKey = "SELECT body FROM example_versions \
        WHERE tenant = :tenant AND dataset_id = :dataset_id AND shard = :shard AND example_id = :example_id AND as_of = :as_of";
    INSERT_EXAMPLE_VERSION: ExampleVersionRow = "INSERT INTO example_versions (tenant, dataset_id, shard, example_id, as_of, present, body) \
        VALUES (:tenant, :dataset_id, :shard, :example_id, :as_of, :present, :body) USING TIMESTAMP :write_ts";
    DELETE_EXAMPLE_SHARD: ExampleShardAt = "DELETE FROM example_versions USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND dataset_id = :dataset_id AND shard = :shard";

    // The datasets of an example id.
    GET_EXAMPLE_LOC: ExampleLocKey = "SELECT dataset_id FROM example_loc WHERE tenant = :tenant AND example_id = :example_id";
    INSERT_EXAMPLE_LOC: ExampleLocAt = "INSERT INTO example_loc (tenant, example_id, dataset_id) \
        VALUES (:tenant, :example_id, :dataset_id) USING TIMESTAMP :write_ts";
    DELETE_EXAMPLE_LOC: ExampleLocAt = "DELETE FROM example_loc USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND example_id = :example_id AND dataset_id = :dataset_id";

    // A dataset's versions.
    LIST_DATASET_VERSIONS: DatasetKey = "SELECT as_of FROM dataset_versions WHERE tenant = :tenant AND dataset_id = :dataset_id";
    INSERT_DATASET_VERSION: DatasetVersionRow = "INSERT INTO dataset_versions (tenant, dataset_id, as_of) \
        VALUES (:tenant, :dataset_id, :as_of) USING TIMESTAMP :write_ts";
    DELETE_DATASET_VERSIONS: DatasetKeyAt = "DELETE FROM dataset_versions USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND dataset_id = :dataset_id";

    // A dataset's tags; the newest move (`write_ts` = its time) wins.
    LIST_DATASET_TAGS: DatasetKey = "SELECT tag, as_of, moved_at FROM dataset_tags WHERE tenant = :tenant AND dataset_id = :dataset_id";
    SET_DATASET_TAG: DatasetTagRow = "INSERT INTO dataset_tags (tenant, dataset_id, tag, as_of, moved_at) \
        VALUES (:tenant, :dataset_id, :tag, :as_of, :moved_at) USING TIMESTAMP :write_ts";
    DELETE_DATASET_TAGS: DatasetKeyAt = "DELETE FROM dataset_tags USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND dataset_id = :dataset_id";

    // Attachment blobs by content hash.
    GET_BLOB: BlobKey = "SELECT data FROM blobs WHERE tenant = :tenant AND sha256 = :sha256";
    INSERT_BLOB: BlobRow = "INSERT INTO blobs (tenant, sha256, data) VALUES (:tenant, :sha256, :data)";

    // Curation jobs; the latest write wins.
    GET_CURATION_JOB: CurationJobKey = "SELECT body FROM curation_jobs WHERE tenant = :tenant AND job_id = :job_id";
    PUT_CURATION_JOB: CurationJobRow = "INSERT INTO curation_jobs (tenant, job_id, body) VALUES (:tenant, :job_id, :body) \
        USING TIMESTAMP :write_ts";

    // Prompt repository definitions, versioned by compare-and-set.
    GET_PROMPT_REPO: PromptRepoKey = "SELECT body, version FROM prompt_repos WHERE tenant = :tenant AND repo_id = :repo_id";
    // The same read through Paxos (LOCAL_SERIAL), after a lost compare-and-set.
    GET_PROMPT_REPO_SERIAL: PromptRepoKey = "SELECT body, version FROM prompt_repos WHERE tenant = :tenant AND repo_id = :repo_id";
    LIST_PROMPT_REPOS: TenantKey = "SELECT body FROM prompt_repos WHERE tenant = :tenant";
    INSERT_PROMPT_REPO: InsertPromptRepo = "INSERT INTO prompt_repos (tenant, repo_id, body, version) \
        VALUES (:tenant, :repo_id, :body, :version) IF NOT EXISTS";
    UPDATE_PROMPT_REPO: UpdatePromptRepo = "UPDATE prompt_repos SET body = :body, version = :version \
        WHERE tenant = :tenant AND repo_id = :repo_id IF version = :expected_version";
    DELETE_PROMPT_REPO: PromptRepoKey = "DELETE FROM prompt_repos WHERE tenant = :tenant AND repo_id = :repo_id IF EXISTS";
    // Handles, claimed and released by compare-and-set.
    GET_PROMPT_NAME: PromptNameKey = "SELECT repo_id FROM prompt_names WHERE tenant = :tenant AND handle = :handle";
    CLAIM_PROMPT_NAME: PromptNameClaim = "INSERT INTO prompt_names (tenant, handle, repo_id) VALUES (:tenant, :handle, :repo_id) IF NOT EXISTS";
    RELEASE_PROMPT_NAME: PromptNameClaim = "DELETE FROM prompt_names WHERE tenant = :tenant AND handle = :handle IF repo_id = :repo_id";
    // Deleted repository ids.
    GET_PROMPT_DELETED: PromptRepoKey = "SELECT deleted_at FROM prompt_deleted WHERE tenant = :tenant AND repo_id = :repo_id";
    INSERT_PROMPT_DELETED: PromptDeletedRow = "INSERT INTO prompt_deleted (tenant, repo_id, deleted_at) \
        VALUES (:tenant, :repo_id, :deleted_at) USING TIMESTAMP :write_ts";
    // Commits by hash, and by hash prefix (a range of the text clustering column).
    GET_PROMPT_COMMIT: PromptCommitKey = "SELECT body FROM prompt_commits \
        WHERE tenant = :tenant AND repo_id = :repo_id AND commit_hash = :commit_hash";
    SCAN_PROMPT_COMMITS: PromptCommitRange = "SELECT body FROM prompt_commits WHERE tenant = :tenant AND repo_id = :repo_id \
        AND commit_hash >= :lo_hash AND commit_hash < :hi_hash";
    INSERT_PROMPT_COMMIT: PromptCommitRow = "INSERT INTO prompt_commits (tenant, repo_id, commit_hash, created_at, body) \
        VALUES (:tenant, :repo_id, :commit_hash, :created_at, :body) USING TIMESTAMP :write_ts";
    DELETE_PROMPT_COMMITS: PromptRepoKeyAt = "DELETE FROM prompt_commits USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND repo_id = :repo_id";
    // Commit order, newest first.
    LIST_PROMPT_COMMIT_LOG: PromptRepoKey = "SELECT created_at, commit_hash FROM prompt_commit_log \
        WHERE tenant = :tenant AND repo_id = :repo_id";
    INSERT_PROMPT_COMMIT_LOG: PromptCommitLogRow = "INSERT INTO prompt_commit_log (tenant, repo_id, created_at, commit_hash) \
        VALUES (:tenant, :repo_id, :created_at, :commit_hash) USING TIMESTAMP :write_ts";
    DELETE_PROMPT_COMMIT_LOG: PromptRepoKeyAt = "DELETE FROM prompt_commit_log USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND repo_id = :repo_id";
    // Tag moves, every one kept.
    LIST_PROMPT_TAG_MOVES: PromptRepoKey = "SELECT tag, moved_at, commit_hash FROM prompt_tag_moves \
        WHERE tenant = :tenant AND repo_id = :repo_id";
    LIST_PROMPT_TAG_MOVES_OF: PromptTagKey = "SELECT tag, moved_at, commit_hash FROM prompt_tag_moves \
        WHERE tenant = :tenant AND repo_id = :repo_id AND tag = :tag";
    INSERT_PROMPT_TAG_MOVE: PromptTagMoveRow = "INSERT INTO prompt_tag_moves (tenant, repo_id, tag, moved_at, commit_hash) \
        VALUES (:tenant, :repo_id, :tag, :moved_at, :commit_hash) USING TIMESTAMP :write_ts";
    DELETE_PROMPT_TAG_MOVES: PromptRepoKeyAt = "DELETE FROM prompt_tag_moves USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND repo_id = :repo_id";
    // Likes; the newest change (`write_ts` = its time) wins.
    LIST_PROMPT_LIKES: PromptRepoKey = "SELECT liker, liked FROM prompt_likes WHERE tenant = :tenant AND repo_id = :repo_id";
    SET_PROMPT_LIKE: PromptLikeRow = "INSERT INTO prompt_likes (tenant, repo_id, liker, liked) \
        VALUES (:tenant, :repo_id, :liker, :liked) USING TIMESTAMP :write_ts";
    DELETE_PROMPT_LIKES: PromptRepoKeyAt = "DELETE FROM prompt_likes USING TIMESTAMP :write_ts \
        WHERE tenant = :tenant AND repo_id = :repo_id";
}

/// Reads through Paxos (`LOCAL_SERIAL`), each the twin of a plain read: a writer that lost a
/// compare-and-set re-reads with one of these, so it sees the winner (and any proposal a failed
/// writer left half-done).
pub(crate) const SERIAL_READS: &[(Id, Id)] = &[
    (Id::GET_HEAD_SERIAL, Id::GET_HEAD),
    (Id::GET_FEEDBACK_SERIAL, Id::GET_FEEDBACK),
    (Id::GET_STATS_SERIAL, Id::GET_STATS),
    (Id::GET_ITEM_SERIAL, Id::GET_ITEM),
    (Id::GET_DATASET_SERIAL, Id::GET_DATASET),
    (Id::GET_PROMPT_REPO_SERIAL, Id::GET_PROMPT_REPO),
];

/// Whether a statement is a lightweight transaction (Paxos): never resent blindly, since a
/// timed-out attempt may have applied.
pub(crate) fn is_lwt(cql: &str) -> bool {
    cql.contains(" IF ")
}

// The values. Field names are the statements' marker names.

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunKey {
    pub tenant: Uuid,
    pub run_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunKeyAt {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertHead {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub write_ts: i64,
    pub run_ttl: i32,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateHead {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub write_ts: i64,
    pub run_ttl: i32,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BucketRange {
    pub tenant: Uuid,
    pub project: Uuid,
    pub lo_bucket: i64,
    pub hi_bucket: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BucketRow {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ProjectKeyAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BucketAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub write_ts: i64,
}

/// A `(start_us, run_id)` range of one bucket: `[lo, hi)`.
#[derive(SerializeRow, Default, Clone)]
pub(crate) struct KeyRange {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub lo_start: i64,
    pub lo_run: Vec<u8>,
    pub hi_start: i64,
    pub hi_run: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TimeKeyRow {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TimeKeyAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub bucket: i64,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TraceKey {
    pub tenant: Uuid,
    pub trace_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TraceRow {
    pub tenant: Uuid,
    pub trace_id: Uuid,
    pub run_id: Uuid,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TraceRowAt {
    pub tenant: Uuid,
    pub trace_id: Uuid,
    pub run_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct MetaRange {
    pub tenant: Uuid,
    pub project: Uuid,
    pub meta_key: String,
    pub meta_value: String,
    pub lo_start: i64,
    pub lo_run: Vec<u8>,
    pub hi_start: i64,
    pub hi_run: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct MetaRow {
    pub tenant: Uuid,
    pub project: Uuid,
    pub meta_key: String,
    pub meta_value: String,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct MetaRowAt {
    pub tenant: Uuid,
    pub project: Uuid,
    pub meta_key: String,
    pub meta_value: String,
    pub start_us: i64,
    pub run_id: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct AttachmentKey {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub name: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct AttachmentRow {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub name: String,
    pub mime_type: String,
    pub data: Vec<u8>,
    pub run_ttl: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ProjectKey {
    pub tenant: Uuid,
    pub project: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TenantKey {
    pub tenant: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertProject {
    pub tenant: Uuid,
    pub project: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateProject {
    pub tenant: Uuid,
    pub project: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct NameKey {
    pub tenant: Uuid,
    pub name: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct NameClaim {
    pub tenant: Uuid,
    pub name: String,
    pub project: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct FeedbackKey {
    pub tenant: Uuid,
    pub feedback_id: Uuid,
}

/// A new row of a table versioned by compare-and-set (`feedback_by_id`).
#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertVersioned {
    pub tenant: Uuid,
    pub feedback_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateVersioned {
    pub tenant: Uuid,
    pub feedback_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct FeedbackRunRow {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub feedback_id: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct FeedbackProjectShard {
    pub tenant: Uuid,
    pub project: Uuid,
    pub shard: i32,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct FeedbackProjectRow {
    pub tenant: Uuid,
    pub project: Uuid,
    pub shard: i32,
    pub feedback_id: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct FeedbackTenantShard {
    pub tenant: Uuid,
    pub shard: i32,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct FeedbackTenantRow {
    pub tenant: Uuid,
    pub shard: i32,
    pub feedback_id: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct OrphanRow {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub feedback_id: Uuid,
}

/// A `feedback_stats` row: `kind` is `"run"` or `"project"`, `owner` its id.
#[derive(SerializeRow, Default, Clone)]
pub(crate) struct StatsKey {
    pub tenant: Uuid,
    pub kind: String,
    pub owner: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertStats {
    pub tenant: Uuid,
    pub kind: String,
    pub owner: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateStats {
    pub tenant: Uuid,
    pub kind: String,
    pub owner: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TokenKey {
    pub token_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunShareRow {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub body: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ShareTokenRow {
    pub token_id: Uuid,
    pub tenant: Uuid,
    pub body: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TokenKeyAt {
    pub token_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct TokenRow {
    pub token_id: Uuid,
    pub tenant: Uuid,
    pub body: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunTokenRow {
    pub tenant: Uuid,
    pub run_id: Uuid,
    pub token_id: Vec<u8>,
    pub body: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct FeedbackConfigRow {
    pub tenant: Uuid,
    pub config_id: Vec<u8>,
    pub body: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct OnlineEvaluatorRow {
    pub tenant: Uuid,
    pub evaluator_id: Vec<u8>,
    pub body: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct OnlineEvaluatorKey {
    pub tenant: Uuid,
    pub evaluator_id: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct QueueKey {
    pub tenant: Uuid,
    pub queue_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct QueueRow {
    pub tenant: Uuid,
    pub queue_id: Uuid,
    pub body: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ScopeKey {
    pub scope: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RoutedRow {
    pub scope: String,
    pub tenant: Uuid,
    pub queue_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ItemKey {
    pub tenant: Uuid,
    pub queue_id: Uuid,
    pub item_id: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertItem {
    pub tenant: Uuid,
    pub queue_id: Uuid,
    pub item_id: Vec<u8>,
    pub body: Vec<u8>,
    pub version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateItem {
    pub tenant: Uuid,
    pub queue_id: Uuid,
    pub item_id: Vec<u8>,
    pub body: Vec<u8>,
    pub version: i64,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunClaim {
    pub tenant: Uuid,
    pub queue_id: Uuid,
    pub run_id: Uuid,
    pub item_id: Uuid,
    pub item: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct RunRelease {
    pub tenant: Uuid,
    pub queue_id: Uuid,
    pub run_id: Uuid,
    pub item_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetKey {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetKeyAt {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertDataset {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdateDataset {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetNameClaim {
    pub tenant: Uuid,
    pub name: String,
    pub dataset_id: Uuid,
    pub claimed_at: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetNameOwner {
    pub tenant: Uuid,
    pub name: String,
    pub dataset_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetNameStale {
    pub tenant: Uuid,
    pub name: String,
    pub claimed_at: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetRulesRow {
    pub scope: String,
    pub tenant: Uuid,
    pub dataset_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleShard {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub shard: i32,
}

/// One shard's examples with ids greater than `example_id`.
#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleShardAfter {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub shard: i32,
    pub example_id: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleShardAt {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub shard: i32,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleKey {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub shard: i32,
    pub example_id: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleVersionKey {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub shard: i32,
    pub example_id: Vec<u8>,
    pub as_of: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleVersionRow {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub shard: i32,
    pub example_id: Vec<u8>,
    pub as_of: i64,
    pub present: bool,
    pub body: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleLocKey {
    pub tenant: Uuid,
    pub example_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct ExampleLocAt {
    pub tenant: Uuid,
    pub example_id: Uuid,
    pub dataset_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetVersionRow {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub as_of: i64,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct DatasetTagRow {
    pub tenant: Uuid,
    pub dataset_id: Uuid,
    pub tag: String,
    pub as_of: i64,
    pub moved_at: i64,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BlobKey {
    pub tenant: Uuid,
    pub sha256: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct BlobRow {
    pub tenant: Uuid,
    pub sha256: String,
    pub data: Vec<u8>,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct CurationJobKey {
    pub tenant: Uuid,
    pub job_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct CurationJobRow {
    pub tenant: Uuid,
    pub job_id: Uuid,
    pub body: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptRepoKey {
    pub tenant: Uuid,
    pub repo_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptRepoKeyAt {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct InsertPromptRepo {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct UpdatePromptRepo {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub body: Vec<u8>,
    pub version: i64,
    pub expected_version: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptNameKey {
    pub tenant: Uuid,
    pub handle: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptNameClaim {
    pub tenant: Uuid,
    pub handle: String,
    pub repo_id: Uuid,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptDeletedRow {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub deleted_at: i64,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptCommitKey {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub commit_hash: String,
}

/// Commits with `lo_hash <= hash < hi_hash`.
#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptCommitRange {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub lo_hash: String,
    pub hi_hash: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptCommitRow {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub commit_hash: String,
    pub created_at: i64,
    pub body: Vec<u8>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptCommitLogRow {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub created_at: i64,
    pub commit_hash: String,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptTagKey {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub tag: String,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptTagMoveRow {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub tag: String,
    pub moved_at: i64,
    /// `None` (null): the tag was deleted.
    pub commit_hash: Option<String>,
    pub write_ts: i64,
}

#[derive(SerializeRow, Default, Clone)]
pub(crate) struct PromptLikeRow {
    pub tenant: Uuid,
    pub repo_id: Uuid,
    pub liker: Uuid,
    pub liked: bool,
    pub write_ts: i64,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use scylla::frame::response::result::{ColumnSpec, ColumnType, TableSpec};
    use scylla::serialize::row::{RowSerializationContext, SerializeRow as _};
    use scylla::serialize::writers::RowWriter;

    use super::*;
    use crate::scylla::shape::{self, Schema};

    const TTL_TABLES: &[&str] = &["run_by_id", "run_buckets", "runs", "roots", "trace_idx", "meta_idx", "attachments"];
    /// Rows managed by Paxos: written only by lightweight transactions.
    const LWT_TABLES: &[&str] = &[
        "run_by_id",
        "projects",
        "project_names",
        "feedback_by_id",
        "feedback_stats",
        "queues",
        "queue_items",
        "queue_runs",
        "datasets",
        "dataset_names",
        "prompt_repos",
        "prompt_names",
    ];
    /// Rows whose write order does not matter: insert-only keys that readers check against the
    /// source of truth, entries that any later reader removes when they are stale, or values
    /// that never change once written (presigned tokens).
    const UNORDERED_TABLES: &[&str] = &[
        "feedback_by_run",
        "feedback_by_project",
        "feedback_by_tenant",
        "feedback_orphans",
        "routed_queues",
        "dataset_rules",
        "blobs",
        "feedback_tokens",
        "feedback_tokens_by_run",
    ];

    fn schema() -> Schema {
        crate::scylla::migrate::schema()
    }

    #[test]
    fn every_statement_names_a_table_and_columns_of_the_schema() {
        let schema = schema();
        for (name, cql) in ALL {
            let s = shape::Statement::parse(cql).unwrap_or_else(|e| panic!("{name}: {e}"));
            let table = schema.table(&s.table).unwrap_or_else(|| panic!("{name}: no table {}", s.table));
            for m in &s.markers {
                assert!(m.column.starts_with('[') || table.column_type(&m.column).is_some(), "{name}: {} is not a column", m.column);
            }
            for c in s.selected.iter().chain(&s.restricted) {
                assert!(table.column_type(c).is_some(), "{name}: {c} is not a column of {}", s.table);
            }
        }
    }

    #[test]
    fn values_match_the_markers_by_name_and_type() {
        let schema = schema();
        let mut checked = 0;
        for_each_with_sample(&mut |name, cql, values| {
            let specs = shape::bind_specs(&schema, cql).unwrap_or_else(|e| panic!("{name}: {e}"));
            let specs: Vec<ColumnSpec<'_>> = specs
                .iter()
                .map(|(marker, ty)| ColumnSpec::borrowed(marker, ColumnType::Native(ty.clone()), TableSpec::borrowed("ks", "t")))
                .collect();
            let ctx = RowSerializationContext::from_specs(&specs);
            let mut buf = Vec::new();
            values.serialize(&ctx, &mut RowWriter::new(&mut buf)).unwrap_or_else(|e| panic!("{name}: values do not fit the markers: {e}"));
            checked += 1;
        });
        assert_eq!(checked, ALL.len());
    }

    /// The check above must be able to fail: a struct missing a marker, or with a field of the
    /// wrong type, is refused.
    #[test]
    fn the_value_check_catches_mismatches() {
        let schema = schema();
        let cql = ALL[GET_ATTACHMENT.index()].1;
        let specs = shape::bind_specs(&schema, cql).unwrap();
        let specs: Vec<ColumnSpec<'_>> =
            specs.iter().map(|(m, ty)| ColumnSpec::borrowed(m, ColumnType::Native(ty.clone()), TableSpec::borrowed("ks", "t"))).collect();
        let ctx = RowSerializationContext::from_specs(&specs);
        let mut buf = Vec::new();
        assert!(RunKey::default().serialize(&ctx, &mut RowWriter::new(&mut buf)).is_err(), "missing :name");
        #[derive(SerializeRow, Default)]
        struct WrongType {
            tenant: Uuid,
            run_id: Uuid,
            name: i64,
        }
        assert!(WrongType::default().serialize(&ctx, &mut RowWriter::new(&mut buf)).is_err(), "text bound as bigint");
    }

    #[test]
    fn every_query_restricts_the_whole_partition_key() {
        // No statement needs ALLOW FILTERING or touches more than one partition.
        let schema = schema();
        for (name, cql) in ALL {
            assert!(!cql.to_uppercase().contains("ALLOW FILTERING"), "{name}");
            let s = shape::Statement::parse(cql).unwrap();
            let table = schema.table(&s.table).unwrap();
            let restricted: HashSet<&str> = if s.verb == "INSERT" {
                s.markers.iter().map(|m| m.column.as_str()).collect()
            } else {
                s.restricted.iter().map(String::as_str).collect()
            };
            for pk in &table.partition_key {
                assert!(restricted.contains(pk.as_str()), "{name}: partition key column {pk} is not restricted by equality");
            }
        }
    }

    #[test]
    fn writes_to_retained_tables_carry_the_ttl() {
        for (name, cql) in ALL {
            let s = shape::Statement::parse(cql).unwrap();
            if TTL_TABLES.contains(&s.table.as_str()) && (s.verb == "INSERT" || s.verb == "UPDATE") {
                assert!(cql.contains("USING TTL :run_ttl"), "{name} writes {} without USING TTL", s.table);
            }
            if !TTL_TABLES.contains(&s.table.as_str()) {
                assert!(!cql.contains("TTL"), "{name}: {} is not a retained table", s.table);
            }
        }
    }

    #[test]
    fn index_writes_are_timestamped_and_lwt_tables_are_only_written_by_lwt() {
        // Run index rows are ordered by the run's version (USING TIMESTAMP); Paxos-managed rows
        // are never written outside Paxos, and nothing else is written through it.
        let schema = schema();
        for table in &schema.tables {
            let classes = [LWT_TABLES, UNORDERED_TABLES].iter().filter(|c| c.contains(&table.name.as_str())).count();
            assert!(classes <= 1, "{} is in two classes", table.name);
        }
        for (name, cql) in ALL {
            let s = shape::Statement::parse(cql).unwrap();
            let table = s.table.as_str();
            if s.verb == "SELECT" {
                continue;
            }
            if LWT_TABLES.contains(&table) {
                assert!(is_lwt(cql), "{name} writes {table} outside Paxos");
            } else {
                assert!(!is_lwt(cql), "{name} writes {table} through Paxos, which mixes with plain writes");
                if !UNORDERED_TABLES.contains(&table) {
                    assert!(cql.contains("TIMESTAMP :write_ts"), "{name} is not timestamped");
                }
            }
        }
    }

    #[test]
    fn compare_and_set_writes_check_the_version_they_read() {
        // Every update of a versioned row is conditional on the version it replaces, and every
        // insert of one only creates: a writer can never overwrite a version it has not seen.
        let schema = schema();
        for (name, cql) in ALL {
            let s = shape::Statement::parse(cql).unwrap();
            let versioned = schema.table(&s.table).unwrap().column_type("version").is_some();
            match s.verb.as_str() {
                "UPDATE" if versioned => assert!(cql.ends_with("IF version = :expected_version"), "{name}"),
                "INSERT" if versioned => assert!(cql.contains(" IF NOT EXISTS"), "{name}"),
                _ => {}
            }
        }
    }

    #[test]
    fn serial_reads_are_twins_of_plain_reads() {
        for (serial, plain) in SERIAL_READS {
            let (serial, plain) = (ALL[*serial as usize], ALL[*plain as usize]);
            assert_eq!(serial.1, plain.1, "{} reads what {} reads", serial.0, plain.0);
            assert!(serial.0.ends_with("_SERIAL") && !plain.0.ends_with("_SERIAL"));
            assert!(!is_lwt(serial.1), "a serial read is a read, safe to resend");
        }
        let twins = ALL.iter().filter(|(n, _)| n.ends_with("_SERIAL")).count();
        assert_eq!(twins, SERIAL_READS.len(), "every *_SERIAL statement is read through Paxos");
    }

    #[test]
    fn item_and_feedback_scans_read_in_id_order() {
        // Items list in the order added and feedback in id order: both are the clustering
        // order of a blob id (raw bytes, as the embedded adapter orders its keys), ascending.
        let schema = schema();
        for table in ["queue_items", "feedback_by_run", "feedback_by_project", "feedback_by_tenant"] {
            let t = schema.table(table).unwrap();
            let id = t.clustering.last().unwrap();
            assert_eq!(t.column_type(id), Some("blob"), "{table}.{id}");
        }
        assert!(!crate::scylla::migrate::FEEDBACK_QUEUES_CQL.contains("CLUSTERING ORDER"), "ascending ids everywhere");
    }

    #[test]
    fn example_scans_read_in_id_order_and_versions_are_stamped_with_their_time() {
        // Examples list in id order: the clustering order of a blob id, ascending, as the
        // embedded adapter orders them. Versions, tags and their indexes are written at the
        // version's (or the tag move's) time, so a redelivery rewrites identical cells.
        let t = schema().table("example_versions").unwrap().clone();
        assert_eq!((t.clustering[0].as_str(), t.column_type("example_id")), ("example_id", Some("blob")));
        for stmt in [SCAN_EXAMPLE_KEYS.index(), SCAN_EXAMPLES.index()] {
            assert!(ALL[stmt].1.contains("AND shard = :shard"), "{}: one shard at a time", ALL[stmt].0);
        }
        for stmt in [SCAN_EXAMPLE_KEYS_AFTER.index(), SCAN_EXAMPLES_AFTER.index()] {
            assert!(ALL[stmt].1.ends_with("AND example_id > :example_id"), "{}", ALL[stmt].0);
        }
        for stmt in [INSERT_EXAMPLE_VERSION.index(), INSERT_EXAMPLE_LOC.index(), INSERT_DATASET_VERSION.index(), SET_DATASET_TAG.index()] {
            assert!(ALL[stmt].1.ends_with("USING TIMESTAMP :write_ts"), "{}", ALL[stmt].0);
        }
    }

    #[test]
    fn prompt_rows_are_stamped_with_their_time_and_hash_prefixes_are_one_range() {
        // Commits, tag moves and likes are written at their own time, and a repository's
        // partitions are deleted at the delete's time: a redelivered older write stays deleted.
        for stmt in [
            INSERT_PROMPT_COMMIT.index(),
            INSERT_PROMPT_COMMIT_LOG.index(),
            INSERT_PROMPT_TAG_MOVE.index(),
            SET_PROMPT_LIKE.index(),
            INSERT_PROMPT_DELETED.index(),
        ] {
            assert!(ALL[stmt].1.ends_with("USING TIMESTAMP :write_ts"), "{}", ALL[stmt].0);
        }
        for stmt in
            [DELETE_PROMPT_COMMITS.index(), DELETE_PROMPT_COMMIT_LOG.index(), DELETE_PROMPT_TAG_MOVES.index(), DELETE_PROMPT_LIKES.index()]
        {
            assert!(ALL[stmt]
                .1
                .starts_with(&format!("DELETE FROM {} USING TIMESTAMP :write_ts", shape::Statement::parse(ALL[stmt].1).unwrap().table)));
        }
        let scan = ALL[SCAN_PROMPT_COMMITS.index()].1;
        assert!(scan.ends_with("AND commit_hash >= :lo_hash AND commit_hash < :hi_hash"), "{scan}");
        let t = schema().table("prompt_commits").unwrap().clone();
        assert_eq!((t.clustering.as_slice(), t.column_type("commit_hash")), (&["commit_hash".to_string()][..], Some("text")));
        assert!(crate::scylla::migrate::PROMPTS_CQL.contains("CLUSTERING ORDER BY (created_at DESC, commit_hash DESC)"));
    }

    #[test]
    fn scans_bound_both_ends_of_the_clustering_range() {
        for stmt in [SCAN_RUNS.index(), SCAN_ROOTS.index(), SCAN_META.index()] {
            let (name, cql) = ALL[stmt];
            assert!(cql.contains("(start_us, run_id) >= (:lo_start, :lo_run)"), "{name}");
            assert!(cql.contains("(start_us, run_id) < (:hi_start, :hi_run)"), "{name}");
        }
    }

    #[test]
    fn statement_names_match_their_ids() {
        assert_eq!(GET_HEAD.name(), "GET_HEAD");
        assert_eq!(RELEASE_NAME.name(), "RELEASE_NAME");
        let names: HashSet<_> = ALL.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), ALL.len());
    }
}
