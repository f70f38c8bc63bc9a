//! The prompt hub in the embedded store.
//!
//! Keyspaces (T = tenant, R = repository id, H = full commit hash (64 ASCII hex bytes),
//! V = time, L = liking tenant):
//! * `prompt_repos`        T R          → PromptRepo
//! * `prompt_names`        T handle     → R
//! * `prompt_deleted`      T R          → deleted at — deleted ids, refused if re-created
//! * `prompt_commits`      T R H        → PromptCommit — by hash; a prefix scan finds short hashes
//! * `prompt_commit_log`   T R V H      → ()           — commit order
//! * `prompt_tag_moves`    T R tag 0 V  → Option<H>    — every move of every tag
//! * `prompt_likes`        T R L        → (liked, at)
//!
//! Tag names never contain a NUL byte (the service checks them), so `tag 0` is an exact prefix
//! and moves sort by tag, then time.

use sextant_core::prompt::{PromptCommit, PromptRepo, TagMove};
use sextant_core::{RepoId, TenantId, Timestamp};

use super::{backend, dec, enc, time_from, Inner, Key};
use crate::{CommitPage, RepoCreate, Result, StorageError, StorageErrorKind};

fn repo_key(t: TenantId, r: RepoId) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(r.as_bytes()).0
}

fn handle_key(t: TenantId, handle: &str) -> Vec<u8> {
    Key::new().id(t.as_bytes()).bytes(handle.as_bytes()).0
}

fn commit_key(t: TenantId, r: RepoId, hash: &str) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(r.as_bytes()).bytes(hash.as_bytes()).0
}

fn tag_prefix(t: TenantId, r: RepoId, tag: &str) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(r.as_bytes()).bytes(tag.as_bytes()).bytes(&[0]).0
}

impl Inner {
    fn repo_deleted(&self, t: TenantId, r: RepoId) -> Result<bool> {
        Ok(self.prompt_deleted.get(repo_key(t, r)).map_err(|e| backend("read prompt tombstone", e))?.is_some())
    }

    pub(super) fn get_repo(&self, t: TenantId, r: RepoId) -> Result<Option<PromptRepo>> {
        match self.prompt_repos.get(repo_key(t, r)).map_err(|e| backend("read prompt", e))? {
            Some(v) => Ok(Some(dec("prompt repository", &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn repo_by_handle(&self, t: TenantId, handle: &str) -> Result<Option<PromptRepo>> {
        match self.prompt_names.get(handle_key(t, handle)).map_err(|e| backend("read prompt name", e))? {
            Some(v) if v.len() == 16 => self.get_repo(t, RepoId::from_bytes(v[..].try_into().expect("16 bytes"))),
            _ => Ok(None),
        }
    }

    pub(super) fn create_repo(&self, t: TenantId, repo: &PromptRepo) -> Result<RepoCreate> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.repo_deleted(t, repo.id)? {
            return Ok(RepoCreate::Deleted);
        }
        if let Some(existing) = self.get_repo(t, repo.id)? {
            return Ok(RepoCreate::AlreadyExists(existing));
        }
        if let Some(other) = self.repo_by_handle(t, &repo.handle)? {
            return Ok(RepoCreate::NameTaken(other));
        }
        let mut batch = self.db.batch();
        batch.insert(&self.prompt_repos, repo_key(t, repo.id), enc(repo));
        batch.insert(&self.prompt_names, handle_key(t, &repo.handle), repo.id.as_bytes().to_vec());
        batch.commit().map_err(|e| backend("write prompt", e))?;
        Ok(RepoCreate::Created(repo.clone()))
    }

    pub(super) fn put_repo(&self, t: TenantId, repo: &PromptRepo) -> Result<bool> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(stored) = self.get_repo(t, repo.id)? else { return Ok(false) };
        if stored.handle != repo.handle {
            return Err(StorageError::new(StorageErrorKind::Invalid, "a prompt's handle cannot change"));
        }
        if stored.updated_at > repo.updated_at {
            return Ok(true);
        }
        self.prompt_repos.insert(repo_key(t, repo.id), enc(repo)).map_err(|e| backend("write prompt", e))?;
        Ok(true)
    }

    pub(super) fn list_repos(&self, t: TenantId) -> Result<Vec<PromptRepo>> {
        let mut out = Vec::new();
        for g in self.prompt_repos.prefix(t.as_bytes()) {
            let (_, v) = g.into_inner().map_err(|e| backend("scan prompts", e))?;
            out.push(dec("prompt repository", &v)?);
        }
        Ok(out)
    }

    pub(super) fn delete_repo(&self, t: TenantId, r: RepoId, at: Timestamp) -> Result<bool> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stored = self.get_repo(t, r)?;
        let prefix = repo_key(t, r);
        let mut batch = self.db.batch();
        for ks in [&self.prompt_commits, &self.prompt_commit_log, &self.prompt_tag_moves, &self.prompt_likes] {
            for g in ks.prefix(&prefix) {
                batch.remove(ks, g.key().map_err(|e| backend("scan prompt", e))?.to_vec());
            }
        }
        if let Some(repo) = &stored {
            // The handle may already name a newer repository: release it only if it is ours.
            if self.repo_by_handle(t, &repo.handle)?.is_some_and(|x| x.id == r) {
                batch.remove(&self.prompt_names, handle_key(t, &repo.handle));
            }
            batch.remove(&self.prompt_repos, prefix.clone());
        }
        // Remembered for good: a redelivered create, commit or tag of this id is refused.
        batch.insert(&self.prompt_deleted, prefix, at.micros().to_be_bytes().to_vec());
        batch.commit().map_err(|e| backend("delete prompt", e))?;
        Ok(stored.is_some())
    }

    pub(super) fn put_commit(&self, t: TenantId, c: &PromptCommit) -> Result<()> {
        if self.repo_deleted(t, c.repo_id)? {
            return Ok(());
        }
        let mut batch = self.db.batch();
        batch.insert(&self.prompt_commits, commit_key(t, c.repo_id, &c.hash), enc(c));
        let log = Key::new().id(t.as_bytes()).id(c.repo_id.as_bytes()).time(c.created_at.micros()).bytes(c.hash.as_bytes()).0;
        batch.insert(&self.prompt_commit_log, log, Vec::new());
        batch.commit().map_err(|e| backend("write commit", e))
    }

    pub(super) fn get_commit(&self, t: TenantId, r: RepoId, hash: &str) -> Result<Option<PromptCommit>> {
        match self.prompt_commits.get(commit_key(t, r, hash)).map_err(|e| backend("read commit", e))? {
            Some(v) => Ok(Some(dec("commit", &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn commits_by_prefix(&self, t: TenantId, r: RepoId, prefix: &str, limit: usize) -> Result<Vec<PromptCommit>> {
        let mut out = Vec::new();
        for g in self.prompt_commits.prefix(commit_key(t, r, prefix)).take(limit) {
            let (_, v) = g.into_inner().map_err(|e| backend("scan commits", e))?;
            out.push(dec("commit", &v)?);
        }
        Ok(out)
    }

    pub(super) fn list_commits(&self, t: TenantId, r: RepoId, offset: usize, limit: usize) -> Result<CommitPage> {
        let mut total = 0u64;
        let mut hashes = Vec::new();
        for g in self.prompt_commit_log.prefix(repo_key(t, r)).rev() {
            let k = g.key().map_err(|e| backend("scan commits", e))?;
            if total as usize >= offset && hashes.len() < limit.max(1) {
                hashes.push(String::from_utf8_lossy(&k[40..]).into_owned());
            }
            total += 1;
        }
        let mut commits = Vec::with_capacity(hashes.len());
        for h in hashes {
            // A log entry is written with its commit, in one batch.
            commits.extend(self.get_commit(t, r, &h)?);
        }
        Ok(CommitPage { commits, total })
    }

    pub(super) fn put_tag_move(&self, t: TenantId, m: &TagMove) -> Result<()> {
        if self.repo_deleted(t, m.repo_id)? {
            return Ok(());
        }
        let key = Key(tag_prefix(t, m.repo_id, &m.tag)).time(m.at.micros()).0;
        self.prompt_tag_moves.insert(key, enc(&m.commit)).map_err(|e| backend("write tag", e))
    }

    pub(super) fn tag_moves(&self, t: TenantId, r: RepoId, tag: Option<&str>) -> Result<Vec<TagMove>> {
        let prefix = match tag {
            Some(tag) => tag_prefix(t, r, tag),
            None => repo_key(t, r),
        };
        let mut out = Vec::new();
        for g in self.prompt_tag_moves.prefix(&prefix) {
            let (k, v) = g.into_inner().map_err(|e| backend("scan tags", e))?;
            let rest = &k[32..];
            let Some(nul) = rest.iter().position(|b| *b == 0) else { continue };
            out.push(TagMove {
                repo_id: r,
                tag: String::from_utf8_lossy(&rest[..nul]).into_owned(),
                commit: dec("tag move", &v)?,
                at: Timestamp(time_from(&rest[nul + 1..nul + 9])),
            });
        }
        Ok(out)
    }

    pub(super) fn set_like(&self, t: TenantId, r: RepoId, by: TenantId, liked: bool, at: Timestamp) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.repo_deleted(t, r)? {
            return Ok(());
        }
        let key = Key::new().id(t.as_bytes()).id(r.as_bytes()).id(by.as_bytes()).0;
        if let Some(v) = self.prompt_likes.get(&key).map_err(|e| backend("read like", e))? {
            let (_, stored_at): (bool, i64) = dec("like", &v)?;
            if stored_at > at.micros() {
                return Ok(());
            }
        }
        self.prompt_likes.insert(key, enc(&(liked, at.micros()))).map_err(|e| backend("write like", e))
    }

    pub(super) fn likes(&self, t: TenantId, r: RepoId) -> Result<Vec<TenantId>> {
        let mut out = Vec::new();
        for g in self.prompt_likes.prefix(repo_key(t, r)) {
            let (k, v) = g.into_inner().map_err(|e| backend("scan likes", e))?;
            let (liked, _): (bool, i64) = dec("like", &v)?;
            if liked {
                out.push(TenantId::from_bytes(k[32..48].try_into().expect("48-byte keys")));
            }
        }
        Ok(out)
    }
}
