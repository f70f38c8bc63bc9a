//! The prompt hub's core logic, shared by REST and gRPC: validation, commits and their
//! parents, refs (latest, tags, hashes and their prefixes), tag history, variants and
//! assignment.
//!
//! Writes are events with read-your-writes, as in the dataset service: a change is published
//! on the prompt stream (durable once acknowledged) and then applied to the store by this
//! process at once, so the SDK's pull right after a push sees it. The prompt projector applies
//! the same event again, idempotently, which repairs the store if this process dies in between.
//!
//! Every write to one repository holds that repository's lock (striped, in-process): a push
//! reads the newest commit and writes on top of it, a tag move is stamped after the previous
//! move, and a definition change is a read-modify-write. Two API replicas pushing the same
//! repository at the same instant can still both succeed on the same parent; the newest is
//! then `latest` (see the README).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::instrument;
use uuid::Uuid;

use sextant_bus::EventBus;
use sextant_core::prompt::{
    assign_variant, canonical_manifest, check_handle, check_label, check_tag_name, check_variants, commit_hash, diff_manifests,
    hash_prefix_of_id, tags_as_of, tenant_from_handle, tenant_handle, CommitRef, ManifestChange, PromptChange, PromptCommit, PromptRepo,
    RepoFilter, RepoType, TagMove, Variant, FULL_HASH_LEN, MAX_COMMIT_DESCRIPTION_CHARS, MAX_LABELS,
};
use sextant_core::{RepoId, TenantId, Timestamp};
use sextant_events::{Envelope, Event, PromptChangedV1};
pub use sextant_proto::error::{bus_error, storage_error};
use sextant_proto::{truncate, ApiError, ErrorKind};
use sextant_storage::{RepoCreate, Storage, StorageError};

mod directories;

/// Most commits or prompts one list call returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Candidates an ambiguous hash prefix error names.
const AMBIGUOUS_SHOWN: usize = 5;
pub const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;
pub const MAX_README_BYTES: usize = 1024 * 1024;
pub const MAX_USER_ID_BYTES: usize = 512;
/// Write locks: repositories hash onto this many stripes.
const LOCK_STRIPES: usize = 256;

/// Applies one change to the store; what the projector and the write-through path share.
pub async fn apply_change(store: &dyn Storage, tenant: TenantId, change: &PromptChange) -> Result<(), StorageError> {
    match change {
        PromptChange::Repo(r) => match store.create_repo(tenant, r).await? {
            RepoCreate::Created(_) => Ok(()),
            RepoCreate::AlreadyExists(_) => store.put_repo(tenant, r).await.map(|_| ()),
            // A create that lost a name race after it was published (its creator got a 409),
            // or one redelivered after its repository was deleted: nothing to project.
            RepoCreate::NameTaken(_) | RepoCreate::Deleted => Ok(()),
        },
        PromptChange::DeleteRepo { id, at } => store.delete_repo(tenant, *id, *at).await.map(|_| ()),
        PromptChange::Commit(c) => store.put_commit(tenant, c).await,
        PromptChange::Tag(m) => store.put_tag_move(tenant, m).await,
        PromptChange::Like { repo_id, by, liked, at } => store.set_like(tenant, *repo_id, *by, *liked, *at).await,
    }
}

/// A repository as the API shows it: whose it is, and what it is made of.
#[derive(Debug, Clone)]
pub struct RepoView {
    /// The tenant that owns it.
    pub tenant: TenantId,
    pub repo: PromptRepo,
    pub num_commits: u64,
    pub last_commit: Option<PromptCommit>,
    /// Tenants that like it.
    pub likes: Vec<TenantId>,
    /// The commit tags that exist now.
    pub commit_tags: Vec<String>,
}

/// What `GET /repos` lists.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: RepoFilter,
    pub sort: SortField,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortField {
    #[default]
    UpdatedAt,
    NumLikes,
    /// Downloads and views are not counted (pulls stay read-only): they sort like `updated_at`.
    NumDownloads,
    NumViews,
}

impl SortField {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "updated_at" | "relevance" => Ok(Self::UpdatedAt),
            "num_likes" => Ok(Self::NumLikes),
            "num_downloads" => Ok(Self::NumDownloads),
            "num_views" => Ok(Self::NumViews),
            other => Err(ApiError::unprocessable(format!(
                "sort_field: {:?} is not updated_at, num_likes, num_downloads, num_views or relevance",
                truncate(other)
            ))),
        }
    }
}

/// A tag as of a time: the commit it pointed at and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct TagState {
    pub tag: String,
    pub commit: String,
    pub moved_at: Timestamp,
}

/// The variant a user was assigned to and the commit it serves.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub variant: Variant,
    pub commit: PromptCommit,
}

pub struct Prompts {
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Storage>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// Whose prompt a path names, and whether the caller may change it.
struct Owner {
    tenant: TenantId,
    own: bool,
}

impl Prompts {
    pub fn new(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>) -> Self {
        Self { bus, store, locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect() }
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    fn lock(&self, tenant: TenantId, repo: RepoId) -> &tokio::sync::Mutex<()> {
        let (a, b) = (tenant.0.as_u64_pair().0, repo.0.as_u64_pair().1);
        &self.locks[((a ^ b.rotate_left(17)) % LOCK_STRIPES as u64) as usize]
    }

    /// Publishes (durable) then applies (visible).
    async fn commit(&self, tenant: TenantId, changes: Vec<PromptChange>) -> Result<(), ApiError> {
        let envs: Vec<Envelope> =
            changes.iter().map(|c| Envelope::new(tenant, Event::PromptChangedV1(PromptChangedV1 { change: c.clone() }))).collect();
        self.bus.publish(&envs).await.map_err(bus_error)?;
        for c in &changes {
            apply_change(self.store.as_ref(), tenant, c).await.map_err(storage_error)?;
        }
        metrics::counter!("sextant_prompt_changes_total").increment(changes.len() as u64);
        Ok(())
    }

    // ---- owners and repositories ----

    /// `-` (or the caller's handle, `GET /settings` `tenant_handle`, or its tenant id) is the
    /// caller's own; another tenant's handle (or id) names its public prompts, readable but not
    /// writable. Anything else is an unknown owner.
    fn owner(&self, caller: TenantId, owner: &str) -> Result<Owner, ApiError> {
        if owner == "-" {
            return Ok(Owner { tenant: caller, own: true });
        }
        match tenant_from_handle(owner) {
            Some(t) => Ok(Owner { tenant: t, own: t == caller }),
            None => Err(ApiError::not_found(format!(
                "unknown owner {:?}: use \"-\" or your handle {:?} for your own prompts, or the owner's handle for a public prompt",
                truncate(owner),
                tenant_handle(caller)
            ))),
        }
    }

    /// The repository a path names. Another tenant's private repository is reported exactly
    /// like a missing one, so tenants learn nothing of each other's prompts.
    async fn find(&self, caller: TenantId, owner: &str, handle: &str, write: bool) -> Result<(TenantId, PromptRepo), ApiError> {
        self.find_named(caller, owner, handle, write, "prompt").await
    }

    /// [`Self::find`], calling what it looks for `noun` when it is not found.
    async fn find_named(
        &self,
        caller: TenantId,
        owner: &str,
        handle: &str,
        write: bool,
        noun: &str,
    ) -> Result<(TenantId, PromptRepo), ApiError> {
        let o = self.owner(caller, owner)?;
        let not_found = || ApiError::not_found(format!("{noun} {}/{} not found", truncate(owner), truncate(handle)));
        if check_handle(handle).is_err() {
            return Err(not_found());
        }
        let repo = self.store.repo_by_handle(o.tenant, handle).await.map_err(storage_error)?.ok_or_else(not_found)?;
        if !o.own && !repo.is_public {
            return Err(not_found());
        }
        if !o.own && write {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("prompt {owner}/{handle} belongs to another tenant: it can be pulled, not changed"),
            ));
        }
        Ok((o.tenant, repo))
    }

    async fn view(&self, tenant: TenantId, repo: PromptRepo) -> Result<RepoView, ApiError> {
        let page = self.store.list_commits(tenant, repo.id, 0, 1).await.map_err(storage_error)?;
        let likes = self.store.likes(tenant, repo.id).await.map_err(storage_error)?;
        let moves = self.store.tag_moves(tenant, repo.id, None).await.map_err(storage_error)?;
        Ok(RepoView {
            tenant,
            num_commits: page.total,
            last_commit: page.commits.into_iter().next(),
            likes,
            commit_tags: tags_as_of(&moves, None).into_keys().collect(),
            repo,
        })
    }

    /// `POST /repos`: `{"repo_handle", "description", "readme", "tags", "is_public",
    /// "repo_type"}` (`prompt`, the default, `agent` or `skill`).
    #[instrument(name = "prompts.create", skip_all, fields(tenant = %tenant, prompt = tracing::field::Empty))]
    pub async fn create_repo(&self, tenant: TenantId, body: &Value) -> Result<RepoView, ApiError> {
        let o = object(body)?;
        let handle =
            o.get("repo_handle").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable("repo_handle: required (a string)"))?;
        tracing::Span::current().record("prompt", handle);
        check_handle(handle).map_err(|e| ApiError::unprocessable(format!("repo_handle: {e}")))?;
        let repo_type = match o.get("repo_type") {
            None | Some(Value::Null) => RepoType::Prompt,
            Some(Value::String(t)) => RepoType::parse(t).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "repo_type: {:?} is not prompt, agent or skill (a file is an entry of an agent or skill, not a repository)",
                    truncate(t)
                ))
            })?,
            Some(_) => return Err(ApiError::unprocessable("repo_type: expected a string (prompt, agent or skill)")),
        };
        let now = Timestamp::now();
        let repo = PromptRepo {
            id: RepoId(Uuid::now_v7()),
            handle: handle.to_owned(),
            description: opt_text(o, "description", MAX_DESCRIPTION_BYTES)?,
            readme: opt_text(o, "readme", MAX_README_BYTES)?,
            labels: labels(o.get("tags"))?.unwrap_or_default(),
            is_public: opt_bool(o, "is_public")?.unwrap_or(false),
            is_archived: false,
            variants: Vec::new(),
            repo_type,
            created_at: now,
            updated_at: now,
        };
        if let Some(existing) = self.store.repo_by_handle(tenant, handle).await.map_err(storage_error)? {
            return Err(ApiError::conflict(format!("{} named {handle:?} already exists", a_kind(existing.repo_type))));
        }
        self.commit(tenant, vec![PromptChange::Repo(repo.clone())]).await?;
        // A concurrent create of the same handle may have won between the check and the write.
        match self.store.repo_by_handle(tenant, handle).await.map_err(storage_error)? {
            Some(stored) if stored.id == repo.id => self.view(tenant, stored).await,
            _ => Err(ApiError::conflict(format!("a prompt named {handle:?} already exists"))),
        }
    }

    #[instrument(name = "prompts.get", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn get_repo(&self, caller: TenantId, owner: &str, handle: &str) -> Result<RepoView, ApiError> {
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        self.view(tenant, repo).await
    }

    /// The caller's prompts matching the query, sorted and paged, and how many match.
    pub async fn list_repos(&self, tenant: TenantId, q: &ListQuery) -> Result<(Vec<RepoView>, usize), ApiError> {
        self.list_repos_of(tenant, q, &[RepoType::Prompt]).await
    }

    /// The caller's repositories of these types matching the query, sorted and paged, and how
    /// many match.
    #[instrument(name = "prompts.list", skip_all, fields(tenant = %tenant))]
    pub async fn list_repos_of(&self, tenant: TenantId, q: &ListQuery, types: &[RepoType]) -> Result<(Vec<RepoView>, usize), ApiError> {
        if q.limit == 0 || q.limit > MAX_LIST_LIMIT {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        let mut repos: Vec<PromptRepo> = self
            .store
            .list_repos(tenant)
            .await
            .map_err(storage_error)?
            .into_iter()
            .filter(|r| types.contains(&r.repo_type) && q.filter.matches(r))
            .collect();
        let total = repos.len();
        let mut likes: BTreeMap<RepoId, usize> = BTreeMap::new();
        if q.sort == SortField::NumLikes {
            for r in &repos {
                likes.insert(r.id, self.store.likes(tenant, r.id).await.map_err(storage_error)?.len());
            }
        }
        // Ties (and downloads and views, which are not counted) fall back to the newest first,
        // then the handle, so paging is stable.
        repos.sort_by(|a, b| {
            let primary = match q.sort {
                SortField::NumLikes => likes[&a.id].cmp(&likes[&b.id]),
                _ => a.updated_at.cmp(&b.updated_at),
            };
            let primary = if q.descending { primary.reverse() } else { primary };
            primary.then_with(|| b.updated_at.cmp(&a.updated_at)).then_with(|| a.handle.cmp(&b.handle))
        });
        let mut out = Vec::new();
        for r in repos.into_iter().skip(q.offset).take(q.limit) {
            out.push(self.view(tenant, r).await?);
        }
        Ok((out, total))
    }

    /// `PATCH /repos/{owner}/{repo}`: any of `description`, `readme`, `tags`, `is_public`,
    /// `is_archived` (null leaves a field as it is).
    #[instrument(name = "prompts.update", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn update_repo(&self, caller: TenantId, owner: &str, handle: &str, body: &Value) -> Result<RepoView, ApiError> {
        let o = object(body)?;
        for k in o.keys() {
            if !["description", "readme", "tags", "is_public", "is_archived"].contains(&k.as_str()) {
                return Err(ApiError::unprocessable(format!(
                    "{:?} cannot be updated: give description, readme, tags, is_public or is_archived",
                    truncate(k)
                )));
            }
        }
        let (tenant, current) = self.find(caller, owner, handle, true).await?;
        let _guard = self.lock(tenant, current.id).lock().await;
        let mut repo = self.reread(tenant, &current).await?;
        if let Some(d) = opt_text(o, "description", MAX_DESCRIPTION_BYTES)? {
            repo.description = Some(d);
        }
        if let Some(r) = opt_text(o, "readme", MAX_README_BYTES)? {
            repo.readme = Some(r);
        }
        if let Some(l) = labels(o.get("tags"))? {
            repo.labels = l;
        }
        if let Some(p) = opt_bool(o, "is_public")? {
            repo.is_public = p;
        }
        if let Some(a) = opt_bool(o, "is_archived")? {
            repo.is_archived = a;
        }
        let repo = self.put_definition(tenant, repo).await?;
        self.view(tenant, repo).await
    }

    /// The stored definition, re-read under the repository's lock.
    async fn reread(&self, tenant: TenantId, r: &PromptRepo) -> Result<PromptRepo, ApiError> {
        self.store
            .get_repo(tenant, r.id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("prompt {} was deleted", r.handle)))
    }

    /// Stores a new definition, stamped after the current one.
    async fn put_definition(&self, tenant: TenantId, mut repo: PromptRepo) -> Result<PromptRepo, ApiError> {
        repo.updated_at = after(repo.updated_at);
        self.commit(tenant, vec![PromptChange::Repo(repo.clone())]).await?;
        Ok(repo)
    }

    #[instrument(name = "prompts.delete", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn delete_repo(&self, caller: TenantId, owner: &str, handle: &str) -> Result<(), ApiError> {
        let (tenant, repo) = self.find(caller, owner, handle, true).await?;
        let _guard = self.lock(tenant, repo.id).lock().await;
        // After every commit and tag move of the repository, so all of them go.
        let newest = self.newest_write(tenant, &repo).await?;
        self.commit(tenant, vec![PromptChange::DeleteRepo { id: repo.id, at: after(newest) }]).await
    }

    /// The time of the newest commit, tag move or definition of a repository.
    async fn newest_write(&self, tenant: TenantId, repo: &PromptRepo) -> Result<Timestamp, ApiError> {
        let last_commit =
            self.store.list_commits(tenant, repo.id, 0, 1).await.map_err(storage_error)?.commits.first().map(|c| c.created_at);
        let last_move = self.store.tag_moves(tenant, repo.id, None).await.map_err(storage_error)?.iter().map(|m| m.at).max();
        Ok(repo.updated_at.max(last_commit.unwrap_or(Timestamp(0))).max(last_move.unwrap_or(Timestamp(0))))
    }

    /// `POST /likes/{owner}/{repo}`: the caller likes (or stops liking) a prompt; returns the
    /// number of likes.
    #[instrument(name = "prompts.like", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn like(&self, caller: TenantId, owner: &str, handle: &str, like: bool) -> Result<usize, ApiError> {
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        let change = PromptChange::Like { repo_id: repo.id, by: caller, liked: like, at: Timestamp::now() };
        self.commit(tenant, vec![change]).await?;
        Ok(self.store.likes(tenant, repo.id).await.map_err(storage_error)?.len())
    }

    // ---- commits ----

    /// `POST /commits/{owner}/{repo}`: `{"manifest": {...}, "parent_commit": hash|null,
    /// "description"?}`. The parent must be the newest commit (or absent, meaning it), and the
    /// manifest must differ from the parent's: an identical push is a 409 "Nothing to commit".
    #[instrument(name = "prompts.push", skip_all, fields(tenant = %caller, prompt = %handle, commit = tracing::field::Empty))]
    pub async fn push(&self, caller: TenantId, owner: &str, handle: &str, body: &Value) -> Result<PromptCommit, ApiError> {
        let o = object(body)?;
        let manifest = match o.get("manifest") {
            None | Some(Value::Null) => return Err(ApiError::unprocessable("manifest: required (a serialised LangChain prompt object)")),
            // LangSmith's answer, word for word: a dict without `id` is not a LangChain object
            // (the SDK sends such a dict as it is).
            Some(Value::Object(m)) if m.get("id").is_none_or(Value::is_null) => {
                return Err(ApiError::bad_request("Manifest must have an id field"));
            }
            Some(m) => canonical_manifest(m).map_err(ApiError::unprocessable)?,
        };
        let description = opt_text(o, "description", MAX_DESCRIPTION_BYTES)?;
        if description.as_ref().is_some_and(|d| d.chars().count() > MAX_COMMIT_DESCRIPTION_CHARS) {
            return Err(ApiError::unprocessable(format!("description: at most {MAX_COMMIT_DESCRIPTION_CHARS} characters")));
        }
        let parent_ref = match o.get("parent_commit") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "latest" => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(ApiError::unprocessable("parent_commit: expected a commit hash or null")),
        };
        let (tenant, repo) = self.find(caller, owner, handle, true).await?;
        if repo.repo_type.is_directory() {
            return Err(ApiError::conflict(format!(
                "{owner}/{handle} is {}: commit its files with POST /v1/platform/hub/repos/{owner}/{handle}/directories/commits",
                a_kind(repo.repo_type)
            )));
        }
        let _guard = self.lock(tenant, repo.id).lock().await;
        let repo = self.reread(tenant, &repo).await?;
        let latest = self.store.list_commits(tenant, repo.id, 0, 1).await.map_err(storage_error)?.commits.into_iter().next();
        let parent = self.parent_commit(tenant, &repo, owner, parent_ref, latest.as_ref()).await?;
        if let Some(p) = parent.as_ref().filter(|p| p.manifest == manifest) {
            return Err(ApiError::conflict(format!(
                "Nothing to commit: the manifest is identical to the parent commit {}",
                p.short_hash()
            )));
        }
        let commit = self.write_commit(tenant, repo, latest.as_ref(), parent, manifest, description).await?;
        tracing::Span::current().record("commit", commit.short_hash());
        Ok(commit)
    }

    /// The parent a push names (`None`: the newest commit): it must be the newest, so a push
    /// made on a stale pull is refused instead of silently dropping the commits in between.
    async fn parent_commit(
        &self,
        tenant: TenantId,
        repo: &PromptRepo,
        owner: &str,
        parent_ref: Option<&str>,
        latest: Option<&PromptCommit>,
    ) -> Result<Option<PromptCommit>, ApiError> {
        let handle = repo.handle.as_str();
        Ok(match parent_ref {
            None => latest.cloned(),
            Some(r) => {
                let named = match CommitRef::parse(r) {
                    Ok(CommitRef::Hash(h)) => self.by_hash(tenant, repo, owner, &h).await?,
                    _ => return Err(ApiError::unprocessable(format!("parent_commit: {:?} is not a commit hash", truncate(r)))),
                };
                if let Some(l) = latest.filter(|l| l.hash != named.hash) {
                    return Err(ApiError::conflict(format!(
                        "parent_commit {} is not the latest commit of {owner}/{handle} (that is {}): pull the latest and push again",
                        named.short_hash(),
                        l.short_hash()
                    )));
                }
                Some(named)
            }
        })
    }

    /// Writes a commit on `parent` (the caller holds the repository's lock and checked that
    /// the manifest changed), moving the repository's `updated_at`.
    async fn write_commit(
        &self,
        tenant: TenantId,
        repo: PromptRepo,
        latest: Option<&PromptCommit>,
        parent: Option<PromptCommit>,
        manifest: sextant_core::RawJson,
        description: Option<String>,
    ) -> Result<PromptCommit, ApiError> {
        let hash = commit_hash(manifest.as_str(), parent.as_ref().map(|p| p.hash.as_str()));
        let created_at = latest.map_or_else(Timestamp::now, |l| after(l.created_at));
        let commit = PromptCommit { repo_id: repo.id, hash, parent: parent.map(|p| p.hash), manifest, description, created_at };
        // The push moves the repository's `updated_at` (lists sort by it).
        let bumped = PromptRepo { updated_at: created_at.max(after(repo.updated_at)), ..repo };
        self.commit(tenant, vec![PromptChange::Commit(commit.clone()), PromptChange::Repo(bumped)]).await?;
        metrics::counter!("sextant_prompt_commits_total").increment(1);
        Ok(commit)
    }

    /// The commit a hash (full or a prefix) names: 404 if none, 409 naming the candidates if
    /// the prefix matches several.
    async fn by_hash(&self, tenant: TenantId, repo: &PromptRepo, owner: &str, hash: &str) -> Result<PromptCommit, ApiError> {
        let not_found = || ApiError::not_found(format!("prompt {owner}/{} has no commit {hash}", repo.handle));
        if hash.len() == FULL_HASH_LEN {
            return self.store.get_commit(tenant, repo.id, hash).await.map_err(storage_error)?.ok_or_else(not_found);
        }
        let mut found = self.store.commits_by_prefix(tenant, repo.id, hash, AMBIGUOUS_SHOWN).await.map_err(storage_error)?;
        match found.len() {
            0 => Err(not_found()),
            1 => Ok(found.remove(0)),
            n => {
                let shown: Vec<&str> = found.iter().map(|c| c.hash.as_str()).collect();
                let more = if n >= AMBIGUOUS_SHOWN { " and maybe more" } else { "" };
                Err(ApiError::conflict(format!(
                    "commit hash prefix {hash} of {owner}/{} is ambiguous: it matches {}{more}; give more characters",
                    repo.handle,
                    shown.join(", ")
                )))
            }
        }
    }

    /// The commit a ref names now: `latest`, a tag, or a hash (full or a prefix).
    async fn resolve(&self, tenant: TenantId, repo: &PromptRepo, owner: &str, r: &CommitRef) -> Result<PromptCommit, ApiError> {
        match r {
            CommitRef::Latest => {
                let page = self.store.list_commits(tenant, repo.id, 0, 1).await.map_err(storage_error)?;
                page.commits
                    .into_iter()
                    .next()
                    .ok_or_else(|| ApiError::not_found(format!("prompt {owner}/{} has no commits yet", repo.handle)))
            }
            CommitRef::Tag(tag) => {
                let state = self.tag_state(tenant, repo, owner, tag, None).await?;
                // A tag only ever points at a commit of its repository.
                self.store
                    .get_commit(tenant, repo.id, &state.commit)
                    .await
                    .map_err(storage_error)?
                    .ok_or_else(|| ApiError::not_found(format!("tag {tag} of {owner}/{} points at a missing commit", repo.handle)))
            }
            CommitRef::Hash(h) => self.by_hash(tenant, repo, owner, h).await,
        }
    }

    /// `GET /commits/{owner}/{repo}/{ref}`.
    #[instrument(name = "prompts.pull", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn pull(&self, caller: TenantId, owner: &str, handle: &str, reference: &str) -> Result<(PromptCommit, CommitRef), ApiError> {
        let r = CommitRef::parse(reference).map_err(ApiError::unprocessable)?;
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        let commit = self.resolve(tenant, &repo, owner, &r).await?;
        let by = match r {
            CommitRef::Latest => "latest",
            CommitRef::Tag(_) => "tag",
            CommitRef::Hash(_) => "hash",
        };
        metrics::counter!("sextant_prompt_pulls_total", "by" => by).increment(1);
        Ok((commit, r))
    }

    /// `GET /commits/{owner}/{repo}`: newest first, with the total; only the commit a tag
    /// points at if `tag` is given.
    #[instrument(name = "prompts.list_commits", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn list_commits(
        &self,
        caller: TenantId,
        owner: &str,
        handle: &str,
        offset: usize,
        limit: usize,
        tag: Option<&str>,
    ) -> Result<(Vec<PromptCommit>, u64), ApiError> {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        if let Some(tag) = tag {
            check_tag_name(tag).map_err(|e| ApiError::unprocessable(format!("tag: {e}")))?;
            let c = self.resolve(tenant, &repo, owner, &CommitRef::Tag(tag.to_owned())).await?;
            return Ok((if offset == 0 { vec![c] } else { Vec::new() }, 1));
        }
        let page = self.store.list_commits(tenant, repo.id, offset, limit).await.map_err(storage_error)?;
        Ok((page.commits, page.total))
    }

    /// What changed from one ref to another.
    #[instrument(name = "prompts.diff", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn diff(
        &self,
        caller: TenantId,
        owner: &str,
        handle: &str,
        from: &str,
        to: &str,
    ) -> Result<(PromptCommit, PromptCommit, Vec<ManifestChange>), ApiError> {
        let from_ref = CommitRef::parse(from).map_err(|e| ApiError::unprocessable(format!("from: {e}")))?;
        let to_ref = CommitRef::parse(to).map_err(|e| ApiError::unprocessable(format!("to: {e}")))?;
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        let a = self.resolve(tenant, &repo, owner, &from_ref).await?;
        let b = self.resolve(tenant, &repo, owner, &to_ref).await?;
        let changes = diff_manifests(&a.manifest.to_value_or_null(), &b.manifest.to_value_or_null());
        Ok((a, b, changes))
    }

    // ---- tags ----

    /// A tag as of a time (`None`: now); 404 if it did not exist then.
    async fn tag_state(
        &self,
        tenant: TenantId,
        repo: &PromptRepo,
        owner: &str,
        tag: &str,
        as_of: Option<Timestamp>,
    ) -> Result<TagState, ApiError> {
        let moves = self.store.tag_moves(tenant, repo.id, Some(tag)).await.map_err(storage_error)?;
        match tags_as_of(&moves, as_of).remove(tag) {
            Some((commit, moved_at)) => Ok(TagState { tag: tag.to_owned(), commit, moved_at }),
            None => Err(ApiError::not_found(match as_of {
                None => format!("prompt {owner}/{} has no tag {tag}", repo.handle),
                Some(t) => format!("prompt {owner}/{} had no tag {tag} at {}", repo.handle, t.to_iso()),
            })),
        }
    }

    /// Points `tag` at a commit (creating or moving it). `target` is a ref (`latest`, a hash or
    /// another tag) or, as the SDK sends it, a commit id.
    #[instrument(name = "prompts.set_tag", skip_all, fields(tenant = %caller, prompt = %handle, tag = %tag))]
    pub async fn set_tag(&self, caller: TenantId, owner: &str, handle: &str, tag: &str, target: &TagTarget) -> Result<TagState, ApiError> {
        check_tag_name(tag).map_err(|e| ApiError::unprocessable(format!("tag_name: {e}")))?;
        let (tenant, repo) = self.find(caller, owner, handle, true).await?;
        let _guard = self.lock(tenant, repo.id).lock().await;
        let commit = match target {
            TagTarget::Ref(r) => {
                let r = CommitRef::parse(r).map_err(|e| ApiError::unprocessable(format!("commit: {e}")))?;
                self.resolve(tenant, &repo, owner, &r).await?
            }
            TagTarget::CommitId(id) => {
                let prefix = hash_prefix_of_id(*id);
                self.store
                    .commits_by_prefix(tenant, repo.id, &prefix, 1)
                    .await
                    .map_err(storage_error)?
                    .into_iter()
                    .find(|c| c.id() == *id)
                    .ok_or_else(|| ApiError::not_found(format!("prompt {owner}/{handle} has no commit with id {id}")))?
            }
        };
        let at = self.next_move_time(tenant, &repo).await?;
        let m = TagMove { repo_id: repo.id, tag: tag.to_owned(), commit: Some(commit.hash.clone()), at };
        self.commit(tenant, vec![PromptChange::Tag(m)]).await?;
        metrics::counter!("sextant_prompt_tag_moves_total").increment(1);
        Ok(TagState { tag: tag.to_owned(), commit: commit.hash, moved_at: at })
    }

    /// Deletes a tag (a move to nothing: its history is kept).
    #[instrument(name = "prompts.delete_tag", skip_all, fields(tenant = %caller, prompt = %handle, tag = %tag))]
    pub async fn delete_tag(&self, caller: TenantId, owner: &str, handle: &str, tag: &str) -> Result<(), ApiError> {
        check_tag_name(tag).map_err(|e| ApiError::unprocessable(format!("tag: {e}")))?;
        let (tenant, repo) = self.find(caller, owner, handle, true).await?;
        let _guard = self.lock(tenant, repo.id).lock().await;
        self.tag_state(tenant, &repo, owner, tag, None).await?;
        let at = self.next_move_time(tenant, &repo).await?;
        self.commit(tenant, vec![PromptChange::Tag(TagMove { repo_id: repo.id, tag: tag.to_owned(), commit: None, at })]).await
    }

    /// After every move of the repository's tags, so a history never has two moves at once.
    async fn next_move_time(&self, tenant: TenantId, repo: &PromptRepo) -> Result<Timestamp, ApiError> {
        let moves = self.store.tag_moves(tenant, repo.id, None).await.map_err(storage_error)?;
        Ok(moves.iter().map(|m| m.at).max().map_or_else(Timestamp::now, after))
    }

    /// Every tag as of a time (`None`: now), by name.
    #[instrument(name = "prompts.tags", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn tags(&self, caller: TenantId, owner: &str, handle: &str, as_of: Option<Timestamp>) -> Result<Vec<TagState>, ApiError> {
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        let moves = self.store.tag_moves(tenant, repo.id, None).await.map_err(storage_error)?;
        Ok(tags_as_of(&moves, as_of).into_iter().map(|(tag, (commit, moved_at))| TagState { tag, commit, moved_at }).collect())
    }

    /// One tag as of a time (`None`: now): "what did production point at on Tuesday at 14:00".
    #[instrument(name = "prompts.tag", skip_all, fields(tenant = %caller, prompt = %handle, tag = %tag))]
    pub async fn tag(
        &self,
        caller: TenantId,
        owner: &str,
        handle: &str,
        tag: &str,
        as_of: Option<Timestamp>,
    ) -> Result<TagState, ApiError> {
        check_tag_name(tag).map_err(|e| ApiError::unprocessable(format!("tag: {e}")))?;
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        self.tag_state(tenant, &repo, owner, tag, as_of).await
    }

    /// Every move of a tag, oldest first (`commit` is `None` for a deletion).
    #[instrument(name = "prompts.tag_history", skip_all, fields(tenant = %caller, prompt = %handle, tag = %tag))]
    pub async fn tag_history(&self, caller: TenantId, owner: &str, handle: &str, tag: &str) -> Result<Vec<TagMove>, ApiError> {
        check_tag_name(tag).map_err(|e| ApiError::unprocessable(format!("tag: {e}")))?;
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        let mut moves = self.store.tag_moves(tenant, repo.id, Some(tag)).await.map_err(storage_error)?;
        if moves.is_empty() {
            return Err(ApiError::not_found(format!("prompt {owner}/{handle} never had a tag {tag}")));
        }
        moves.sort_by_key(|m| m.at);
        Ok(moves)
    }

    // ---- variants ----

    /// Replaces the A/B split; every variant must name a tag that exists. An empty split
    /// removes it.
    #[instrument(name = "prompts.set_variants", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn set_variants(&self, caller: TenantId, owner: &str, handle: &str, variants: Vec<Variant>) -> Result<RepoView, ApiError> {
        let variants = check_variants(variants).map_err(|e| ApiError::unprocessable(format!("variants: {e}")))?;
        let (tenant, repo) = self.find(caller, owner, handle, true).await?;
        let _guard = self.lock(tenant, repo.id).lock().await;
        let mut repo = self.reread(tenant, &repo).await?;
        for v in &variants {
            self.tag_state(tenant, &repo, owner, &v.tag, None)
                .await
                .map_err(|e| ApiError::not_found(format!("{} (variants name existing tags)", e.message)))?;
        }
        repo.variants = variants;
        let repo = self.put_definition(tenant, repo).await?;
        self.view(tenant, repo).await
    }

    /// The variant `user_id` is assigned to (stable while the split does not change) and the
    /// commit its tag points at now.
    #[instrument(name = "prompts.assign", skip_all, fields(tenant = %caller, prompt = %handle))]
    pub async fn assign(&self, caller: TenantId, owner: &str, handle: &str, user_id: &str) -> Result<Assignment, ApiError> {
        if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
            return Err(ApiError::unprocessable(format!("user_id: 1 to {MAX_USER_ID_BYTES} bytes")));
        }
        let (tenant, repo) = self.find(caller, owner, handle, false).await?;
        let variant = assign_variant(&repo.handle, user_id, &repo.variants).cloned().ok_or_else(|| {
            ApiError::conflict(format!("prompt {owner}/{handle} has no variants: set them with PUT /repos/{owner}/{handle}/variants"))
        })?;
        let state = self.tag_state(tenant, &repo, owner, &variant.tag, None).await.map_err(|e| {
            ApiError::conflict(format!("variant {} cannot be served: {}; fix the variants or the tag", variant.tag, e.message))
        })?;
        let commit = self
            .store
            .get_commit(tenant, repo.id, &state.commit)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::conflict(format!("variant {} points at a missing commit", variant.tag)))?;
        metrics::counter!("sextant_prompt_assignments_total").increment(1);
        Ok(Assignment { variant, commit })
    }
}

/// What a tag is pointed at.
#[derive(Debug, Clone)]
pub enum TagTarget {
    /// `latest`, a hash (or prefix) or another tag.
    Ref(String),
    /// A commit's UUID, as `create_commit(tags=...)` sends it.
    CommitId(Uuid),
}

/// One microsecond after `t`, or now if that is later: stamps that order after what they follow.
fn after(t: Timestamp) -> Timestamp {
    Timestamp(Timestamp::now().micros().max(t.micros() + 1))
}

/// "a prompt", "an agent", "a skill": for messages.
pub fn a_kind(t: RepoType) -> &'static str {
    match t {
        RepoType::Prompt => "a prompt",
        RepoType::Agent => "an agent",
        RepoType::Skill => "a skill",
    }
}

fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))
}

fn opt_text(o: &Map<String, Value>, k: &str, max: usize) -> Result<Option<String>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > max => Err(ApiError::unprocessable(format!("{k}: longer than {max} bytes"))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::unprocessable(format!("{k}: expected a string"))),
    }
}

fn opt_bool(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::unprocessable(format!("{k}: expected true or false"))),
    }
}

/// A repository's labels (`tags` in the API), deduplicated in the order given.
fn labels(v: Option<&Value>) -> Result<Option<Vec<String>>, ApiError> {
    let a = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::unprocessable("tags: expected a list of strings")),
    };
    if a.len() > MAX_LABELS {
        return Err(ApiError::unprocessable(format!("tags: at most {MAX_LABELS}")));
    }
    let mut out: Vec<String> = Vec::with_capacity(a.len());
    for (i, t) in a.iter().enumerate() {
        let t = t.as_str().ok_or_else(|| ApiError::unprocessable(format!("tags[{i}]: expected a string")))?;
        check_label(t).map_err(|e| ApiError::unprocessable(format!("tags[{i}]: {e}")))?;
        if !out.iter().any(|x| x == t) {
            out.push(t.to_owned());
        }
    }
    Ok(Some(out))
}

/// Variants as REST sends them: `{"production": 90, "canary": 10}` (tag → whole-number weight).
pub fn variants_from_json(v: &Value) -> Result<Vec<Variant>, ApiError> {
    let o = v.as_object().ok_or_else(|| ApiError::unprocessable("variants: expected an object of tag → weight"))?;
    o.iter()
        .map(|(tag, w)| {
            let weight = w.as_u64().filter(|w| *w <= u64::from(u32::MAX)).ok_or_else(|| {
                ApiError::unprocessable(format!("variants.{}: the weight must be a whole number, e.g. 90", truncate(tag)))
            })?;
            Ok(Variant { tag: tag.clone(), weight: weight as u32 })
        })
        .collect()
}
