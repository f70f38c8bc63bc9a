//! Agents and skills: hub repositories whose commits are directories (a tree of files, and
//! links to other agents and skills) instead of LangChain manifests. The SDK's `push_agent`,
//! `pull_skill`, ... call `/v1/platform/hub/repos/{owner}/{repo}/directories`.
//!
//! A directory commit is an ordinary commit of the repository (same hashing, parents, tags,
//! events and store), whose manifest is the whole tree as canonical JSON:
//! `{"files": {path: entry}}`. A push sends only what changes (`null` deletes a path) and is
//! applied to its parent's tree. A stored link names its repository and how its commit is
//! chosen (`LATEST`, or `COMMIT` with a commit id); a pull resolves it to a commit hash then,
//! so an agent that follows a skill's latest sees the skill's new commits without a push.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use sextant_core::prompt::{
    canonical_json, hash_prefix_of_id, tenant_from_handle, tenant_handle, CommitRef, PromptCommit, PromptRepo, RepoType, MAX_MANIFEST_BYTES,
};
use sextant_core::{RawJson, TenantId};
use sextant_proto::{truncate, ApiError};

use super::{a_kind, object, storage_error, Prompts};

/// Longest path of a file or link.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most paths one directory (and one push) holds.
pub const MAX_ENTRIES: usize = 10_000;

/// A path is relative and normalised: `/`-separated segments, none empty, `.` or `..`, no
/// control characters.
fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > MAX_PATH_BYTES {
        return Err(format!("a path is 1 to {MAX_PATH_BYTES} bytes"));
    }
    if p.chars().any(char::is_control) {
        return Err("a path has no control characters".into());
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err("a path is relative, with no empty, \".\" or \"..\" segments (e.g. \"tools/search.md\")".into());
    }
    Ok(())
}

/// A link as a push gives it, checked for shape (the linked repository is checked later).
struct LinkRequest {
    kind: RepoType,
    owner: Option<String>,
    handle: String,
    /// `COMMIT` selector: the commit's id.
    pin: Option<Uuid>,
}

enum EntryRequest {
    Delete,
    File(String),
    Link(LinkRequest),
}

fn entry_request(v: &Value) -> Result<EntryRequest, String> {
    let o = match v {
        Value::Null => return Ok(EntryRequest::Delete),
        Value::Object(o) => o,
        _ => return Err("expected an entry object ({\"type\": \"file\", \"content\": ...}) or null to delete the path".into()),
    };
    let kind = o.get("type").and_then(Value::as_str).ok_or("type: required (file, agent or skill)")?;
    let kind = match kind {
        "file" => {
            let content = o.get("content").and_then(Value::as_str).ok_or("content: required (a string) for a file")?;
            return Ok(EntryRequest::File(content.to_owned()));
        }
        "agent" => RepoType::Agent,
        "skill" => RepoType::Skill,
        other => return Err(format!("type: {:?} is not file, agent or skill", truncate(other))),
    };
    let handle = o.get("repo_handle").and_then(Value::as_str).ok_or("repo_handle: required (a string) for a link")?;
    let owner = match o.get("owner") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("owner: expected a string (a hub handle, or \"-\")".into()),
    };
    let selector = o.get("selector").filter(|s| !s.is_null());
    // `commit_id` is the deprecated way to pin: accepted and ignored (the link follows the
    // latest commit), as LangSmith documents.
    if selector.is_some() && o.get("commit_id").is_some_and(|c| !c.is_null()) {
        return Err("commit_id and selector are mutually exclusive: pin with selector {\"type\": \"COMMIT\", \"commit_id\"}".into());
    }
    let pin = match selector {
        None => None,
        Some(s) => match s.get("type").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("LATEST") => None,
            Some(t) if t.eq_ignore_ascii_case("COMMIT") => {
                let id = s.get("commit_id").and_then(Value::as_str).ok_or("selector.commit_id: required (a commit id) for COMMIT")?;
                Some(Uuid::try_parse(id).map_err(|_| format!("selector.commit_id: {:?} is not a commit id (a UUID)", truncate(id)))?)
            }
            _ => return Err("selector: expected {\"type\": \"LATEST\"} or {\"type\": \"COMMIT\", \"commit_id\": ...}".into()),
        },
    };
    Ok(EntryRequest::Link(LinkRequest { kind, owner, handle: handle.to_owned(), pin }))
}

/// The tree a directory commit holds (empty for none).
fn tree_of(c: Option<&PromptCommit>) -> BTreeMap<String, Value> {
    let Some(c) = c else { return BTreeMap::new() };
    match c.manifest.to_value_or_null().get_mut("files").map(Value::take) {
        Some(Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

impl Prompts {
    /// The agent or skill a path names; 404 for a prompt (or, with `want`, another type).
    async fn find_directory(
        &self,
        caller: TenantId,
        owner: &str,
        handle: &str,
        want: Option<RepoType>,
        write: bool,
    ) -> Result<(TenantId, PromptRepo), ApiError> {
        let noun = want.map_or("agent or skill", RepoType::as_str);
        let (tenant, repo) = self.find_named(caller, owner, handle, write, noun).await?;
        let wanted = match want {
            Some(w) => w == repo.repo_type,
            None => repo.repo_type.is_directory(),
        };
        if !wanted {
            let asked = want.map_or("an agent or a skill", a_kind);
            return Err(ApiError::not_found(format!("{owner}/{handle} is {}, not {asked}", a_kind(repo.repo_type))));
        }
        Ok((tenant, repo))
    }

    /// Checks a link of `tenant`'s directory `dir` and gives its stored form.
    async fn stored_link(&self, tenant: TenantId, dir: &PromptRepo, l: &LinkRequest) -> Result<Value, String> {
        let target = match l.owner.as_deref() {
            None | Some("-") => tenant,
            Some(o) => tenant_from_handle(o).ok_or_else(|| format!("owner: unknown owner {:?}", truncate(o)))?,
        };
        if target == tenant && l.handle == dir.handle {
            return Err("a directory cannot link to itself".into());
        }
        // Named as the pushed entry names it: "-" for the pushing tenant's own.
        let owner = if target == tenant { "-".to_owned() } else { tenant_handle(target) };
        let (t, repo) = self.find_named(tenant, &owner, &l.handle, false, l.kind.as_str()).await.map_err(|e| e.message)?;
        if repo.repo_type != l.kind {
            return Err(format!("{owner}/{} is {}, not {}", l.handle, a_kind(repo.repo_type), a_kind(l.kind)));
        }
        let selector = match l.pin {
            None => {
                self.resolve(t, &repo, &owner, &CommitRef::Latest).await.map_err(|e| e.message)?;
                json!({"type": "LATEST"})
            }
            Some(id) => {
                self.commit_by_id(t, &repo, id).await?.ok_or_else(|| format!("{owner}/{} has no commit with id {id}", l.handle))?;
                json!({"type": "COMMIT", "commit_id": id})
            }
        };
        let mut v = json!({"type": l.kind.as_str(), "repo_handle": l.handle, "selector": selector});
        if target != tenant {
            v["owner"] = json!(tenant_handle(target));
        }
        Ok(v)
    }

    async fn commit_by_id(&self, tenant: TenantId, repo: &PromptRepo, id: Uuid) -> Result<Option<PromptCommit>, String> {
        let found = self.store.commits_by_prefix(tenant, repo.id, &hash_prefix_of_id(id), 1).await.map_err(|e| storage_error(e).message)?;
        Ok(found.into_iter().find(|c| c.id() == id))
    }

    /// A stored entry as a pull shows it: a link with the commit it resolves to now (`null`
    /// when its repository or pinned commit is gone).
    async fn entry_json(&self, tenant: TenantId, stored: &Value) -> Value {
        if stored.get("type").and_then(Value::as_str) == Some("file") {
            return stored.clone();
        }
        let handle = stored.get("repo_handle").and_then(Value::as_str).unwrap_or_default();
        let owner = stored.get("owner").and_then(Value::as_str).map_or_else(|| tenant_handle(tenant), str::to_owned);
        let pin = stored.pointer("/selector/commit_id").and_then(Value::as_str).and_then(|s| Uuid::try_parse(s).ok());
        let commit = match self.find(tenant, &owner, handle, false).await {
            Ok((t, repo)) => match pin {
                Some(id) => self.commit_by_id(t, &repo, id).await.ok().flatten(),
                None => self.resolve(t, &repo, &owner, &CommitRef::Latest).await.ok(),
            },
            Err(_) => None,
        };
        let mut v = stored.clone();
        v["owner"] = json!(owner);
        v["commit_hash"] = json!(commit.as_ref().map(|c| c.hash.as_str()));
        v["commit_id"] = json!(commit.as_ref().map(PromptCommit::id));
        v
    }

    /// `GET .../directories?commit=&repo_type=`: the commit `reference` names (default
    /// `latest`) and its files by path, links resolved.
    pub async fn pull_directory(
        &self,
        caller: TenantId,
        owner: &str,
        handle: &str,
        reference: Option<&str>,
        want: Option<RepoType>,
    ) -> Result<(PromptCommit, Map<String, Value>), ApiError> {
        let r = CommitRef::parse(reference.unwrap_or(sextant_core::prompt::LATEST))
            .map_err(|e| ApiError::unprocessable(format!("commit: {e}")))?;
        let (tenant, repo) = self.find_directory(caller, owner, handle, want, false).await?;
        let commit = self.resolve(tenant, &repo, owner, &r).await?;
        let mut files = Map::new();
        for (path, stored) in tree_of(Some(&commit)) {
            let v = self.entry_json(tenant, &stored).await;
            files.insert(path, v);
        }
        metrics::counter!("sextant_prompt_pulls_total", "by" => "directory").increment(1);
        Ok((commit, files))
    }

    /// `POST .../directories/commits {"files": {path: entry | null}, "parent_commit"?}`: a new
    /// commit whose tree is the parent's with these paths created, replaced or (null) deleted.
    /// A push that changes nothing is a 409 "Nothing to commit", as for prompts.
    pub async fn commit_directory(&self, caller: TenantId, owner: &str, handle: &str, body: &Value) -> Result<PromptCommit, ApiError> {
        let o = object(body)?;
        let changes = match o.get("files") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(ApiError::unprocessable("files: expected an object of path → entry (or null to delete)")),
        };
        if changes.len() > MAX_ENTRIES {
            return Err(ApiError::unprocessable(format!("files: at most {MAX_ENTRIES} paths")));
        }
        let parent_ref = match o.get("parent_commit") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == sextant_core::prompt::LATEST => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(ApiError::unprocessable("parent_commit: expected a commit hash or null")),
        };
        let (tenant, repo) = self.find_directory(caller, owner, handle, None, true).await?;
        // Every entry is checked (links resolved) before the repository is locked.
        let mut delta: Vec<(String, Option<Value>)> = Vec::with_capacity(changes.len());
        for (path, v) in &changes {
            let bad = |e: String| ApiError::unprocessable(format!("files[{:?}]: {e}", truncate(path)));
            check_path(path).map_err(bad)?;
            let stored = match entry_request(v).map_err(bad)? {
                EntryRequest::Delete => None,
                EntryRequest::File(content) => Some(json!({"type": "file", "content": content})),
                EntryRequest::Link(l) => Some(self.stored_link(tenant, &repo, &l).await.map_err(bad)?),
            };
            delta.push((path.clone(), stored));
        }
        let _guard = self.lock(tenant, repo.id).lock().await;
        let repo = self.reread(tenant, &repo).await?;
        let latest = self.store.list_commits(tenant, repo.id, 0, 1).await.map_err(storage_error)?.commits.into_iter().next();
        let parent = self.parent_commit(tenant, &repo, owner, parent_ref, latest.as_ref()).await?;
        let before = tree_of(parent.as_ref());
        let mut tree = before.clone();
        for (path, entry) in delta {
            match entry {
                Some(e) => tree.insert(path, e),
                // Deleting a path that is not there changes nothing (a retried push succeeds).
                None => tree.remove(&path),
            };
        }
        if tree == before {
            return Err(ApiError::conflict(match &parent {
                Some(p) => format!("Nothing to commit: the files are identical to the parent commit {}", p.short_hash()),
                None => "Nothing to commit: give at least one file".to_owned(),
            }));
        }
        if tree.len() > MAX_ENTRIES {
            return Err(ApiError::unprocessable(format!("files: a directory holds at most {MAX_ENTRIES} paths")));
        }
        let text = canonical_json(&json!({"files": tree}));
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ApiError::unprocessable(format!(
                "files: the directory would be {} bytes, over the limit of {MAX_MANIFEST_BYTES}",
                text.len()
            )));
        }
        let manifest = RawJson::parse(&text).map_err(|e| ApiError::unprocessable(format!("files: {e}")))?;
        self.write_commit(tenant, repo, latest.as_ref(), parent, manifest, None).await
    }

    /// `DELETE .../directories?repo_type=`: deletes the agent or skill (its files are in its
    /// commits, so nothing else is left behind).
    pub async fn delete_directory(&self, caller: TenantId, owner: &str, handle: &str, want: Option<RepoType>) -> Result<(), ApiError> {
        self.find_directory(caller, owner, handle, want, true).await?;
        self.delete_repo(caller, owner, handle).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_and_normalised() {
        for ok in ["a", "tools/search.md", "AGENTS.md", "a b/ü.txt", ".github/x"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a/", "a//b", "./a", "a/../b", "..", "a\u{0}b", "a\nb", &"x".repeat(MAX_PATH_BYTES + 1)] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_parse_files_links_selectors_and_deletes() {
        assert!(matches!(entry_request(&Value::Null), Ok(EntryRequest::Delete)));
        assert!(matches!(entry_request(&json!({"type": "file", "content": "x"})), Ok(EntryRequest::File(c)) if c == "x"));
        let Ok(EntryRequest::Link(l)) = entry_request(&json!({"type": "skill", "repo_handle": "s", "commit_id": "ignored"})) else {
            panic!("a link")
        };
        assert!(l.kind == RepoType::Skill && l.pin.is_none() && l.owner.is_none(), "a deprecated commit_id follows the latest");
        let id = Uuid::now_v7();
        let Ok(EntryRequest::Link(l)) =
            entry_request(&json!({"type": "agent", "repo_handle": "a", "owner": "local", "selector": {"type": "COMMIT", "commit_id": id}}))
        else {
            panic!("a link")
        };
        assert_eq!((l.pin, l.owner.as_deref()), (Some(id), Some("local")));
        for (bad, says) in [
            (json!({"type": "file"}), "content"),
            (json!({"content": "x"}), "type"),
            (json!({"type": "folder"}), "not file, agent or skill"),
            (json!({"type": "skill"}), "repo_handle"),
            (json!({"type": "skill", "repo_handle": "s", "selector": {"type": "COMMIT"}}), "selector.commit_id"),
            (json!({"type": "skill", "repo_handle": "s", "selector": {"type": "COMMIT", "commit_id": "nope"}}), "not a commit id"),
            (json!({"type": "skill", "repo_handle": "s", "selector": {"type": "NEWEST"}}), "selector"),
            (json!({"type": "skill", "repo_handle": "s", "commit_id": id, "selector": {"type": "LATEST"}}), "mutually exclusive"),
            (json!("text"), "entry object"),
        ] {
            match entry_request(&bad) {
                Err(e) => assert!(e.contains(says), "{bad}: {e}"),
                Ok(_) => panic!("{bad} was accepted"),
            }
        }
    }
}
