//! The ScyllaDB adapter of the storage port (feature `scylla`): the store of a clustered
//! deployment, where several projector replicas write and any replica reads.
//!
//! It owns the schema (`cql/*.cql`, applied by [`migrate`]), the prepared statements
//! (`statements.rs`, prepared once in [`ScyllaStore::connect`]) and the mapping of driver
//! errors onto [`StorageErrorKind`]. Semantics are the embedded adapter's, checked by the same
//! conformance suite.
//!
//! Tables (T = tenant, P = project, B = hour bucket, S = start µs, R = run id):
//! * `run_by_id`   ((T, R))          → body, version, write_ts — the source of truth
//! * `run_buckets` ((T, P), B↓)       — the buckets of a project that hold runs
//! * `runs`        ((T, P, B), S↓ R↓) — a project's runs by time (keys only)
//! * `roots`       ((T, P, B), S↓ R↓) — root runs only
//! * `trace_idx`   ((T, trace), R)
//! * `meta_idx`    ((T, P, key, value), S↓ R↓) — top-level string metadata
//! * `projects`    ((T), P) → body, version; `project_names` ((T, name)) → P
//! * `attachments` ((T, R), name) → mime type, bytes
//! * feedback and its `feedback_stats`: see `feedback.rs`; annotation queues: see `queues.rs`.
//!   Every run write also reads the run's `feedback_orphans` partition (almost always empty,
//!   alongside the index writes) to adopt feedback that arrived before the run.
//! * datasets, their versioned examples, tags, blobs and curation jobs: see `datasets.rs`.
//! * prompt repositories, commits, tag histories and likes: see `prompts.rs`.
//!
//! Runs partition by hour as well as project: a busy project writes gigabytes a day, far past
//! what one partition should hold, and `run_buckets` lists the non-empty hours so scans never
//! probe empty ones. Index tables hold keys only; bodies are read from `run_by_id`, so a body
//! is stored once and every index read can be checked against the truth (below).
//!
//! # Concurrent merges
//! Projector replicas in separate processes may merge fragments of the same run at the same
//! moment, and [`Run::apply`] is a read-modify-write (it keeps the `patched` bitmask), so a
//! plain read-then-write would lose one of the merges. Each run therefore carries a `version`
//! in `run_by_id`, written only through lightweight transactions: `INSERT ... IF NOT EXISTS`
//! for a new run, `UPDATE ... IF version = ?` for an existing one. A writer that loses the race
//! re-reads through Paxos (`LOCAL_SERIAL`) and merges again, a bounded number of times. This
//! was chosen over alternatives because it is exact: a counter or last-write-wins cells cannot
//! express "a patch beats a post whatever the order", and a lock service would add a
//! dependency. Its cost is four round trips per run written, paid only by the projector.
//!
//! Index rows are written after the compare-and-set, with `USING TIMESTAMP` taken from a
//! per-run clock that only moves forward (`write_ts`, stored with the version): whichever order
//! two writers' index writes arrive in, the later version's inserts and deletes win. A writer
//! that dies between its compare-and-set and its index writes can leave an index entry of the
//! replaced version behind (until its TTL); every read through an index re-checks the run it
//! found (its project, start time, rootness, trace or metadata pair) and skips such entries.
//!
//! Project names are claimed with `INSERT INTO project_names ... IF NOT EXISTS` before the
//! project row is inserted, and released with `DELETE ... IF project = ?`. A create
//! interrupted between the two leaves its claim; the create's redelivery (same project id)
//! completes it.
//!
//! # Retries
//! Transient failures (timeouts, overload, unavailable replicas, broken connections) are
//! retried with backoff, a few times, for idempotent statements only. Lightweight transactions
//! are never resent as such: a timed-out one may have applied. The run merge instead starts
//! over from a serial read, which is safe because merging is idempotent.

mod config;
mod datasets;
mod evaluators;
mod feedback;
mod migrate;
mod prompts;
mod queues;
mod shape;
mod statements;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::{QueryResult, QueryRowsResult};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::{debug, instrument, warn};
use uuid::Uuid;

use sextant_core::{Project, ProjectId, ProjectPatch, Run, RunFragment, RunId, RunShare, TenantId, Timestamp};

use crate::embedded::{matches_conditions, order_time, project_matches, sdk_generated, StatsBuilder, MAX_INDEXED_KEY, MAX_INDEXED_VALUE};
use crate::{
    CreateOutcome, ProjectQuery, ProjectStats, ProjectStore, Result, RunCursor, RunPage, RunQuery, RunStore, StorageError, StorageErrorKind,
};

pub use config::{ReplicationConfig, ReplicationStrategy, ScyllaConfig};
pub use migrate::migrate;
use statements::*;

/// Width of a run partition: one hour of start times.
const BUCKET_US: i64 = 3_600_000_000;
/// Attempts of an idempotent statement on transient failures.
const MAX_ATTEMPTS: u32 = 3;
/// Merges of one run before giving up on contention (each after losing a compare-and-set).
const MAX_MERGE_ATTEMPTS: u32 = 16;
/// Run bodies read at once while resolving index entries.
const FANOUT: usize = 32;

fn bucket_of(start_us: i64) -> i64 {
    start_us.div_euclid(BUCKET_US)
}

fn now_us() -> i64 {
    Timestamp::now().micros()
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 * 4u64.pow(attempt.saturating_sub(1).min(4)))
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("domain types always encode")
}

fn dec<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T> {
    rmp_serde::from_slice(b).map_err(|e| StorageError::with_source(StorageErrorKind::Internal, format!("scylla: cannot decode {what}"), e))
}

fn internal(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::with_source(StorageErrorKind::Internal, format!("scylla: {what}: {e}"), e)
}

/// What a driver error means to callers, and whether resending the same request may help.
fn classify(e: &ExecutionError) -> (StorageErrorKind, bool) {
    use StorageErrorKind::{Internal, Unavailable};
    match e {
        ExecutionError::LastAttemptError(a) => classify_attempt(a),
        ExecutionError::RequestTimeout(_) | ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => (Unavailable, true),
        ExecutionError::PrepareError(PrepareError::ConnectionPoolError(_)) => (Unavailable, true),
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed { first_attempt }) => classify_attempt(first_attempt),
        ExecutionError::UseKeyspaceError(_) | ExecutionError::SchemaAgreementError(_) | ExecutionError::MetadataError(_) => {
            (Unavailable, true)
        }
        _ => (Internal, false),
    }
}

fn classify_attempt(e: &RequestAttemptError) -> (StorageErrorKind, bool) {
    use StorageErrorKind::{Internal, Unavailable};
    match e {
        RequestAttemptError::DbError(db, _) => match db {
            DbError::Unavailable { .. }
            | DbError::Overloaded
            | DbError::IsBootstrapping
            | DbError::ReadTimeout { .. }
            | DbError::WriteTimeout { .. }
            | DbError::TruncateError
            | DbError::ServerError
            | DbError::RateLimitReached { .. } => (Unavailable, true),
            // Replicas answered with a failure (not silence): resending will fail the same way.
            DbError::ReadFailure { .. } | DbError::WriteFailure { .. } => (Unavailable, false),
            // Bad statements, schema or credentials: a bug or a misconfiguration.
            _ => (Internal, false),
        },
        RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId => (Unavailable, true),
        _ => (Internal, false),
    }
}

/// A driver error as a storage error, keeping the driver's message (it names the failure,
/// never the bound values).
pub(crate) fn driver_error(what: &str, e: ExecutionError) -> StorageError {
    let (kind, _) = classify(&e);
    StorageError::with_source(kind, format!("scylla: {what} failed: {e}"), e)
}

fn session_error(e: NewSessionError) -> StorageError {
    let kind = match e {
        NewSessionError::FailedToResolveAnyHostname(_) | NewSessionError::MetadataError(_) | NewSessionError::UseKeyspaceError(_) => {
            StorageErrorKind::Unavailable
        }
        _ => StorageErrorKind::Invalid,
    };
    StorageError::with_source(kind, format!("scylla: cannot connect: {e}"), e)
}

/// A driver session: token- and DC-aware, `LOCAL_QUORUM`, `LOCAL_SERIAL` for Paxos.
pub(crate) async fn build_session(cfg: &ScyllaConfig, keyspace: Option<&str>) -> Result<Session> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &cfg.local_datacenter {
        // Requests stay in the local DC: data residency is the reason a DC is named.
        policy = policy.prefer_datacenter(dc.clone()).permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy.build())
        .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)))
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.contact_points)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        builder = builder.user(user, password);
    }
    if let Some(ks) = keyspace {
        builder = builder.use_keyspace(ks, false);
    }
    builder.build().await.map_err(session_error)
}

/// Internal helpers exposed for the `scylla-proxy` tests, which forge the server's side of
/// each statement from the same schema the unit tests check. Not part of the storage API.
#[doc(hidden)]
pub mod testing {
    pub use super::shape::{bind_specs, result_specs, Schema};

    /// `(name, cql)` of every prepared statement.
    pub fn statements() -> &'static [(&'static str, &'static str)] {
        super::statements::ALL
    }

    /// The schema of every migration in `cql/`.
    pub fn schema() -> Schema {
        super::migrate::schema()
    }

    pub const MAX_ATTEMPTS: u32 = super::MAX_ATTEMPTS;
}

/// The ScyllaDB store. Cheap to clone; one per process.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    /// Indexed by `statements::Id`.
    prepared: Vec<PreparedStatement>,
    /// Bounds requests in flight from this process.
    permits: Semaphore,
    ttl: i32,
}

/// A run as stored in `run_by_id`.
struct Head {
    run: Run,
    version: i64,
    write_ts: i64,
}

/// An index of runs by `(start_us, run_id)`.
#[derive(Clone, Copy)]
enum Index<'a> {
    Runs,
    Roots,
    Meta(&'a str, &'a str),
}

type Op<'a> = Pin<Box<dyn Future<Output = Result<QueryResult>> + Send + 'a>>;

/// `[lo, hi)` over `(start_us, run_id bytes)`.
#[derive(Clone)]
struct KeyBounds {
    lo: (i64, Vec<u8>),
    hi: (i64, Vec<u8>),
}

impl KeyBounds {
    fn all() -> Self {
        Self { lo: (i64::MIN, Vec::new()), hi: (i64::MAX, vec![0xff; 17]) }
    }
}

fn meta_pairs(run: &Run) -> Vec<(String, String)> {
    let Some(md) = run.metadata() else { return Vec::new() };
    md.iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
        .filter(|(k, v)| k.len() <= MAX_INDEXED_KEY && v.len() <= MAX_INDEXED_VALUE && !sdk_generated(k))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn has_pair(run: &Run, key: &str, value: &str) -> bool {
    run.metadata().and_then(|m| m.get(key)).and_then(|v| v.as_str()) == Some(value)
}

fn rows(res: QueryResult, what: &str) -> Result<QueryRowsResult> {
    res.into_rows_result().map_err(|e| internal(what, e))
}

/// `[applied]` of a lightweight transaction, and the row it returned.
fn lwt_outcome(res: QueryResult, what: &str) -> Result<(bool, QueryRowsResult)> {
    let rows = rows(res, what)?;
    let row: Row = rows.first_row().map_err(|e| internal(what, e))?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(applied))) => Ok((*applied, rows)),
        _ => Err(StorageError::new(StorageErrorKind::Internal, format!("scylla: {what}: no [applied] column"))),
    }
}

/// A uuid column of an LWT's not-applied row (the current value).
fn lwt_uuid(rows: &QueryRowsResult, column: &str, what: &str) -> Result<Option<Uuid>> {
    let Some((idx, _)) = rows.column_specs().get_by_name(column) else { return Ok(None) };
    let row: Row = rows.first_row().map_err(|e| internal(what, e))?;
    Ok(match row.columns.get(idx) {
        Some(Some(CqlValue::Uuid(u))) => Some(*u),
        _ => None,
    })
}

impl ScyllaStore {
    /// Connects, using the configured keyspace, and prepares every statement once.
    #[instrument(name = "storage.scylla.connect", skip_all, fields(keyspace = %cfg.keyspace))]
    pub async fn connect(cfg: &ScyllaConfig) -> Result<Self> {
        cfg.validate().map_err(|e| StorageError::new(StorageErrorKind::Invalid, e))?;
        let session = build_session(cfg, Some(&cfg.keyspace)).await?;
        let prepared = futures::future::try_join_all(ALL.iter().map(|(name, cql)| {
            let session = &session;
            async move {
                let mut p = session.prepare(*cql).await.map_err(|e| {
                    let kind = match &e {
                        PrepareError::ConnectionPoolError(_) => StorageErrorKind::Unavailable,
                        _ => StorageErrorKind::Internal,
                    };
                    StorageError::with_source(kind, format!("scylla: cannot prepare {name}: {e}"), e)
                })?;
                p.set_is_idempotent(!is_lwt(cql));
                p.set_page_size(cfg.page_size);
                Ok::<_, StorageError>(p)
            }
        }))
        .await?;
        let mut prepared = prepared;
        // A writer that lost a compare-and-set reads through Paxos, so it sees the winner.
        for (serial, _) in SERIAL_READS {
            prepared[*serial as usize].set_consistency(Consistency::LocalSerial);
        }
        Ok(Self { inner: Arc::new(Inner { session, prepared, permits: Semaphore::new(cfg.max_concurrent_requests), ttl: cfg.ttl() }) })
    }

    /// Runs a statement, retrying transient failures of idempotent ones.
    async fn exec<V: SerializeRow + Sync>(&self, stmt: &Stmt<V>, values: &V) -> Result<QueryResult> {
        self.exec_page(stmt, values, None).await.map(|(r, _)| r)
    }

    /// One page of a statement (`None`: unpaged).
    async fn exec_page<V: SerializeRow + Sync>(
        &self,
        stmt: &Stmt<V>,
        values: &V,
        page: Option<PagingState>,
    ) -> Result<(QueryResult, Option<PagingState>)> {
        let prepared = &self.inner.prepared[stmt.index()];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = {
                let _permit = self.inner.permits.acquire().await.map_err(|e| internal("request permits", e))?;
                match &page {
                    None => self.inner.session.execute_unpaged(prepared, values).await.map(|r| (r, None)),
                    Some(state) => self.inner.session.execute_single_page(prepared, values, state.clone()).await.map(|(r, next)| {
                        let next = match PagingStateResponse::into_paging_control_flow(next) {
                            ControlFlow::Continue(s) => Some(s),
                            ControlFlow::Break(()) => None,
                        };
                        (r, next)
                    }),
                }
            };
            match outcome {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let (kind, transient) = classify(&e);
                    if transient && prepared.get_is_idempotent() && attempt < MAX_ATTEMPTS {
                        debug!(statement = stmt.name(), attempt, error = %e, "transient failure, retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    return Err(StorageError::with_source(kind, format!("scylla: {} failed: {e}", stmt.name()), e));
                }
            }
        }
    }

    async fn head(&self, t: TenantId, id: RunId, serial: bool) -> Result<Option<Head>> {
        let stmt = if serial { &GET_HEAD_SERIAL } else { &GET_HEAD };
        let res = self.exec(stmt, &RunKey { tenant: t.0, run_id: id.0 }).await?;
        let rows = rows(res, "read run")?;
        match rows.maybe_first_row::<(Vec<u8>, i64, i64)>().map_err(|e| internal("read run", e))? {
            Some((body, version, write_ts)) => Ok(Some(Head { run: dec("run", &body)?, version, write_ts })),
            None => Ok(None),
        }
    }

    /// The heads of runs, in the order given, at most [`FANOUT`] reads in flight.
    async fn heads(&self, t: TenantId, ids: Vec<RunId>) -> Result<Vec<Option<Head>>> {
        futures::stream::iter(ids).map(|id| self.head(t, id, false)).buffered(FANOUT).try_collect().await
    }

    /// One page of an index partition, newest first.
    async fn key_page(
        &self,
        t: TenantId,
        p: ProjectId,
        index: Index<'_>,
        bucket: i64,
        b: &KeyBounds,
        page: PagingState,
    ) -> Result<(Vec<(i64, RunId)>, Option<PagingState>)> {
        let range = || KeyRange {
            tenant: t.0,
            project: p.0,
            bucket,
            lo_start: b.lo.0,
            lo_run: b.lo.1.clone(),
            hi_start: b.hi.0,
            hi_run: b.hi.1.clone(),
        };
        let (res, next) = match index {
            Index::Runs => self.exec_page(&SCAN_RUNS, &range(), Some(page)).await?,
            Index::Roots => self.exec_page(&SCAN_ROOTS, &range(), Some(page)).await?,
            Index::Meta(k, v) => {
                let values = MetaRange {
                    tenant: t.0,
                    project: p.0,
                    meta_key: k.to_string(),
                    meta_value: v.to_string(),
                    lo_start: b.lo.0,
                    lo_run: b.lo.1.clone(),
                    hi_start: b.hi.0,
                    hi_run: b.hi.1.clone(),
                };
                self.exec_page(&SCAN_META, &values, Some(page)).await?
            }
        };
        let rows = rows(res, "scan index")?;
        let keys = rows
            .rows::<(i64, Vec<u8>)>()
            .map_err(|e| internal("scan index", e))?
            .map(|r| {
                let (s, id) = r.map_err(|e| internal("scan index", e))?;
                let id: [u8; 16] =
                    id.try_into().map_err(|_| StorageError::new(StorageErrorKind::Internal, "scylla: run id is not 16 bytes"))?;
                Ok((s, RunId::from_bytes(id)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, next))
    }

    /// The partitions of an index to read for `[lo, hi]`, newest first.
    async fn buckets(&self, t: TenantId, p: ProjectId, index: Index<'_>, b: &KeyBounds) -> Result<Vec<i64>> {
        if let Index::Meta(..) = index {
            return Ok(vec![0]); // one partition per pair, not bucketed
        }
        let values = BucketRange { tenant: t.0, project: p.0, lo_bucket: bucket_of(b.lo.0), hi_bucket: bucket_of(b.hi.0) };
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_BUCKETS, &values, Some(page)).await?;
            for r in rows(res, "list buckets")?.rows::<(i64,)>().map_err(|e| internal("list buckets", e))? {
                out.push(r.map_err(|e| internal("list buckets", e))?.0);
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }

    /// Merges fragments into one run with compare-and-set; returns the replaced run, the new
    /// run and the write timestamp of its index rows.
    async fn merge_run(
        &self,
        t: TenantId,
        project: ProjectId,
        id: RunId,
        frags: &[RunFragment],
        written: &HashMap<RunId, Run>,
    ) -> Result<(Option<Run>, Run, i64)> {
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            let head = self.head(t, id, attempt > 0).await?;
            let old = head.as_ref().map(|h| h.run.clone());
            let mut run = old.clone().unwrap_or_else(|| Run::empty(id, project));
            for f in frags {
                run.apply(f);
            }
            if let (None, Some(parent_id)) = (&run.dotted_order, run.parent_run_id) {
                let parent = match written.get(&parent_id) {
                    Some(p) => Some(p.clone()),
                    None => self.head(t, parent_id, false).await?.map(|h| h.run),
                };
                if let Some(parent) = parent {
                    run.derive_from_parent(&parent);
                }
            }
            run.derive();
            // Index rows of this version must beat those of every earlier one.
            let write_ts = now_us().max(head.as_ref().map_or(i64::MIN, |h| h.write_ts + 1));
            let outcome = match &head {
                None => {
                    let v = InsertHead { tenant: t.0, run_id: id.0, body: enc(&run), version: 1, write_ts, run_ttl: self.inner.ttl };
                    self.exec(&INSERT_HEAD, &v).await
                }
                Some(h) => {
                    let v = UpdateHead {
                        tenant: t.0,
                        run_id: id.0,
                        body: enc(&run),
                        version: h.version + 1,
                        write_ts,
                        run_ttl: self.inner.ttl,
                        expected_version: h.version,
                    };
                    self.exec(&UPDATE_HEAD, &v).await
                }
            };
            match outcome.and_then(|r| lwt_outcome(r, "write run")) {
                Ok((true, _)) => return Ok((old, run, write_ts)),
                Ok((false, _)) => debug!(run_id = %id, attempt, "lost a compare-and-set, merging again"),
                // The outcome is unknown (a timeout): merging again from a serial read is safe,
                // because re-applying fragments already applied changes nothing.
                Err(e) if e.kind == StorageErrorKind::Unavailable && attempt + 1 < MAX_ATTEMPTS => {
                    warn!(run_id = %id, attempt, error = %e, "compare-and-set failed, merging again");
                    tokio::time::sleep(backoff(attempt + 1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::new(StorageErrorKind::Unavailable, format!("scylla: run {id} is contended: {MAX_MERGE_ATTEMPTS} merges lost")))
    }

    /// Brings the index rows from `old` to `new`, all at `write_ts`.
    async fn write_indexes(&self, t: TenantId, old: Option<&Run>, new: &Run, frags: &[RunFragment], write_ts: i64) -> Result<()> {
        let ttl = self.inner.ttl;
        let id = new.id;
        let (p, s, tr) = (new.project_id, order_time(new), new.trace());
        let key = |p: ProjectId, s: i64| TimeKeyAt {
            tenant: t.0,
            project: p.0,
            bucket: bucket_of(s),
            start_us: s,
            run_id: id.as_bytes().to_vec(),
            write_ts,
        };
        let mut ops: Vec<Op<'_>> = Vec::new();
        let new_meta = meta_pairs(new);
        if let Some(o) = old {
            let (op, os, otr) = (o.project_id, order_time(o), o.trace());
            let moved = (op, os) != (p, s);
            if moved {
                let v = key(op, os);
                ops.push(Box::pin(async move { self.exec(&DELETE_RUN_KEY, &v).await }));
            }
            if o.is_root() && (moved || !new.is_root()) {
                let v = key(op, os);
                ops.push(Box::pin(async move { self.exec(&DELETE_ROOT_KEY, &v).await }));
            }
            if otr != tr {
                let v = TraceRowAt { tenant: t.0, trace_id: otr.0, run_id: id.0, write_ts };
                ops.push(Box::pin(async move { self.exec(&DELETE_TRACE_MEMBER, &v).await }));
            }
            for (k, v) in meta_pairs(o) {
                if moved || !new_meta.contains(&(k.clone(), v.clone())) {
                    let v = MetaRowAt {
                        tenant: t.0,
                        project: op.0,
                        meta_key: k,
                        meta_value: v,
                        start_us: os,
                        run_id: id.as_bytes().to_vec(),
                        write_ts,
                    };
                    ops.push(Box::pin(async move { self.exec(&DELETE_META, &v).await }));
                }
            }
        }
        let row = TimeKeyRow {
            tenant: t.0,
            project: p.0,
            bucket: bucket_of(s),
            start_us: s,
            run_id: id.as_bytes().to_vec(),
            run_ttl: ttl,
            write_ts,
        };
        if new.is_root() {
            let v = row.clone();
            ops.push(Box::pin(async move { self.exec(&INSERT_ROOT_KEY, &v).await }));
        }
        let bucket = BucketRow { tenant: t.0, project: p.0, bucket: bucket_of(s), run_ttl: ttl, write_ts };
        ops.push(Box::pin(async move { self.exec(&INSERT_BUCKET, &bucket).await }));
        ops.push(Box::pin(async move { self.exec(&INSERT_RUN_KEY, &row).await }));
        let member = TraceRow { tenant: t.0, trace_id: tr.0, run_id: id.0, run_ttl: ttl, write_ts };
        ops.push(Box::pin(async move { self.exec(&INSERT_TRACE_MEMBER, &member).await }));
        // Every current pair is (re)written, which also renews its TTL with the run's.
        for (k, v) in new_meta {
            let v = MetaRow {
                tenant: t.0,
                project: p.0,
                meta_key: k,
                meta_value: v,
                start_us: s,
                run_id: id.as_bytes().to_vec(),
                run_ttl: ttl,
                write_ts,
            };
            ops.push(Box::pin(async move { self.exec(&INSERT_META, &v).await }));
        }
        for a in frags.iter().flat_map(|f| &f.attachments) {
            let v = AttachmentRow {
                tenant: t.0,
                run_id: id.0,
                name: a.name.clone(),
                mime_type: a.mime_type.clone(),
                data: a.data.clone(),
                run_ttl: ttl,
                write_ts,
            };
            ops.push(Box::pin(async move { self.exec(&INSERT_ATTACHMENT, &v).await }));
        }
        futures::future::try_join_all(ops).await.map(|_| ())
    }

    async fn trace_member_ids(&self, t: TenantId, trace: RunId) -> Result<Vec<RunId>> {
        let values = TraceKey { tenant: t.0, trace_id: trace.0 };
        let mut ids = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&TRACE_MEMBERS, &values, Some(page)).await?;
            for r in rows(res, "read trace")?.rows::<(Uuid,)>().map_err(|e| internal("read trace", e))? {
                ids.push(RunId(r.map_err(|e| internal("read trace", e))?.0));
            }
            match next {
                Some(s) => page = s,
                None => return Ok(ids),
            }
        }
    }

    async fn project_versioned(&self, t: TenantId, id: ProjectId) -> Result<Option<(Project, i64)>> {
        let res = self.exec(&GET_PROJECT, &ProjectKey { tenant: t.0, project: id.0 }).await?;
        match rows(res, "read project")?.maybe_first_row::<(Vec<u8>, i64)>().map_err(|e| internal("read project", e))? {
            Some((body, version)) => Ok(Some((dec("project", &body)?, version))),
            None => Ok(None),
        }
    }

    /// Claims `name` for `project`: `Ok(None)` when it is now (or already was) ours, else
    /// the id of the project holding it.
    async fn claim_name(&self, t: TenantId, name: &str, project: ProjectId) -> Result<Option<ProjectId>> {
        let res = self.exec(&CLAIM_NAME, &NameClaim { tenant: t.0, name: name.to_string(), project: project.0 }).await?;
        let (applied, rows) = lwt_outcome(res, "claim project name")?;
        if applied {
            return Ok(None);
        }
        match lwt_uuid(&rows, "project", "claim project name")? {
            Some(owner) if owner == project.0 => Ok(None),
            Some(owner) => Ok(Some(ProjectId(owner))),
            None => Err(StorageError::new(StorageErrorKind::Internal, "scylla: a project name claim has no owner")),
        }
    }

    async fn release_name(&self, t: TenantId, name: &str, project: ProjectId) -> Result<()> {
        // Not applied means someone else holds it now: nothing of ours to release.
        self.exec(&RELEASE_NAME, &NameClaim { tenant: t.0, name: name.to_string(), project: project.0 }).await?;
        Ok(())
    }

    async fn list_all_projects(&self, t: TenantId) -> Result<Vec<Project>> {
        let values = TenantKey { tenant: t.0 };
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_PROJECTS, &values, Some(page)).await?;
            for r in rows(res, "list projects")?.rows::<(Vec<u8>,)>().map_err(|e| internal("list projects", e))? {
                out.push(dec("project", &r.map_err(|e| internal("list projects", e))?.0)?);
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }
}

/// The runs an index lists for a project, newest first, in chunks, skipping entries the run
/// no longer matches (see the module docs).
struct IndexScan<'a> {
    store: &'a ScyllaStore,
    tenant: TenantId,
    project: ProjectId,
    index: Index<'a>,
    bounds: &'a KeyBounds,
    /// Partitions still to read, newest first.
    buckets: std::vec::IntoIter<i64>,
    bucket: i64,
    /// The next page of the current partition; `None` once it is read.
    page: Option<PagingState>,
    pending: Vec<(i64, RunId)>,
}

impl<'a> IndexScan<'a> {
    async fn new(store: &'a ScyllaStore, t: TenantId, p: ProjectId, index: Index<'a>, bounds: &'a KeyBounds) -> Result<Self> {
        let buckets = store.buckets(t, p, index, bounds).await?.into_iter();
        Ok(Self { store, tenant: t, project: p, index, bounds, buckets, bucket: 0, page: None, pending: Vec::new() })
    }

    /// The next chunk of current runs (possibly empty); `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Vec<Head>>> {
        loop {
            if !self.pending.is_empty() {
                // Resolve in chunks: a small page of results must not read a whole page of runs.
                let take = self.pending.len().min(FANOUT);
                let chunk: Vec<(i64, RunId)> = self.pending.drain(..take).collect();
                let heads = self.store.heads(self.tenant, chunk.iter().map(|k| k.1).collect()).await?;
                let current = chunk
                    .iter()
                    .zip(heads)
                    .filter_map(|((start, _), head)| {
                        let head = head?;
                        let run = &head.run;
                        let matches = run.project_id == self.project
                            && order_time(run) == *start
                            && match self.index {
                                Index::Runs => true,
                                Index::Roots => run.is_root(),
                                Index::Meta(k, v) => has_pair(run, k, v),
                            };
                        matches.then_some(head)
                    })
                    .collect();
                return Ok(Some(current));
            }
            if let Some(page) = self.page.take() {
                let (keys, next) = self.store.key_page(self.tenant, self.project, self.index, self.bucket, self.bounds, page).await?;
                self.pending = keys;
                self.page = next;
                continue;
            }
            match self.buckets.next() {
                Some(b) => {
                    self.bucket = b;
                    self.page = Some(PagingState::start());
                }
                None => return Ok(None),
            }
        }
    }
}

/// Evaluates a query's conditions on one run, caching trace lookups within the query.
struct MatchCtx<'a> {
    store: &'a ScyllaStore,
    tenant: TenantId,
    roots: HashMap<RunId, bool>,
    trees: HashMap<RunId, bool>,
}

impl MatchCtx<'_> {
    /// Evaluates a matcher, loading the run's feedback only if it looks at feedback.
    async fn eval(&self, f: &dyn crate::RunMatcher, run: &Run) -> Result<bool> {
        let feedback = if f.needs_feedback() { self.store.run_feedback(self.tenant, run.id).await? } else { Vec::new() };
        Ok(f.matches(run, &feedback))
    }

    async fn accepts(&mut self, q: &RunQuery, run: &Run) -> Result<bool> {
        if !matches_conditions(q, run) {
            return Ok(false);
        }
        if let Some(f) = &q.filter {
            if !self.eval(f.as_ref(), run).await? {
                return Ok(false);
            }
        }
        if let Some(f) = &q.trace_filter {
            let trace = run.trace();
            let ok = match self.roots.get(&trace) {
                Some(ok) => *ok,
                None => {
                    let root =
                        if trace == run.id { Some(run.clone()) } else { self.store.head(self.tenant, trace, false).await?.map(|h| h.run) };
                    let ok = match root {
                        Some(r) => self.eval(f.as_ref(), &r).await?,
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
                    for r in self.store.trace_runs(self.tenant, trace).await? {
                        if self.eval(f.as_ref(), &r).await? {
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

#[async_trait]
impl ProjectStore for ScyllaStore {
    #[instrument(name = "storage.scylla.create_project", skip_all, fields(tenant = %project.tenant_id, project = %project.id))]
    async fn create_project(&self, project: &Project) -> Result<CreateOutcome> {
        let t = project.tenant_id;
        if let Some((existing, _)) = self.project_versioned(t, project.id).await? {
            return Ok(CreateOutcome::AlreadyExists(existing));
        }
        if let Some(owner) = self.claim_name(t, &project.name, project.id).await? {
            return match self.get_project(t, owner).await? {
                Some(existing) => Ok(CreateOutcome::NameTaken(existing)),
                // Claimed by a create still in progress (or interrupted, until redelivered).
                None => {
                    Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the project name is being claimed by another create"))
                }
            };
        }
        let values = InsertProject { tenant: t.0, project: project.id.0, body: enc(project), version: 1 };
        let (applied, _) = lwt_outcome(self.exec(&INSERT_PROJECT, &values).await?, "create project")?;
        if applied {
            return Ok(CreateOutcome::Created(project.clone()));
        }
        match self.get_project(t, project.id).await? {
            Some(existing) => Ok(CreateOutcome::AlreadyExists(existing)),
            None => Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the project was deleted while being created")),
        }
    }

    #[instrument(name = "storage.scylla.get_project", skip_all, fields(tenant = %tenant, project = %id))]
    async fn get_project(&self, tenant: TenantId, id: ProjectId) -> Result<Option<Project>> {
        Ok(self.project_versioned(tenant, id).await?.map(|(p, _)| p))
    }

    #[instrument(name = "storage.scylla.project_by_name", skip_all, fields(tenant = %tenant))]
    async fn project_by_name(&self, tenant: TenantId, name: &str) -> Result<Option<Project>> {
        let res = self.exec(&GET_PROJECT_NAME, &NameKey { tenant: tenant.0, name: name.to_string() }).await?;
        let Some((owner,)) = rows(res, "read project name")?.maybe_first_row::<(Uuid,)>().map_err(|e| internal("read project name", e))?
        else {
            return Ok(None);
        };
        // A claim whose project is gone or renamed (an interrupted operation) names nothing.
        Ok(self.get_project(tenant, ProjectId(owner)).await?.filter(|p| p.name == name))
    }

    #[instrument(name = "storage.scylla.list_projects", skip_all, fields(tenant = %tenant))]
    async fn list_projects(&self, tenant: TenantId, q: &ProjectQuery) -> Result<Vec<Project>> {
        let mut all: Vec<Project> = self.list_all_projects(tenant).await?.into_iter().filter(|p| project_matches(q, p)).collect();
        all.sort_by_key(|p| std::cmp::Reverse((p.start_time, p.id)));
        Ok(all.into_iter().skip(q.offset).take(q.limit.max(1)).collect())
    }

    #[instrument(name = "storage.scylla.update_project", skip_all, fields(tenant = %tenant, project = %id))]
    async fn update_project(&self, tenant: TenantId, id: ProjectId, patch: &ProjectPatch) -> Result<Option<Project>> {
        for _ in 0..MAX_MERGE_ATTEMPTS {
            let Some((mut p, version)) = self.project_versioned(tenant, id).await? else { return Ok(None) };
            let old_name = p.name.clone();
            p.apply(patch);
            let renamed = p.name != old_name;
            if renamed && self.claim_name(tenant, &p.name, id).await?.is_some() {
                return Err(StorageError::new(StorageErrorKind::Conflict, format!("a project named {:?} already exists", p.name)));
            }
            let values = UpdateProject { tenant: tenant.0, project: id.0, body: enc(&p), version: version + 1, expected_version: version };
            let (applied, _) = lwt_outcome(self.exec(&UPDATE_PROJECT, &values).await?, "update project")?;
            if applied {
                if renamed {
                    self.release_name(tenant, &old_name, id).await?;
                }
                return Ok(Some(p));
            }
            if renamed {
                // Lost to a concurrent update: give the new name back before trying again.
                self.release_name(tenant, &p.name, id).await?;
            }
        }
        Err(StorageError::new(StorageErrorKind::Unavailable, format!("scylla: project {id} is contended")))
    }

    #[instrument(name = "storage.scylla.delete_project", skip_all, fields(tenant = %tenant, project = %id))]
    async fn delete_project(&self, tenant: TenantId, id: ProjectId) -> Result<bool> {
        let t = tenant;
        let Some(project) = self.get_project(t, id).await? else { return Ok(false) };
        // Runs first, the project last: an interrupted delete is finished by calling it again.
        let mut latest_ts = now_us();
        for bucket in self.buckets(t, id, Index::Runs, &KeyBounds::all()).await? {
            let mut page = PagingState::start();
            loop {
                let (keys, next) = self.key_page(t, id, Index::Runs, bucket, &KeyBounds::all(), page).await?;
                for chunk in keys.chunks(FANOUT) {
                    let heads = self.heads(t, chunk.iter().map(|k| k.1).collect()).await?;
                    let mut ops: Vec<Op<'_>> = Vec::new();
                    for ((start, _), head) in chunk.iter().zip(heads) {
                        let Some(head) = head else { continue };
                        let run = head.run;
                        if run.project_id != id || order_time(&run) != *start {
                            continue;
                        }
                        let write_ts = now_us().max(head.write_ts + 1);
                        latest_ts = latest_ts.max(write_ts);
                        for (k, v) in meta_pairs(&run) {
                            let v = MetaRowAt {
                                tenant: t.0,
                                project: id.0,
                                meta_key: k,
                                meta_value: v,
                                start_us: *start,
                                run_id: run.id.as_bytes().to_vec(),
                                write_ts,
                            };
                            ops.push(Box::pin(async move { self.exec(&DELETE_META, &v).await }));
                        }
                        let member = TraceRowAt { tenant: t.0, trace_id: run.trace().0, run_id: run.id.0, write_ts };
                        ops.push(Box::pin(async move { self.exec(&DELETE_TRACE_MEMBER, &member).await }));
                        let key = RunKeyAt { tenant: t.0, run_id: run.id.0, write_ts };
                        let head_key = RunKey { tenant: t.0, run_id: run.id.0 };
                        ops.push(Box::pin(async move { self.exec(&DELETE_ATTACHMENTS, &key).await }));
                        ops.push(Box::pin(async move { self.exec(&DELETE_HEAD, &head_key).await }));
                    }
                    futures::future::try_join_all(ops).await?;
                }
                match next {
                    Some(s) => page = s,
                    None => break,
                }
            }
            let part = BucketAt { tenant: t.0, project: id.0, bucket, write_ts: latest_ts + 1 };
            self.exec(&DELETE_RUN_BUCKET, &part).await?;
            self.exec(&DELETE_ROOT_BUCKET, &part).await?;
        }
        self.exec(&DELETE_BUCKETS, &ProjectKeyAt { tenant: t.0, project: id.0, write_ts: latest_ts + 1 }).await?;
        let (deleted, _) = lwt_outcome(self.exec(&DELETE_PROJECT, &ProjectKey { tenant: t.0, project: id.0 }).await?, "delete project")?;
        self.release_name(t, &project.name, id).await?;
        Ok(deleted)
    }

    #[instrument(name = "storage.scylla.project_stats", skip_all, fields(tenant = %tenant, project = %id))]
    async fn project_stats(&self, tenant: TenantId, id: ProjectId) -> Result<ProjectStats> {
        let mut stats = StatsBuilder::default();
        let bounds = KeyBounds::all();
        let mut scan = IndexScan::new(self, tenant, id, Index::Runs, &bounds).await?;
        while let Some(chunk) = scan.next_chunk().await? {
            for head in chunk {
                stats.add(&head.run);
            }
        }
        Ok(stats.finish())
    }
}

#[async_trait]
impl RunStore for ScyllaStore {
    #[instrument(name = "storage.scylla.apply_run_fragments", skip_all, fields(tenant = %tenant, project = %project, fragments = fragments.len()))]
    async fn apply_run_fragments(&self, tenant: TenantId, project: ProjectId, fragments: Vec<RunFragment>) -> Result<()> {
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
        // Runs written earlier in this batch, so a child can find a parent sent alongside it.
        let mut written: HashMap<RunId, Run> = HashMap::new();
        for id in order {
            let frags = by_run.remove(&id).unwrap_or_default();
            let (old, run, write_ts) = self.merge_run(tenant, project, id, &frags, &written).await?;
            // Feedback that arrived before the run counts towards its project from now on. Looked
            // for on every write, not only the first: see `feedback.rs`.
            futures::try_join!(self.write_indexes(tenant, old.as_ref(), &run, &frags, write_ts), self.adopt_orphan_feedback(tenant, &run))?;
            written.insert(id, run);
        }
        Ok(())
    }

    #[instrument(name = "storage.scylla.get_run", skip_all, fields(tenant = %tenant, run_id = %id))]
    async fn get_run(&self, tenant: TenantId, id: RunId) -> Result<Option<Run>> {
        Ok(self.head(tenant, id, false).await?.map(|h| h.run))
    }

    #[instrument(name = "storage.scylla.query_runs", skip_all, fields(tenant = %tenant, limit = q.limit))]
    async fn query_runs(&self, tenant: TenantId, q: &RunQuery) -> Result<RunPage> {
        let t = tenant;
        let limit = q.limit.max(1);
        let mut ctx = MatchCtx { store: self, tenant: t, roots: HashMap::new(), trees: HashMap::new() };

        // Candidates from an index where one applies; otherwise scan projects by time.
        let candidates = if let Some(ids) = &q.ids {
            Some(ids.clone())
        } else if let Some(trace) = q.trace {
            Some(self.trace_member_ids(t, trace).await?)
        } else {
            None
        };
        if let Some(ids) = candidates {
            let mut seen = HashSet::new();
            let mut cands: Vec<Run> = self
                .heads(t, ids.into_iter().filter(|id| seen.insert(*id)).collect())
                .await?
                .into_iter()
                .flatten()
                .map(|h| h.run)
                .filter(|r| q.projects.is_empty() || q.projects.contains(&r.project_id))
                .collect();
            cands.sort_by_key(|r| std::cmp::Reverse((order_time(r), r.id)));
            let mut runs = Vec::new();
            let mut next = None;
            for run in cands {
                if let Some(c) = q.cursor {
                    if (order_time(&run), run.id) >= (c.start_us, c.id) {
                        continue;
                    }
                }
                if ctx.accepts(q, &run).await? {
                    if runs.len() == limit {
                        next = runs.last().map(|r: &Run| RunCursor { start_us: order_time(r), id: r.id });
                        break;
                    }
                    runs.push(run);
                }
            }
            return Ok(RunPage { runs, next });
        }

        let projects =
            if q.projects.is_empty() { self.list_all_projects(t).await?.into_iter().map(|p| p.id).collect() } else { q.projects.clone() };
        let index = match &q.metadata_pair {
            Some((k, v)) => Index::Meta(k, v),
            None if q.is_root == Some(true) => Index::Roots,
            None => Index::Runs,
        };
        // The same bounds as the embedded adapter: [start_from, min(start_before, cursor)).
        let mut hi = (q.start_before.map_or(i64::MAX, Timestamp::micros), vec![0u8; 16]);
        if let Some(c) = q.cursor {
            if c.start_us <= hi.0 {
                hi = (c.start_us, c.id.as_bytes().to_vec());
            }
        }
        let bounds = KeyBounds { lo: (q.start_from.map_or(i64::MIN, Timestamp::micros), Vec::new()), hi };
        // Per project, newest first; then merge. Each project yields at most limit + 1.
        let mut merged: Vec<Run> = Vec::new();
        for p in projects {
            let mut taken = 0;
            let mut scan = IndexScan::new(self, t, p, index, &bounds).await?;
            'scan: while let Some(chunk) = scan.next_chunk().await? {
                for head in chunk {
                    if ctx.accepts(q, &head.run).await? {
                        merged.push(head.run);
                        taken += 1;
                        if taken > limit {
                            break 'scan;
                        }
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

    #[instrument(name = "storage.scylla.trace_runs", skip_all, fields(tenant = %tenant, trace_id = %trace))]
    async fn trace_runs(&self, tenant: TenantId, trace: RunId) -> Result<Vec<Run>> {
        let ids = self.trace_member_ids(tenant, trace).await?;
        let mut runs: Vec<Run> =
            self.heads(tenant, ids).await?.into_iter().flatten().map(|h| h.run).filter(|r| r.trace() == trace).collect();
        runs.sort_by_cached_key(Run::dotted_order_or_default);
        Ok(runs)
    }

    #[instrument(name = "storage.scylla.get_attachment", skip_all, fields(tenant = %tenant, run_id = %run))]
    async fn get_attachment(&self, tenant: TenantId, run: RunId, name: &str) -> Result<Option<(String, Vec<u8>)>> {
        let res = self.exec(&GET_ATTACHMENT, &AttachmentKey { tenant: tenant.0, run_id: run.0, name: name.to_string() }).await?;
        rows(res, "read attachment")?.maybe_first_row::<(String, Vec<u8>)>().map_err(|e| internal("read attachment", e))
    }

    #[instrument(name = "storage.scylla.put_run_share", skip_all, fields(tenant = %tenant, run_id = %run))]
    async fn put_run_share(&self, tenant: TenantId, run: RunId, share: Option<&RunShare>, at: Timestamp) -> Result<()> {
        let write_ts = at.micros();
        // The old token stops working whether the run is unshared or shared anew.
        if let Some(old) = self.run_share(tenant, run).await? {
            if share.is_none_or(|s| s.token != old.token) {
                self.exec(&DELETE_SHARE_TOKEN, &TokenKeyAt { token_id: old.token, write_ts }).await?;
            }
        }
        match share {
            Some(s) => {
                let body = enc(s);
                self.exec(&PUT_SHARE_TOKEN, &ShareTokenRow { token_id: s.token, tenant: tenant.0, body: body.clone(), write_ts }).await?;
                self.exec(&PUT_RUN_SHARE, &RunShareRow { tenant: tenant.0, run_id: run.0, body, write_ts }).await?;
            }
            None => {
                self.exec(&DELETE_RUN_SHARE, &RunKeyAt { tenant: tenant.0, run_id: run.0, write_ts }).await?;
            }
        }
        Ok(())
    }

    #[instrument(name = "storage.scylla.run_share", skip_all, fields(tenant = %tenant, run_id = %run))]
    async fn run_share(&self, tenant: TenantId, run: RunId) -> Result<Option<RunShare>> {
        let res = self.exec(&GET_RUN_SHARE, &RunKey { tenant: tenant.0, run_id: run.0 }).await?;
        match rows(res, "read run share")?.maybe_first_row::<(Vec<u8>,)>().map_err(|e| internal("read run share", e))? {
            Some((body,)) => Ok(Some(dec("run share", &body)?)),
            None => Ok(None),
        }
    }

    #[instrument(name = "storage.scylla.run_share_by_token", skip_all)]
    async fn run_share_by_token(&self, token: Uuid) -> Result<Option<(TenantId, RunShare)>> {
        let res = self.exec(&GET_SHARE_TOKEN, &TokenKey { token_id: token }).await?;
        match rows(res, "read run share")?.maybe_first_row::<(Uuid, Vec<u8>)>().map_err(|e| internal("read run share", e))? {
            Some((tenant, body)) => Ok(Some((TenantId(tenant), dec("run share", &body)?))),
            None => Ok(None),
        }
    }

    /// Writes are durable once acknowledged (`LOCAL_QUORUM`, commit log): nothing to flush.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_hours_and_floor_negative_times() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(BUCKET_US - 1), 0);
        assert_eq!(bucket_of(BUCKET_US), 1);
        assert_eq!(bucket_of(-1), -1);
        assert!(bucket_of(i64::MIN) < bucket_of(i64::MAX));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(1) < backoff(2));
        assert!(backoff(100) <= Duration::from_millis(50 * 256));
    }

    #[test]
    fn driver_errors_map_to_kinds() {
        use scylla::errors::WriteType;
        use scylla::statement::Consistency as C;
        let db = |e: DbError| ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, "msg".into()));
        assert_eq!(classify(&db(DbError::Overloaded)), (StorageErrorKind::Unavailable, true));
        assert_eq!(
            classify(&db(DbError::Unavailable { consistency: C::LocalQuorum, required: 2, alive: 1 })),
            (StorageErrorKind::Unavailable, true)
        );
        assert_eq!(
            classify(&db(DbError::WriteTimeout { consistency: C::LocalQuorum, received: 1, required: 2, write_type: WriteType::Cas })),
            (StorageErrorKind::Unavailable, true)
        );
        assert_eq!(classify(&db(DbError::SyntaxError)), (StorageErrorKind::Internal, false));
        assert_eq!(classify(&db(DbError::Invalid)), (StorageErrorKind::Internal, false));
        assert_eq!(classify(&db(DbError::Unauthorized)), (StorageErrorKind::Internal, false));
        assert_eq!(classify(&ExecutionError::RequestTimeout(Duration::from_secs(1))), (StorageErrorKind::Unavailable, true));
        assert_eq!(classify(&ExecutionError::EmptyPlan), (StorageErrorKind::Unavailable, true));
    }

    #[test]
    fn metadata_pairs_skip_sdk_keys_long_values_and_non_strings() {
        let mut run = Run::empty(RunId(Uuid::nil()), ProjectId(Uuid::nil()));
        run.extra = serde_json::json!({"metadata": {"user": "u1", "ls_provider": "openai", "n": 3, "long": "x".repeat(300)}})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(meta_pairs(&run), vec![("user".to_string(), "u1".to_string())]);
        assert!(has_pair(&run, "user", "u1"));
        assert!(!has_pair(&run, "user", "u2"));
    }
}
