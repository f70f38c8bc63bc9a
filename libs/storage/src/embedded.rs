//! The embedded adapter, on fjall (an LSM tree): `sextant serve`'s store.
//!
//! fjall was chosen over redb and SQLite because this workload is write-heavy with ordered
//! range scans: on these machines it wrote 2.4x faster than redb and 6x faster than SQLite for
//! (project, start_time, run_id) keys, and used half redb's disk (`FACTS.md`).
//!
//! Keyspaces and keys (T = tenant, P = project, S = start time, R = run id; fixed width):
//! * `runs`           T P S R   → Run (MessagePack)   — a project's runs, time-ordered
//! * `run_loc`        T R       → P S                 — where a run is, by id
//! * `trace_idx`      T TR R    → P S                 — the runs of a trace
//! * `roots`          T P S R   → ()                  — root runs only (trace listings)
//! * `meta_idx`       T P k v S R → ()                — top-level string metadata (k, v
//!   length-prefixed; long values are not indexed)
//! * `projects`       T P       → Project
//! * `project_names`  T name    → P
//! * `attachments`    T R name  → mime NUL bytes
//!
//! * feedback, annotation queues, datasets and prompts: see [`feedback`], [`queues`],
//!   [`datasets`] and [`prompts`].
//!
//! All fjall calls block, so every method runs on tokio's blocking pool.

mod datasets;
mod evaluators;
mod feedback;
mod prompts;
mod queues;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use sextant_core::annotation::{Queue, QueueItem};
use sextant_core::dataset::{CurationJob, ExampleChange};
use sextant_core::prompt::{PromptCommit, PromptRepo, TagMove};
use sextant_core::{
    Dataset, DatasetId, Example, ExampleId, Feedback, FeedbackChange, FeedbackId, FeedbackStats, Project, ProjectId, ProjectPatch, QueueId,
    RepoId, Run, RunFragment, RunId, RunShare, TenantId, Timestamp,
};
use uuid::Uuid;

use crate::{
    CommitPage, CreateOutcome, DatasetCreate, DatasetQuery, DatasetStore, ExampleQuery, FeedbackQuery, FeedbackStore, ItemUpdate,
    ProjectQuery, ProjectStats, ProjectStore, PromptStore, QueueQuery, QueueStore, RepoCreate, Result, RunCursor, RunMatcher, RunPage,
    RunQuery, RunStore, StorageError, StorageErrorKind,
};

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// The thread that applies run fragments (see [`BACKGROUND_NICE`]).
    projection: std::sync::mpsc::Sender<ProjectionJob>,
}

type ProjectionJob = Box<dyn FnOnce() + Send>;

/// Projection is background work. Under CPU contention requests, and the acknowledgements
/// clients wait for, should win over folding already-durable events into the store: overload
/// then shows as projection lag, which ingest backpressure bounds, instead of as ack latency.
/// So the thread that applies run fragments runs at this `nice` value. Linux threads have
/// their own nice value; raising it needs no privilege. Elsewhere it is a no-op.
const BACKGROUND_NICE: i32 = 4;

/// fjall's flush and compaction threads (which inherit it from the thread that opens the
/// database) yield in turn to projection: compaction only has to keep up on average, and L0
/// has room for bursts (fjall slows writes at 20 L0 runs; compactions start at 8).
const COMPACTION_NICE: i32 = 8;

/// Lowers the calling thread's priority to `nice` (best effort).
fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the store's background priority");
        }
    }
}

struct Inner {
    db: Database,
    runs: Keyspace,
    run_loc: Keyspace,
    trace_idx: Keyspace,
    /// Root runs only, keyed like `runs`: listing traces (`is_root`) is the commonest query.
    roots: Keyspace,
    /// Top-level string metadata: finding a user's or thread's runs must not scan a project.
    meta_idx: Keyspace,
    projects: Keyspace,
    project_names: Keyspace,
    attachments: Keyspace,
    feedback: Keyspace,
    feedback_idx: Keyspace,
    feedback_stats: Keyspace,
    feedback_tokens: Keyspace,
    feedback_configs: Keyspace,
    online_evaluators: Keyspace,
    /// Public links: `S` + tenant + run → the share; `T` + token → (tenant, share).
    run_shares: Keyspace,
    queues: Keyspace,
    queue_items: Keyspace,
    queue_runs: Keyspace,
    datasets: Keyspace,
    dataset_names: Keyspace,
    example_versions: Keyspace,
    example_loc: Keyspace,
    dataset_versions: Keyspace,
    dataset_tags: Keyspace,
    blobs: Keyspace,
    curation_jobs: Keyspace,
    prompt_repos: Keyspace,
    prompt_names: Keyspace,
    prompt_deleted: Keyspace,
    prompt_commits: Keyspace,
    prompt_commit_log: Keyspace,
    prompt_tag_moves: Keyspace,
    prompt_likes: Keyspace,
    /// Serialises read-modify-write of runs and project creation. The in-process projector
    /// is the only hot writer, so one lock costs nothing and keeps merges exact.
    write_lock: Mutex<()>,
}

fn backend(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::with_source(StorageErrorKind::Unavailable, format!("embedded store: {what} failed"), e)
}

fn corrupt(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::with_source(StorageErrorKind::Internal, format!("embedded store: cannot decode {what}"), e)
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("domain types always encode")
}

fn dec<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T> {
    rmp_serde::from_slice(b).map_err(|e| corrupt(what, e))
}

/// Order-preserving encoding of a signed time: flip the sign bit.
fn time_bytes(us: i64) -> [u8; 8] {
    ((us as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

struct Key(Vec<u8>);

impl Key {
    fn new() -> Self {
        Self(Vec::with_capacity(64))
    }
    fn id(mut self, b: &[u8; 16]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn time(mut self, us: i64) -> Self {
        self.0.extend_from_slice(&time_bytes(us));
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

fn run_key(t: TenantId, p: ProjectId, start_us: i64, r: RunId) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(p.as_bytes()).time(start_us).id(r.as_bytes()).0
}

/// A run's location value: P S.
fn loc_value(p: ProjectId, start_us: i64) -> Vec<u8> {
    Key::new().id(p.as_bytes()).time(start_us).0
}

fn parse_loc(v: &[u8]) -> Option<(ProjectId, i64)> {
    if v.len() != 24 {
        return None;
    }
    Some((ProjectId::from_bytes(v[..16].try_into().ok()?), time_from(&v[16..24])))
}

/// Longest metadata key and value the index holds; longer pairs are found by scanning.
pub(crate) const MAX_INDEXED_KEY: usize = 128;
pub(crate) const MAX_INDEXED_VALUE: usize = 256;

/// `T P len(k) k len(v) v`: the prefix of one metadata pair's index entries.
fn meta_prefix(t: TenantId, p: ProjectId, k: &str, v: &str) -> Vec<u8> {
    let mut key = Key::new().id(t.as_bytes()).id(p.as_bytes()).0;
    key.extend_from_slice(&(k.len() as u16).to_be_bytes());
    key.extend_from_slice(k.as_bytes());
    key.extend_from_slice(&(v.len() as u16).to_be_bytes());
    key.extend_from_slice(v.as_bytes());
    key
}

/// Keys the SDK adds to every run (`ls_provider`, `LANGSMITH_PROJECT`, `revision_id`, ...):
/// few distinct values, so a scan finds them fast, and indexing them would multiply writes.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

pub(crate) fn sdk_generated(key: &str) -> bool {
    key.starts_with("ls_") || key.starts_with("LANGSMITH_") || key.starts_with("LANGCHAIN_") || key == "revision_id"
}

/// Index entries for a run: one per top-level string metadata value of indexable size.
fn meta_keys(t: TenantId, run: &Run) -> Vec<Vec<u8>> {
    let Some(md) = run.metadata() else { return Vec::new() };
    md.iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
        .filter(|(k, v)| k.len() <= MAX_INDEXED_KEY && v.len() <= MAX_INDEXED_VALUE && !sdk_generated(k))
        .map(|(k, v)| {
            let mut key = meta_prefix(t, run.project_id, k, v);
            key.extend_from_slice(&time_bytes(order_time(run)));
            key.extend_from_slice(run.id.as_bytes());
            key
        })
        .collect()
}

/// The start time used for ordering: a run known only from a patch without a start time
/// sorts at the epoch until its post arrives.
pub(crate) fn order_time(run: &Run) -> i64 {
    run.start_time.map_or(0, Timestamp::micros)
}

impl EmbeddedStore {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| backend("create directory", e))?;
        // Opened on a thread at compaction priority, so fjall's worker threads start at it.
        let dir = dir.to_path_buf();
        let inner = std::thread::Builder::new()
            .name("store-open".into())
            .spawn(move || {
                lower_thread_priority(COMPACTION_NICE);
                Self::open_database(&dir)
            })
            .map_err(|e| backend("start the thread that opens the store", e))?
            .join()
            .map_err(|_| StorageError::new(StorageErrorKind::Internal, "opening the embedded store panicked"))??;
        let (job_tx, job_rx) = std::sync::mpsc::channel::<ProjectionJob>();
        std::thread::Builder::new()
            .name("store-projection".into())
            .spawn(move || {
                lower_thread_priority(BACKGROUND_NICE);
                // Until the store is dropped: each job holds what it needs. A job that panics
                // answers its caller itself (see `apply_run_fragments`); catching it here keeps
                // the thread, and with it every tenant's projection, alive.
                while let Ok(job) = job_rx.recv() {
                    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                        tracing::error!(panic = %panic_text(panic.as_ref()), "a projection job panicked");
                    }
                }
            })
            .map_err(|e| backend("start the projection thread", e))?;
        Ok(Self { inner: Arc::new(inner), projection: job_tx })
    }

    fn open_database(dir: &Path) -> Result<Inner> {
        // Memory is bounded by the memtable sizes set per keyspace below: fjall's default of
        // 64 MiB for every keyspace let RSS grow past a gigabyte under sustained ingest.
        // fjall 3.1 stores the write buffer limit but does not enforce it yet; it is set for
        // when it does.
        #[allow(deprecated)] // fjall marks the setter for a future rename
        let db =
            Database::builder(dir).cache_size(64 << 20).max_write_buffer_size(Some(256 << 20)).open().map_err(|e| backend("open", e))?;
        let ks = |name: &str| {
            db.keyspace(name, || KeyspaceCreateOptions::default().max_memtable_size(8 << 20)).map_err(|e| backend("open keyspace", e))
        };
        // The run indexes take an entry per run in key orders unrelated to arrival (run ids,
        // trace ids, metadata values), so each compaction out of L0 rewrites most of the next
        // level: larger memtables and more L0 tables per compaction make those rewrites rarer.
        // (Options apply when a keyspace is created; existing stores keep theirs.)
        // Eight L0 tables per compaction instead of fjall's four.
        let gathering_l0 = || Arc::new(fjall::compaction::Leveled::default().with_l0_threshold(8));
        let run_index = |name: &str| {
            db.keyspace(name, || KeyspaceCreateOptions::default().max_memtable_size(32 << 20).compaction_strategy(gathering_l0()))
                .map_err(|e| backend("open keyspace", e))
        };
        // Run records are 1-2 KB: kept in blob files (written once), so compaction moves keys
        // and pointers instead of rewriting every run at every level. The memtable holds the
        // records, so its flushed tables of keys and pointers are small: more of them are
        // gathered per compaction.
        let runs = db
            .keyspace("runs", || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(64 << 20)
                    .with_kv_separation(Some(KvSeparationOptions::default()))
                    .compaction_strategy(gathering_l0())
            })
            .map_err(|e| backend("open keyspace", e))?;
        // Examples (documents of KBs) and attachments are written once and read by scans.
        let separated = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(16 << 20).with_kv_separation(Some(KvSeparationOptions::default()))
            })
            .map_err(|e| backend("open keyspace", e))
        };
        let example_versions = separated("example_versions")?;
        let blobs = separated("blobs")?;
        Ok(Inner {
            runs,
            run_loc: run_index("run_loc")?,
            trace_idx: run_index("trace_idx")?,
            roots: run_index("roots")?,
            meta_idx: run_index("meta_idx")?,
            projects: ks("projects")?,
            project_names: ks("project_names")?,
            attachments: ks("attachments")?,
            feedback: ks("feedback")?,
            feedback_idx: ks("feedback_idx")?,
            feedback_stats: ks("feedback_stats")?,
            feedback_tokens: ks("feedback_tokens")?,
            feedback_configs: ks("feedback_configs")?,
            online_evaluators: ks("online_evaluators")?,
            run_shares: ks("run_shares")?,
            queues: ks("queues")?,
            queue_items: ks("queue_items")?,
            queue_runs: ks("queue_runs")?,
            datasets: ks("datasets")?,
            dataset_names: ks("dataset_names")?,
            example_versions,
            example_loc: ks("example_loc")?,
            dataset_versions: ks("dataset_versions")?,
            dataset_tags: ks("dataset_tags")?,
            blobs,
            curation_jobs: ks("curation_jobs")?,
            prompt_repos: ks("prompt_repos")?,
            prompt_names: ks("prompt_names")?,
            prompt_deleted: ks("prompt_deleted")?,
            prompt_commits: ks("prompt_commits")?,
            prompt_commit_log: ks("prompt_commit_log")?,
            prompt_tag_moves: ks("prompt_tag_moves")?,
            prompt_likes: ks("prompt_likes")?,
            write_lock: Mutex::new(()),
            db,
        })
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::with_source(StorageErrorKind::Internal, "storage task panicked", e))?
    }
}

impl Inner {
    fn get_project(&self, t: TenantId, p: ProjectId) -> Result<Option<Project>> {
        let key = Key::new().id(t.as_bytes()).id(p.as_bytes()).0;
        match self.projects.get(&key).map_err(|e| backend("read project", e))? {
            Some(v) => Ok(Some(dec("project", &v)?)),
            None => Ok(None),
        }
    }

    fn project_by_name(&self, t: TenantId, name: &str) -> Result<Option<Project>> {
        let key = Key::new().id(t.as_bytes()).bytes(name.as_bytes()).0;
        match self.project_names.get(&key).map_err(|e| backend("read project name", e))? {
            Some(v) if v.len() == 16 => self.get_project(t, ProjectId::from_bytes(v[..].try_into().expect("16 bytes"))),
            _ => Ok(None),
        }
    }

    fn get_run(&self, t: TenantId, r: RunId) -> Result<Option<Run>> {
        let loc_key = Key::new().id(t.as_bytes()).id(r.as_bytes()).0;
        let Some(loc) = self.run_loc.get(&loc_key).map_err(|e| backend("read run location", e))? else {
            return Ok(None);
        };
        let Some((p, s)) = parse_loc(&loc) else { return Ok(None) };
        match self.runs.get(run_key(t, p, s, r)).map_err(|e| backend("read run", e))? {
            Some(v) => Ok(Some(dec("run", &v)?)),
            None => Ok(None),
        }
    }

    fn trace_locations(&self, t: TenantId, trace: RunId) -> Result<Vec<(ProjectId, i64, RunId)>> {
        let prefix = Key::new().id(t.as_bytes()).id(trace.as_bytes()).0;
        let mut out = Vec::new();
        for g in self.trace_idx.prefix(&prefix) {
            let (k, v) = g.into_inner().map_err(|e| backend("scan trace", e))?;
            let r = RunId::from_bytes(k[32..48].try_into().expect("trace keys are 48 bytes"));
            if let Some((p, s)) = parse_loc(&v) {
                out.push((p, s, r));
            }
        }
        Ok(out)
    }

    fn trace_runs(&self, t: TenantId, trace: RunId) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        for (p, s, r) in self.trace_locations(t, trace)? {
            if let Some(v) = self.runs.get(run_key(t, p, s, r)).map_err(|e| backend("read run", e))? {
                runs.push(dec::<Run>("run", &v)?);
            }
        }
        runs.sort_by_cached_key(Run::dotted_order_or_default);
        Ok(runs)
    }

    fn apply_fragments(&self, t: TenantId, project: ProjectId, fragments: Vec<RunFragment>) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Group by run, keeping arrival order within a run.
        let mut order: Vec<RunId> = Vec::new();
        let mut by_run: HashMap<RunId, Vec<RunFragment>> = HashMap::new();
        for f in fragments {
            by_run
                .entry(f.id)
                .or_insert_with(|| {
                    order.push(f.id);
                    Vec::new()
                })
                .push(f);
        }
        let mut batch = self.db.batch();
        let mut feedback_stats = feedback::StatsCache::default();
        // Lineage of the runs written earlier in this batch, so a child can find a parent sent
        // alongside it. Only lineage: whole runs kept for the batch cost more to free than to build.
        let mut lineage: HashMap<RunId, Run> = HashMap::new();
        for id in order {
            // `order` holds each run once, so a run's earlier state is in the store, not `lineage`.
            let existing = self.get_run(t, id)?;
            if existing.is_none() {
                // Feedback may arrive before its run: it counts towards the run's project now.
                self.adopt_orphan_feedback(t, id, project, &mut batch, &mut feedback_stats)?;
            }
            let old_pos = existing.as_ref().map(|r| (r.project_id, order_time(r), r.trace(), r.is_root()));
            let old_meta = existing.as_ref().map(|r| meta_keys(t, r)).unwrap_or_default();
            let mut run = existing.unwrap_or_else(|| Run::empty(id, project));
            for f in by_run.remove(&id).unwrap_or_default() {
                for a in &f.attachments {
                    let key = Key::new().id(t.as_bytes()).id(id.as_bytes()).bytes(a.name.as_bytes()).0;
                    let mut v = Vec::with_capacity(a.mime_type.len() + 1 + a.data.len());
                    v.extend_from_slice(a.mime_type.as_bytes());
                    v.push(0);
                    v.extend_from_slice(&a.data);
                    batch.insert(&self.attachments, key, v);
                }
                run.apply_owned(f);
            }
            if let (None, Some(parent_id)) = (&run.dotted_order, run.parent_run_id) {
                let parent = match lineage.get(&parent_id) {
                    Some(p) => Some(p.clone()),
                    None => self.get_run(t, parent_id)?,
                };
                if let Some(parent) = parent {
                    run.derive_from_parent(&parent);
                }
            }
            run.derive();
            let (p, s, tr) = (run.project_id, order_time(&run), run.trace());
            if let Some((op, os, otr, was_root)) = old_pos {
                if (op, os) != (p, s) {
                    batch.remove(&self.runs, run_key(t, op, os, id));
                }
                if was_root && ((op, os) != (p, s) || !run.is_root()) {
                    batch.remove(&self.roots, run_key(t, op, os, id));
                }
                if otr != tr {
                    batch.remove(&self.trace_idx, Key::new().id(t.as_bytes()).id(otr.as_bytes()).id(id.as_bytes()).0);
                }
            }
            batch.insert(&self.runs, run_key(t, p, s, id), enc(&run));
            if run.is_root() {
                batch.insert(&self.roots, run_key(t, p, s, id), Vec::new());
            }
            let new_meta = meta_keys(t, &run);
            for k in old_meta.iter().filter(|k| !new_meta.contains(k)) {
                batch.remove(&self.meta_idx, k.clone());
            }
            for k in new_meta.into_iter().filter(|k| !old_meta.contains(k)) {
                batch.insert(&self.meta_idx, k, Vec::new());
            }
            batch.insert(&self.run_loc, Key::new().id(t.as_bytes()).id(id.as_bytes()).0, loc_value(p, s));
            batch.insert(&self.trace_idx, Key::new().id(t.as_bytes()).id(tr.as_bytes()).id(id.as_bytes()).0, loc_value(p, s));
            lineage.insert(id, run.lineage());
        }
        feedback_stats.write(self, &mut batch);
        batch.commit().map_err(|e| backend("write runs", e))
    }

    fn project_ids(&self, t: TenantId) -> Result<Vec<ProjectId>> {
        let mut out = Vec::new();
        for g in self.projects.prefix(t.as_bytes()) {
            let k = g.key().map_err(|e| backend("scan projects", e))?;
            out.push(ProjectId::from_bytes(k[16..32].try_into().expect("project keys are 32 bytes")));
        }
        Ok(out)
    }

    fn query_runs(&self, t: TenantId, q: &RunQuery) -> Result<RunPage> {
        let limit = q.limit.max(1);
        let mut ctx = MatchCtx { store: self, tenant: t, roots: HashMap::new(), trees: HashMap::new() };
        // Candidates from an index where one applies; otherwise scan projects by time.
        let candidates: Option<Vec<(ProjectId, i64, RunId)>> = if let Some(ids) = &q.ids {
            let mut v = Vec::new();
            for id in ids {
                let loc_key = Key::new().id(t.as_bytes()).id(id.as_bytes()).0;
                if let Some(loc) = self.run_loc.get(&loc_key).map_err(|e| backend("read run location", e))? {
                    if let Some((p, s)) = parse_loc(&loc) {
                        v.push((p, s, *id));
                    }
                }
            }
            Some(v)
        } else if let Some(trace) = q.trace {
            Some(self.trace_locations(t, trace)?)
        } else {
            None
        };

        if let Some(mut cands) = candidates {
            cands.retain(|(p, _, _)| q.projects.is_empty() || q.projects.contains(p));
            cands.sort_by_key(|c| std::cmp::Reverse((c.1, c.2)));
            cands.dedup();
            let mut runs = Vec::new();
            let mut next = None;
            for (p, s, r) in cands {
                if let Some(c) = q.cursor {
                    if (s, r) >= (c.start_us, c.id) {
                        continue;
                    }
                }
                let Some(v) = self.runs.get(run_key(t, p, s, r)).map_err(|e| backend("read run", e))? else { continue };
                let run: Run = dec("run", &v)?;
                if ctx.accepts(q, &run)? {
                    if runs.len() == limit {
                        next = runs.last().map(|r: &Run| RunCursor { start_us: order_time(r), id: r.id });
                        break;
                    }
                    runs.push(run);
                }
            }
            return Ok(RunPage { runs, next });
        }

        let projects = if q.projects.is_empty() { self.project_ids(t)? } else { q.projects.clone() };
        // Per project, newest first; then merge. Each project yields at most limit + 1.
        let mut merged: Vec<Run> = Vec::new();
        for p in projects {
            let lo = Key::new().id(t.as_bytes()).id(p.as_bytes()).time(q.start_from.map_or(i64::MIN, Timestamp::micros)).0;
            let mut hi_time = q.start_before.map_or(i64::MAX, Timestamp::micros);
            let mut hi_id = [0u8; 16];
            if let Some(c) = q.cursor {
                if c.start_us <= hi_time {
                    hi_time = c.start_us;
                    hi_id = *c.id.as_bytes();
                }
            }
            let hi = Key::new().id(t.as_bytes()).id(p.as_bytes()).time(hi_time).bytes(&hi_id).0;
            let mut taken = 0;
            // Roots come from their own index; everything else from the time-ordered runs.
            let rows: Box<dyn Iterator<Item = Result<Vec<u8>>>> = if let Some((mk, mv)) = &q.metadata_pair {
                // The pair's entries, bounded by the same time range and cursor.
                let prefix = meta_prefix(t, p, mk, mv);
                let lo_m = [prefix.as_slice(), &time_bytes(q.start_from.map_or(i64::MIN, Timestamp::micros))].concat();
                let hi_m = [prefix.as_slice(), &time_bytes(hi_time), &hi_id].concat();
                let runs_ks = &self.runs;
                Box::new(self.meta_idx.range(lo_m..hi_m).rev().map(move |g| {
                    let k = g.key().map_err(|e| backend("scan metadata index", e))?;
                    let tail = &k[k.len() - 24..];
                    let s = time_from(&tail[..8]);
                    let r = RunId::from_bytes(tail[8..24].try_into().expect("16 bytes"));
                    match runs_ks.get(run_key(t, p, s, r)).map_err(|e| backend("read run", e))? {
                        Some(v) => Ok(v.to_vec()),
                        None => Ok(Vec::new()),
                    }
                }))
            } else if q.is_root == Some(true) {
                Box::new(self.roots.range(lo..hi).rev().map(|g| {
                    let k = g.key().map_err(|e| backend("scan roots", e))?;
                    match self.runs.get(&k).map_err(|e| backend("read run", e))? {
                        Some(v) => Ok(v.to_vec()),
                        None => Ok(Vec::new()), // a root index entry whose run moved in this instant
                    }
                }))
            } else {
                Box::new(self.runs.range(lo..hi).rev().map(|g| {
                    let (_, v) = g.into_inner().map_err(|e| backend("scan runs", e))?;
                    Ok(v.to_vec())
                }))
            };
            for v in rows {
                let v = v?;
                if v.is_empty() {
                    continue;
                }
                let run: Run = dec("run", &v)?;
                if ctx.accepts(q, &run)? {
                    merged.push(run);
                    taken += 1;
                    if taken > limit {
                        break;
                    }
                }
            }
        }
        merged.sort_by_key(|r| std::cmp::Reverse((order_time(r), r.id)));
        let next = if merged.len() > limit {
            merged.truncate(limit);
            merged.last().map(|r| RunCursor { start_us: order_time(r), id: r.id })
        } else {
            None
        };
        Ok(RunPage { runs: merged, next })
    }

    fn project_stats(&self, t: TenantId, p: ProjectId) -> Result<ProjectStats> {
        let mut stats = StatsBuilder::default();
        let prefix = Key::new().id(t.as_bytes()).id(p.as_bytes()).0;
        for g in self.runs.prefix(&prefix) {
            let (_, v) = g.into_inner().map_err(|e| backend("scan runs", e))?;
            stats.add(&dec::<Run>("run", &v)?);
        }
        Ok(stats.finish())
    }

    fn delete_project(&self, t: TenantId, p: ProjectId) -> Result<bool> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(project) = self.get_project(t, p)? else { return Ok(false) };
        let mut batch = self.db.batch();
        let prefix = Key::new().id(t.as_bytes()).id(p.as_bytes()).0;
        let mut pending = 0;
        for g in self.runs.prefix(&prefix) {
            let (k, v) = g.into_inner().map_err(|e| backend("scan runs", e))?;
            let run: Run = dec("run", &v)?;
            batch.remove(&self.runs, k.to_vec());
            batch.remove(&self.roots, k.to_vec());
            for mk in meta_keys(t, &run) {
                batch.remove(&self.meta_idx, mk);
            }
            batch.remove(&self.run_loc, Key::new().id(t.as_bytes()).id(run.id.as_bytes()).0);
            batch.remove(&self.trace_idx, Key::new().id(t.as_bytes()).id(run.trace().as_bytes()).id(run.id.as_bytes()).0);
            for a in &run.attachments {
                batch.remove(&self.attachments, Key::new().id(t.as_bytes()).id(run.id.as_bytes()).bytes(a.name.as_bytes()).0);
            }
            pending += 1;
            if pending >= 10_000 {
                batch.commit().map_err(|e| backend("delete runs", e))?;
                batch = self.db.batch();
                pending = 0;
            }
        }
        batch.remove(&self.projects, prefix.clone());
        batch.remove(&self.project_names, Key::new().id(t.as_bytes()).bytes(project.name.as_bytes()).0);
        batch.commit().map_err(|e| backend("delete project", e))?;
        Ok(true)
    }
}

/// Aggregates [`ProjectStats`] over runs, one at a time (shared by the adapters).
#[derive(Default)]
pub(crate) struct StatsBuilder {
    st: ProjectStats,
    latencies: Vec<f64>,
    first_tokens: Vec<f64>,
}

impl StatsBuilder {
    pub(crate) fn add(&mut self, run: &Run) {
        let st = &mut self.st;
        st.run_count += 1;
        if run.is_root() {
            st.root_run_count += 1;
            if let Some(l) = run.latency_secs() {
                self.latencies.push(l);
            }
            if let (Some(s), Some(f)) = (run.start_time, run.first_token_time) {
                self.first_tokens.push((f.micros() - s.micros()) as f64 / 1e6);
            }
        }
        if run.status() == sextant_core::RunStatus::Error {
            st.error_count += 1;
        }
        st.prompt_tokens += run.prompt_tokens.unwrap_or(0);
        st.completion_tokens += run.completion_tokens.unwrap_or(0);
        st.total_tokens += run.total_tokens.unwrap_or(0);
        st.prompt_cost += run.prompt_cost.unwrap_or(0.0);
        st.completion_cost += run.completion_cost.unwrap_or(0.0);
        st.total_cost += run.total_cost.unwrap_or(0.0);
        st.last_run_start_time = st.last_run_start_time.max(run.start_time);
    }

    pub(crate) fn finish(mut self) -> ProjectStats {
        self.st.latency_p50 = percentile(&mut self.latencies, 0.5);
        self.st.latency_p99 = percentile(&mut self.latencies, 0.99);
        self.st.first_token_p50 = percentile(&mut self.first_tokens, 0.5);
        self.st.first_token_p99 = percentile(&mut self.first_tokens, 0.99);
        self.st
    }
}

fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[idx])
}

/// The conditions of a query that need nothing but the run itself (shared by the adapters).
pub(crate) fn matches_conditions(q: &RunQuery, run: &Run) -> bool {
    if let Some(tr) = q.trace {
        if run.trace() != tr {
            return false;
        }
    }
    if let Some(p) = q.parent_run {
        if run.parent_run_id != Some(p) {
            return false;
        }
    }
    if let Some(root) = q.is_root {
        if run.is_root() != root {
            return false;
        }
    }
    if let Some(rt) = &q.run_type {
        if run.run_type.as_deref() != Some(rt.as_str()) {
            return false;
        }
    }
    if let Some(err) = q.error {
        if (run.status() == sextant_core::RunStatus::Error) != err {
            return false;
        }
    }
    if !q.reference_examples.is_empty() && !run.reference_example_id.is_some_and(|r| q.reference_examples.contains(&r)) {
        return false;
    }
    if let Some(from) = q.start_from {
        if run.start_time.is_none_or(|s| s < from) {
            return false;
        }
    }
    if let Some(before) = q.start_before {
        if run.start_time.is_none_or(|s| s >= before) {
            return false;
        }
    }
    true
}

/// Evaluates a query's conditions on one run, caching trace lookups within the query.
struct MatchCtx<'a> {
    store: &'a Inner,
    tenant: TenantId,
    roots: HashMap<RunId, bool>,
    trees: HashMap<RunId, bool>,
}

impl MatchCtx<'_> {
    /// Evaluates a matcher, loading the run's feedback only if it looks at feedback.
    fn eval(&self, f: &dyn RunMatcher, run: &Run) -> Result<bool> {
        let feedback = if f.needs_feedback() { self.store.run_feedback(self.tenant, run.id)? } else { Vec::new() };
        Ok(f.matches(run, &feedback))
    }

    fn accepts(&mut self, q: &RunQuery, run: &Run) -> Result<bool> {
        if !matches_conditions(q, run) {
            return Ok(false);
        }
        if let Some(f) = &q.filter {
            if !self.eval(f.as_ref(), run)? {
                return Ok(false);
            }
        }
        if let Some(f) = &q.trace_filter {
            let trace = run.trace();
            let ok = match self.roots.get(&trace) {
                Some(ok) => *ok,
                None => {
                    let root = if trace == run.id { Some(run.clone()) } else { self.store.get_run(self.tenant, trace)? };
                    let ok = match root {
                        Some(r) => self.eval(f.as_ref(), &r)?,
                        None => false,
                    };
                    self.roots.insert(trace, ok);
                    ok
                }
            };
            if !ok {
                return Ok(false);
            }
        }
        if let Some(f) = &q.tree_filter {
            let trace = run.trace();
            let ok = match self.trees.get(&trace) {
                Some(ok) => *ok,
                None => {
                    let mut ok = false;
                    for r in self.store.trace_runs(self.tenant, trace)? {
                        if self.eval(f.as_ref(), &r)? {
                            ok = true;
                            break;
                        }
                    }
                    self.trees.insert(trace, ok);
                    ok
                }
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether a project passes a [`ProjectQuery`]'s conditions (shared by the adapters).
pub(crate) fn project_matches(q: &ProjectQuery, p: &Project) -> bool {
    if !q.ids.is_empty() && !q.ids.contains(&p.id) {
        return false;
    }
    if q.name.as_ref().is_some_and(|n| *n != p.name) {
        return false;
    }
    if q.name_contains.as_ref().is_some_and(|n| !p.name.to_lowercase().contains(&n.to_lowercase())) {
        return false;
    }
    if !q.reference_dataset.is_empty() && !p.reference_dataset_id.is_some_and(|d| q.reference_dataset.contains(&d)) {
        return false;
    }
    match q.reference_free {
        Some(true) if p.reference_dataset_id.is_some() => return false,
        Some(false) if p.reference_dataset_id.is_none() => return false,
        _ => {}
    }
    if !q.metadata.is_empty() {
        let md = p.metadata();
        if !q.metadata.iter().all(|(k, v)| md.and_then(|m| m.get(k)) == Some(v)) {
            return false;
        }
    }
    true
}

#[async_trait]
impl ProjectStore for EmbeddedStore {
    async fn create_project(&self, project: &Project) -> Result<CreateOutcome> {
        let project = project.clone();
        self.blocking(move |s| {
            let _guard = s.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let t = project.tenant_id;
            if let Some(existing) = s.get_project(t, project.id)? {
                return Ok(CreateOutcome::AlreadyExists(existing));
            }
            if let Some(existing) = s.project_by_name(t, &project.name)? {
                return Ok(CreateOutcome::NameTaken(existing));
            }
            let mut b = s.db.batch();
            b.insert(&s.projects, Key::new().id(t.as_bytes()).id(project.id.as_bytes()).0, enc(&project));
            b.insert(&s.project_names, Key::new().id(t.as_bytes()).bytes(project.name.as_bytes()).0, project.id.as_bytes().to_vec());
            b.commit().map_err(|e| backend("write project", e))?;
            Ok(CreateOutcome::Created(project))
        })
        .await
    }

    async fn get_project(&self, tenant: TenantId, id: ProjectId) -> Result<Option<Project>> {
        self.blocking(move |s| s.get_project(tenant, id)).await
    }

    async fn project_by_name(&self, tenant: TenantId, name: &str) -> Result<Option<Project>> {
        let name = name.to_string();
        self.blocking(move |s| s.project_by_name(tenant, &name)).await
    }

    async fn list_projects(&self, tenant: TenantId, q: &ProjectQuery) -> Result<Vec<Project>> {
        let q = q.clone();
        self.blocking(move |s| {
            let mut all = Vec::new();
            for g in s.projects.prefix(tenant.as_bytes()) {
                let (_, v) = g.into_inner().map_err(|e| backend("scan projects", e))?;
                let p: Project = dec("project", &v)?;
                if !project_matches(&q, &p) {
                    continue;
                }
                all.push(p);
            }
            all.sort_by_key(|p| std::cmp::Reverse((p.start_time, p.id)));
            Ok(all.into_iter().skip(q.offset).take(q.limit.max(1)).collect())
        })
        .await
    }

    async fn update_project(&self, tenant: TenantId, id: ProjectId, patch: &ProjectPatch) -> Result<Option<Project>> {
        let patch = patch.clone();
        self.blocking(move |s| {
            let _guard = s.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(mut p) = s.get_project(tenant, id)? else { return Ok(None) };
            let old_name = p.name.clone();
            p.apply(&patch);
            let mut b = s.db.batch();
            if p.name != old_name {
                if let Some(other) = s.project_by_name(tenant, &p.name)? {
                    if other.id != id {
                        return Err(StorageError::new(StorageErrorKind::Conflict, format!("a project named {:?} already exists", p.name)));
                    }
                }
                b.remove(&s.project_names, Key::new().id(tenant.as_bytes()).bytes(old_name.as_bytes()).0);
                b.insert(&s.project_names, Key::new().id(tenant.as_bytes()).bytes(p.name.as_bytes()).0, id.as_bytes().to_vec());
            }
            b.insert(&s.projects, Key::new().id(tenant.as_bytes()).id(id.as_bytes()).0, enc(&p));
            b.commit().map_err(|e| backend("write project", e))?;
            Ok(Some(p))
        })
        .await
    }

    async fn delete_project(&self, tenant: TenantId, id: ProjectId) -> Result<bool> {
        self.blocking(move |s| s.delete_project(tenant, id)).await
    }

    async fn project_stats(&self, tenant: TenantId, id: ProjectId) -> Result<ProjectStats> {
        self.blocking(move |s| s.project_stats(tenant, id)).await
    }
}

#[async_trait]
impl RunStore for EmbeddedStore {
    async fn apply_run_fragments(&self, tenant: TenantId, project: ProjectId, fragments: Vec<RunFragment>) -> Result<()> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        let job: ProjectionJob = Box::new(move || {
            // A panic is this group's fault (nothing was committed): refused as invalid, so
            // the projector retries its events one by one and dead-letters only the culprit.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.apply_fragments(tenant, project, fragments)))
                .unwrap_or_else(|panic| {
                    Err(StorageError::new(
                        StorageErrorKind::Invalid,
                        format!("applying these runs panicked: {}", panic_text(panic.as_ref())),
                    ))
                });
            let _ = done_tx.send(applied);
        });
        let gone = || StorageError::new(StorageErrorKind::Internal, "the store's projection thread has stopped");
        self.projection.send(job).map_err(|_| gone())?;
        done_rx.await.map_err(|_| gone())?
    }

    async fn get_run(&self, tenant: TenantId, id: RunId) -> Result<Option<Run>> {
        self.blocking(move |s| s.get_run(tenant, id)).await
    }

    async fn query_runs(&self, tenant: TenantId, q: &RunQuery) -> Result<RunPage> {
        let q = q.clone();
        self.blocking(move |s| s.query_runs(tenant, &q)).await
    }

    async fn trace_runs(&self, tenant: TenantId, trace: RunId) -> Result<Vec<Run>> {
        self.blocking(move |s| s.trace_runs(tenant, trace)).await
    }

    async fn put_run_share(&self, tenant: TenantId, run: RunId, share: Option<&RunShare>, _at: Timestamp) -> Result<()> {
        // One writer per process (the ingest service that publishes the change): the batch is
        // the order, so `at` is not needed here.
        let share = share.cloned();
        self.blocking(move |s| {
            let by_run = Key::new().bytes(b"S").id(tenant.as_bytes()).id(run.as_bytes()).0;
            let mut batch = s.db.batch();
            if let Some(v) = s.run_shares.get(&by_run).map_err(|e| backend("read run share", e))? {
                let old: RunShare = dec("run share", &v)?;
                batch.remove(&s.run_shares, Key::new().bytes(b"T").id(old.token.as_bytes()).0);
            }
            match &share {
                Some(sh) => {
                    batch.insert(&s.run_shares, by_run, enc(sh));
                    batch.insert(&s.run_shares, Key::new().bytes(b"T").id(sh.token.as_bytes()).0, enc(&(tenant, sh)));
                }
                None => batch.remove(&s.run_shares, by_run),
            }
            batch.commit().map_err(|e| backend("write run share", e))?;
            // Acknowledged means durable, and nothing replays shares into the store: sync now
            // (shares are rare).
            s.db.persist(PersistMode::SyncData).map_err(|e| backend("sync run share", e))
        })
        .await
    }

    async fn run_share(&self, tenant: TenantId, run: RunId) -> Result<Option<RunShare>> {
        self.blocking(move |s| {
            let key = Key::new().bytes(b"S").id(tenant.as_bytes()).id(run.as_bytes()).0;
            s.run_shares.get(&key).map_err(|e| backend("read run share", e))?.map(|v| dec("run share", &v)).transpose()
        })
        .await
    }

    async fn run_share_by_token(&self, token: Uuid) -> Result<Option<(TenantId, RunShare)>> {
        self.blocking(move |s| {
            let key = Key::new().bytes(b"T").id(token.as_bytes()).0;
            s.run_shares.get(&key).map_err(|e| backend("read run share", e))?.map(|v| dec("run share", &v)).transpose()
        })
        .await
    }

    async fn get_attachment(&self, tenant: TenantId, run: RunId, name: &str) -> Result<Option<(String, Vec<u8>)>> {
        let name = name.to_string();
        self.blocking(move |s| {
            let key = Key::new().id(tenant.as_bytes()).id(run.as_bytes()).bytes(name.as_bytes()).0;
            let Some(v) = s.attachments.get(&key).map_err(|e| backend("read attachment", e))? else { return Ok(None) };
            let nul = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            let mime = String::from_utf8_lossy(&v[..nul]).into_owned();
            Ok(Some((mime, v.get(nul + 1..).unwrap_or_default().to_vec())))
        })
        .await
    }

    async fn sync(&self) -> Result<()> {
        self.blocking(|s| s.db.persist(PersistMode::SyncData).map_err(|e| backend("sync", e))).await
    }
}

#[async_trait]
impl FeedbackStore for EmbeddedStore {
    async fn apply_feedback(&self, tenant: TenantId, stamp: Uuid, change: &FeedbackChange) -> Result<()> {
        let changes = vec![(tenant, stamp, change.clone())];
        self.blocking(move |s| s.apply_feedback(&changes)).await
    }

    async fn apply_feedback_batch(&self, changes: &[(TenantId, Uuid, FeedbackChange)]) -> Result<()> {
        let changes = changes.to_vec();
        self.blocking(move |s| s.apply_feedback(&changes)).await
    }

    async fn get_feedback(&self, tenant: TenantId, id: FeedbackId) -> Result<Option<Feedback>> {
        self.blocking(move |s| s.get_feedback(tenant, id)).await
    }

    async fn list_feedback(&self, tenant: TenantId, q: &FeedbackQuery) -> Result<Vec<Feedback>> {
        let q = q.clone();
        self.blocking(move |s| s.list_feedback(tenant, &q)).await
    }

    async fn run_feedback_stats(&self, tenant: TenantId, runs: &[RunId]) -> Result<HashMap<RunId, FeedbackStats>> {
        let runs = runs.to_vec();
        self.blocking(move |s| s.run_feedback_stats(tenant, &runs)).await
    }

    async fn project_feedback_stats(&self, tenant: TenantId, project: ProjectId) -> Result<FeedbackStats> {
        self.blocking(move |s| s.project_feedback_stats(tenant, project)).await
    }

    async fn put_feedback_token(&self, tenant: TenantId, token: &sextant_core::feedback::FeedbackToken) -> Result<()> {
        let token = token.clone();
        self.blocking(move |s| s.put_feedback_token(tenant, &token)).await
    }

    async fn feedback_token(&self, id: Uuid) -> Result<Option<(TenantId, sextant_core::feedback::FeedbackToken)>> {
        self.blocking(move |s| s.feedback_token(id)).await
    }

    async fn list_feedback_tokens(&self, tenant: TenantId, run: RunId) -> Result<Vec<sextant_core::feedback::FeedbackToken>> {
        self.blocking(move |s| s.list_feedback_tokens(tenant, run)).await
    }

    async fn put_feedback_config(&self, tenant: TenantId, config: &sextant_core::feedback::FeedbackConfigDef) -> Result<()> {
        let config = config.clone();
        self.blocking(move |s| s.put_feedback_config(tenant, &config)).await
    }

    async fn list_feedback_configs(&self, tenant: TenantId) -> Result<Vec<sextant_core::feedback::FeedbackConfigDef>> {
        self.blocking(move |s| s.list_feedback_configs(tenant)).await
    }
}

impl Inner {
    /// Queue state is written directly (not projected): make it durable before answering.
    fn durable<T>(&self, r: Result<T>) -> Result<T> {
        let v = r?;
        self.db.persist(PersistMode::SyncData).map_err(|e| backend("sync", e))?;
        Ok(v)
    }
}

#[async_trait]
impl QueueStore for EmbeddedStore {
    async fn create_queue(&self, tenant: TenantId, queue: &Queue) -> Result<Queue> {
        let queue = queue.clone();
        self.blocking(move |s| s.durable(s.create_queue(tenant, &queue))).await
    }

    async fn get_queue(&self, tenant: TenantId, id: QueueId) -> Result<Option<Queue>> {
        self.blocking(move |s| s.get_queue(tenant, id)).await
    }

    async fn list_queues(&self, tenant: TenantId, q: &QueueQuery) -> Result<Vec<Queue>> {
        let q = q.clone();
        self.blocking(move |s| s.list_queues(tenant, &q)).await
    }

    async fn put_queue(&self, tenant: TenantId, queue: &Queue) -> Result<Option<Queue>> {
        let queue = queue.clone();
        self.blocking(move |s| s.durable(s.put_queue(tenant, &queue))).await
    }

    async fn delete_queue(&self, tenant: TenantId, id: QueueId) -> Result<bool> {
        self.blocking(move |s| s.durable(s.delete_queue(tenant, id))).await
    }

    async fn queues_with_rules(&self) -> Result<Vec<(TenantId, Queue)>> {
        self.blocking(|s| s.queues_with_rules()).await
    }

    async fn add_queue_items(&self, tenant: TenantId, queue: QueueId, items: Vec<QueueItem>) -> Result<Vec<QueueItem>> {
        self.blocking(move |s| s.durable(s.add_queue_items(tenant, queue, items))).await
    }

    async fn list_queue_items(&self, tenant: TenantId, queue: QueueId) -> Result<Vec<QueueItem>> {
        self.blocking(move |s| s.list_queue_items(tenant, queue)).await
    }

    async fn get_queue_item(&self, tenant: TenantId, queue: QueueId, item: Uuid) -> Result<Option<QueueItem>> {
        self.blocking(move |s| s.get_queue_item(tenant, queue, item)).await
    }

    async fn update_queue_item(&self, tenant: TenantId, queue: QueueId, item: Uuid, update: ItemUpdate) -> Result<Option<QueueItem>> {
        self.blocking(move |s| s.durable(s.update_queue_item(tenant, queue, item, update))).await
    }

    async fn delete_queue_items(&self, tenant: TenantId, queue: QueueId, items: &[Uuid]) -> Result<usize> {
        let items = items.to_vec();
        self.blocking(move |s| s.durable(s.delete_queue_items(tenant, queue, &items))).await
    }

    async fn take_next_item(
        &self,
        tenant: TenantId,
        queue: QueueId,
        reviewer: &str,
        now: Timestamp,
        until: Timestamp,
        reviewers_needed: u32,
    ) -> Result<Option<QueueItem>> {
        let reviewer = reviewer.to_owned();
        self.blocking(move |s| s.durable(s.take_next_item(tenant, queue, &reviewer, now, until, reviewers_needed))).await
    }
}

#[async_trait]
impl DatasetStore for EmbeddedStore {
    async fn create_dataset(&self, tenant: TenantId, dataset: &Dataset) -> Result<DatasetCreate> {
        let d = dataset.clone();
        self.blocking(move |s| s.create_dataset(tenant, &d)).await
    }

    async fn put_dataset(&self, tenant: TenantId, dataset: &Dataset) -> Result<bool> {
        let d = dataset.clone();
        self.blocking(move |s| s.put_dataset(tenant, &d)).await
    }

    async fn get_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<Option<Dataset>> {
        self.blocking(move |s| s.get_dataset(tenant, id)).await
    }

    async fn dataset_by_name(&self, tenant: TenantId, name: &str) -> Result<Option<Dataset>> {
        let name = name.to_owned();
        self.blocking(move |s| s.dataset_by_name(tenant, &name)).await
    }

    async fn list_datasets(&self, tenant: TenantId, q: &DatasetQuery) -> Result<Vec<Dataset>> {
        let q = q.clone();
        self.blocking(move |s| s.list_datasets(tenant, &q)).await
    }

    async fn delete_dataset(&self, tenant: TenantId, id: DatasetId) -> Result<bool> {
        self.blocking(move |s| s.delete_dataset(tenant, id)).await
    }

    async fn datasets_with_rules(&self) -> Result<Vec<(TenantId, Dataset)>> {
        self.blocking(|s| s.datasets_with_rules()).await
    }

    async fn apply_example_changes(&self, tenant: TenantId, dataset: DatasetId, as_of: Timestamp, changes: &[ExampleChange]) -> Result<()> {
        let changes = changes.to_vec();
        self.blocking(move |s| s.apply_example_changes(tenant, dataset, as_of, &changes)).await
    }

    async fn list_examples(&self, tenant: TenantId, dataset: DatasetId, q: &ExampleQuery) -> Result<Vec<Example>> {
        let q = q.clone();
        self.blocking(move |s| s.list_examples(tenant, dataset, &q)).await
    }

    async fn count_examples(&self, tenant: TenantId, dataset: DatasetId, as_of: Option<Timestamp>) -> Result<u64> {
        self.blocking(move |s| s.count_examples(tenant, dataset, as_of)).await
    }

    async fn get_example(&self, tenant: TenantId, id: ExampleId, as_of: Option<Timestamp>) -> Result<Option<Example>> {
        self.blocking(move |s| s.get_example(tenant, id, as_of)).await
    }

    async fn list_versions(&self, tenant: TenantId, dataset: DatasetId) -> Result<Vec<Timestamp>> {
        self.blocking(move |s| s.list_versions(tenant, dataset)).await
    }

    async fn set_tag(&self, tenant: TenantId, dataset: DatasetId, tag: &str, as_of: Timestamp, at: Timestamp) -> Result<()> {
        let tag = tag.to_owned();
        self.blocking(move |s| s.set_tag(tenant, dataset, &tag, as_of, at)).await
    }

    async fn tags(&self, tenant: TenantId, dataset: DatasetId) -> Result<Vec<(String, Timestamp)>> {
        self.blocking(move |s| s.tags(tenant, dataset)).await
    }

    async fn put_blob(&self, tenant: TenantId, sha256: &str, bytes: &[u8]) -> Result<()> {
        let (sha, bytes) = (sha256.to_owned(), bytes.to_vec());
        self.blocking(move |s| s.put_blob(tenant, &sha, &bytes)).await
    }

    async fn get_blob(&self, tenant: TenantId, sha256: &str) -> Result<Option<Vec<u8>>> {
        let sha = sha256.to_owned();
        self.blocking(move |s| s.get_blob(tenant, &sha)).await
    }

    async fn put_curation_job(&self, tenant: TenantId, job: &CurationJob) -> Result<()> {
        let job = job.clone();
        self.blocking(move |s| s.put_curation_job(tenant, &job)).await
    }

    async fn get_curation_job(&self, tenant: TenantId, id: Uuid) -> Result<Option<CurationJob>> {
        self.blocking(move |s| s.get_curation_job(tenant, id)).await
    }
}

#[async_trait]
impl crate::EvaluatorStore for EmbeddedStore {
    async fn put_online_evaluator(&self, tenant: TenantId, e: &sextant_core::evaluator::OnlineEvaluatorDef) -> Result<()> {
        let e = e.clone();
        self.blocking(move |s| s.put_online_evaluator(tenant, &e)).await
    }

    async fn get_online_evaluator(&self, tenant: TenantId, id: Uuid) -> Result<Option<sextant_core::evaluator::OnlineEvaluatorDef>> {
        self.blocking(move |s| s.get_online_evaluator(tenant, id)).await
    }

    async fn list_online_evaluators(&self, tenant: TenantId) -> Result<Vec<sextant_core::evaluator::OnlineEvaluatorDef>> {
        self.blocking(move |s| s.list_online_evaluators(tenant)).await
    }
}

#[async_trait]
impl PromptStore for EmbeddedStore {
    async fn create_repo(&self, tenant: TenantId, repo: &PromptRepo) -> Result<RepoCreate> {
        let repo = repo.clone();
        self.blocking(move |s| s.create_repo(tenant, &repo)).await
    }

    async fn put_repo(&self, tenant: TenantId, repo: &PromptRepo) -> Result<bool> {
        let repo = repo.clone();
        self.blocking(move |s| s.put_repo(tenant, &repo)).await
    }

    async fn get_repo(&self, tenant: TenantId, id: RepoId) -> Result<Option<PromptRepo>> {
        self.blocking(move |s| s.get_repo(tenant, id)).await
    }

    async fn repo_by_handle(&self, tenant: TenantId, handle: &str) -> Result<Option<PromptRepo>> {
        let handle = handle.to_owned();
        self.blocking(move |s| s.repo_by_handle(tenant, &handle)).await
    }

    async fn list_repos(&self, tenant: TenantId) -> Result<Vec<PromptRepo>> {
        self.blocking(move |s| s.list_repos(tenant)).await
    }

    async fn delete_repo(&self, tenant: TenantId, id: RepoId, at: Timestamp) -> Result<bool> {
        self.blocking(move |s| s.delete_repo(tenant, id, at)).await
    }

    async fn put_commit(&self, tenant: TenantId, commit: &PromptCommit) -> Result<()> {
        let commit = commit.clone();
        self.blocking(move |s| s.put_commit(tenant, &commit)).await
    }

    async fn get_commit(&self, tenant: TenantId, repo: RepoId, hash: &str) -> Result<Option<PromptCommit>> {
        let hash = hash.to_owned();
        self.blocking(move |s| s.get_commit(tenant, repo, &hash)).await
    }

    async fn commits_by_prefix(&self, tenant: TenantId, repo: RepoId, prefix: &str, limit: usize) -> Result<Vec<PromptCommit>> {
        let prefix = prefix.to_owned();
        self.blocking(move |s| s.commits_by_prefix(tenant, repo, &prefix, limit)).await
    }

    async fn list_commits(&self, tenant: TenantId, repo: RepoId, offset: usize, limit: usize) -> Result<CommitPage> {
        self.blocking(move |s| s.list_commits(tenant, repo, offset, limit)).await
    }

    async fn put_tag_move(&self, tenant: TenantId, tag_move: &TagMove) -> Result<()> {
        let m = tag_move.clone();
        self.blocking(move |s| s.put_tag_move(tenant, &m)).await
    }

    async fn tag_moves(&self, tenant: TenantId, repo: RepoId, tag: Option<&str>) -> Result<Vec<TagMove>> {
        let tag = tag.map(str::to_owned);
        self.blocking(move |s| s.tag_moves(tenant, repo, tag.as_deref())).await
    }

    async fn set_like(&self, tenant: TenantId, repo: RepoId, by: TenantId, liked: bool, at: Timestamp) -> Result<()> {
        self.blocking(move |s| s.set_like(tenant, repo, by, liked, at)).await
    }

    async fn likes(&self, tenant: TenantId, repo: RepoId) -> Result<Vec<TenantId>> {
        self.blocking(move |s| s.likes(tenant, repo)).await
    }
}
