//! The REST layer: the prompt-hub routes the LangSmith SDK calls (spec §9: `/repos`,
//! `/commits`, `/likes`), plus Sextant's tags with history, diffs, variants and assignment.
//! Pulls are cacheable: a commit never changes, so its hash is its `ETag` and a pull by full
//! hash is cacheable for a year; `latest` and tags move, so they are cacheable for seconds.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::{json, Map, Value};

use sextant_auth::Authenticator;
use sextant_core::prompt::{prompt_without_model, tenant_handle, ArchivedFilter, CommitRef, PromptCommit, RepoFilter, RepoType, TagMove};
use sextant_core::{TenantId, Timestamp};
use sextant_proto::http::{json_body, require_principal, uuid_param, Caller, QueryParams};
use sextant_proto::{truncate, ApiError};

use crate::core::{variants_from_json, Assignment, ListQuery, Prompts, RepoView, SortField, TagState, TagTarget};

/// Largest JSON body: a push carries one manifest (at most 512 KiB canonical).
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;
/// A full hash names one commit forever.
const IMMUTABLE: &str = "private, max-age=31536000, immutable";
/// A hash prefix names one commit for as long as no other commit shares it; a day is short
/// enough that a prefix made ambiguous by a later push is not served from cache for long.
const PREFIX_MAX_AGE: &str = "private, max-age=86400";
/// `latest` and tags move: a client may reuse a pull this long.
const MOVING_MAX_AGE: &str = "private, max-age=5";
/// Answers depend on the caller's credentials.
const VARY: &str = "x-api-key, authorization, x-tenant-id";

pub fn router(prompts: Arc<Prompts>, auth: Arc<Authenticator>) -> Router {
    let api = Router::new()
        .route("/repos", post(create_repo).get(list_repos))
        .route("/repos/{owner}/{repo}", get(read_repo).patch(update_repo).delete(delete_repo))
        .route("/repos/{owner}/{repo}/tags", get(list_tags).post(create_tag))
        .route("/repos/{owner}/{repo}/tags/{tag}", get(read_tag).put(move_tag).delete(delete_tag))
        .route("/repos/{owner}/{repo}/tags/{tag}/history", get(tag_history))
        .route("/repos/{owner}/{repo}/variants", get(read_variants).put(set_variants))
        .route("/repos/{owner}/{repo}/assign", post(assign))
        .route("/repos/{owner}/{repo}/diff", get(diff))
        .route("/likes/{owner}/{repo}", post(like))
        .route("/commits/{owner}/{repo}", get(list_commits).post(push))
        .route("/commits/{owner}/{repo}/{reference}", get(pull))
        // Agents and skills: the SDK calls `/v1/platform/...` on the root URL and
        // `/platform/...` on an `/api/v1` URL (`platform_hub_path`); both are served.
        .route("/v1/platform/hub/repos/{owner}/{repo}/directories", get(pull_directory).delete(delete_directory))
        .route("/v1/platform/hub/repos/{owner}/{repo}/directories/commits", post(commit_directory))
        .route("/platform/hub/repos/{owner}/{repo}/directories", get(pull_directory).delete(delete_directory))
        .route("/platform/hub/repos/{owner}/{repo}/directories/commits", post(commit_directory))
        .route_layer(middleware::from_fn_with_state(auth, require_principal))
        .with_state(prompts);
    Router::new().merge(api.clone()).nest("/api/v1", api)
}

type P = State<Arc<Prompts>>;

// ---- JSON shapes the SDK parses ----

/// A LangSmith `Prompt` (`RepoWithLookups`), plus Sextant's `variants`.
pub fn repo_json(caller: TenantId, v: &RepoView) -> Value {
    let r = &v.repo;
    let variants: Map<String, Value> = r.variants.iter().map(|x| (x.tag.clone(), json!(x.weight))).collect();
    let owner = tenant_handle(v.tenant);
    json!({
        "id": r.id,
        "repo_handle": r.handle,
        "repo_type": r.repo_type.as_str(),
        "description": r.description,
        "readme": r.readme,
        "tenant_id": v.tenant,
        "created_at": r.created_at.to_iso(),
        "updated_at": r.updated_at.to_iso(),
        "is_public": r.is_public,
        "is_archived": r.is_archived,
        "tags": r.labels,
        // The owning tenant's handle, as `GET /settings` gives it (`tenant_handle`).
        "full_name": format!("{owner}/{}", r.handle),
        "owner": owner,
        "num_likes": v.likes.len(),
        "liked_by_auth_user": v.likes.contains(&caller),
        "num_downloads": 0,
        "num_views": 0,
        "num_commits": v.num_commits,
        "last_commit_hash": v.last_commit.as_ref().map(|c| c.hash.as_str()),
        "commit_tags": v.commit_tags,
        "original_repo_id": null,
        "upstream_repo_id": null,
        "variants": variants,
    })
}

/// The manifest as a pull shows it: with its model only if asked (`include_model`), as the
/// SDK loads it (`pull_prompt` without `include_model` expects a prompt).
fn manifest_text(c: &PromptCommit, include_model: bool) -> (String, bool) {
    // Only a `RunnableSequence` carries a model: skip the parse for plain prompts (the hot path).
    if !include_model && c.manifest.as_str().contains("\"RunnableSequence\"") {
        if let Some(prompt) = prompt_without_model(&c.manifest.to_value_or_null()) {
            return (sextant_core::prompt::canonical_json(prompt), true);
        }
    }
    (c.manifest.as_str().to_owned(), false)
}

/// A `ListedPromptCommit` / `CommitWithLookups`.
fn commit_json(c: &PromptCommit, include_model: bool) -> Value {
    let (manifest, _) = manifest_text(c, include_model);
    json!({
        "id": c.id(),
        "commit_hash": c.hash,
        "short_hash": c.short_hash(),
        "parent_commit_hash": c.parent,
        "parent_id": c.parent_id(),
        "repo_id": c.repo_id,
        "manifest_id": c.id(),
        "manifest": serde_json::from_str::<Value>(&manifest).expect("stored manifests are valid JSON"),
        "description": c.description,
        "created_at": c.created_at.to_iso(),
        "updated_at": c.created_at.to_iso(),
        "example_run_ids": [],
        "num_downloads": 0,
        "num_views": 0,
    })
}

fn tag_json(t: &TagState) -> Value {
    json!({
        "tag_name": t.tag,
        "commit_hash": t.commit,
        "commit_id": sextant_core::prompt::commit_id(&t.commit),
        "moved_at": t.moved_at.to_iso(),
    })
}

fn move_json(m: &TagMove) -> Value {
    json!({"commit_hash": m.commit, "moved_at": m.at.to_iso(), "deleted": m.commit.is_none()})
}

/// What a service attaches to the run that uses an assigned prompt, so its traces say which
/// prompt, commit and variant produced them. The `lc_hub_*` keys are the ones LangChain sets
/// on a prompt the SDK pulls (they reach run metadata when the prompt runs under tracing);
/// `prompt_variant` names the arm of the split. Run filters find them:
/// `and(eq(metadata_key, "prompt_variant"), eq(metadata_value, "canary"))`.
pub fn assignment_metadata(owner: &str, handle: &str, a: &Assignment) -> Value {
    json!({
        "lc_hub_owner": owner,
        "lc_hub_repo": handle,
        "lc_hub_commit_hash": a.commit.hash,
        "prompt_variant": a.variant.tag,
    })
}

// ---- helpers ----

fn include_model(q: &QueryParams) -> Result<bool, ApiError> {
    let by_include = q.get("include").is_some_and(|v| v.split(',').any(|x| x.trim() == "model"));
    Ok(q.bool("include_model")?.unwrap_or(false) || by_include)
}

fn as_of(q: &QueryParams) -> Result<Option<Timestamp>, ApiError> {
    q.get("as_of").map(|s| Timestamp::parse(s).map_err(|e| ApiError::unprocessable(format!("as_of: {e}")))).transpose()
}

fn required_str<'a>(body: &'a Value, k: &str) -> Result<&'a str, ApiError> {
    body.get(k).and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable(format!("{k}: required (a string)")))
}

fn repo_type_of(k: &str, v: &str) -> Result<RepoType, ApiError> {
    RepoType::parse(v.trim()).ok_or_else(|| ApiError::unprocessable(format!("{k}: {:?} is not prompt, agent or skill", truncate(v))))
}

/// The types `GET /repos` lists: `repo_type` and `repo_types` (repeated, or comma-separated);
/// prompts when neither is given, so `list_prompts` lists prompts only.
fn repo_types(q: &QueryParams) -> Result<Vec<RepoType>, ApiError> {
    let mut types = Vec::new();
    for k in ["repo_type", "repo_types"] {
        for v in q.all(k).iter().flat_map(|v| v.split(',')).filter(|v| !v.trim().is_empty()) {
            types.push(repo_type_of(k, v)?);
        }
    }
    if types.is_empty() {
        types.push(RepoType::Prompt);
    }
    Ok(types)
}

/// Whether `If-None-Match` names this ETag (weak comparison, lists and `*` allowed).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| {
        let t = t.trim();
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
    })
}

// ---- repositories ----

async fn create_repo(State(s): P, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let v = s.create_repo(p.tenant, &body).await?;
    Ok(Json(json!({"repo": repo_json(p.tenant, &v)})).into_response())
}

async fn read_repo(State(s): P, Caller(p): Caller, Path((owner, repo)): Path<(String, String)>) -> Result<Response, ApiError> {
    let v = s.get_repo(p.tenant, &owner, &repo).await?;
    Ok(Json(json!({"repo": repo_json(p.tenant, &v)})).into_response())
}

async fn list_repos(State(s): P, Caller(p): Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let archived = match q.get("is_archived").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => ArchivedFilter::Exclude,
        Some("true") => ArchivedFilter::Only,
        Some("allow") => ArchivedFilter::Any,
        Some(other) => return Err(ApiError::unprocessable(format!("is_archived: {:?} is not true, false or allow", truncate(other)))),
    };
    let descending = match q.get("sort_direction").unwrap_or("desc") {
        "desc" => true,
        "asc" => false,
        other => return Err(ApiError::unprocessable(format!("sort_direction: {:?} is not asc or desc", truncate(other)))),
    };
    let query = ListQuery {
        filter: RepoFilter {
            query: q.get("query").map(str::to_owned),
            labels: q.all("tags").to_vec(),
            is_public: q.bool("is_public")?,
            archived,
        },
        sort: SortField::parse(q.get("sort_field").unwrap_or("updated_at"))?,
        descending,
        offset: q.usize("offset")?.unwrap_or(0),
        limit: q.usize("limit")?.unwrap_or(100),
    };
    let types = repo_types(&q)?;
    let (views, total) = s.list_repos_of(p.tenant, &query, &types).await?;
    Ok(Json(json!({"repos": views.iter().map(|v| repo_json(p.tenant, v)).collect::<Vec<_>>(), "total": total})).into_response())
}

async fn update_repo(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let v = s.update_repo(p.tenant, &owner, &repo, &body).await?;
    Ok(Json(json!({"repo": repo_json(p.tenant, &v)})).into_response())
}

async fn delete_repo(State(s): P, Caller(p): Caller, Path((owner, repo)): Path<(String, String)>) -> Result<Response, ApiError> {
    s.delete_repo(p.tenant, &owner, &repo).await?;
    Ok(Json(json!({})).into_response())
}

async fn like(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let like = body.get("like").and_then(Value::as_bool).ok_or_else(|| ApiError::unprocessable("like: required (true or false)"))?;
    let likes = s.like(p.tenant, &owner, &repo, like).await?;
    Ok(Json(json!({"likes": likes})).into_response())
}

// ---- commits ----

async fn push(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let c = s.push(p.tenant, &owner, &repo, &body).await?;
    Ok(Json(json!({"commit": commit_json(&c, true)})).into_response())
}

async fn list_commits(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let with_model = include_model(&q)?;
    let offset = q.usize("offset")?.unwrap_or(0);
    let limit = q.usize("limit")?.unwrap_or(100);
    let (commits, total) = s.list_commits(p.tenant, &owner, &repo, offset, limit, q.get("tag")).await?;
    let list: Vec<Value> = commits.iter().map(|c| commit_json(c, with_model)).collect();
    Ok(Json(json!({"commits": list, "total": total})).into_response())
}

/// `GET /commits/{owner}/{repo}/{ref}`: `{"commit_hash", "manifest", "examples"}`, with an
/// `ETag` (the hash) and a cache lifetime that depends on whether the ref can move.
async fn pull(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo, reference)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let with_model = include_model(&q)?;
    let (c, r) = s.pull(p.tenant, &owner, &repo, &reference).await?;
    let (manifest, stripped) = manifest_text(&c, with_model);
    // One commit has two representations (with and without its model): one tag each.
    let etag = if stripped { format!("\"{}.prompt\"", c.hash) } else { format!("\"{}\"", c.hash) };
    let cache = match r {
        CommitRef::Hash(_) if r.is_full_hash() => IMMUTABLE,
        CommitRef::Hash(_) => PREFIX_MAX_AGE,
        CommitRef::Latest | CommitRef::Tag(_) => MOVING_MAX_AGE,
    };
    let mut resp = if not_modified(&headers, &etag) {
        metrics::counter!("sextant_prompt_pulls_not_modified_total").increment(1);
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        // Built by hand: the manifest is stored as JSON text, and re-encoding it per pull
        // would cost more than the rest of the request.
        let body = format!(
            r#"{{"commit_hash":"{}","manifest":{manifest},"examples":[],"description":{}}}"#,
            c.hash,
            serde_json::to_string(&c.description).expect("a string serialises")
        );
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static(VARY));
    Ok(resp)
}

async fn diff(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let from = q.get("from").ok_or_else(|| ApiError::unprocessable("from: required (latest, a commit hash or a tag)"))?;
    let to = q.get("to").unwrap_or("latest");
    let (a, b, changes) = s.diff(p.tenant, &owner, &repo, from, to).await?;
    Ok(Json(json!({
        "from": {"commit_hash": a.hash, "created_at": a.created_at.to_iso()},
        "to": {"commit_hash": b.hash, "created_at": b.created_at.to_iso()},
        "changes": changes,
    }))
    .into_response())
}

// ---- agents and skills ----

/// `GET .../directories?commit=&repo_type=`: `{"commit_id", "commit_hash", "files"}`.
async fn pull_directory(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let want = q.get("repo_type").map(|v| repo_type_of("repo_type", v)).transpose()?;
    let (c, files) = s.pull_directory(p.tenant, &owner, &repo, q.get("commit").filter(|c| !c.is_empty()), want).await?;
    Ok(Json(json!({
        "commit_id": c.id(),
        "commit_hash": c.hash,
        "created_at": c.created_at.to_iso(),
        "files": files,
    }))
    .into_response())
}

/// `POST .../directories/commits`: `{"commit": {"id", "commit_hash", "created_at"}}`.
async fn commit_directory(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let c = s.commit_directory(p.tenant, &owner, &repo, &body).await?;
    Ok(Json(json!({"commit": {
        "id": c.id(),
        "commit_hash": c.hash,
        "parent_commit_hash": c.parent,
        "created_at": c.created_at.to_iso(),
    }}))
    .into_response())
}

async fn delete_directory(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let want = q.get("repo_type").map(|v| repo_type_of("repo_type", v)).transpose()?;
    s.delete_directory(p.tenant, &owner, &repo, want).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- tags ----

/// What a tag request points the tag at: `commit_id` (the SDK), or `commit` / `commit_hash`
/// (a ref: latest, a hash or another tag).
fn tag_target(body: &Value) -> Result<TagTarget, ApiError> {
    if let Some(id) = body.get("commit_id").filter(|v| !v.is_null()) {
        let id = id.as_str().ok_or_else(|| ApiError::unprocessable("commit_id: expected a UUID string"))?;
        return Ok(TagTarget::CommitId(uuid_param("commit_id", id)?));
    }
    for k in ["commit", "commit_hash"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            let r = v.as_str().ok_or_else(|| ApiError::unprocessable(format!("{k}: expected a string")))?;
            return Ok(TagTarget::Ref(r.to_owned()));
        }
    }
    Err(ApiError::unprocessable("give commit_id, or commit (latest, a commit hash or a tag)"))
}

async fn create_tag(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let tag = required_str(&body, "tag_name")?;
    let t = s.set_tag(p.tenant, &owner, &repo, tag, &tag_target(&body)?).await?;
    Ok(Json(tag_json(&t)).into_response())
}

async fn move_tag(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let t = s.set_tag(p.tenant, &owner, &repo, &tag, &tag_target(&body)?).await?;
    Ok(Json(tag_json(&t)).into_response())
}

async fn delete_tag(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo, tag)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    s.delete_tag(p.tenant, &owner, &repo, &tag).await?;
    Ok(Json(json!({})).into_response())
}

async fn list_tags(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let tags = s.tags(p.tenant, &owner, &repo, as_of(&q)?).await?;
    Ok(Json(tags.iter().map(tag_json).collect::<Vec<_>>()).into_response())
}

/// One tag now, or `?as_of=<ISO time>`: what it pointed at then.
async fn read_tag(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo, tag)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let when = as_of(&q)?;
    let t = s.tag(p.tenant, &owner, &repo, &tag, when).await?;
    let mut v = tag_json(&t);
    v["as_of"] = json!(when.unwrap_or_else(Timestamp::now).to_iso());
    Ok(Json(v).into_response())
}

async fn tag_history(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo, tag)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let moves = s.tag_history(p.tenant, &owner, &repo, &tag).await?;
    Ok(Json(json!({"tag_name": tag, "moves": moves.iter().map(move_json).collect::<Vec<_>>()})).into_response())
}

// ---- variants and assignment ----

async fn read_variants(State(s): P, Caller(p): Caller, Path((owner, repo)): Path<(String, String)>) -> Result<Response, ApiError> {
    let v = s.get_repo(p.tenant, &owner, &repo).await?;
    Ok(Json(json!({"variants": repo_json(p.tenant, &v)["variants"]})).into_response())
}

async fn set_variants(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let variants = variants_from_json(body.get("variants").ok_or_else(|| ApiError::unprocessable("variants: required (tag → weight)"))?)?;
    let v = s.set_variants(p.tenant, &owner, &repo, variants).await?;
    Ok(Json(json!({"variants": repo_json(p.tenant, &v)["variants"]})).into_response())
}

/// `POST /repos/{owner}/{repo}/assign {"user_id"}`: the user's variant, its commit (as a pull
/// returns it) and the metadata to attach to the run that uses it.
async fn assign(
    State(s): P,
    Caller(p): Caller,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let body = json_body(&headers, body, MAX_JSON_BYTES).await?;
    let user = match body.get("user_id") {
        Some(Value::String(u)) => u.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(ApiError::unprocessable("user_id: required (a string)")),
    };
    let a = s.assign(p.tenant, &owner, &repo, &user).await?;
    let (manifest, _) = manifest_text(&a.commit, include_model(&q)?);
    Ok(Json(json!({
        "variant": a.variant.tag,
        "weight": a.variant.weight,
        "commit_hash": a.commit.hash,
        "commit_id": a.commit.id(),
        "manifest": serde_json::from_str::<Value>(&manifest).expect("stored manifests are valid JSON"),
        "examples": [],
        "metadata": assignment_metadata(&owner, &repo, &a),
    }))
    .into_response())
}
