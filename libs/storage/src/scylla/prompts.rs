//! The prompt hub on ScyllaDB. Semantics are the embedded adapter's (`embedded/prompts.rs`),
//! checked by the same conformance suite.
//!
//! Tables (T = tenant, R = repository id, H = full commit hash):
//! * `prompt_repos`      ((T), R)            → body, version — definitions, by compare-and-set
//! * `prompt_names`      ((T, handle))       → R
//! * `prompt_deleted`    ((T, R))            → deleted_at    — deleted ids (never reused)
//! * `prompt_commits`    ((T, R), H)         → created_at, body
//! * `prompt_commit_log` ((T, R), created↓, H) — commit order (keys only)
//! * `prompt_tag_moves`  ((T, R), tag, at)   → H or null      — every move of every tag
//! * `prompt_likes`      ((T, R), liker)     → liked
//!
//! A repository is one partition per table, so every read of it is one partition: prompts are
//! small (a manifest is at most 512 KiB) and a repository has hundreds of commits, not millions.
//!
//! # Writes
//! Commits, tag moves and likes are plain inserts `USING TIMESTAMP` their own time: a commit
//! never changes, a move is a new row, and the newest like wins by cell timestamp, so
//! redeliveries and reorderings converge without reading. A delete writes the tombstone row,
//! then deletes the partitions `USING TIMESTAMP` the delete's time (every older row goes, and a
//! redelivered older write stays deleted), then the definition (compare-and-set) and the
//! handle. A create finds the tombstone of its id and is refused.
//!
//! Definitions and handles are kept like datasets' (see `datasets.rs`), simpler because a
//! handle never changes: the handle is claimed with `INSERT ... IF NOT EXISTS` before the
//! definition is inserted, and released with `DELETE ... IF repo_id = ?` after it is deleted. A
//! create interrupted between the two is completed by its redelivery (same id: the claim is
//! already its own); a claim left by a deleted repository is released by the next claimant.
//!
//! # Costs
//! A pull by full hash: two reads (handle, definition) plus one (commit); by prefix, a range
//! read instead. `list_commits` reads the repository's commit keys and the page's bodies.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::response::query_result::QueryResult;
use scylla::response::PagingState;
use tracing::{debug, instrument};
use uuid::Uuid;

use sextant_core::prompt::{PromptCommit, PromptRepo, TagMove};
use sextant_core::{RepoId, TenantId, Timestamp};

use super::statements::*;
use super::{dec, enc, internal, lwt_outcome, lwt_uuid, rows, ScyllaStore, FANOUT, MAX_MERGE_ATTEMPTS};
use crate::{CommitPage, PromptStore, RepoCreate, Result, StorageError, StorageErrorKind};

/// Attempts at claiming a handle, each after releasing a claim a deleted repository left.
const CLAIM_ATTEMPTS: u32 = 4;

fn key(t: TenantId, r: RepoId) -> PromptRepoKey {
    PromptRepoKey { tenant: t.0, repo_id: r.0 }
}

fn commit_bodies(res: QueryResult, what: &str) -> Result<Vec<PromptCommit>> {
    rows(res, what)?
        .rows::<(Vec<u8>,)>()
        .map_err(|e| internal(what, e))?
        .map(|r| dec("commit", &r.map_err(|e| internal(what, e))?.0))
        .collect()
}

impl ScyllaStore {
    async fn repo_versioned(&self, t: TenantId, r: RepoId, serial: bool) -> Result<Option<(PromptRepo, i64)>> {
        const WHAT: &str = "read prompt repository";
        let stmt = if serial { &GET_PROMPT_REPO_SERIAL } else { &GET_PROMPT_REPO };
        match rows(self.exec(stmt, &key(t, r)).await?, WHAT)?.maybe_first_row::<(Vec<u8>, i64)>().map_err(|e| internal(WHAT, e))? {
            Some((body, version)) => Ok(Some((dec("prompt repository", &body)?, version))),
            None => Ok(None),
        }
    }

    async fn repo_deleted(&self, t: TenantId, r: RepoId) -> Result<bool> {
        const WHAT: &str = "read prompt tombstone";
        Ok(rows(self.exec(&GET_PROMPT_DELETED, &key(t, r)).await?, WHAT)?.rows_num() > 0)
    }

    /// Claims `handle` for repository `id`: `Ok(None)` when it is now (or already was) its
    /// handle, else the repository that has it.
    async fn claim_handle(&self, t: TenantId, handle: &str, id: RepoId) -> Result<Option<PromptRepo>> {
        const WHAT: &str = "claim prompt handle";
        let claim = PromptNameClaim { tenant: t.0, handle: handle.to_string(), repo_id: id.0 };
        for attempt in 0..CLAIM_ATTEMPTS {
            let (applied, rows) = lwt_outcome(self.exec(&CLAIM_PROMPT_NAME, &claim).await?, WHAT)?;
            if applied {
                return Ok(None);
            }
            let holder = RepoId(
                lwt_uuid(&rows, "repo_id", WHAT)?
                    .ok_or_else(|| StorageError::new(StorageErrorKind::Internal, "scylla: a prompt handle claim has no owner"))?,
            );
            if holder == id {
                return Ok(None); // our own create, interrupted and now redelivered
            }
            if let Some((repo, _)) = self.repo_versioned(t, holder, true).await? {
                return Ok(Some(repo));
            }
            if !self.repo_deleted(t, holder).await? {
                // Claimed by a create that has not written its definition yet.
                return Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the prompt name is being claimed by another write"));
            }
            debug!(repo = %holder, attempt, "releasing a handle claim a deleted repository left");
            self.exec(&RELEASE_PROMPT_NAME, &PromptNameClaim { tenant: t.0, handle: handle.to_string(), repo_id: holder.0 }).await?;
        }
        Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the prompt name is contended"))
    }

    async fn delete_partitions(&self, t: TenantId, r: RepoId, at: Timestamp) -> Result<()> {
        let at = PromptRepoKeyAt { tenant: t.0, repo_id: r.0, write_ts: at.micros() };
        futures::try_join!(
            self.exec(&DELETE_PROMPT_COMMITS, &at),
            self.exec(&DELETE_PROMPT_COMMIT_LOG, &at),
            self.exec(&DELETE_PROMPT_TAG_MOVES, &at),
            self.exec(&DELETE_PROMPT_LIKES, &at),
        )?;
        Ok(())
    }
}

#[async_trait]
impl PromptStore for ScyllaStore {
    #[instrument(name = "storage.scylla.create_repo", skip_all, fields(tenant = %tenant, repo = %repo.id))]
    async fn create_repo(&self, tenant: TenantId, repo: &PromptRepo) -> Result<RepoCreate> {
        let t = tenant;
        if self.repo_deleted(t, repo.id).await? {
            return Ok(RepoCreate::Deleted);
        }
        if let Some((existing, _)) = self.repo_versioned(t, repo.id, false).await? {
            return Ok(RepoCreate::AlreadyExists(existing));
        }
        if let Some(holder) = self.claim_handle(t, &repo.handle, repo.id).await? {
            return Ok(RepoCreate::NameTaken(holder));
        }
        let values = InsertPromptRepo { tenant: t.0, repo_id: repo.id.0, body: enc(repo), version: 1 };
        let (created, _) = lwt_outcome(self.exec(&INSERT_PROMPT_REPO, &values).await?, "create prompt repository")?;
        if created {
            return Ok(RepoCreate::Created(repo.clone()));
        }
        match self.repo_versioned(t, repo.id, true).await? {
            Some((existing, _)) => Ok(RepoCreate::AlreadyExists(existing)),
            None => Err(StorageError::new(StorageErrorKind::Unavailable, "scylla: the prompt was deleted while being created")),
        }
    }

    #[instrument(name = "storage.scylla.put_repo", skip_all, fields(tenant = %tenant, repo = %repo.id))]
    async fn put_repo(&self, tenant: TenantId, repo: &PromptRepo) -> Result<bool> {
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            let Some((stored, version)) = self.repo_versioned(tenant, repo.id, attempt > 0).await? else { return Ok(false) };
            if stored.handle != repo.handle {
                return Err(StorageError::new(StorageErrorKind::Invalid, "a prompt's handle cannot change"));
            }
            if stored.updated_at > repo.updated_at || stored == *repo {
                return Ok(true);
            }
            let values =
                UpdatePromptRepo { tenant: tenant.0, repo_id: repo.id.0, body: enc(repo), version: version + 1, expected_version: version };
            // A timeout is returned, not retried: the caller's retry is a put like this one.
            let (applied, _) = lwt_outcome(self.exec(&UPDATE_PROMPT_REPO, &values).await?, "replace prompt repository")?;
            if applied {
                return Ok(true);
            }
            debug!(repo = %repo.id, attempt, "lost a prompt compare-and-set, reading again");
        }
        Err(StorageError::new(
            StorageErrorKind::Unavailable,
            format!("scylla: prompt {} is contended: {MAX_MERGE_ATTEMPTS} compare-and-sets lost", repo.id),
        ))
    }

    #[instrument(name = "storage.scylla.get_repo", skip_all, fields(tenant = %tenant, repo = %id))]
    async fn get_repo(&self, tenant: TenantId, id: RepoId) -> Result<Option<PromptRepo>> {
        Ok(self.repo_versioned(tenant, id, false).await?.map(|(r, _)| r))
    }

    #[instrument(name = "storage.scylla.repo_by_handle", skip_all, fields(tenant = %tenant))]
    async fn repo_by_handle(&self, tenant: TenantId, handle: &str) -> Result<Option<PromptRepo>> {
        const WHAT: &str = "read prompt handle";
        let res = self.exec(&GET_PROMPT_NAME, &PromptNameKey { tenant: tenant.0, handle: handle.to_string() }).await?;
        let Some((owner,)) = rows(res, WHAT)?.maybe_first_row::<(Uuid,)>().map_err(|e| internal(WHAT, e))? else { return Ok(None) };
        // A claim whose repository is gone (an interrupted delete) names nothing.
        Ok(self.get_repo(tenant, RepoId(owner)).await?.filter(|r| r.handle == handle))
    }

    #[instrument(name = "storage.scylla.list_repos", skip_all, fields(tenant = %tenant))]
    async fn list_repos(&self, tenant: TenantId) -> Result<Vec<PromptRepo>> {
        const WHAT: &str = "list prompt repositories";
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_PROMPT_REPOS, &TenantKey { tenant: tenant.0 }, Some(page)).await?;
            for r in rows(res, WHAT)?.rows::<(Vec<u8>,)>().map_err(|e| internal(WHAT, e))? {
                out.push(dec("prompt repository", &r.map_err(|e| internal(WHAT, e))?.0)?);
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }

    #[instrument(name = "storage.scylla.delete_repo", skip_all, fields(tenant = %tenant, repo = %id))]
    async fn delete_repo(&self, tenant: TenantId, id: RepoId, at: Timestamp) -> Result<bool> {
        let t = tenant;
        let stored = self.get_repo(t, id).await?;
        // The tombstone first: from now on a redelivered create of this id is refused.
        let tomb = PromptDeletedRow { tenant: t.0, repo_id: id.0, deleted_at: at.micros(), write_ts: at.micros() };
        self.exec(&INSERT_PROMPT_DELETED, &tomb).await?;
        self.delete_partitions(t, id, at).await?;
        let Some(repo) = stored else { return Ok(false) };
        let (deleted, _) = lwt_outcome(self.exec(&DELETE_PROMPT_REPO, &key(t, id)).await?, "delete prompt repository")?;
        // Not applied means another repository holds the handle now: nothing of ours to release.
        self.exec(&RELEASE_PROMPT_NAME, &PromptNameClaim { tenant: t.0, handle: repo.handle, repo_id: id.0 }).await?;
        Ok(deleted)
    }

    #[instrument(name = "storage.scylla.put_commit", skip_all, fields(tenant = %tenant, repo = %commit.repo_id))]
    async fn put_commit(&self, tenant: TenantId, commit: &PromptCommit) -> Result<()> {
        let (t, r, at) = (tenant.0, commit.repo_id.0, commit.created_at.micros());
        let row =
            PromptCommitRow { tenant: t, repo_id: r, commit_hash: commit.hash.clone(), created_at: at, body: enc(commit), write_ts: at };
        let log = PromptCommitLogRow { tenant: t, repo_id: r, created_at: at, commit_hash: commit.hash.clone(), write_ts: at };
        // The body first: a commit that is listed can be read.
        self.exec(&INSERT_PROMPT_COMMIT, &row).await?;
        self.exec(&INSERT_PROMPT_COMMIT_LOG, &log).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.get_commit", skip_all, fields(tenant = %tenant, repo = %repo))]
    async fn get_commit(&self, tenant: TenantId, repo: RepoId, hash: &str) -> Result<Option<PromptCommit>> {
        let values = PromptCommitKey { tenant: tenant.0, repo_id: repo.0, commit_hash: hash.to_string() };
        Ok(commit_bodies(self.exec(&GET_PROMPT_COMMIT, &values).await?, "read commit")?.pop())
    }

    #[instrument(name = "storage.scylla.commits_by_prefix", skip_all, fields(tenant = %tenant, repo = %repo))]
    async fn commits_by_prefix(&self, tenant: TenantId, repo: RepoId, prefix: &str, limit: usize) -> Result<Vec<PromptCommit>> {
        // Every hash starting with a hex prefix sorts before the prefix followed by 'g'.
        let values = PromptCommitRange { tenant: tenant.0, repo_id: repo.0, lo_hash: prefix.to_string(), hi_hash: format!("{prefix}g") };
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&SCAN_PROMPT_COMMITS, &values, Some(page)).await?;
            out.extend(commit_bodies(res, "scan commits")?);
            match next {
                Some(s) if out.len() < limit => page = s,
                _ => {
                    out.truncate(limit);
                    return Ok(out);
                }
            }
        }
    }

    #[instrument(name = "storage.scylla.list_commits", skip_all, fields(tenant = %tenant, repo = %repo))]
    async fn list_commits(&self, tenant: TenantId, repo: RepoId, offset: usize, limit: usize) -> Result<CommitPage> {
        const WHAT: &str = "list commits";
        let mut total = 0u64;
        let mut hashes = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_PROMPT_COMMIT_LOG, &key(tenant, repo), Some(page)).await?;
            for r in rows(res, WHAT)?.rows::<(i64, String)>().map_err(|e| internal(WHAT, e))? {
                let (_, hash) = r.map_err(|e| internal(WHAT, e))?;
                if total as usize >= offset && hashes.len() < limit.max(1) {
                    hashes.push(hash);
                }
                total += 1;
            }
            match next {
                Some(s) => page = s,
                None => break,
            }
        }
        let commits: Vec<Option<PromptCommit>> = futures::stream::iter(hashes)
            .map(|h| async move { self.get_commit(tenant, repo, &h).await })
            .buffered(FANOUT)
            .try_collect()
            .await?;
        Ok(CommitPage { commits: commits.into_iter().flatten().collect(), total })
    }

    #[instrument(name = "storage.scylla.put_tag_move", skip_all, fields(tenant = %tenant, repo = %tag_move.repo_id))]
    async fn put_tag_move(&self, tenant: TenantId, tag_move: &TagMove) -> Result<()> {
        let at = tag_move.at.micros();
        let values = PromptTagMoveRow {
            tenant: tenant.0,
            repo_id: tag_move.repo_id.0,
            tag: tag_move.tag.clone(),
            moved_at: at,
            commit_hash: tag_move.commit.clone(),
            write_ts: at,
        };
        self.exec(&INSERT_PROMPT_TAG_MOVE, &values).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.tag_moves", skip_all, fields(tenant = %tenant, repo = %repo))]
    async fn tag_moves(&self, tenant: TenantId, repo: RepoId, tag: Option<&str>) -> Result<Vec<TagMove>> {
        const WHAT: &str = "list tag moves";
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = match tag {
                Some(tag) => {
                    let values = PromptTagKey { tenant: tenant.0, repo_id: repo.0, tag: tag.to_string() };
                    self.exec_page(&LIST_PROMPT_TAG_MOVES_OF, &values, Some(page)).await?
                }
                None => self.exec_page(&LIST_PROMPT_TAG_MOVES, &key(tenant, repo), Some(page)).await?,
            };
            for r in rows(res, WHAT)?.rows::<(String, i64, Option<String>)>().map_err(|e| internal(WHAT, e))? {
                let (tag, at, commit) = r.map_err(|e| internal(WHAT, e))?;
                out.push(TagMove { repo_id: repo, tag, commit, at: Timestamp(at) });
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }

    #[instrument(name = "storage.scylla.set_like", skip_all, fields(tenant = %tenant, repo = %repo))]
    async fn set_like(&self, tenant: TenantId, repo: RepoId, by: TenantId, liked: bool, at: Timestamp) -> Result<()> {
        let values = PromptLikeRow { tenant: tenant.0, repo_id: repo.0, liker: by.0, liked, write_ts: at.micros() };
        self.exec(&SET_PROMPT_LIKE, &values).await?;
        Ok(())
    }

    #[instrument(name = "storage.scylla.likes", skip_all, fields(tenant = %tenant, repo = %repo))]
    async fn likes(&self, tenant: TenantId, repo: RepoId) -> Result<Vec<TenantId>> {
        const WHAT: &str = "list likes";
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_PROMPT_LIKES, &key(tenant, repo), Some(page)).await?;
            for r in rows(res, WHAT)?.rows::<(Uuid, bool)>().map_err(|e| internal(WHAT, e))? {
                let (liker, liked) = r.map_err(|e| internal(WHAT, e))?;
                if liked {
                    out.push(TenantId(liker));
                }
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }
}
