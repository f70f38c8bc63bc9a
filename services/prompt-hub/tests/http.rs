//! The prompt hub's REST routes over the real core, embedded store and in-process bus, called
//! in process (`Router::oneshot`): the SDK's sequences, caching, tags and their history,
//! variants, tenancy, and every kind of bad input (a clear 4xx, never a 500).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

use sextant_auth::{hash_key, ApiKeyConfig, Authenticator};
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::EventBus;
use sextant_core::prompt::PromptCommit;
use sextant_core::{RawJson, TenantId, Timestamp};
use sextant_prompt_hub::Prompts;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::Storage;

const KEY_A: &str = "key-tenant-a";
const KEY_B: &str = "key-tenant-b";
const TENANT_A: TenantId = TenantId(Uuid::from_u128(0xa));
const TENANT_B: TenantId = TenantId(Uuid::from_u128(0xb));

struct Hub {
    app: Router,
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Storage>,
    dir: TempDir,
}

fn hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let prompts = Arc::new(Prompts::new(bus.clone(), store.clone()));
    let keys = [
        ApiKeyConfig { name: "a".into(), hash: hash_key(KEY_A), tenant: TENANT_A },
        ApiKeyConfig { name: "b".into(), hash: hash_key(KEY_B), tenant: TENANT_B },
    ];
    let app = sextant_prompt_hub::http::router(prompts, Arc::new(Authenticator::new(&keys).unwrap()));
    Hub { app, bus, store, dir }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Reply {
    fn detail(&self) -> String {
        self.body["detail"].as_str().unwrap_or_default().to_owned()
    }
}

impl Hub {
    async fn send(&self, method: Method, path: &str, key: &str, body: Option<String>, extra: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder().method(method).uri(path).header("x-api-key", key);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b)).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        assert!(status.as_u16() < 500, "{path}: a 5xx ({status}): {body}");
        Reply { status, headers, body }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, KEY_A, None, &[]).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, KEY_A, Some(body.to_string()), &[]).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.send(method, path, KEY_A, body.map(|b| b.to_string()), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        r.body
    }

    async fn create(&self, name: &str) -> Value {
        self.ok(
            Method::POST,
            "/repos",
            Some(json!({"repo_handle": name, "description": "d", "readme": "", "tags": [], "is_public": false})),
        )
        .await
    }

    /// Pushes as the SDK does: the latest hash first, then the commit on top of it.
    async fn push(&self, name: &str, manifest: &Value) -> Reply {
        let latest = self.ok(Method::GET, &format!("/commits/-/{name}?limit=1&offset=0"), None).await;
        let parent = latest["commits"].get(0).map(|c| c["commit_hash"].clone()).unwrap_or(Value::Null);
        self.post(&format!("/commits/-/{name}"), json!({"parent_commit": parent, "manifest": manifest})).await
    }

    async fn pushed(&self, name: &str, manifest: &Value) -> String {
        let r = self.push(name, manifest).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["commit"]["commit_hash"].as_str().unwrap().to_owned()
    }
}

fn chat(template: &str) -> Value {
    json!({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "chat", "ChatPromptTemplate"],
           "kwargs": {"input_variables": ["question"], "messages": [
               {"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "chat", "HumanMessagePromptTemplate"],
                "kwargs": {"prompt": {"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
                           "kwargs": {"input_variables": ["question"], "template": template, "template_format": "f-string"}}}}]}})
}

fn with_model(prompt: Value) -> Value {
    json!({"lc": 1, "type": "constructor", "id": ["langchain", "schema", "runnable", "RunnableSequence"],
           "kwargs": {"first": prompt, "last": {"lc": 1, "type": "constructor",
                      "id": ["langchain", "chat_models", "openai", "ChatOpenAI"], "kwargs": {"model_name": "gpt-4o", "temperature": 0}}}})
}

#[tokio::test]
async fn the_sdk_sequence_push_pull_list() {
    let h = hub();
    assert_eq!(h.get("/repos/-/joke").await.status, StatusCode::NOT_FOUND, "get_prompt sees None first");
    let created = h.create("joke").await;
    assert_eq!(created["repo"]["repo_handle"], "joke");
    assert_eq!(created["repo"]["num_commits"], 0);
    for k in [
        "id",
        "tenant_id",
        "created_at",
        "updated_at",
        "is_public",
        "is_archived",
        "tags",
        "owner",
        "full_name",
        "num_likes",
        "num_downloads",
        "num_views",
    ] {
        assert!(created["repo"].get(k).is_some(), "Prompt needs {k}");
    }
    // The latest hash of an empty prompt: no commits.
    assert_eq!(h.get("/commits/-/joke?limit=1&offset=0").await.body, json!({"commits": [], "total": 0}));
    let first = h.pushed("joke", &chat("Tell me a joke about {question}")).await;
    assert_eq!(first.len(), 64);
    let second = h.pushed("joke", &chat("Tell me a short joke about {question}")).await;
    assert_ne!(first, second);

    // Pull latest, by short and full hash, through /api/v1 as well.
    for path in ["/commits/-/joke/latest", &format!("/commits/-/joke/{}", &second[..8]), &format!("/api/v1/commits/-/joke/{second}")] {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body["commit_hash"], second.as_str());
        assert_eq!(r.body["manifest"], chat("Tell me a short joke about {question}"));
        assert_eq!(r.body["examples"], json!([]));
    }
    assert_eq!(h.get(&format!("/commits/-/joke/{}", &first[..8])).await.body["manifest"], chat("Tell me a joke about {question}"));

    // The repository and its commits.
    let repo = h.get("/repos/-/joke").await.body;
    assert_eq!(repo["repo"]["num_commits"], 2);
    assert_eq!(repo["repo"]["last_commit_hash"], second.as_str());
    let listed = h.get("/commits/-/joke?offset=0&include_model=False").await.body;
    assert_eq!(listed["total"], 2);
    let hashes: Vec<&str> = listed["commits"].as_array().unwrap().iter().map(|c| c["commit_hash"].as_str().unwrap()).collect();
    assert_eq!(hashes, [second.as_str(), first.as_str()], "newest first");
    assert_eq!(listed["commits"][0]["parent_commit_hash"], first.as_str());
    assert!(listed["commits"][0]["id"].as_str().is_some_and(|id| Uuid::parse_str(id).is_ok()));
    let page = h.get("/commits/-/joke?offset=1&limit=1").await.body;
    assert_eq!(page["commits"][0]["commit_hash"], first.as_str());
    assert_eq!(page["total"], 2);

    // The SDK's list_prompts.
    h.create("other-prompt").await;
    let list = h.get("/repos?limit=100&offset=0&is_archived=false&sort_field=updated_at&sort_direction=desc").await.body;
    assert_eq!(list["total"], 2);
    assert_eq!(list["repos"][0]["repo_handle"], "other-prompt", "the newest update first");
    let found = h.get("/repos?limit=100&offset=0&is_archived=false&query=jok&match_prefix=true").await.body;
    assert_eq!(found["repos"].as_array().unwrap().len(), 1);
    let asc = h.get("/repos?sort_direction=asc").await.body;
    assert_eq!(asc["repos"][0]["repo_handle"], "joke");
}

#[tokio::test]
async fn a_push_identical_to_its_parent_or_on_a_stale_parent_is_a_conflict() {
    let h = hub();
    h.create("p").await;
    let m = chat("{question}");
    let first = h.pushed("p", &m).await;
    // Key order and whitespace do not make a new manifest.
    let reordered: Value = serde_json::from_str(&serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let r = h.push("p", &reordered).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.detail().starts_with("Nothing to commit"), "{}", r.detail());
    let second = h.pushed("p", &chat("Q: {question}")).await;
    // Pushing on the first commit again (someone else pushed since) is refused.
    let r = h.post("/commits/-/p", json!({"parent_commit": first, "manifest": chat("Q2: {question}")})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.detail().contains(&second[..8]) && r.detail().contains("latest"), "{}", r.detail());
    // Going back to an older manifest on top of the latest is a new commit.
    let back = h.pushed("p", &m).await;
    assert_ne!(back, first, "same content, other parent: another hash");
}

#[tokio::test]
async fn pulls_are_cacheable_by_etag() {
    let h = hub();
    h.create("c").await;
    let hash = h.pushed("c", &chat("{question}")).await;
    let full = h.get(&format!("/commits/-/c/{hash}")).await;
    let etag = full.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{hash}\""));
    assert_eq!(full.headers["cache-control"], "private, max-age=31536000, immutable");
    let short = h.get(&format!("/commits/-/c/{}", &hash[..8])).await;
    assert_eq!(short.headers["etag"].to_str().unwrap(), etag);
    assert_eq!(short.headers["cache-control"], "private, max-age=86400", "a prefix can become ambiguous");
    let latest = h.get("/commits/-/c/latest").await;
    assert_eq!(latest.headers["cache-control"], "private, max-age=5");
    // Revalidation: 304 without a body, for the hash and for a moving ref that has not moved.
    for path in [format!("/commits/-/c/{hash}"), "/commits/-/c/latest".to_string()] {
        let r = h.send(Method::GET, &path, KEY_A, None, &[("if-none-match", &format!("W/\"zzz\", {etag}"))]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(r.body, Value::Null);
        assert_eq!(r.headers["etag"].to_str().unwrap(), etag);
    }
    let other = h.send(Method::GET, "/commits/-/c/latest", KEY_A, None, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
    // After a push, `latest` is another commit: the old ETag no longer matches.
    h.pushed("c", &chat("v2 {question}")).await;
    let r = h.send(Method::GET, "/commits/-/c/latest", KEY_A, None, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.headers["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn a_model_is_returned_only_when_asked_for() {
    let h = hub();
    h.create("m").await;
    let hash = h.pushed("m", &with_model(chat("{question}"))).await;
    let plain = h.get(&format!("/commits/-/m/{}", &hash[..8])).await;
    assert_eq!(plain.body["manifest"], chat("{question}"), "pull_prompt without include_model loads a prompt");
    let full = h.get(&format!("/commits/-/m/{}?include_model=true", &hash[..8])).await;
    assert_eq!(full.body["manifest"], with_model(chat("{question}")));
    assert_ne!(plain.headers["etag"], full.headers["etag"], "two representations, two tags");
    let listed = h.get("/commits/-/m?include_model=True").await.body;
    assert_eq!(listed["commits"][0]["manifest"], with_model(chat("{question}")));
}

#[tokio::test]
async fn tags_move_and_their_history_answers_what_was_deployed_when() {
    let h = hub();
    h.create("t").await;
    let v1 = h.pushed("t", &chat("v1 {question}")).await;
    // The SDK tags by commit id after a push (`commit_tags`).
    let id = h.get("/commits/-/t").await.body["commits"][0]["id"].as_str().unwrap().to_owned();
    let tagged = h.post("/repos/-/t/tags", json!({"tag_name": "production", "commit_id": id})).await;
    assert_eq!(tagged.status, StatusCode::OK, "{}", tagged.body);
    assert_eq!(tagged.body["commit_hash"], v1.as_str());
    let before_move = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let v2 = h.pushed("t", &chat("v2 {question}")).await;
    let moved = h.send(Method::PUT, "/repos/-/t/tags/production", KEY_A, Some(json!({"commit": "latest"}).to_string()), &[]).await;
    assert_eq!(moved.body["commit_hash"], v2.as_str());
    h.post("/repos/-/t/tags", json!({"tag_name": "staging", "commit_hash": &v1[..8]})).await;

    // Pull by tag, and the tag then.
    assert_eq!(h.get("/commits/-/t/production").await.body["commit_hash"], v2.as_str());
    assert_eq!(h.get("/commits/-/t/production").await.headers["cache-control"], "private, max-age=5");
    let then = h.get(&format!("/repos/-/t/tags/production?as_of={}", before_move.to_iso())).await;
    assert_eq!(then.body["commit_hash"], v1.as_str(), "production at the earlier time");
    let now = h.get("/repos/-/t/tags/production").await;
    assert_eq!(now.body["commit_hash"], v2.as_str());
    let all = h.get("/repos/-/t/tags").await.body;
    assert_eq!(all.as_array().unwrap().iter().map(|t| t["tag_name"].as_str().unwrap()).collect::<Vec<_>>(), ["production", "staging"]);
    let history = h.get("/repos/-/t/tags/production/history").await.body;
    let moves: Vec<&str> = history["moves"].as_array().unwrap().iter().map(|m| m["commit_hash"].as_str().unwrap()).collect();
    assert_eq!(moves, [v1.as_str(), v2.as_str()]);
    assert_eq!(h.get("/repos/-/t").await.body["repo"]["commit_tags"], json!(["production", "staging"]));
    assert_eq!(h.get("/commits/-/t?tag=staging").await.body["commits"][0]["commit_hash"], v1.as_str());

    // Deleting keeps the history; the tag is gone now but not then.
    let deleted = h.send(Method::DELETE, "/repos/-/t/tags/staging", KEY_A, None, &[]).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(h.get("/commits/-/t/staging").await.status, StatusCode::NOT_FOUND);
    let history = h.get("/repos/-/t/tags/staging/history").await.body;
    assert_eq!(history["moves"][1]["deleted"], true);
    let then = h.get(&format!("/repos/-/t/tags/staging?as_of={}", Timestamp(Timestamp::now().micros() - 1).to_iso())).await;
    assert_eq!(then.status, StatusCode::NOT_FOUND, "deleted a moment ago: as of now it does not exist");

    // A diff between the two versions.
    let d = h.get(&format!("/repos/-/t/diff?from={}&to=production", &v1[..8])).await.body;
    assert_eq!(
        d["changes"],
        json!([{"op": "replace", "path": "/kwargs/messages/0/kwargs/prompt/kwargs/template",
                                     "from": "v1 {question}", "value": "v2 {question}"}])
    );
}

#[tokio::test]
async fn variants_assign_users_stably_and_follow_their_tags() {
    let h = hub();
    h.create("ab").await;
    let control = h.pushed("ab", &chat("control {question}")).await;
    let canary = h.pushed("ab", &chat("canary {question}")).await;
    h.post("/repos/-/ab/tags", json!({"tag_name": "production", "commit": &control[..8]})).await;
    h.post("/repos/-/ab/tags", json!({"tag_name": "canary", "commit": &canary[..8]})).await;
    let r = h
        .send(Method::PUT, "/repos/-/ab/variants", KEY_A, Some(json!({"variants": {"production": 80, "canary": 20}}).to_string()), &[])
        .await;
    assert_eq!(r.body, json!({"variants": {"canary": 20, "production": 80}}), "{}", r.body);
    let mut canaries = 0;
    for i in 0..200 {
        let user = format!("user-{i}");
        let a = h.post("/repos/-/ab/assign", json!({"user_id": user})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let again = h.post("/repos/-/ab/assign", json!({"user_id": user})).await;
        assert_eq!(a.body["variant"], again.body["variant"], "stable for a user");
        let want = if a.body["variant"] == "canary" {
            canaries += 1;
            &canary
        } else {
            &control
        };
        assert_eq!(a.body["commit_hash"], want.as_str());
        assert_eq!(a.body["metadata"]["prompt_variant"], a.body["variant"]);
        assert_eq!(a.body["metadata"]["lc_hub_commit_hash"], want.as_str());
        assert_eq!(a.body["metadata"]["lc_hub_repo"], "ab");
    }
    assert!((20..=60).contains(&canaries), "about 20% of 200, got {canaries}");
    // Moving the canary tag changes what canary users get, not who they are.
    let user = "user-7";
    let before = h.post("/repos/-/ab/assign", json!({"user_id": user})).await.body;
    let v3 = h.pushed("ab", &chat("v3 {question}")).await;
    let tag = before["variant"].as_str().unwrap().to_owned();
    h.send(Method::PUT, &format!("/repos/-/ab/tags/{tag}"), KEY_A, Some(json!({"commit": v3}).to_string()), &[]).await;
    let after = h.post("/repos/-/ab/assign", json!({"user_id": user})).await.body;
    assert_eq!(after["variant"], before["variant"]);
    assert_eq!(after["commit_hash"], v3.as_str());
    // Variants name existing tags; an empty split removes it.
    let r = h.send(Method::PUT, "/repos/-/ab/variants", KEY_A, Some(json!({"variants": {"nope": 1}}).to_string()), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.detail().contains("nope"), "{}", r.detail());
    h.send(Method::PUT, "/repos/-/ab/variants", KEY_A, Some(json!({"variants": {}}).to_string()), &[]).await;
    let r = h.post("/repos/-/ab/assign", json!({"user_id": "u"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.detail().contains("no variants"), "{}", r.detail());
}

#[tokio::test]
async fn repositories_update_like_and_delete() {
    let h = hub();
    h.create("r").await;
    let u = h
        .send(
            Method::PATCH,
            "/repos/-/r",
            KEY_A,
            Some(json!({"description": "new", "tags": ["a", "b", "a"], "is_archived": true}).to_string()),
            &[],
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["repo"]["description"], "new");
    assert_eq!(u.body["repo"]["tags"], json!(["a", "b"]));
    assert_eq!(h.get("/repos").await.body["total"], 0, "archived prompts are not listed by default");
    assert_eq!(h.get("/repos?is_archived=true").await.body["total"], 1);
    assert_eq!(h.get("/repos?is_archived=allow&tags=a&tags=b").await.body["total"], 1);
    assert_eq!(h.get("/repos?is_archived=allow&tags=c").await.body["total"], 0);
    assert_eq!(h.post("/likes/-/r", json!({"like": true})).await.body, json!({"likes": 1}));
    let r = h.get("/repos/-/r").await.body;
    assert_eq!((r["repo"]["num_likes"].clone(), r["repo"]["liked_by_auth_user"].clone()), (json!(1), json!(true)));
    assert_eq!(h.post("/likes/-/r", json!({"like": false})).await.body, json!({"likes": 0}));
    h.pushed("r", &chat("{question}")).await;
    assert_eq!(h.send(Method::DELETE, "/repos/-/r", KEY_A, None, &[]).await.status, StatusCode::OK);
    assert_eq!(h.get("/repos/-/r").await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/commits/-/r/latest").await.status, StatusCode::NOT_FOUND);
    // The name is free again, with nothing of the old prompt.
    h.create("r").await;
    assert_eq!(h.get("/commits/-/r?limit=10").await.body["total"], 0);
}

#[tokio::test]
async fn tenants_see_only_their_own_and_others_public_prompts_read_only() {
    let h = hub();
    h.create("private").await;
    h.ok(Method::POST, "/repos", Some(json!({"repo_handle": "shared", "is_public": true}))).await;
    h.pushed("shared", &chat("{question}")).await;
    h.pushed("private", &chat("{question}")).await;
    let b = |m: Method, p: &str, body: Option<Value>| {
        let (m, p) = (m, p.to_owned());
        let h = &h;
        async move { h.send(m, &p, KEY_B, body.map(|b| b.to_string()), &[]).await }
    };
    assert_eq!(b(Method::GET, "/repos/-/private", None).await.status, StatusCode::NOT_FOUND, "B's own namespace");
    assert_eq!(b(Method::GET, "/repos", None).await.body["total"], 0);
    // Owners are tenant handles (what `GET /settings` gives as `tenant_handle`); tenant ids
    // are still taken.
    let a = sextant_core::prompt::tenant_handle(TENANT_A);
    let shared = h.get("/repos/-/shared").await.body;
    assert_eq!((shared["repo"]["owner"].as_str(), shared["repo"]["full_name"].clone()), (Some(a.as_str()), json!(format!("{a}/shared"))));
    assert_eq!(h.get(&format!("/repos/{a}/private")).await.status, StatusCode::OK, "A's own handle is A's own namespace");
    let by_id = b(Method::GET, &format!("/commits/{TENANT_A}/shared/latest"), None).await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.body);
    let r = b(Method::GET, &format!("/repos/{a}/private"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a private prompt of another tenant does not exist for B");
    assert_eq!(r.detail(), format!("prompt {a}/private not found"));
    assert_eq!(b(Method::GET, &format!("/commits/{a}/private/latest"), None).await.status, StatusCode::NOT_FOUND);
    // A's public prompt: B can pull it and like it, not change it.
    let pulled = b(Method::GET, &format!("/commits/{a}/shared/latest"), None).await;
    assert_eq!(pulled.status, StatusCode::OK);
    assert_eq!(pulled.body["manifest"], chat("{question}"));
    let push = b(Method::POST, &format!("/commits/{a}/shared"), Some(json!({"manifest": chat("B was here")}))).await;
    assert_eq!(push.status, StatusCode::FORBIDDEN);
    assert_eq!(b(Method::DELETE, &format!("/repos/{a}/shared"), None).await.status, StatusCode::FORBIDDEN);
    assert_eq!(b(Method::POST, &format!("/likes/{a}/shared"), Some(json!({"like": true}))).await.body["likes"], 1);
    let seen_by_a = h.get("/repos/-/shared").await.body;
    assert_eq!((seen_by_a["repo"]["num_likes"].clone(), seen_by_a["repo"]["liked_by_auth_user"].clone()), (json!(1), json!(false)));
    // No key: 401.
    let anon = h.app.clone().oneshot(Request::get("/repos").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_ambiguous_hash_prefix_names_the_candidates() {
    let h = hub();
    h.create("amb").await;
    let repo = h.store.repo_by_handle(TENANT_A, "amb").await.unwrap().unwrap();
    // Two commits whose hashes share "abcd" (hashes are not recomputed by the store).
    for (i, hash) in ["abcd1111", "abcd2222"].iter().enumerate() {
        let full = format!("{hash}{}", "0".repeat(56));
        let c = PromptCommit {
            repo_id: repo.id,
            hash: full,
            parent: None,
            manifest: RawJson::from_value(&chat(hash)),
            description: None,
            created_at: Timestamp(1_000 + i as i64),
        };
        h.store.put_commit(TENANT_A, &c).await.unwrap();
    }
    let r = h.get("/commits/-/amb/abcd").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.detail().contains("ambiguous") && r.detail().contains("abcd1111") && r.detail().contains("abcd2222"), "{}", r.detail());
    assert_eq!(h.get("/commits/-/amb/abcd2").await.body["manifest"], chat("abcd2222"));
    let r = h.post("/repos/-/amb/tags", json!({"tag_name": "prod", "commit": "abcd"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "tagging through an ambiguous prefix: {}", r.body);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let h = hub();
    h.create("ok").await;
    let hash = h.pushed("ok", &chat("{question}")).await;
    let cases: Vec<(Method, String, Option<String>, u16, &str)> = vec![
        // Unknown owners, prompts, hashes, tags.
        (Method::GET, "/repos/someone/ok".into(), None, 404, "unknown owner \"someone\""),
        (Method::GET, "/commits/someone/ok/latest".into(), None, 404, "unknown owner"),
        (Method::GET, "/repos/-/missing".into(), None, 404, "prompt -/missing not found"),
        (Method::GET, "/commits/-/missing/latest".into(), None, 404, "prompt -/missing not found"),
        (Method::GET, "/commits/-/ok/deadbeef".into(), None, 404, "has no commit deadbeef"),
        (Method::GET, format!("/commits/-/ok/{}", "f".repeat(64)), None, 404, "has no commit fff"),
        (Method::GET, "/commits/-/ok/production".into(), None, 404, "has no tag production"),
        (Method::GET, "/repos/-/ok/tags/production".into(), None, 404, "has no tag production"),
        (Method::GET, "/repos/-/ok/tags/production/history".into(), None, 404, "never had a tag production"),
        (Method::DELETE, "/repos/-/ok/tags/production".into(), None, 404, "has no tag production"),
        (Method::PUT, "/repos/-/ok/tags/prod".into(), Some(json!({"commit": "cafebabe"}).to_string()), 404, "has no commit cafebabe"),
        (
            Method::POST,
            "/repos/-/ok/tags".into(),
            Some(json!({"tag_name": "p", "commit_id": Uuid::nil()}).to_string()),
            404,
            "no commit with id",
        ),
        // Refs and tag names that are not valid.
        (Method::GET, "/commits/-/ok/Production".into(), None, 422, "not \"latest\", a commit hash"),
        (Method::GET, format!("/commits/-/ok/{}", "a".repeat(65)), None, 422, "not \"latest\""),
        (Method::GET, "/commits/-/ok/a%20b".into(), None, 422, "not \"latest\""),
        (
            Method::POST,
            "/repos/-/ok/tags".into(),
            Some(json!({"tag_name": "Prod", "commit": "latest"}).to_string()),
            422,
            "not a valid tag name",
        ),
        (Method::POST, "/repos/-/ok/tags".into(), Some(json!({"tag_name": "latest", "commit": "latest"}).to_string()), 422, "reserved"),
        (
            Method::POST,
            "/repos/-/ok/tags".into(),
            Some(json!({"tag_name": "beef", "commit": "latest"}).to_string()),
            422,
            "looks like a commit hash",
        ),
        (Method::POST, "/repos/-/ok/tags".into(), Some(json!({"tag_name": "p"}).to_string()), 422, "give commit_id"),
        (Method::POST, "/repos/-/ok/tags".into(), Some(json!({"tag_name": "p", "commit_id": "nope"}).to_string()), 422, "not a UUID"),
        (Method::GET, "/repos/-/ok/tags/prod?as_of=yesterday".into(), None, 422, "as_of"),
        // Manifests that do not parse.
        (Method::POST, "/commits/-/ok".into(), Some("{not json".into()), 400, "not valid JSON"),
        (Method::POST, "/commits/-/ok".into(), Some("[1,2]".into()), 422, "expected a JSON object"),
        (Method::POST, "/commits/-/ok".into(), Some(json!({"parent_commit": null}).to_string()), 422, "manifest: required"),
        (Method::POST, "/commits/-/ok".into(), Some(json!({"manifest": "a string"}).to_string()), 422, "manifest: expected a JSON object"),
        // LangSmith's 400 for a dict that is not a LangChain object, word for word.
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": {"template": "x"}}).to_string()),
            400,
            "Manifest must have an id field",
        ),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": {"id": null, "lc": 1}}).to_string()),
            400,
            "Manifest must have an id field",
        ),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": {"id": ["x"], "type": "constructor"}}).to_string()),
            422,
            "manifest.lc",
        ),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": {"lc": 1, "type": "constructor", "id": "x"}}).to_string()),
            422,
            "manifest.id",
        ),
        (Method::POST, "/commits/-/ok".into(), Some(json!({"manifest": chat("x"), "parent_commit": 5}).to_string()), 422, "parent_commit"),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": chat("x"), "parent_commit": "nothex!"}).to_string()),
            422,
            "not a commit hash",
        ),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": chat("x"), "parent_commit": "0000abcd"}).to_string()),
            404,
            "has no commit 0000abcd",
        ),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": chat("x"), "description": "d".repeat(1001)}).to_string()),
            422,
            "1000",
        ),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(json!({"manifest": {"lc": 1, "type": "constructor", "id": ["x"], "kwargs": {"t": "a".repeat(600_000)}}}).to_string()),
            422,
            "over the limit",
        ),
        (
            Method::POST,
            "/commits/-/ok".into(),
            Some(format!(r#"{{"manifest": {}{}}}"#, "[".repeat(3000), "]".repeat(3000))),
            422,
            "nested deeper than",
        ),
        (Method::POST, "/commits/-/ok".into(), Some(String::new()), 422, "got nothing"),
        // Repositories.
        (Method::POST, "/repos".into(), Some(json!({"repo_handle": "a/b"}).to_string()), 422, "not a valid prompt name"),
        (Method::POST, "/repos".into(), Some(json!({"repo_handle": "ok"}).to_string()), 409, "already exists"),
        (Method::POST, "/repos".into(), Some(json!({"description": "x"}).to_string()), 422, "repo_handle: required"),
        (
            Method::POST,
            "/repos".into(),
            Some(json!({"repo_handle": "x", "repo_type": "file"}).to_string()),
            422,
            "not prompt, agent or skill",
        ),
        (Method::POST, "/repos".into(), Some(json!({"repo_handle": "x", "repo_type": 1}).to_string()), 422, "repo_type: expected a string"),
        (Method::GET, "/repos?repo_type=folder".into(), None, 422, "repo_type: \"folder\""),
        (Method::GET, "/repos/None/ok".into(), None, 404, "unknown owner \"None\""),
        (Method::POST, "/repos".into(), Some(json!({"repo_handle": "x", "tags": "a"}).to_string()), 422, "tags: expected a list"),
        (Method::POST, "/repos".into(), Some(json!({"repo_handle": "x", "is_public": "yes"}).to_string()), 422, "is_public"),
        (Method::PATCH, "/repos/-/ok".into(), Some(json!({"repo_handle": "renamed"}).to_string()), 422, "cannot be updated"),
        (Method::PATCH, "/repos/-/ok".into(), Some(json!({"tags": [""]}).to_string()), 422, "not a valid tag"),
        (Method::GET, "/repos?limit=0".into(), None, 422, "limit"),
        (Method::GET, "/repos?limit=ten".into(), None, 422, "limit"),
        (Method::GET, "/repos?sort_field=stars".into(), None, 422, "sort_field"),
        (Method::GET, "/repos?sort_direction=up".into(), None, 422, "sort_direction"),
        (Method::GET, "/repos?is_archived=maybe".into(), None, 422, "is_archived"),
        (Method::GET, "/commits/-/ok?limit=5000".into(), None, 422, "limit"),
        (Method::GET, "/commits/-/ok?tag=BAD".into(), None, 422, "tag"),
        (Method::POST, "/likes/-/ok".into(), Some(json!({}).to_string()), 422, "like: required"),
        // Variants and assignment.
        (Method::PUT, "/repos/-/ok/variants".into(), Some(json!({"variants": {"prod": 0.5}}).to_string()), 422, "whole number"),
        (Method::PUT, "/repos/-/ok/variants".into(), Some(json!({"variants": {"prod": 0}}).to_string()), 422, "zero"),
        (Method::PUT, "/repos/-/ok/variants".into(), Some(json!({"variants": [1]}).to_string()), 422, "tag → weight"),
        (Method::PUT, "/repos/-/ok/variants".into(), Some(json!({}).to_string()), 422, "variants: required"),
        (Method::POST, "/repos/-/ok/assign".into(), Some(json!({}).to_string()), 422, "user_id"),
        (Method::POST, "/repos/-/ok/assign".into(), Some(json!({"user_id": ""}).to_string()), 422, "user_id"),
        (Method::POST, "/repos/-/ok/assign".into(), Some(json!({"user_id": "u"}).to_string()), 409, "no variants"),
        (Method::GET, "/repos/-/ok/diff".into(), None, 422, "from: required"),
        (Method::GET, "/repos/-/ok/diff?from=nope!".into(), None, 422, "from:"),
    ];
    for (method, path, body, status, needle) in cases {
        let r = h.send(method.clone(), &path, KEY_A, body, &[]).await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.body);
        assert!(r.detail().contains(needle), "{method} {path}: expected {needle:?} in {:?}", r.detail());
    }
    // Nothing above changed the prompt.
    let latest = h.get("/commits/-/ok?limit=10").await.body;
    assert_eq!(latest["total"], 1);
    assert_eq!(latest["commits"][0]["commit_hash"], hash.as_str());
}

#[tokio::test]
async fn the_projector_rebuilds_the_same_state_from_the_stream() {
    let h = hub();
    h.create("proj").await;
    let v1 = h.pushed("proj", &chat("v1 {question}")).await;
    h.post("/repos/-/proj/tags", json!({"tag_name": "production", "commit": "latest"})).await;
    let v2 = h.pushed("proj", &chat("v2 {question}")).await;
    h.send(Method::PUT, "/repos/-/proj/tags/production", KEY_A, Some(json!({"commit": v2}).to_string()), &[]).await;
    h.create("gone").await;
    h.send(Method::DELETE, "/repos/-/gone", KEY_A, None, &[]).await;
    // A second store fed only by the projector (another process's store, or one repaired
    // after a crash between publish and apply) ends up with the same prompts.
    let replica: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&h.dir.path().join("replica")).unwrap());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(sextant_prompt_hub::projector::run_prompt_projector(h.bus.clone(), replica.clone(), stop_rx));
    let deadline = Instant::now() + Duration::from_secs(20);
    let repo = loop {
        if let Some(r) = replica.repo_by_handle(TENANT_A, "proj").await.unwrap() {
            let moves = replica.tag_moves(TENANT_A, r.id, Some("production")).await.unwrap();
            if moves.len() == 2 && replica.repo_by_handle(TENANT_A, "gone").await.unwrap().is_none() {
                break r;
            }
        }
        assert!(Instant::now() < deadline, "the projector did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let original = h.store.repo_by_handle(TENANT_A, "proj").await.unwrap().unwrap();
    assert_eq!(repo, original);
    let page = replica.list_commits(TENANT_A, repo.id, 0, 10).await.unwrap();
    assert_eq!(page.commits.iter().map(|c| c.hash.as_str()).collect::<Vec<_>>(), [v2.as_str(), v1.as_str()]);
    assert_eq!(page, h.store.list_commits(TENANT_A, repo.id, 0, 10).await.unwrap());
    assert_eq!(replica.list_repos(TENANT_A).await.unwrap().len(), 1, "the deleted prompt stays deleted");
    let _ = stop.send(true);
    task.await.unwrap();
}

/// Agents and skills as the SDK drives them: created with `repo_type`, listed by type, pushed
/// as file changes on the parent's tree, pulled by latest, tag and hash with links resolved,
/// private to their tenant, and deleted; bad entries are a 422 naming the path.
#[tokio::test]
async fn agents_and_skills_are_directories_of_files_and_links() {
    let h = hub();
    let dirs = "/v1/platform/hub/repos/-";
    for (name, t) in [("search", "skill"), ("helper", "agent")] {
        let r = h.ok(Method::POST, "/repos", Some(json!({"repo_handle": name, "repo_type": t, "is_public": false}))).await;
        assert_eq!(r["repo"]["repo_type"], t);
    }
    h.create("plain").await;
    // `GET /repos` lists prompts unless asked for other types.
    let names = |v: Value| v["repos"].as_array().unwrap().iter().map(|r| r["repo_handle"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(h.get("/repos").await.body), ["plain"]);
    assert_eq!(names(h.get("/repos?repo_type=skill").await.body), ["search"]);
    assert_eq!(h.get("/repos?repo_types=agent,skill").await.body["total"], 2);
    assert_eq!(h.get("/repos?repo_types=agent&repo_types=prompt").await.body["total"], 2);

    // A skill's first commit, then one that edits a file and adds another.
    let first =
        h.post(&format!("{dirs}/search/directories/commits"), json!({"files": {"SKILL.md": {"type": "file", "content": "v1"}}})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let first_hash = first.body["commit"]["commit_hash"].as_str().unwrap().to_owned();
    assert_eq!(first_hash.len(), 64);
    assert_eq!(first.body["commit"]["id"], json!(sextant_core::prompt::commit_id(&first_hash)));
    let second = h
        .post(
            &format!("{dirs}/search/directories/commits"),
            json!({"parent_commit": &first_hash[..8], "files": {"SKILL.md": {"type": "file", "content": "v2"}, "ref/a.txt": {"type": "file", "content": "a"}}}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let second_hash = second.body["commit"]["commit_hash"].as_str().unwrap().to_owned();
    let pulled = h.get(&format!("{dirs}/search/directories?repo_type=skill")).await;
    assert_eq!(pulled.status, StatusCode::OK, "{}", pulled.body);
    assert_eq!(pulled.body["commit_hash"], second_hash.as_str());
    assert_eq!(pulled.body["files"], json!({"SKILL.md": {"type": "file", "content": "v2"}, "ref/a.txt": {"type": "file", "content": "a"}}));
    let old = h.get(&format!("/api/v1/platform/hub/repos/-/search/directories?commit={}", &first_hash[..8])).await;
    assert_eq!(old.body["files"], json!({"SKILL.md": {"type": "file", "content": "v1"}}), "by hash, through /api/v1");

    // The agent links the skill: following its latest, and pinned to its first commit.
    let pin = sextant_core::prompt::commit_id(&first_hash);
    let c = h
        .post(
            &format!("{dirs}/helper/directories/commits"),
            json!({"files": {
                "AGENTS.md": {"type": "file", "content": "be helpful"},
                "skills/search": {"type": "skill", "repo_handle": "search"},
                "skills/search-v1": {"type": "skill", "repo_handle": "search", "selector": {"type": "COMMIT", "commit_id": pin}},
            }}),
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    let agent_hash = c.body["commit"]["commit_hash"].as_str().unwrap().to_owned();
    h.ok(Method::POST, "/repos/-/helper/tags", Some(json!({"tag_name": "production", "commit_id": c.body["commit"]["id"]}))).await;
    let a = h.get(&format!("{dirs}/helper/directories?repo_type=agent&commit=production")).await.body;
    assert_eq!(a["commit_hash"], agent_hash.as_str());
    let me = sextant_core::prompt::tenant_handle(TENANT_A);
    assert_eq!(
        a["files"]["skills/search"],
        json!({"type": "skill", "repo_handle": "search", "owner": me, "commit_hash": second_hash,
               "commit_id": sextant_core::prompt::commit_id(&second_hash), "selector": {"type": "LATEST"}})
    );
    assert_eq!(a["files"]["skills/search-v1"]["commit_hash"], first_hash.as_str());
    // A new commit of the skill moves the link that follows it, not the pinned one.
    let third = h.post(&format!("{dirs}/search/directories/commits"), json!({"files": {"ref/a.txt": null}})).await;
    let third_hash = third.body["commit"]["commit_hash"].as_str().unwrap().to_owned();
    let a = h.get(&format!("/v1/platform/hub/repos/{me}/helper/directories")).await.body;
    assert_eq!(a["files"]["skills/search"]["commit_hash"], third_hash.as_str());
    assert_eq!(a["files"]["skills/search-v1"]["commit_hash"], first_hash.as_str());
    assert_eq!(h.get(&format!("{dirs}/search/directories")).await.body["files"], json!({"SKILL.md": {"type": "file", "content": "v2"}}));

    // The same files again: nothing to commit; a stale parent: a conflict.
    let same =
        h.post(&format!("{dirs}/search/directories/commits"), json!({"files": {"SKILL.md": {"type": "file", "content": "v2"}}})).await;
    assert_eq!(same.status, StatusCode::CONFLICT);
    assert!(same.detail().starts_with("Nothing to commit"), "{}", same.detail());
    let stale = h
        .post(
            &format!("{dirs}/search/directories/commits"),
            json!({"parent_commit": first_hash, "files": {"x": {"type": "file", "content": "x"}}}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);

    // Another tenant sees none of it, and cannot write it.
    let b = h.send(Method::GET, &format!("/v1/platform/hub/repos/{me}/helper/directories"), KEY_B, None, &[]).await;
    assert_eq!(b.status, StatusCode::NOT_FOUND);
    assert_eq!(h.send(Method::GET, "/repos?repo_type=agent", KEY_B, None, &[]).await.body["total"], 0);

    // Bad requests: a clear 4xx, naming the path.
    let commits = format!("{dirs}/helper/directories/commits");
    for (path, body, status, needle) in [
        (commits.clone(), json!({"files": {"/abs": {"type": "file", "content": "x"}}}), 422, "files[\"/abs\"]: a path is relative"),
        (commits.clone(), json!({"files": {"a/../b": {"type": "file", "content": "x"}}}), 422, "a path is relative"),
        (commits.clone(), json!({"files": {"x": {"type": "file"}}}), 422, "content: required"),
        (commits.clone(), json!({"files": {"x": {"type": "folder"}}}), 422, "not file, agent or skill"),
        (commits.clone(), json!({"files": {"x": {"type": "skill", "repo_handle": "nope"}}}), 422, "-/nope not found"),
        (commits.clone(), json!({"files": {"x": {"type": "agent", "repo_handle": "search"}}}), 422, "is a skill, not an agent"),
        (commits.clone(), json!({"files": {"x": {"type": "agent", "repo_handle": "helper"}}}), 422, "cannot link to itself"),
        (
            commits.clone(),
            json!({"files": {"x": {"type": "skill", "repo_handle": "search", "selector": {"type": "COMMIT", "commit_id": Uuid::nil()}}}}),
            422,
            "has no commit with id",
        ),
        (commits.clone(), json!({"files": {"x": {"type": "skill", "repo_handle": "search", "owner": "someone"}}}), 422, "unknown owner"),
        (commits.clone(), json!({"files": ["x"]}), 422, "files: expected an object"),
        (commits.clone(), json!({"files": {}, "parent_commit": 7}), 422, "parent_commit"),
        (commits.clone(), json!({"files": {"big": {"type": "file", "content": "x".repeat(600_000)}}}), 422, "over the limit"),
        (format!("{dirs}/plain/directories/commits"), json!({"files": {}}), 404, "is a prompt, not an agent or a skill"),
        (format!("{dirs}/missing/directories/commits"), json!({"files": {}}), 404, "not found"),
        // A prompt push to an agent is refused, pointing at the directories route.
        ("/commits/-/helper".to_owned(), json!({"manifest": chat("x")}), 409, "directories/commits"),
    ] {
        let r = h.post(&path, body).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.body);
        assert!(r.detail().contains(needle), "{path}: expected {needle:?} in {:?}", r.detail());
    }
    for (path, status, needle) in [
        (format!("{dirs}/search/directories?repo_type=agent"), 404, "is a skill, not an agent"),
        (format!("{dirs}/search/directories?repo_type=file"), 422, "repo_type"),
        (format!("{dirs}/search/directories?commit=staging"), 404, "has no tag staging"),
        (format!("{dirs}/search/directories?commit=Bad!"), 422, "commit:"),
        (format!("{dirs}/plain/directories"), 404, "is a prompt"),
    ] {
        let r = h.get(&path).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.body);
        assert!(r.detail().contains(needle), "{path}: expected {needle:?} in {:?}", r.detail());
    }

    // Deleting: the type must match when given; a deleted skill's links resolve to nothing.
    let del = |p: String| {
        let h = &h;
        async move { h.send(Method::DELETE, &p, KEY_A, None, &[]).await }
    };
    assert_eq!(del(format!("{dirs}/search/directories?repo_type=agent")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(del(format!("{dirs}/search/directories?repo_type=skill")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(h.get("/repos/-/search").await.status, StatusCode::NOT_FOUND);
    let a = h.get(&format!("{dirs}/helper/directories")).await.body;
    assert_eq!(a["files"]["skills/search"]["commit_hash"], Value::Null);
    assert_eq!(a["files"]["AGENTS.md"], json!({"type": "file", "content": "be helpful"}));
    assert_eq!(del(format!("{dirs}/plain/directories")).await.status, StatusCode::NOT_FOUND, "a prompt is not deleted as a directory");
    assert_eq!(h.get("/repos/-/plain").await.status, StatusCode::OK);
}
