//! Prompts, versioned like code: a repository (`owner/name`) holds commits, each a LangChain
//! manifest (the serialised prompt object the SDK pushes) addressed by a SHA-256 over its
//! canonical JSON and its parent's hash. Tags (`production`, `staging`, ...) point at commits
//! and every move is kept, so "what did production point at on Tuesday at 14:00" has an
//! answer. Variants split users between tags by weight, with a stable hash of the user id.
//!
//! Event-sourced like datasets: every write is a [`PromptChange`]; commits are immutable and
//! keyed by hash, tag moves by (tag, time), definitions are last-writer-wins by `updated_at`,
//! so replaying changes in any order, any number of times, gives the same state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{RawJson, RepoId, TenantId, Timestamp};

/// The ref that names a repository's newest commit.
pub const LATEST: &str = "latest";
/// Hex characters of a commit's short hash (what the SDK puts in URLs).
pub const SHORT_HASH_LEN: usize = 8;
/// Hex characters of a full commit hash (SHA-256).
pub const FULL_HASH_LEN: usize = 64;
/// Shortest hash prefix a pull accepts.
pub const MIN_HASH_PREFIX: usize = 4;
pub const MAX_HANDLE_BYTES: usize = 128;
pub const MAX_TAG_NAME_LEN: usize = 64;
/// A repository's labels (`tags` in `POST /repos`), not to be confused with commit tags.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_BYTES: usize = 64;
/// Canonical manifest size: a commit travels in one event (JetStream's default limit is 1 MiB).
pub const MAX_MANIFEST_BYTES: usize = 512 * 1024;
/// The SDK documents commit descriptions as at most 1000 characters.
pub const MAX_COMMIT_DESCRIPTION_CHARS: usize = 1000;
pub const MAX_VARIANTS: usize = 16;
pub const MAX_VARIANT_WEIGHT: u32 = 1_000_000;

/// A prompt repository: its definition, without commits or tags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptRepo {
    pub id: RepoId,
    /// The name (`repo_handle`), unique per tenant, never changed.
    pub handle: String,
    pub description: Option<String>,
    pub readme: Option<String>,
    /// Labels for search (`tags` in the LangSmith API).
    pub labels: Vec<String>,
    pub is_public: bool,
    pub is_archived: bool,
    /// The A/B split between commit tags; empty when the prompt has none.
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// What its commits hold. Absent in what was written before agents and skills existed,
    /// and left out for prompts, so prompt events read the same by older and newer readers.
    #[serde(default, skip_serializing_if = "RepoType::is_prompt")]
    pub repo_type: RepoType,
    pub created_at: Timestamp,
    /// The newest definition wins; pushes move it too (lists sort by it).
    pub updated_at: Timestamp,
}

/// What a repository's commits hold: a LangChain manifest (a prompt), or a directory of files
/// and links to other directories (an agent or a skill, the hub's "context" repositories).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    #[default]
    Prompt,
    Agent,
    Skill,
}

impl RepoType {
    pub const ALL: [RepoType; 3] = [RepoType::Prompt, RepoType::Agent, RepoType::Skill];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prompt => "prompt",
            Self::Agent => "agent",
            Self::Skill => "skill",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn is_prompt(&self) -> bool {
        *self == Self::Prompt
    }

    /// Whether its commits are directories (`/v1/platform/hub/repos/.../directories`).
    pub fn is_directory(self) -> bool {
        matches!(self, Self::Agent | Self::Skill)
    }
}

/// The hub handle of a tenant (`GET /settings` `tenant_handle`, the `owner` in
/// `owner/prompt`): derived from its id, so it is stable, needs no registry, and maps back to
/// the tenant ([`tenant_from_handle`]). The single tenant of an open server is `local`.
pub fn tenant_handle(t: TenantId) -> String {
    if t == crate::LOCAL_TENANT {
        LOCAL_HANDLE.to_owned()
    } else {
        format!("t-{}", t.0.simple())
    }
}

/// The handle of [`crate::LOCAL_TENANT`].
pub const LOCAL_HANDLE: &str = "local";

/// The tenant a hub owner names: its handle, or its id (as earlier versions of the hub took).
pub fn tenant_from_handle(owner: &str) -> Option<TenantId> {
    if owner == LOCAL_HANDLE {
        return Some(crate::LOCAL_TENANT);
    }
    if let Some(hex) = owner.strip_prefix("t-") {
        // Only the form `tenant_handle` writes: 32 lowercase hex digits.
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Uuid::parse_str(hex).ok().map(TenantId);
        }
        return None;
    }
    Uuid::try_parse(owner).ok().map(TenantId)
}

/// One arm of an A/B split: users are sent to the commit `tag` points at, `weight` out of the
/// sum of the weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub tag: String,
    pub weight: u32,
}

/// One commit: immutable, addressed by its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptCommit {
    pub repo_id: RepoId,
    /// Lowercase hex SHA-256 of the parent's hash and the canonical manifest ([`commit_hash`]).
    pub hash: String,
    /// The full hash of the commit this one was pushed on top of.
    pub parent: Option<String>,
    /// The manifest's canonical JSON (keys sorted, no whitespace).
    pub manifest: RawJson,
    pub description: Option<String>,
    /// Strictly increasing within a repository: the commit order.
    pub created_at: Timestamp,
}

impl PromptCommit {
    pub fn short_hash(&self) -> &str {
        &self.hash[..SHORT_HASH_LEN.min(self.hash.len())]
    }

    /// The commit's UUID (the SDK tags a commit by `commit_id`).
    pub fn id(&self) -> Uuid {
        commit_id(&self.hash)
    }

    pub fn parent_id(&self) -> Option<Uuid> {
        self.parent.as_deref().map(commit_id)
    }
}

/// A commit's UUID: the first 128 bits of its hash, so a `commit_id` is also a hash prefix
/// (its 32 hex digits) and needs no index of its own.
pub fn commit_id(hash: &str) -> Uuid {
    let mut b = [0u8; 16];
    if let Ok(v) = hex::decode(hash.get(..32).unwrap_or_default()) {
        b.copy_from_slice(&v);
    }
    Uuid::from_bytes(b)
}

/// The hash prefix a `commit_id` stands for.
pub fn hash_prefix_of_id(id: Uuid) -> String {
    id.simple().to_string()
}

/// A move of a commit tag: `commit` is the full hash it points at from `at` on, `None` when
/// the tag was deleted then. The tag's history is its moves in time order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagMove {
    pub repo_id: RepoId,
    pub tag: String,
    pub commit: Option<String>,
    pub at: Timestamp,
}

/// A change to the prompt hub: the payload of `PromptChangedV1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PromptChange {
    /// Created, or its definition replaced; the newest `updated_at` wins.
    Repo(PromptRepo),
    /// The repository with its commits, tags and likes; rows older than `at` stay deleted.
    DeleteRepo {
        id: RepoId,
        at: Timestamp,
    },
    Commit(PromptCommit),
    Tag(TagMove),
    /// `by` (a tenant; public prompts can be liked by others) likes or unlikes; newest `at` wins.
    Like {
        repo_id: RepoId,
        by: TenantId,
        liked: bool,
        at: Timestamp,
    },
}

impl PromptChange {
    pub fn repo_id(&self) -> RepoId {
        match self {
            Self::Repo(r) => r.id,
            Self::DeleteRepo { id, .. } => *id,
            Self::Commit(c) => c.repo_id,
            Self::Tag(m) => m.repo_id,
            Self::Like { repo_id, .. } => *repo_id,
        }
    }
}

// ---- hashing ----

/// A JSON document's canonical text: object keys sorted (by their UTF-8 bytes), no whitespace.
/// Written explicitly rather than trusting serde_json's map order, which a feature of any
/// crate in the build (`preserve_order`) would change.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("a string serialises"));
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&serde_json::to_string(scalar).expect("a scalar serialises")),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// A commit's hash: SHA-256 over a domain tag, the parent's full hash (empty for the first
/// commit) and the canonical manifest. The same manifest on another parent is another commit,
/// as in git.
pub fn commit_hash(canonical_manifest: &str, parent: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(b"sextant.prompt-commit.v1\0");
    h.update(parent.unwrap_or_default().as_bytes());
    h.update(b"\0");
    h.update(canonical_manifest.as_bytes());
    hex::encode(h.finalize())
}

// ---- names ----

/// A repository handle: 1 to 128 of `A-Z a-z 0-9 _ - .`, starting with a letter or digit (it
/// is a URL path segment and part of `owner/name:ref` identifiers).
pub fn check_handle(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_HANDLE_BYTES
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a valid prompt name: 1 to {MAX_HANDLE_BYTES} letters, digits, '_', '-' or '.', starting with a letter or digit",
            shorten(s)
        ))
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A commit tag name: `^[a-z0-9][a-z0-9._-]{0,63}$`, not `latest`, and not hash-like (four or
/// more hex digits only), so a ref is never both a tag and a hash prefix.
pub fn check_tag_name(s: &str) -> Result<(), String> {
    let shape = !s.is_empty()
        && s.len() <= MAX_TAG_NAME_LEN
        && (s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0].is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !shape {
        return Err(format!(
            "{:?} is not a valid tag name: 1 to {MAX_TAG_NAME_LEN} of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            shorten(s)
        ));
    }
    if s == LATEST {
        return Err("\"latest\" is reserved: it always names the newest commit".into());
    }
    if s.len() >= MIN_HASH_PREFIX && is_hex(s) {
        return Err(format!("{s:?} looks like a commit hash: a tag needs a character outside 0-9 and a-f"));
    }
    Ok(())
}

/// A repository label (search tag): 1 to 64 bytes without control characters.
pub fn check_label(s: &str) -> Result<(), String> {
    if s.trim().is_empty() || s.len() > MAX_LABEL_BYTES || s.chars().any(char::is_control) {
        return Err(format!("{:?} is not a valid tag: 1 to {MAX_LABEL_BYTES} bytes without control characters", shorten(s)));
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    let mut t: String = s.chars().take(60).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// What a pull names: the newest commit, a tag, or a hash (full or a prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitRef {
    Latest,
    Tag(String),
    /// Lowercase hex, [`MIN_HASH_PREFIX`] to [`FULL_HASH_LEN`] digits.
    Hash(String),
}

impl CommitRef {
    /// `latest`, a hash (4 to 64 hex digits, any case) or otherwise a tag name. Tag names are
    /// checked here, so a ref that is none of the three is an error naming what it must be.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == LATEST {
            return Ok(Self::Latest);
        }
        if is_hex(s) && (MIN_HASH_PREFIX..=FULL_HASH_LEN).contains(&s.len()) {
            return Ok(Self::Hash(s.to_ascii_lowercase()));
        }
        match check_tag_name(s) {
            Ok(()) => Ok(Self::Tag(s.to_owned())),
            Err(_) => Err(format!(
                "{:?} is not \"latest\", a commit hash ({MIN_HASH_PREFIX} to {FULL_HASH_LEN} hex digits) or a tag name",
                shorten(s)
            )),
        }
    }

    /// Whether the ref can only ever name one commit (a full hash): its answer is immutable.
    pub fn is_full_hash(&self) -> bool {
        matches!(self, Self::Hash(h) if h.len() == FULL_HASH_LEN)
    }
}

// ---- manifests ----

/// A manifest is a serialised LangChain object: `{"lc": 1, "type": "constructor",
/// "id": ["langchain", "prompts", ...], "kwargs": {...}}`.
pub fn check_manifest(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("manifest: expected a JSON object (a serialised LangChain prompt)")?;
    if !o.get("lc").is_some_and(Value::is_number) {
        return Err("manifest.lc: expected a number (the LangChain serialisation version)".into());
    }
    if !o.get("type").is_some_and(Value::is_string) {
        return Err("manifest.type: expected a string such as \"constructor\"".into());
    }
    match o.get("id") {
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {}
        _ => return Err("manifest.id: expected a non-empty list of strings (the class path)".into()),
    }
    if o.get("kwargs").is_some_and(|k| !k.is_object()) {
        return Err("manifest.kwargs: expected a JSON object".into());
    }
    Ok(())
}

fn class_path(v: &Value) -> Vec<&str> {
    v.get("id").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// The prompt of a manifest that carries a model (`prompt | model`, serialised as a
/// `RunnableSequence` whose first step is a prompt), for pulls without `include_model`; `None`
/// when the manifest is a prompt alone.
pub fn prompt_without_model(manifest: &Value) -> Option<&Value> {
    if class_path(manifest).last() != Some(&"RunnableSequence") {
        return None;
    }
    let first = manifest.get("kwargs")?.get("first")?;
    class_path(first).contains(&"prompts").then_some(first)
}

// ---- tags ----

/// Each tag's commit and when it moved there, as of a time (`None`: now): per tag, the newest
/// move at or before it; a tag whose newest move is a deletion is absent.
pub fn tags_as_of(moves: &[TagMove], as_of: Option<Timestamp>) -> BTreeMap<String, (String, Timestamp)> {
    let mut newest: BTreeMap<&str, &TagMove> = BTreeMap::new();
    for m in moves.iter().filter(|m| as_of.is_none_or(|t| m.at <= t)) {
        let slot = newest.entry(m.tag.as_str()).or_insert(m);
        if m.at > slot.at {
            *slot = m;
        }
    }
    newest.into_iter().filter_map(|(tag, m)| m.commit.clone().map(|c| (tag.to_owned(), (c, m.at)))).collect()
}

// ---- variants ----

/// Checks a split: at most [`MAX_VARIANTS`] distinct valid tags, weights whole numbers up to
/// [`MAX_VARIANT_WEIGHT`] adding up to more than zero. Returns it sorted by tag (the order
/// assignment walks, so the JSON order of a request does not matter).
pub fn check_variants(mut v: Vec<Variant>) -> Result<Vec<Variant>, String> {
    if v.len() > MAX_VARIANTS {
        return Err(format!("at most {MAX_VARIANTS} variants"));
    }
    for x in &v {
        check_tag_name(&x.tag).map_err(|e| format!("variant {e}"))?;
        if x.weight > MAX_VARIANT_WEIGHT {
            return Err(format!("variant {:?}: weight {} is over {MAX_VARIANT_WEIGHT}", x.tag, x.weight));
        }
    }
    v.sort_by(|a, b| a.tag.cmp(&b.tag));
    if let Some(w) = v.windows(2).find(|w| w[0].tag == w[1].tag) {
        return Err(format!("variant {:?} is given twice", w[0].tag));
    }
    if !v.is_empty() && v.iter().all(|x| x.weight == 0) {
        return Err("the weights add up to zero: give at least one variant a positive weight".into());
    }
    Ok(v)
}

/// The bucket a user falls in, stable for a (repository handle, user) pair: the first 64 bits
/// of SHA-256 over both.
pub fn user_bucket(handle: &str, user_id: &str) -> u64 {
    let d = Sha256::new().chain_update(handle.as_bytes()).chain_update([0u8]).chain_update(user_id.as_bytes()).finalize();
    u64::from_be_bytes(d[..8].try_into().expect("32 bytes"))
}

/// The variant a user is assigned to: the same one every time while the split is unchanged;
/// changing one weight moves only the users whose bucket falls across the change. `None` when
/// there is no variant with a positive weight.
pub fn assign_variant<'a>(handle: &str, user_id: &str, variants: &'a [Variant]) -> Option<&'a Variant> {
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut sorted: Vec<&Variant> = variants.iter().collect();
    sorted.sort_by(|a, b| a.tag.cmp(&b.tag));
    // The modulo bias is below total / 2^64: nil for weights up to a million.
    let mut point = user_bucket(handle, user_id) % total;
    for v in sorted {
        let w = u64::from(v.weight);
        if point < w {
            return Some(v);
        }
        point -= w;
    }
    unreachable!("point < total")
}

// ---- diffs ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffOp {
    Add,
    Remove,
    Replace,
}

/// One difference between two manifests, at a JSON Pointer (RFC 6901) path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestChange {
    pub op: DiffOp,
    pub path: String,
    /// The old value (remove, replace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The new value (add, replace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// What changed from `a` to `b`: objects key by key, arrays index by index, anything else
/// replaced whole. Paths are in key order, so two runs give the same list.
pub fn diff_manifests(a: &Value, b: &Value) -> Vec<ManifestChange> {
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<ManifestChange>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = format!("{path}/{}", pointer_token(k));
                    match (x.get(k), y.get(k)) {
                        (Some(u), Some(v)) => walk(u, v, &p, out),
                        (Some(u), None) => out.push(ManifestChange { op: DiffOp::Remove, path: p, from: Some(u.clone()), value: None }),
                        (None, Some(v)) => out.push(ManifestChange { op: DiffOp::Add, path: p, from: None, value: Some(v.clone()) }),
                        (None, None) => {}
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                for i in 0..x.len().max(y.len()) {
                    let p = format!("{path}/{i}");
                    match (x.get(i), y.get(i)) {
                        (Some(u), Some(v)) => walk(u, v, &p, out),
                        (Some(u), None) => out.push(ManifestChange { op: DiffOp::Remove, path: p, from: Some(u.clone()), value: None }),
                        (None, Some(v)) => out.push(ManifestChange { op: DiffOp::Add, path: p, from: None, value: Some(v.clone()) }),
                        (None, None) => {}
                    }
                }
            }
            (u, v) if u == v => {}
            (u, v) => {
                out.push(ManifestChange { op: DiffOp::Replace, path: path.to_owned(), from: Some(u.clone()), value: Some(v.clone()) })
            }
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out
}

// ---- listing ----

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchivedFilter {
    /// Only repositories that are not archived (the SDK's default).
    #[default]
    Exclude,
    Only,
    Any,
}

/// Which of a tenant's repositories `GET /repos` lists (sorting and paging need stats the
/// store keeps apart, so the service does them).
#[derive(Clone, Debug, Default)]
pub struct RepoFilter {
    /// Case-insensitive: part of the handle, the description or a label.
    pub query: Option<String>,
    /// Every one of these labels.
    pub labels: Vec<String>,
    pub is_public: Option<bool>,
    pub archived: ArchivedFilter,
}

impl RepoFilter {
    pub fn matches(&self, r: &PromptRepo) -> bool {
        let query = self.query.as_ref().map(|q| q.to_lowercase()).filter(|q| !q.is_empty());
        let text_ok = query.is_none_or(|q| {
            r.handle.to_lowercase().contains(&q)
                || r.description.as_ref().is_some_and(|d| d.to_lowercase().contains(&q))
                || r.labels.iter().any(|l| l.to_lowercase().contains(&q))
        });
        let archived_ok = match self.archived {
            ArchivedFilter::Exclude => !r.is_archived,
            ArchivedFilter::Only => r.is_archived,
            ArchivedFilter::Any => true,
        };
        text_ok
            && archived_ok
            && self.is_public.is_none_or(|p| r.is_public == p)
            && self.labels.iter().all(|l| r.labels.iter().any(|x| x == l))
    }
}

/// A manifest's canonical text as stored, after checking it.
pub fn canonical_manifest(v: &Value) -> Result<RawJson, String> {
    check_manifest(v)?;
    let text = canonical_json(v);
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(format!("manifest: {} bytes is over the limit of {MAX_MANIFEST_BYTES}", text.len()));
    }
    RawJson::parse(&text).map_err(|e| format!("manifest: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat(template: &str) -> Value {
        json!({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "chat", "ChatPromptTemplate"],
               "kwargs": {"input_variables": ["question"], "messages": [
                   {"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "chat", "HumanMessagePromptTemplate"],
                    "kwargs": {"prompt": {"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
                               "kwargs": {"input_variables": ["question"], "template": template, "template_format": "f-string"}}}}]}})
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_hashes_ignore_formatting() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"z": [1, {"y": 2, "x": "é\"q"}], "c": null}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"z":[1,{"x":"é\"q","y":2}]},"b":1}"#);
        let b: Value = serde_json::from_str(r#"{ "a" : { "z" : [ 1 , { "x":"é\"q", "y":2 } ], "c":null }, "b":1 }"#).unwrap();
        assert_eq!(commit_hash(&canonical_json(&a), None), commit_hash(&canonical_json(&b), None));
    }

    #[test]
    fn a_hash_depends_on_content_and_parent() {
        let m = canonical_json(&chat("{question}"));
        let first = commit_hash(&m, None);
        assert_eq!(first.len(), FULL_HASH_LEN);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(commit_hash(&m, Some(&first)), first, "the same manifest on a parent is another commit");
        assert_ne!(commit_hash(&canonical_json(&chat("Q: {question}")), None), first);
        // Pinned: changing the hash function would orphan every pinned hash in production.
        assert_eq!(commit_hash("{}", None), hex::encode(Sha256::digest(b"sextant.prompt-commit.v1\0\0{}")));
    }

    #[test]
    fn commit_ids_are_hash_prefixes() {
        let h = commit_hash("{}", None);
        let id = commit_id(&h);
        assert!(h.starts_with(&hash_prefix_of_id(id)));
        let c = PromptCommit {
            repo_id: RepoId(Uuid::nil()),
            hash: h.clone(),
            parent: None,
            manifest: RawJson::parse("{}").unwrap(),
            description: None,
            created_at: Timestamp(1),
        };
        assert_eq!(c.short_hash(), &h[..8]);
        assert_eq!(c.id(), id);
        assert_eq!(c.parent_id(), None);
    }

    #[test]
    fn tag_names_are_lowercase_words_never_hash_like() {
        for ok in ["production", "staging", "v1.2", "canary-eu_1", "abc", "0", "prod2026"] {
            assert!(check_tag_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Production", "-x", ".x", "a b", "latest", "dead", "cafe1234", &"a".repeat(65), "é", "a/b", "a:b"] {
            assert!(check_tag_name(bad).is_err(), "{bad}");
        }
        assert!(check_tag_name("deadbeef").unwrap_err().contains("commit hash"));
    }

    #[test]
    fn refs_are_latest_hashes_or_tags() {
        assert_eq!(CommitRef::parse("latest").unwrap(), CommitRef::Latest);
        assert_eq!(CommitRef::parse("ABCD1234").unwrap(), CommitRef::Hash("abcd1234".into()));
        assert_eq!(CommitRef::parse("production").unwrap(), CommitRef::Tag("production".into()));
        assert_eq!(CommitRef::parse("abc").unwrap(), CommitRef::Tag("abc".into()), "too short for a hash: a tag");
        assert!(CommitRef::parse(&"a".repeat(64)).unwrap().is_full_hash());
        assert!(!CommitRef::parse("abcd1234").unwrap().is_full_hash());
        for bad in ["", "Prod", "a b", &"a".repeat(65), "../etc"] {
            assert!(CommitRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handles_are_path_safe() {
        for ok in ["joke-prompt", "a", "My_Prompt.v2", "123"] {
            assert!(check_handle(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a/b", "a:b", "a b", "é", &"a".repeat(129), "."] {
            assert!(check_handle(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifests_must_be_serialised_langchain_objects() {
        assert!(check_manifest(&chat("{q}")).is_ok());
        assert!(check_manifest(&json!([1])).unwrap_err().contains("JSON object"));
        assert!(check_manifest(&json!({"id": ["x"], "type": "constructor"})).unwrap_err().contains("manifest.lc"));
        assert!(check_manifest(&json!({"lc": 1, "id": ["x"]})).unwrap_err().contains("manifest.type"));
        assert!(check_manifest(&json!({"lc": 1, "type": "constructor", "id": []})).unwrap_err().contains("manifest.id"));
        assert!(check_manifest(&json!({"lc": 1, "type": "constructor", "id": [1]})).unwrap_err().contains("manifest.id"));
        assert!(check_manifest(&json!({"lc": 1, "type": "constructor", "id": ["x"], "kwargs": 3})).unwrap_err().contains("kwargs"));
        let big = json!({"lc": 1, "type": "constructor", "id": ["x"], "kwargs": {"t": "a".repeat(MAX_MANIFEST_BYTES)}});
        assert!(canonical_manifest(&big).unwrap_err().contains("over the limit"));
    }

    #[test]
    fn a_model_is_stripped_only_from_prompt_and_model_sequences() {
        let seq = json!({"lc": 1, "type": "constructor", "id": ["langchain", "schema", "runnable", "RunnableSequence"],
                         "kwargs": {"first": chat("{q}"), "last": {"lc": 1, "type": "constructor",
                                    "id": ["langchain", "chat_models", "openai", "ChatOpenAI"], "kwargs": {"model": "gpt-4o"}}}});
        assert_eq!(prompt_without_model(&seq), Some(&chat("{q}")));
        assert_eq!(prompt_without_model(&chat("{q}")), None);
        let not_prompt = json!({"lc": 1, "type": "constructor", "id": ["langchain", "schema", "runnable", "RunnableSequence"],
                                "kwargs": {"first": {"lc": 1, "type": "constructor", "id": ["langchain", "x", "Y"]}}});
        assert_eq!(prompt_without_model(&not_prompt), None);
    }

    fn mv(tag: &str, commit: Option<&str>, at: i64) -> TagMove {
        TagMove { repo_id: RepoId(Uuid::nil()), tag: tag.into(), commit: commit.map(str::to_owned), at: Timestamp(at) }
    }

    #[test]
    fn tags_as_of_replay_history_in_any_order() {
        let mut moves = vec![mv("prod", Some("a"), 10), mv("prod", Some("b"), 20), mv("staging", Some("b"), 15), mv("staging", None, 30)];
        for _ in 0..2 {
            let now = tags_as_of(&moves, None);
            assert_eq!(now.keys().collect::<Vec<_>>(), ["prod"], "a deleted tag is gone");
            assert_eq!(now["prod"], ("b".to_string(), Timestamp(20)));
            assert_eq!(tags_as_of(&moves, Some(Timestamp(19)))["prod"].0, "a", "what prod was at 19");
            assert_eq!(tags_as_of(&moves, Some(Timestamp(25)))["staging"].0, "b");
            assert!(tags_as_of(&moves, Some(Timestamp(5))).is_empty(), "nothing before the first move");
            moves.reverse();
        }
    }

    #[test]
    fn variants_are_checked_and_sorted() {
        let v = |t: &str, w| Variant { tag: t.into(), weight: w };
        assert_eq!(check_variants(vec![v("b", 1), v("a", 3)]).unwrap(), vec![v("a", 3), v("b", 1)]);
        assert!(check_variants(vec![]).unwrap().is_empty(), "no variants: the split is removed");
        assert!(check_variants(vec![v("a", 0)]).unwrap_err().contains("zero"));
        assert!(check_variants(vec![v("a", 1), v("a", 2)]).unwrap_err().contains("twice"));
        assert!(check_variants(vec![v("Bad", 1)]).is_err());
        assert!(check_variants(vec![v("a", MAX_VARIANT_WEIGHT + 1)]).is_err());
        assert!(check_variants((0..17).map(|i| v(&format!("t{i}"), 1)).collect()).is_err());
    }

    #[test]
    fn assignment_is_stable_and_follows_the_weights() {
        let split = vec![Variant { tag: "canary".into(), weight: 10 }, Variant { tag: "production".into(), weight: 90 }];
        let reversed: Vec<Variant> = split.iter().rev().cloned().collect();
        let mut canary = 0;
        for i in 0..10_000 {
            let user = format!("user-{i}");
            let a = assign_variant("support-bot", &user, &split).unwrap();
            assert_eq!(assign_variant("support-bot", &user, &reversed).unwrap(), a, "order of the split does not matter");
            canary += usize::from(a.tag == "canary");
        }
        assert!((800..1200).contains(&canary), "about 10% canary, got {canary}");
        // Another prompt splits the same users independently.
        let other = (0..1000).filter(|i| {
            let u = format!("user-{i}");
            assign_variant("support-bot", &u, &split) != assign_variant("billing-bot", &u, &split)
        });
        assert!(other.count() > 50);
        assert_eq!(assign_variant("x", "u", &[Variant { tag: "a".into(), weight: 0 }]), None);
        // Pinned: a user's bucket must never change between releases.
        assert_eq!(user_bucket("support-bot", "user-1"), user_bucket("support-bot", "user-1"));
        let d = Sha256::digest(b"support-bot\0user-1");
        assert_eq!(user_bucket("support-bot", "user-1"), u64::from_be_bytes(d[..8].try_into().unwrap()));
    }

    #[test]
    fn diffs_name_each_change_by_pointer() {
        let a = json!({"kwargs": {"template": "Hi {name}", "vars": ["name"], "a/b": 1}, "gone": true});
        let b = json!({"kwargs": {"template": "Hello {name}", "vars": ["name", "x"], "a/b": 1}, "new": 2});
        let d = diff_manifests(&a, &b);
        let ops: Vec<(DiffOp, &str)> = d.iter().map(|c| (c.op, c.path.as_str())).collect();
        assert_eq!(
            ops,
            [(DiffOp::Remove, "/gone"), (DiffOp::Replace, "/kwargs/template"), (DiffOp::Add, "/kwargs/vars/1"), (DiffOp::Add, "/new")]
        );
        assert_eq!(d[1].from, Some(json!("Hi {name}")));
        assert_eq!(d[1].value, Some(json!("Hello {name}")));
        assert!(diff_manifests(&a, &a).is_empty());
        assert_eq!(diff_manifests(&json!({"a/b~": 1}), &json!({"a/b~": 2}))[0].path, "/a~1b~0");
    }

    #[test]
    fn tenant_handles_are_slugs_that_map_back_to_their_tenant() {
        assert_eq!(tenant_handle(crate::LOCAL_TENANT), "local");
        let t = TenantId(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
        let h = tenant_handle(t);
        assert_eq!(h, "t-0123456789abcdef0123456789abcdef");
        assert!(h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        for (owner, tenant) in [(h.as_str(), t), ("local", crate::LOCAL_TENANT), ("01234567-89ab-cdef-0123-456789abcdef", t)] {
            assert_eq!(tenant_from_handle(owner), Some(tenant), "{owner}");
        }
        for bad in ["", "-", "None", "t-", "t-0123456789ABCDEF0123456789abcdef", "t-0123", "someone"] {
            assert_eq!(tenant_from_handle(bad), None, "{bad}");
        }
    }

    #[test]
    fn repo_types_round_trip_and_prompts_encode_as_before() {
        for t in RepoType::ALL {
            assert_eq!(RepoType::parse(t.as_str()), Some(t));
        }
        assert_eq!(RepoType::parse("file"), None);
        let r = PromptRepo {
            id: RepoId(Uuid::nil()),
            handle: "a".into(),
            description: None,
            readme: None,
            labels: vec![],
            is_public: false,
            is_archived: false,
            variants: vec![],
            repo_type: RepoType::Prompt,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("repo_type").is_none(), "a prompt's encoding has no repo_type");
        let agent = PromptRepo { repo_type: RepoType::Agent, ..r };
        let v = serde_json::to_value(&agent).unwrap();
        assert_eq!(v["repo_type"], "agent");
        assert_eq!(serde_json::from_value::<PromptRepo>(v).unwrap(), agent);
    }

    #[test]
    fn filters_match_text_labels_visibility_and_archival() {
        let r = PromptRepo {
            id: RepoId(Uuid::nil()),
            handle: "Support-Bot".into(),
            description: Some("answers refunds".into()),
            readme: None,
            labels: vec!["english".into(), "support".into()],
            is_public: false,
            is_archived: false,
            variants: vec![],
            repo_type: RepoType::Prompt,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        };
        let f = |q: Option<&str>, labels: &[&str]| RepoFilter {
            query: q.map(str::to_owned),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(f(Some("support"), &[]).matches(&r));
        assert!(f(Some("REFUND"), &[]).matches(&r));
        assert!(f(Some("engl"), &["english", "support"]).matches(&r));
        assert!(!f(Some("billing"), &[]).matches(&r));
        assert!(!f(None, &["french"]).matches(&r));
        assert!(!RepoFilter { is_public: Some(true), ..Default::default() }.matches(&r));
        assert!(!RepoFilter { archived: ArchivedFilter::Only, ..Default::default() }.matches(&r));
        let archived = PromptRepo { is_archived: true, ..r.clone() };
        assert!(!RepoFilter::default().matches(&archived));
        assert!(RepoFilter { archived: ArchivedFilter::Any, ..Default::default() }.matches(&archived));
    }
}
