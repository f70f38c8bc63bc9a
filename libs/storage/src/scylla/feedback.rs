//! Feedback on ScyllaDB: the feedback records, their indexes, the adoption of feedback that
//! arrived before its run, and the `feedback_stats` of runs and projects, maintained
//! incrementally and exactly. Semantics are the embedded adapter's (`embedded/feedback.rs`).
//!
//! Tables (T = tenant, F = feedback id, R = run, P = project, S = shard of F):
//! * `feedback_by_id`      ((T, F))          → body, version — the source of truth
//! * `feedback_by_run`     ((T, R), F)        — a run's feedback
//! * `feedback_by_project` ((T, P, S), F)     — the feedback counting towards a project
//! * `feedback_by_tenant`  ((T, S), F)        — all feedback of a tenant
//! * `feedback_orphans`    ((T, R), F)        — feedback waiting for its run
//! * `feedback_stats`      ((T, kind, owner)) → body, version — stats of a run or a project
//! * `feedback_tokens`     ((K)) → T, body; `feedback_tokens_by_run` ((T, R), K) → body —
//!   presigned tokens (K = token id), found by id alone when redeemed
//! * `feedback_configs`    ((T), C) → body — written `USING TIMESTAMP` its `modified_at`
//!
//! A record's body is a [`Stored`]: the [`FeedbackRecord`] (entry, per-field stamps, resolved
//! project) and the stats [`Work`] its last change still owes. Every change is a
//! read-modify-write of the record, made safe against concurrent projector replicas as runs
//! are (see the parent module): `INSERT ... IF NOT EXISTS` or `UPDATE ... IF version = ?`, and a
//! writer that loses re-reads through Paxos and applies the change again.
//!
//! Index rows hold keys only and are written before the record: they are insert-only, and every
//! read through an index checks the record it names (alive, and still matching), so a row left
//! by an interrupted or lost write is skipped. The project and tenant indexes are spread over
//! [`SHARDS`] partitions each, so a busy project's index does not grow into one huge partition;
//! listings merge the shards back into id order ([`IdMerge`]). The shard count is part of the
//! schema: changing it would hide existing rows.
//!
//! # Stats, exactly once
//! The embedded adapter commits a record and both stats deltas (its run's and its project's) in
//! one batch. Here they are three partitions, each written by its own compare-and-set, and a
//! projector may die between any two writes. Writing the record and then the stats leaves a
//! window: after a crash in between, the redelivered change finds the record already changed,
//! applies nothing, and the delta is lost for good. Re-applying the delta on every delivery
//! closes that window but opens another: a delta that did get through is counted twice.
//!
//! So the record's compare-and-set also stores the deltas the change owes ([`Work::Apply`]),
//! and that work is finished before anything else may change the record:
//! 1. Record CAS to version v: the new record and `Apply(deltas)`.
//! 2. Each stats row CAS: apply the delta and leave the mark `F → v` in the row. A row that
//!    already carries the mark is skipped, so this step can be repeated after a crash or a
//!    timeout without counting twice.
//! 3. Record CAS v → v + 1: `Apply` becomes [`Work::Unmark`]; the deltas are in.
//! 4. Each stats row: remove the mark `F → v`, so marks do not pile up.
//!
//! Whoever reads a record that owes `Apply` work (a redelivery, a later change of the entry, an
//! adoption) finishes steps 2-4 before anything else; `Unmark` work is finished, idempotently,
//! by the next reader, before it changes the record. A projector that dies anywhere thus leaves
//! work that its redelivered change completes: the redelivery reads the record first.
//!
//! Step 2 checks, after reading the stats row and before its CAS, that the record is still at
//! version v. Without that, a slow writer could apply a delta twice: it reads `Apply` at v,
//! stalls, and meanwhile a helper finishes steps 2-4, removing the mark; the slow writer then
//! finds no mark and applies again. With it: a mark removed before the slow writer read the
//! stats row was removed after step 3, so the check sees v + 1 and stops; a mark added or
//! removed after that read changed the row's version, so the CAS fails and the writer starts
//! over. Stats rows are never deleted (empty stats read as none), so their versions never
//! repeat.
//!
//! The cost of a change that moves stats: two record CASes, and per stats row (two, done in
//! parallel) two CASes and three reads: four Paxos operations in sequence, paid by the feedback
//! projector only. A project's stats row takes two CASes per change of any of its feedback, so
//! one project's feedback rate is bounded by what one Paxos row sustains, whatever the cluster
//! size. The next delivery of an entry's changes
//! reads its stats rows once more, to remove marks a crash may have left.
//!
//! # Feedback before its run
//! Feedback for a run that is not stored has no project yet. It is recorded with none, its key
//! is put in `feedback_orphans` (before the record), and once the record is written its run is
//! read again, through Paxos. The run's writer, after writing the run, reads the run's orphans
//! and adopts each: a record CAS that sets the project only while it is still unset (so adopting
//! twice is harmless), with the project's stats delta owed and settled like any change. One of
//! the two always sees the other: either the run was stored before the feedback's second read,
//! or the run's writer reads the orphans after that read, and so after the orphan row was
//! written. Run writers look for orphans on every write, not only the first: a writer that died
//! between storing a run and adopting its feedback leaves the adoption to the redelivered write.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::response::PagingState;
use serde::{Deserialize, Serialize};
use tracing::{debug, instrument, warn};
use uuid::Uuid;

use sextant_core::feedback::{Contribution, FeedbackConfigDef, FeedbackToken};
use sextant_core::{Feedback, FeedbackChange, FeedbackId, FeedbackRecord, FeedbackStats, ProjectId, Run, RunId, TenantId};

use super::statements::*;
use super::{backoff, dec, enc, internal, lwt_outcome, rows, ScyllaStore, FANOUT, MAX_ATTEMPTS, MAX_MERGE_ATTEMPTS};
use crate::{FeedbackQuery, FeedbackStore, Result, StorageError, StorageErrorKind};

/// Partitions of the project and tenant feedback indexes. Part of the schema: never change it.
const SHARDS: u8 = 16;

fn shard_of(id: FeedbackId) -> i32 {
    i32::from(id.as_bytes()[15] % SHARDS)
}

/// A row of `feedback_stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Owner {
    Run(RunId),
    Project(ProjectId),
}

impl Owner {
    fn key(self, t: TenantId) -> StatsKey {
        let (kind, owner) = match self {
            Self::Run(r) => ("run", r.0),
            Self::Project(p) => ("project", p.0),
        };
        StatsKey { tenant: t.0, kind: kind.to_string(), owner }
    }
}

/// [`Contribution`], as stored (the core type is not serializable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Contrib {
    key: String,
    score: Option<i64>,
    value: Option<String>,
}

impl From<Contribution> for Contrib {
    fn from(c: Contribution) -> Self {
        Self { key: c.key, score: c.score, value: c.value }
    }
}

impl Contrib {
    fn to_core(&self) -> Contribution {
        Contribution { key: self.key.clone(), score: self.score, value: self.value.clone() }
    }
}

/// One stats row's change: `remove` out, `add` in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Delta {
    owner: Owner,
    remove: Option<Contrib>,
    add: Option<Contrib>,
}

/// The stats work a record's last change owes (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
enum Work {
    #[default]
    Done,
    /// Deltas to apply, each marked `F → version` in its row; `version` is the record's.
    Apply(Vec<Delta>),
    /// The deltas are applied; their marks (`F → mark`) are still to be removed.
    Unmark { owners: Vec<Owner>, mark: i64 },
}

/// The body of a `feedback_by_id` row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Stored {
    record: FeedbackRecord,
    #[serde(default)]
    work: Work,
}

/// The body of a `feedback_stats` row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct StatsRow {
    stats: FeedbackStats,
    /// Feedback whose delta is in `stats` while its record still owes work: id → the record
    /// version that owes it.
    #[serde(default)]
    marks: BTreeMap<Uuid, i64>,
}

/// What a record change does.
#[derive(Clone, Copy)]
enum Edit<'a> {
    /// A change from the feedback stream, stamped with its event id.
    Apply { stamp: Uuid, change: &'a FeedbackChange },
    /// The run arrived: the entry counts towards its project, if it counts towards none yet.
    Adopt(ProjectId),
}

/// The stats deltas of going from `before` to `after`: per owner, what leaves and what enters.
fn deltas(before: &FeedbackRecord, after: &FeedbackRecord) -> Vec<Delta> {
    let side = |r: &FeedbackRecord| r.alive().map(|f| (Contrib::from(f.contribution()), f.run_id, r.project));
    let mut out: Vec<Delta> = Vec::new();
    for (side, adding) in [(side(before), false), (side(after), true)] {
        let Some((c, run, project)) = side else { continue };
        for owner in [run.map(Owner::Run), project.map(Owner::Project)].into_iter().flatten() {
            let i = match out.iter().position(|d| d.owner == owner) {
                Some(i) => i,
                None => {
                    out.push(Delta { owner, remove: None, add: None });
                    out.len() - 1
                }
            };
            if adding {
                out[i].add = Some(c.clone());
            } else {
                out[i].remove = Some(c.clone());
            }
        }
    }
    out.retain(|d| d.remove != d.add);
    out
}

/// One index partition of feedback keys.
#[derive(Clone, Copy, Debug)]
enum Part {
    Run(RunId),
    Project(ProjectId, i32),
    Tenant(i32),
}

fn parts(q: &FeedbackQuery) -> Vec<Part> {
    let mut seen = HashSet::new();
    if !q.runs.is_empty() {
        q.runs.iter().filter(|r| seen.insert(r.0)).map(|r| Part::Run(*r)).collect()
    } else if !q.projects.is_empty() {
        q.projects.iter().filter(|p| seen.insert(p.0)).flat_map(|p| (0..i32::from(SHARDS)).map(|s| Part::Project(*p, s))).collect()
    } else {
        (0..i32::from(SHARDS)).map(Part::Tenant).collect()
    }
}

/// Several index partitions, each in id order, merged into one stream of distinct ids in id
/// order. Each partition is read a page at a time, as the merge reaches it.
struct IdMerge<'a> {
    store: &'a ScyllaStore,
    tenant: TenantId,
    /// Each partition's ids read but not yet merged, and its next page (`None`: read to the end).
    sources: Vec<(Part, VecDeque<[u8; 16]>, Option<PagingState>)>,
    last: Option<[u8; 16]>,
}

impl<'a> IdMerge<'a> {
    fn new(store: &'a ScyllaStore, tenant: TenantId, parts: Vec<Part>) -> Self {
        let sources = parts.into_iter().map(|p| (p, VecDeque::new(), Some(PagingState::start()))).collect();
        Self { store, tenant, sources, last: None }
    }

    async fn next(&mut self) -> Result<Option<FeedbackId>> {
        loop {
            self.fill().await?;
            let Some(i) = (0..self.sources.len()).filter(|i| !self.sources[*i].1.is_empty()).min_by_key(|i| self.sources[*i].1[0]) else {
                return Ok(None);
            };
            let id = self.sources[i].1.pop_front().expect("not empty");
            if self.last.replace(id) != Some(id) {
                return Ok(Some(FeedbackId::from_bytes(id)));
            }
        }
    }

    /// Reads until every partition has an id buffered or is read to the end.
    async fn fill(&mut self) -> Result<()> {
        loop {
            let wanted: Vec<(usize, Part, PagingState)> = self
                .sources
                .iter_mut()
                .enumerate()
                .filter(|(_, (_, buf, _))| buf.is_empty())
                .filter_map(|(i, (part, _, page))| page.take().map(|p| (i, *part, p)))
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            let (store, t) = (self.store, self.tenant);
            let pages: Vec<_> = futures::stream::iter(wanted)
                .map(|(i, part, page)| async move { store.feedback_key_page(t, part, page).await.map(|(ids, next)| (i, ids, next)) })
                .buffer_unordered(FANOUT)
                .try_collect()
                .await?;
            for (i, ids, next) in pages {
                self.sources[i].1.extend(ids);
                self.sources[i].2 = next;
            }
        }
    }
}

/// Whether a listed entry passes the query's conditions (`project`: the one it counts towards).
fn listed(q: &FeedbackQuery, f: &Feedback, project: Option<ProjectId>) -> bool {
    (q.keys.is_empty() || q.keys.contains(&f.key))
        && (q.sources.is_empty() || f.source_type().is_some_and(|s| q.sources.contains(&s)))
        && (q.runs.is_empty() || f.run_id.is_some_and(|r| q.runs.contains(&r)))
        && (q.projects.is_empty() || project.is_some_and(|p| q.projects.contains(&p)))
}

fn contended(what: &str) -> StorageError {
    StorageError::new(StorageErrorKind::Unavailable, format!("scylla: {what} is contended: {MAX_MERGE_ATTEMPTS} compare-and-sets lost"))
}

impl ScyllaStore {
    async fn feedback_record(&self, t: TenantId, id: FeedbackId, serial: bool) -> Result<Option<(Stored, i64)>> {
        let stmt = if serial { &GET_FEEDBACK_SERIAL } else { &GET_FEEDBACK };
        let res = self.exec(stmt, &FeedbackKey { tenant: t.0, feedback_id: id.0 }).await?;
        match rows(res, "read feedback")?.maybe_first_row::<(Vec<u8>, i64)>().map_err(|e| internal("read feedback", e))? {
            Some((body, version)) => Ok(Some((dec("feedback", &body)?, version))),
            None => Ok(None),
        }
    }

    /// Writes a record version after `version` (`None`: the record is new). `Ok(Some(v))`: the
    /// new version; `Ok(None)`: another writer got there first.
    async fn cas_feedback(&self, t: TenantId, id: FeedbackId, version: Option<i64>, stored: &Stored) -> Result<Option<i64>> {
        let body = enc(stored);
        let res = match version {
            None => self.exec(&INSERT_FEEDBACK, &InsertVersioned { tenant: t.0, feedback_id: id.0, body, version: 1 }).await?,
            Some(v) => {
                let values = UpdateVersioned { tenant: t.0, feedback_id: id.0, body, version: v + 1, expected_version: v };
                self.exec(&UPDATE_FEEDBACK, &values).await?
            }
        };
        let (applied, _) = lwt_outcome(res, "write feedback")?;
        Ok(applied.then(|| version.map_or(1, |v| v + 1)))
    }

    async fn stats_row(&self, key: &StatsKey, serial: bool) -> Result<Option<(StatsRow, i64)>> {
        let stmt = if serial { &GET_STATS_SERIAL } else { &GET_STATS };
        let res = self.exec(stmt, key).await?;
        match rows(res, "read feedback stats")?.maybe_first_row::<(Vec<u8>, i64)>().map_err(|e| internal("read feedback stats", e))? {
            Some((body, version)) => Ok(Some((dec("feedback stats", &body)?, version))),
            None => Ok(None),
        }
    }

    /// Writes a stats row version after `version` (`None`: the row is new); `Ok(false)` when
    /// another writer got there first.
    async fn cas_stats(&self, key: &StatsKey, version: Option<i64>, row: &StatsRow) -> Result<bool> {
        let (tenant, kind, owner, body) = (key.tenant, key.kind.clone(), key.owner, enc(row));
        let res = match version {
            None => self.exec(&INSERT_STATS, &InsertStats { tenant, kind, owner, body, version: 1 }).await?,
            Some(v) => self.exec(&UPDATE_STATS, &UpdateStats { tenant, kind, owner, body, version: v + 1, expected_version: v }).await?,
        };
        Ok(lwt_outcome(res, "write feedback stats")?.0)
    }

    /// The project an entry counts towards: the one it names, else its run's (if stored).
    async fn resolve_project(&self, t: TenantId, f: &Feedback) -> Result<Option<ProjectId>> {
        if let Some(p) = f.session_id {
            return Ok(Some(p));
        }
        match f.run_id {
            Some(r) => Ok(self.head(t, r, false).await?.map(|h| h.run.project_id)),
            None => Ok(None),
        }
    }

    /// Finishes the work a record owes (see the module docs). `Ok(true)` when that changed the
    /// record, so the caller must read it again.
    async fn settle(&self, t: TenantId, id: FeedbackId, stored: &Stored, version: i64) -> Result<bool> {
        match &stored.work {
            Work::Done => Ok(false),
            Work::Unmark { owners, mark } => {
                self.unmark(t, id, owners, *mark).await?;
                Ok(false)
            }
            Work::Apply(deltas) => {
                futures::future::try_join_all(deltas.iter().map(|d| self.apply_delta(t, id, version, d))).await?;
                let owners: Vec<Owner> = deltas.iter().map(|d| d.owner).collect();
                let next = Stored { record: stored.record.clone(), work: Work::Unmark { owners: owners.clone(), mark: version } };
                // Lost: someone else finished the work, and removes the marks.
                if self.cas_feedback(t, id, Some(version), &next).await?.is_some() {
                    self.unmark(t, id, &owners, version).await?;
                }
                Ok(true)
            }
        }
    }

    /// Step 2 for one stats row: applies `delta`, owed by record version `mark`, unless the row
    /// carries the mark already or the record no longer owes it.
    async fn apply_delta(&self, t: TenantId, id: FeedbackId, mark: i64, delta: &Delta) -> Result<()> {
        let key = delta.owner.key(t);
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            let cur = self.stats_row(&key, attempt > 0).await?;
            if cur.as_ref().is_some_and(|(row, _)| row.marks.get(&id.0) == Some(&mark)) {
                return Ok(());
            }
            // Read after the stats row, never before: see the module docs.
            if self.feedback_record(t, id, false).await?.map(|(_, v)| v) != Some(mark) {
                return Ok(());
            }
            let (mut row, version) = match cur {
                Some((row, v)) => (row, Some(v)),
                None => (StatsRow::default(), None),
            };
            row.stats.replace(delta.remove.as_ref().map(Contrib::to_core).as_ref(), delta.add.as_ref().map(Contrib::to_core).as_ref());
            row.marks.insert(id.0, mark);
            match self.cas_stats(&key, version, &row).await {
                Ok(true) => return Ok(()),
                Ok(false) => debug!(feedback_id = %id, attempt, "lost a stats compare-and-set, applying again"),
                // The outcome is unknown (a timeout): the serial re-read shows the mark if it applied.
                Err(e) if e.kind == StorageErrorKind::Unavailable && attempt + 1 < MAX_ATTEMPTS => {
                    warn!(feedback_id = %id, attempt, error = %e, "stats compare-and-set failed, applying again");
                    tokio::time::sleep(backoff(attempt + 1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(contended("a feedback stats row"))
    }

    /// Step 4: removes the marks `id → mark` from the owners' rows (a no-op where they are gone).
    async fn unmark(&self, t: TenantId, id: FeedbackId, owners: &[Owner], mark: i64) -> Result<()> {
        futures::future::try_join_all(owners.iter().map(|owner| async move {
            let key = owner.key(t);
            for attempt in 0..MAX_MERGE_ATTEMPTS {
                let Some((mut row, version)) = self.stats_row(&key, attempt > 0).await? else { return Ok(()) };
                if row.marks.remove(&id.0) != Some(mark) {
                    return Ok(());
                }
                match self.cas_stats(&key, Some(version), &row).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    // Removing a mark is idempotent: start over from a serial read.
                    Err(e) if e.kind == StorageErrorKind::Unavailable && attempt + 1 < MAX_ATTEMPTS => {
                        tokio::time::sleep(backoff(attempt + 1)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(contended("a feedback stats row"))
        }))
        .await
        .map(|_| ())
    }

    /// Keys of the index rows a record needs. Written before the record, so none is ever
    /// missing; extra ones (from a write that then lost or died) are skipped by readers.
    async fn write_feedback_keys(&self, t: TenantId, id: FeedbackId, record: &FeedbackRecord) -> Result<()> {
        let Some(f) = &record.feedback else { return Ok(()) };
        let key = id.as_bytes().to_vec();
        let shard = shard_of(id);
        let mut ops: Vec<super::Op<'_>> = Vec::new();
        let v = FeedbackTenantRow { tenant: t.0, shard, feedback_id: key.clone() };
        ops.push(Box::pin(async move { self.exec(&INSERT_FEEDBACK_BY_TENANT, &v).await }));
        if let Some(r) = f.run_id {
            let v = FeedbackRunRow { tenant: t.0, run_id: r.0, feedback_id: key.clone() };
            ops.push(Box::pin(async move { self.exec(&INSERT_FEEDBACK_BY_RUN, &v).await }));
            if record.project.is_none() {
                let v = OrphanRow { tenant: t.0, run_id: r.0, feedback_id: id.0 };
                ops.push(Box::pin(async move { self.exec(&INSERT_ORPHAN, &v).await }));
            }
        }
        if let Some(p) = record.project {
            let v = FeedbackProjectRow { tenant: t.0, project: p.0, shard, feedback_id: key };
            ops.push(Box::pin(async move { self.exec(&INSERT_FEEDBACK_BY_PROJECT, &v).await }));
        }
        futures::future::try_join_all(ops).await.map(|_| ())
    }

    /// The read-modify-write of one record: settles owed work, applies `edit`, writes the
    /// record with the work the edit owes and settles that. Returns the record as left (`None`
    /// when there is none). Like a run merge, it starts over from a serial read after a lost
    /// compare-and-set or a failure whose outcome is unknown: applying a change twice is
    /// harmless, and the work it owes is idempotent.
    async fn edit_feedback(&self, t: TenantId, id: FeedbackId, edit: Edit<'_>) -> Result<Option<FeedbackRecord>> {
        // The project resolved from the run, kept across attempts.
        let mut resolved: Option<Option<ProjectId>> = None;
        let mut failures = 0;
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            match self.try_edit_feedback(t, id, edit, attempt > 0, &mut resolved).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => debug!(feedback_id = %id, attempt, "feedback changed under us, editing again"),
                Err(e) if e.kind == StorageErrorKind::Unavailable && failures + 1 < MAX_ATTEMPTS => {
                    failures += 1;
                    warn!(feedback_id = %id, attempt, error = %e, "feedback write failed, editing again");
                    tokio::time::sleep(backoff(failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(contended(&format!("feedback {id}")))
    }

    /// One attempt of [`Self::edit_feedback`]; `Ok(None)` to try again.
    async fn try_edit_feedback(
        &self,
        t: TenantId,
        id: FeedbackId,
        edit: Edit<'_>,
        serial: bool,
        resolved: &mut Option<Option<ProjectId>>,
    ) -> Result<Option<Option<FeedbackRecord>>> {
        let (stored, version) = match self.feedback_record(t, id, serial).await? {
            Some((stored, v)) => {
                if self.settle(t, id, &stored, v).await? {
                    return Ok(None);
                }
                (stored, Some(v))
            }
            // Adoption never creates a record: the orphan row was left by a write that died
            // before its record (or is about to write it, and then looks for the run itself).
            None if matches!(edit, Edit::Adopt(_)) => return Ok(Some(None)),
            None => (Stored { record: FeedbackRecord::empty(), work: Work::Done }, None),
        };
        let mut next = stored.record.clone();
        match edit {
            Edit::Apply { stamp, change } => next.apply(stamp, change),
            Edit::Adopt(p) => {
                if next.project.is_none() {
                    next.project = Some(p);
                }
            }
        }
        if next == stored.record {
            // A redelivery, a change older than what is stored, or an adoption already done.
            return Ok(Some(version.map(|_| next)));
        }
        if next.project.is_none() {
            if let Some(f) = &next.feedback {
                let p = match resolved {
                    Some(p) => *p,
                    None => *resolved.insert(self.resolve_project(t, f).await?),
                };
                next.project = p;
            }
        }
        self.write_feedback_keys(t, id, &next).await?;
        let owed = deltas(&stored.record, &next);
        let work = if owed.is_empty() { Work::Done } else { Work::Apply(owed) };
        let stored = Stored { record: next, work };
        match self.cas_feedback(t, id, version, &stored).await? {
            Some(v) => {
                self.settle(t, id, &stored, v).await?;
                Ok(Some(Some(stored.record)))
            }
            None => Ok(None),
        }
    }

    /// Counts an entry towards its run's project, now that the run is stored, and drops its
    /// orphan row.
    async fn adopt(&self, t: TenantId, id: FeedbackId, run: RunId, project: ProjectId) -> Result<()> {
        self.edit_feedback(t, id, Edit::Adopt(project)).await?;
        self.exec(&DELETE_ORPHAN, &OrphanRow { tenant: t.0, run_id: run.0, feedback_id: id.0 }).await?;
        Ok(())
    }

    /// Adopts the feedback that arrived before `run` (called after every write of a run; see
    /// the module docs). A read of an empty partition when there is none.
    pub(super) async fn adopt_orphan_feedback(&self, t: TenantId, run: &Run) -> Result<()> {
        let values = RunKey { tenant: t.0, run_id: run.id.0 };
        let mut ids = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&SCAN_ORPHANS, &values, Some(page)).await?;
            for r in rows(res, "read orphan feedback")?.rows::<(Uuid,)>().map_err(|e| internal("read orphan feedback", e))? {
                ids.push(FeedbackId(r.map_err(|e| internal("read orphan feedback", e))?.0));
            }
            match next {
                Some(s) => page = s,
                None => break,
            }
        }
        futures::stream::iter(ids)
            .map(|id| self.adopt(t, id, run.id, run.project_id))
            .buffer_unordered(FANOUT)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// One page of feedback keys of an index partition, in id order.
    async fn feedback_key_page(&self, t: TenantId, part: Part, page: PagingState) -> Result<(Vec<[u8; 16]>, Option<PagingState>)> {
        let (res, next) = match part {
            Part::Run(r) => self.exec_page(&SCAN_FEEDBACK_BY_RUN, &RunKey { tenant: t.0, run_id: r.0 }, Some(page)).await?,
            Part::Project(p, shard) => {
                self.exec_page(&SCAN_FEEDBACK_BY_PROJECT, &FeedbackProjectShard { tenant: t.0, project: p.0, shard }, Some(page)).await?
            }
            Part::Tenant(shard) => {
                self.exec_page(&SCAN_FEEDBACK_BY_TENANT, &FeedbackTenantShard { tenant: t.0, shard }, Some(page)).await?
            }
        };
        let ids = rows(res, "scan feedback index")?
            .rows::<(Vec<u8>,)>()
            .map_err(|e| internal("scan feedback index", e))?
            .map(|r| {
                let (id,) = r.map_err(|e| internal("scan feedback index", e))?;
                id.try_into().map_err(|_| StorageError::new(StorageErrorKind::Internal, "scylla: feedback id is not 16 bytes"))
            })
            .collect::<Result<Vec<[u8; 16]>>>()?;
        Ok((ids, next))
    }

    /// Live feedback listed by index partitions, in id order, that `keep` accepts; `offset`
    /// of them skipped and at most `limit` returned.
    async fn feedback_through(
        &self,
        t: TenantId,
        parts: Vec<Part>,
        keep: impl Fn(&Feedback, Option<ProjectId>) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Feedback>> {
        let mut merge = IdMerge::new(self, t, parts);
        let (mut out, mut skipped) = (Vec::new(), 0);
        loop {
            let mut chunk = Vec::with_capacity(FANOUT);
            while chunk.len() < FANOUT {
                match merge.next().await? {
                    Some(id) => chunk.push(id),
                    None => break,
                }
            }
            if chunk.is_empty() {
                return Ok(out);
            }
            let records: Vec<_> =
                futures::stream::iter(chunk).map(|id| self.feedback_record(t, id, false)).buffered(FANOUT).try_collect().await?;
            for (stored, _) in records.into_iter().flatten() {
                let Some(f) = stored.record.alive() else { continue };
                if !keep(f, stored.record.project) {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                    continue;
                }
                out.push(f.clone());
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
    }

    /// Live feedback of one run (filters on `feedback_key`/`feedback_score` read it).
    pub(super) async fn run_feedback(&self, t: TenantId, run: RunId) -> Result<Vec<Feedback>> {
        self.feedback_through(t, vec![Part::Run(run)], |f, _| f.run_id == Some(run), 0, usize::MAX).await
    }
}

#[async_trait]
impl FeedbackStore for ScyllaStore {
    #[instrument(name = "storage.scylla.apply_feedback", skip_all, fields(tenant = %tenant, feedback_id = %change.id()))]
    async fn apply_feedback(&self, tenant: TenantId, stamp: Uuid, change: &FeedbackChange) -> Result<()> {
        let id = change.id();
        let Some(record) = self.edit_feedback(tenant, id, Edit::Apply { stamp, change }).await? else { return Ok(()) };
        // Feedback waiting for its run: the run may have been stored since the project was
        // resolved, after its writer looked for orphans (see the module docs).
        let waiting = record.feedback.as_ref().and_then(|f| f.run_id).filter(|_| record.project.is_none());
        if let Some(run) = waiting {
            if let Some(head) = self.head(tenant, run, true).await? {
                self.adopt(tenant, id, run, head.run.project_id).await?;
            }
        }
        Ok(())
    }

    #[instrument(name = "storage.scylla.get_feedback", skip_all, fields(tenant = %tenant, feedback_id = %id))]
    async fn get_feedback(&self, tenant: TenantId, id: FeedbackId) -> Result<Option<Feedback>> {
        Ok(self.feedback_record(tenant, id, false).await?.and_then(|(s, _)| s.record.alive().cloned()))
    }

    #[instrument(name = "storage.scylla.list_feedback", skip_all, fields(tenant = %tenant, limit = q.limit))]
    async fn list_feedback(&self, tenant: TenantId, q: &FeedbackQuery) -> Result<Vec<Feedback>> {
        self.feedback_through(tenant, parts(q), |f, p| listed(q, f, p), q.offset, q.limit.max(1)).await
    }

    #[instrument(name = "storage.scylla.run_feedback_stats", skip_all, fields(tenant = %tenant, runs = runs.len()))]
    async fn run_feedback_stats(&self, tenant: TenantId, runs: &[RunId]) -> Result<HashMap<RunId, FeedbackStats>> {
        let mut seen = HashSet::new();
        let wanted: Vec<RunId> = runs.iter().copied().filter(|r| seen.insert(*r)).collect();
        let found: Vec<_> = futures::stream::iter(wanted)
            .map(|r| async move { self.stats_row(&Owner::Run(r).key(tenant), false).await.map(|row| (r, row)) })
            .buffered(FANOUT)
            .try_collect()
            .await?;
        Ok(found.into_iter().filter_map(|(r, row)| row.map(|(row, _)| (r, row.stats))).filter(|(_, s)| !s.is_empty()).collect())
    }

    #[instrument(name = "storage.scylla.project_feedback_stats", skip_all, fields(tenant = %tenant, project = %project))]
    async fn project_feedback_stats(&self, tenant: TenantId, project: ProjectId) -> Result<FeedbackStats> {
        Ok(self.stats_row(&Owner::Project(project).key(tenant), false).await?.map(|(row, _)| row.stats).unwrap_or_default())
    }

    #[instrument(name = "storage.scylla.put_feedback_token", skip_all, fields(tenant = %tenant))]
    async fn put_feedback_token(&self, tenant: TenantId, token: &FeedbackToken) -> Result<()> {
        let body = enc(token);
        // The run's index first: a token findable by id is then always listed too.
        let by_run = RunTokenRow { tenant: tenant.0, run_id: token.run_id.0, token_id: token.id.as_bytes().to_vec(), body: body.clone() };
        self.exec(&INSERT_RUN_TOKEN, &by_run).await?;
        self.exec(&INSERT_FEEDBACK_TOKEN, &TokenRow { token_id: token.id, tenant: tenant.0, body }).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.feedback_token", skip_all)]
    async fn feedback_token(&self, id: Uuid) -> Result<Option<(TenantId, FeedbackToken)>> {
        let res = self.exec(&GET_FEEDBACK_TOKEN, &TokenKey { token_id: id }).await?;
        match rows(res, "read feedback token")?.maybe_first_row::<(Uuid, Vec<u8>)>().map_err(|e| internal("read feedback token", e))? {
            Some((tenant, body)) => Ok(Some((TenantId(tenant), dec("feedback token", &body)?))),
            None => Ok(None),
        }
    }

    #[instrument(name = "storage.scylla.list_feedback_tokens", skip_all, fields(tenant = %tenant, run = %run))]
    async fn list_feedback_tokens(&self, tenant: TenantId, run: RunId) -> Result<Vec<FeedbackToken>> {
        let res = self.exec(&LIST_RUN_TOKENS, &RunKey { tenant: tenant.0, run_id: run.0 }).await?;
        rows(res, "list feedback tokens")?
            .rows::<(Vec<u8>,)>()
            .map_err(|e| internal("list feedback tokens", e))?
            .map(|r| dec("feedback token", &r.map_err(|e| internal("list feedback tokens", e))?.0))
            .collect()
    }

    #[instrument(name = "storage.scylla.put_feedback_config", skip_all, fields(tenant = %tenant))]
    async fn put_feedback_config(&self, tenant: TenantId, config: &FeedbackConfigDef) -> Result<()> {
        let row = FeedbackConfigRow {
            tenant: tenant.0,
            config_id: config.id.as_bytes().to_vec(),
            body: enc(config),
            write_ts: config.modified_at.micros(),
        };
        self.exec(&PUT_FEEDBACK_CONFIG, &row).await.map(|_| ())
    }

    #[instrument(name = "storage.scylla.list_feedback_configs", skip_all, fields(tenant = %tenant))]
    async fn list_feedback_configs(&self, tenant: TenantId) -> Result<Vec<FeedbackConfigDef>> {
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_FEEDBACK_CONFIGS, &TenantKey { tenant: tenant.0 }, Some(page)).await?;
            for r in rows(res, "list feedback configs")?.rows::<(Vec<u8>,)>().map_err(|e| internal("list feedback configs", e))? {
                out.push(dec("feedback config", &r.map_err(|e| internal("list feedback configs", e))?.0)?);
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sextant_core::feedback::{FeedbackField, Score};
    use sextant_core::Timestamp;

    use super::*;

    fn entry(run: Option<RunId>, key: &str, score: Option<f64>) -> Feedback {
        let mut f = Feedback::from_wire(&json!({"key": key}), FeedbackId(Uuid::now_v7()), Timestamp(0)).unwrap();
        f.run_id = run;
        f.score = score.map(Score::Number);
        f
    }

    fn applied(changes: &[(Uuid, FeedbackChange)]) -> FeedbackRecord {
        let mut r = FeedbackRecord::empty();
        for (s, c) in changes {
            r.apply(*s, c);
        }
        r
    }

    #[test]
    fn deltas_move_a_contribution_between_stats_rows() {
        let run = RunId(Uuid::now_v7());
        let p = ProjectId(Uuid::now_v7());
        let f = entry(Some(run), "k", Some(0.5));
        let create = (Uuid::now_v7(), FeedbackChange::Upsert(f.clone()));
        let mut created = applied(std::slice::from_ref(&create));
        // Created without a project: only the run's row.
        let d = deltas(&FeedbackRecord::empty(), &created);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].owner, d[0].remove.is_none(), d[0].add.as_ref().map(|c| c.score)), (Owner::Run(run), true, Some(Some(5000))));
        // Adopted: only the project's row gains the entry.
        let mut adopted = created.clone();
        adopted.project = Some(p);
        let d = deltas(&created, &adopted);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].owner, d[0].remove.is_none(), d[0].add.is_some()), (Owner::Project(p), true, true));
        // A patched score moves the contribution in both rows; a comment moves nothing.
        created.project = Some(p);
        let mut patched = created.clone();
        let score = FeedbackField::Score(Some(Score::Number(0.25)));
        patched.apply(Uuid::now_v7(), &FeedbackChange::Patch { id: f.id, fields: vec![score], modified_at: Timestamp(1) });
        let d = deltas(&created, &patched);
        assert_eq!(d.iter().map(|d| d.owner).collect::<Vec<_>>(), [Owner::Run(run), Owner::Project(p)]);
        assert!(d.iter().all(|d| d.remove.as_ref().unwrap().score == Some(5000) && d.add.as_ref().unwrap().score == Some(2500)));
        let mut commented = patched.clone();
        let comment = FeedbackField::Comment(Some("c".into()));
        commented.apply(Uuid::now_v7(), &FeedbackChange::Patch { id: f.id, fields: vec![comment], modified_at: Timestamp(2) });
        assert!(deltas(&patched, &commented).is_empty(), "a change that leaves the contribution owes no work");
        // A delete removes the entry from both rows.
        let mut deleted = commented.clone();
        deleted.apply(Uuid::now_v7(), &FeedbackChange::Delete { id: f.id });
        let d = deltas(&commented, &deleted);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| d.remove.is_some() && d.add.is_none()));
        // Project-level feedback counts towards its project only.
        let mut pl = entry(None, "k", Some(1.0));
        pl.session_id = Some(p);
        let mut r = applied(&[(Uuid::now_v7(), FeedbackChange::Upsert(pl))]);
        r.project = Some(p);
        assert_eq!(deltas(&FeedbackRecord::empty(), &r).iter().map(|d| d.owner).collect::<Vec<_>>(), [Owner::Project(p)]);
    }

    /// The stats protocol replayed by hand: deltas applied through the marks are counted once
    /// however often a step is repeated, and the stats end as the embedded adapter's would.
    #[test]
    fn marks_make_repeated_deltas_count_once() {
        let run = RunId(Uuid::now_v7());
        let f = entry(Some(run), "k", Some(0.5));
        let r1 = applied(&[(Uuid::now_v7(), FeedbackChange::Upsert(f.clone()))]);
        let mut r2 = r1.clone();
        r2.apply(Uuid::now_v7(), &FeedbackChange::Delete { id: f.id });
        let mut row = StatsRow::default();
        let apply = |row: &mut StatsRow, mark: i64, d: &Delta| {
            if row.marks.get(&f.id.0) == Some(&mark) {
                return;
            }
            row.stats.replace(d.remove.as_ref().map(Contrib::to_core).as_ref(), d.add.as_ref().map(Contrib::to_core).as_ref());
            row.marks.insert(f.id.0, mark);
        };
        let d1 = deltas(&FeedbackRecord::empty(), &r1);
        for _ in 0..3 {
            apply(&mut row, 1, &d1[0]); // a redelivered change finishing the same work
        }
        assert_eq!(row.stats.0["k"].n, 1);
        row.marks.remove(&f.id.0); // unmarked once the record moved on
        let d2 = deltas(&r1, &r2);
        apply(&mut row, 3, &d2[0]);
        apply(&mut row, 3, &d2[0]);
        assert!(row.stats.is_empty(), "deleted once, not twice");
    }

    #[test]
    fn stored_records_and_stats_round_trip() {
        let f = entry(Some(RunId(Uuid::now_v7())), "k", Some(0.5));
        let record = applied(&[(Uuid::now_v7(), FeedbackChange::Upsert(f))]);
        let work = Work::Apply(deltas(&FeedbackRecord::empty(), &record));
        let stored = Stored { record, work };
        assert_eq!(dec::<Stored>("feedback", &enc(&stored)).unwrap(), stored);
        let unmark = Stored { work: Work::Unmark { owners: vec![Owner::Project(ProjectId(Uuid::nil()))], mark: 7 }, ..stored };
        assert_eq!(dec::<Stored>("feedback", &enc(&unmark)).unwrap(), unmark);
        let mut row = StatsRow::default();
        row.stats.add(&Contrib { key: "k".into(), score: Some(1), value: Some("v".into()) }.to_core(), 1);
        row.marks.insert(Uuid::now_v7(), 3);
        assert_eq!(dec::<StatsRow>("feedback stats", &enc(&row)).unwrap(), row);
    }

    #[test]
    fn listings_read_the_narrowest_index() {
        let (r1, r2, p) = (RunId(Uuid::now_v7()), RunId(Uuid::now_v7()), ProjectId(Uuid::now_v7()));
        let q = FeedbackQuery { runs: vec![r1, r2, r1], projects: vec![p], ..Default::default() };
        assert!(matches!(parts(&q).as_slice(), [Part::Run(a), Part::Run(b)] if *a == r1 && *b == r2), "runs first, each once");
        let q = FeedbackQuery { projects: vec![p, p], ..Default::default() };
        assert_eq!(parts(&q).len(), usize::from(SHARDS), "every shard of the project, once");
        assert_eq!(parts(&FeedbackQuery::default()).len(), usize::from(SHARDS));
        let shards: HashSet<i32> = (0..1000).map(|_| shard_of(FeedbackId(Uuid::now_v7()))).collect();
        assert_eq!(shards.len(), usize::from(SHARDS), "UUIDv7 ids spread over every shard");
    }

    #[test]
    fn listed_checks_the_project_an_entry_counts_towards() {
        let (run, p) = (RunId(Uuid::now_v7()), ProjectId(Uuid::now_v7()));
        let f = entry(Some(run), "k", None);
        let q = FeedbackQuery { runs: vec![run], projects: vec![p], ..Default::default() };
        assert!(listed(&q, &f, Some(p)));
        assert!(!listed(&q, &f, None), "not yet adopted");
        assert!(!listed(&FeedbackQuery { keys: vec!["other".into()], ..Default::default() }, &f, None));
    }
}
