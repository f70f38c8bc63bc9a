//! Feedback in the embedded store.
//!
//! Keyspaces (T = tenant, F = feedback id, R = run, P = project):
//! * `feedback`: `T F` → FeedbackRecord (entry, field stamps, resolved project)
//! * `feedback_idx`: `'r' T R F` (a run's feedback), `'p' T P F` (a project's feedback) and
//!   `'o' T R F` (feedback waiting for its run, no project yet), all → ()
//! * `feedback_stats`: `'r' T R` and `'p' T P` → FeedbackStats
//! * `feedback_tokens`: `'i' K` → (T, FeedbackToken) (K = token id: redeeming knows only it)
//!   and `'r' T R K` → () (a run's tokens)
//! * `feedback_configs`: `T C` → FeedbackConfigDef (C = config id)
//!
//! Every change runs under the store's write lock and commits the entry, its index entries
//! and both stats deltas in one atomic batch, so stats never disagree with the entries.

use std::collections::HashMap;

use fjall::OwnedWriteBatch;
use uuid::Uuid;

use sextant_core::feedback::{FeedbackConfigDef, FeedbackToken};
use sextant_core::{Feedback, FeedbackChange, FeedbackId, FeedbackRecord, FeedbackStats, ProjectId, RunId, TenantId};

use super::{backend, dec, enc, Inner, Key};
use crate::{FeedbackQuery, Result};

const RUN: u8 = b'r';
const PROJECT: u8 = b'p';
const ORPHAN: u8 = b'o';
const TOKEN: u8 = b'i';

fn idx(tag: u8, t: TenantId, owner: &[u8; 16], f: FeedbackId) -> Vec<u8> {
    Key::new().bytes(&[tag]).id(t.as_bytes()).id(owner).id(f.as_bytes()).0
}

fn idx_prefix(tag: u8, t: TenantId, owner: &[u8; 16]) -> Vec<u8> {
    Key::new().bytes(&[tag]).id(t.as_bytes()).id(owner).0
}

fn record_key(t: TenantId, f: FeedbackId) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(f.as_bytes()).0
}

/// Stats read once per change and written back at the end, so several updates to the same
/// run or project within one batch compose.
#[derive(Default)]
pub(super) struct StatsCache(HashMap<Vec<u8>, FeedbackStats>);

impl StatsCache {
    fn get<'a>(&'a mut self, s: &Inner, key: Vec<u8>) -> Result<&'a mut FeedbackStats> {
        if !self.0.contains_key(&key) {
            let cur = match s.feedback_stats.get(&key).map_err(|e| backend("read feedback stats", e))? {
                Some(v) => dec("feedback stats", &v)?,
                None => FeedbackStats::default(),
            };
            self.0.insert(key.clone(), cur);
        }
        Ok(self.0.get_mut(&key).expect("inserted above"))
    }

    pub(super) fn write(self, s: &Inner, batch: &mut OwnedWriteBatch) {
        for (k, st) in self.0 {
            if st.is_empty() {
                batch.remove(&s.feedback_stats, k);
            } else {
                batch.insert(&s.feedback_stats, k, enc(&st));
            }
        }
    }
}

fn stats_key(tag: u8, t: TenantId, owner: &[u8; 16]) -> Vec<u8> {
    Key::new().bytes(&[tag]).id(t.as_bytes()).id(owner).0
}

impl Inner {
    fn feedback_record(&self, t: TenantId, id: FeedbackId) -> Result<Option<FeedbackRecord>> {
        match self.feedback.get(record_key(t, id)).map_err(|e| backend("read feedback", e))? {
            Some(v) => Ok(Some(dec("feedback", &v)?)),
            None => Ok(None),
        }
    }

    /// The project a feedback entry counts towards: the one it names, else its run's.
    fn resolve_project(&self, t: TenantId, f: &Feedback) -> Result<Option<ProjectId>> {
        if let Some(p) = f.session_id {
            return Ok(Some(p));
        }
        match f.run_id {
            Some(r) => Ok(self.get_run(t, r)?.map(|run| run.project_id)),
            None => Ok(None),
        }
    }

    pub(super) fn apply_feedback(&self, changes: &[(TenantId, Uuid, FeedbackChange)]) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = self.db.batch();
        let mut stats = StatsCache::default();
        // Records changed earlier in this batch: later changes build on them.
        let mut records: HashMap<(TenantId, FeedbackId), FeedbackRecord> = HashMap::new();
        for (t, stamp, change) in changes {
            self.apply_one(*t, *stamp, change, &mut records, &mut stats, &mut batch)?;
        }
        for ((t, id), record) in records {
            batch.insert(&self.feedback, record_key(t, id), enc(&record));
        }
        stats.write(self, &mut batch);
        batch.commit().map_err(|e| backend("write feedback", e))
    }

    fn apply_one(
        &self,
        t: TenantId,
        stamp: Uuid,
        change: &FeedbackChange,
        records: &mut HashMap<(TenantId, FeedbackId), FeedbackRecord>,
        stats: &mut StatsCache,
        batch: &mut OwnedWriteBatch,
    ) -> Result<()> {
        let id = change.id();
        let before = match records.get(&(t, id)) {
            Some(r) => r.clone(),
            None => self.feedback_record(t, id)?.unwrap_or_else(FeedbackRecord::empty),
        };
        let mut record = before.clone();
        record.apply(stamp, change);
        if record == before {
            return Ok(()); // a redelivery, or a change older than what is stored
        }
        if record.project.is_none() {
            if let Some(f) = &record.feedback {
                record.project = self.resolve_project(t, f)?;
            }
        }
        let old = before.alive().map(|f| (f.contribution(), f.run_id, before.project));
        let new = record.alive().map(|f| (f.contribution(), f.run_id, record.project));
        // Index entries: keyed by the (immutable) run; the project is set once resolved.
        if let Some(f) = &record.feedback {
            if let Some(r) = f.run_id {
                batch.insert(&self.feedback_idx, idx(RUN, t, r.as_bytes(), id), Vec::new());
                if record.project.is_none() {
                    batch.insert(&self.feedback_idx, idx(ORPHAN, t, r.as_bytes(), id), Vec::new());
                }
            }
            if let Some(p) = record.project {
                batch.insert(&self.feedback_idx, idx(PROJECT, t, p.as_bytes(), id), Vec::new());
            }
        }
        let (old_c, old_run, old_p) = match &old {
            Some((c, r, p)) => (Some(c), *r, *p),
            None => (None, None, None),
        };
        let (new_c, new_run, new_p) = match &new {
            Some((c, r, p)) => (Some(c), *r, *p),
            None => (None, None, None),
        };
        for (run, c, sign) in [(old_run, old_c, -1), (new_run, new_c, 1)] {
            if let (Some(r), Some(c)) = (run, c) {
                stats.get(self, stats_key(RUN, t, r.as_bytes()))?.add(c, sign);
            }
        }
        for (p, c, sign) in [(old_p, old_c, -1), (new_p, new_c, 1)] {
            if let (Some(p), Some(c)) = (p, c) {
                stats.get(self, stats_key(PROJECT, t, p.as_bytes()))?.add(c, sign);
            }
        }
        records.insert((t, id), record);
        Ok(())
    }

    /// Called while a run is first stored (under the write lock, in its batch): feedback that
    /// arrived before the run now counts towards the run's project.
    pub(super) fn adopt_orphan_feedback(
        &self,
        t: TenantId,
        run: RunId,
        project: ProjectId,
        batch: &mut OwnedWriteBatch,
        stats: &mut StatsCache,
    ) -> Result<()> {
        let prefix = idx_prefix(ORPHAN, t, run.as_bytes());
        for g in self.feedback_idx.prefix(&prefix) {
            let k = g.key().map_err(|e| backend("scan orphan feedback", e))?;
            let id = FeedbackId::from_bytes(k[k.len() - 16..].try_into().expect("16 bytes"));
            batch.remove(&self.feedback_idx, k.to_vec());
            let Some(mut record) = self.feedback_record(t, id)? else { continue };
            if record.project.is_some() {
                continue;
            }
            record.project = Some(project);
            batch.insert(&self.feedback_idx, idx(PROJECT, t, project.as_bytes(), id), Vec::new());
            if let Some(f) = record.alive() {
                stats.get(self, stats_key(PROJECT, t, project.as_bytes()))?.add(&f.contribution(), 1);
            }
            batch.insert(&self.feedback, record_key(t, id), enc(&record));
        }
        Ok(())
    }

    pub(super) fn get_feedback(&self, t: TenantId, id: FeedbackId) -> Result<Option<Feedback>> {
        Ok(self.feedback_record(t, id)?.and_then(|r| r.alive().cloned()))
    }

    /// Live feedback of one run (filters on `feedback_key`/`feedback_score` read it).
    pub(super) fn run_feedback(&self, t: TenantId, run: RunId) -> Result<Vec<Feedback>> {
        let mut out = Vec::new();
        for g in self.feedback_idx.prefix(idx_prefix(RUN, t, run.as_bytes())) {
            let k = g.key().map_err(|e| backend("scan run feedback", e))?;
            let id = FeedbackId::from_bytes(k[k.len() - 16..].try_into().expect("16 bytes"));
            if let Some(f) = self.get_feedback(t, id)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    pub(super) fn list_feedback(&self, t: TenantId, q: &FeedbackQuery) -> Result<Vec<Feedback>> {
        let keep = |f: &Feedback| {
            (q.keys.is_empty() || q.keys.contains(&f.key))
                && (q.sources.is_empty() || f.source_type().is_some_and(|s| q.sources.contains(&s)))
                && (q.runs.is_empty() || f.run_id.is_some_and(|r| q.runs.contains(&r)))
        };
        let limit = q.limit.max(1);
        let mut ids: Vec<FeedbackId> = Vec::new();
        let owners: Option<(u8, Vec<[u8; 16]>)> = if !q.runs.is_empty() {
            Some((RUN, q.runs.iter().map(|r| *r.as_bytes()).collect()))
        } else if !q.projects.is_empty() {
            Some((PROJECT, q.projects.iter().map(|p| *p.as_bytes()).collect()))
        } else {
            None
        };
        let mut out = Vec::new();
        match owners {
            Some((tag, owners)) => {
                for o in owners {
                    for g in self.feedback_idx.prefix(idx_prefix(tag, t, &o)) {
                        let k = g.key().map_err(|e| backend("scan feedback index", e))?;
                        ids.push(FeedbackId::from_bytes(k[k.len() - 16..].try_into().expect("16 bytes")));
                    }
                }
                ids.sort();
                ids.dedup();
                let mut skipped = 0;
                for id in ids {
                    let Some(f) = self.get_feedback(t, id)? else { continue };
                    if !keep(&f) || (!q.projects.is_empty() && tag == RUN && !self.counts_towards(t, id, &q.projects)?) {
                        continue;
                    }
                    if skipped < q.offset {
                        skipped += 1;
                        continue;
                    }
                    out.push(f);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            None => {
                let mut skipped = 0;
                for g in self.feedback.prefix(t.as_bytes()) {
                    let (_, v) = g.into_inner().map_err(|e| backend("scan feedback", e))?;
                    let r: FeedbackRecord = dec("feedback", &v)?;
                    let Some(f) = r.alive() else { continue };
                    if !keep(f) {
                        continue;
                    }
                    if skipped < q.offset {
                        skipped += 1;
                        continue;
                    }
                    out.push(f.clone());
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn counts_towards(&self, t: TenantId, id: FeedbackId, projects: &[ProjectId]) -> Result<bool> {
        Ok(self.feedback_record(t, id)?.and_then(|r| r.project).is_some_and(|p| projects.contains(&p)))
    }

    pub(super) fn run_feedback_stats(&self, t: TenantId, runs: &[RunId]) -> Result<HashMap<RunId, FeedbackStats>> {
        let mut out = HashMap::new();
        for r in runs {
            if let Some(v) = self.feedback_stats.get(stats_key(RUN, t, r.as_bytes())).map_err(|e| backend("read feedback stats", e))? {
                out.insert(*r, dec("feedback stats", &v)?);
            }
        }
        Ok(out)
    }

    pub(super) fn project_feedback_stats(&self, t: TenantId, p: ProjectId) -> Result<FeedbackStats> {
        match self.feedback_stats.get(stats_key(PROJECT, t, p.as_bytes())).map_err(|e| backend("read feedback stats", e))? {
            Some(v) => dec("feedback stats", &v),
            None => Ok(FeedbackStats::default()),
        }
    }
}

impl Inner {
    pub(super) fn put_feedback_token(&self, t: TenantId, token: &FeedbackToken) -> Result<()> {
        let mut batch = self.db.batch();
        batch.insert(&self.feedback_tokens, Key::new().bytes(&[TOKEN]).id(token.id.as_bytes()).0, enc(&(t, token)));
        batch.insert(&self.feedback_tokens, idx(RUN, t, token.run_id.as_bytes(), FeedbackId(token.id)), Vec::new());
        batch.commit().map_err(|e| backend("write feedback token", e))
    }

    pub(super) fn feedback_token(&self, id: Uuid) -> Result<Option<(TenantId, FeedbackToken)>> {
        match self.feedback_tokens.get(Key::new().bytes(&[TOKEN]).id(id.as_bytes()).0).map_err(|e| backend("read feedback token", e))? {
            Some(v) => Ok(Some(dec("feedback token", &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn list_feedback_tokens(&self, t: TenantId, run: RunId) -> Result<Vec<FeedbackToken>> {
        let mut out = Vec::new();
        for g in self.feedback_tokens.prefix(idx_prefix(RUN, t, run.as_bytes())) {
            let k = g.key().map_err(|e| backend("scan feedback tokens", e))?;
            let id = Uuid::from_bytes(k[k.len() - 16..].try_into().expect("16 bytes"));
            // Checked against the token itself: it names its tenant.
            if let Some((owner, token)) = self.feedback_token(id)? {
                if owner == t {
                    out.push(token);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn put_feedback_config(&self, t: TenantId, config: &FeedbackConfigDef) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = Key::new().id(t.as_bytes()).id(config.id.as_bytes()).0;
        if let Some(v) = self.feedback_configs.get(&key).map_err(|e| backend("read feedback config", e))? {
            let stored: FeedbackConfigDef = dec("feedback config", &v)?;
            if stored.modified_at >= config.modified_at {
                return Ok(());
            }
        }
        self.feedback_configs.insert(key, enc(config)).map_err(|e| backend("write feedback config", e))
    }

    pub(super) fn list_feedback_configs(&self, t: TenantId) -> Result<Vec<FeedbackConfigDef>> {
        let mut out = Vec::new();
        for g in self.feedback_configs.prefix(t.as_bytes()) {
            let (_, v) = g.into_inner().map_err(|e| backend("scan feedback configs", e))?;
            out.push(dec("feedback config", &v)?);
        }
        Ok(out)
    }
}
