//! The gRPC `PromptService` end to end in one process: a tonic client talks over
//! `tokio::io::duplex` to the real service, over the real core with the embedded store and the
//! in-process bus; what it writes is read back over REST, and the other way round.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request as HttpRequest;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Request};
use tower::ServiceExt;
use uuid::Uuid;

use sextant_auth::{hash_key, ApiKeyConfig, Authenticator};
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::EventBus;
use sextant_core::TenantId;
use sextant_prompt_hub::grpc::prompt_service;
use sextant_prompt_hub::Prompts;
use sextant_proto::pb;
use sextant_proto::pb::prompt_service_client::PromptServiceClient;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::Storage;

const KEY_A: &str = "key-tenant-a";
const KEY_B: &str = "key-tenant-b";
const TENANT_A: TenantId = TenantId(Uuid::from_u128(0xa));
const TENANT_B: TenantId = TenantId(Uuid::from_u128(0xb));

struct Harness {
    client: PromptServiceClient<Channel>,
    rest: axum::Router,
    _dir: TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let prompts = Arc::new(Prompts::new(bus, store));
    let keys = [
        ApiKeyConfig { name: "a".into(), hash: hash_key(KEY_A), tenant: TENANT_A },
        ApiKeyConfig { name: "b".into(), hash: hash_key(KEY_B), tenant: TENANT_B },
    ];
    let auth = Arc::new(Authenticator::new(&keys).unwrap());
    let rest = sextant_prompt_hub::http::router(prompts.clone(), auth.clone());

    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(server_io) });
    tokio::spawn(Server::builder().add_service(prompt_service(prompts, auth)).serve_with_incoming(incoming));
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://in-process")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move { io.map(TokioIo::new).ok_or_else(|| std::io::Error::other("the in-process connection is already used")) }
        }))
        .await
        .unwrap();
    Harness { client: PromptServiceClient::new(channel), rest, _dir: dir }
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    r
}

fn chat(template: &str) -> String {
    json!({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
           "kwargs": {"input_variables": ["question"], "template": template, "template_format": "f-string"}})
    .to_string()
}

async fn rest_get(rest: &axum::Router, path: &str) -> (u16, Value) {
    let req = HttpRequest::get(path).header("x-api-key", KEY_A).body(Body::empty()).unwrap();
    let resp = rest.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn push_pull_tag_and_assign_over_grpc_are_the_rest_prompt() {
    let mut h = start().await;
    let c = &mut h.client;
    let created = c
        .create_prompt(with_key(
            pb::CreatePromptRequest {
                name: "support".into(),
                description: Some("answers".into()),
                tags: vec!["en".into()],
                ..Default::default()
            },
            KEY_A,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((created.name.as_str(), created.num_commits, created.tenant_id.as_str()), ("support", 0, TENANT_A.to_string().as_str()));

    let push = |manifest: String, parent: &str| pb::PushCommitRequest {
        owner: "-".into(),
        name: "support".into(),
        manifest_json: manifest,
        parent_commit: parent.into(),
        description: Some("from grpc".into()),
    };
    let v1 = c.push_commit(with_key(push(chat("v1 {question}"), ""), KEY_A)).await.unwrap().into_inner();
    assert_eq!(v1.commit_hash.len(), 64);
    assert_eq!(v1.parent_commit_hash, None);
    let v2 = c.push_commit(with_key(push(chat("v2 {question}"), &v1.commit_hash), KEY_A)).await.unwrap().into_inner();
    assert_eq!(v2.parent_commit_hash.as_deref(), Some(v1.commit_hash.as_str()));
    // Identical to the parent: ALREADY_EXISTS, REST's 409, with the SDK's message.
    let same = c.push_commit(with_key(push(chat("v2 {question}"), ""), KEY_A)).await.unwrap_err();
    assert_eq!(same.code(), Code::AlreadyExists);
    assert!(same.message().starts_with("Nothing to commit"), "{}", same.message());

    // REST sees the gRPC push, with the same hash and manifest.
    let (status, pulled) = rest_get(&h.rest, &format!("/commits/-/support/{}", &v2.commit_hash[..8])).await;
    assert_eq!(status, 200);
    assert_eq!(pulled["commit_hash"], v2.commit_hash.as_str());
    assert_eq!(pulled["manifest"], serde_json::from_str::<Value>(&chat("v2 {question}")).unwrap());

    // Tags, pulls by tag, history.
    let c = &mut h.client;
    let tag =
        |t: &str, commit: &str| pb::SetTagRequest { owner: String::new(), name: "support".into(), tag: t.into(), commit: commit.into() };
    let prod = c.set_tag(with_key(tag("production", &v1.commit_hash[..8]), KEY_A)).await.unwrap().into_inner();
    assert_eq!(prod.commit_hash, v1.commit_hash);
    c.set_tag(with_key(tag("canary", "latest"), KEY_A)).await.unwrap();
    let by_tag = c
        .pull_commit(with_key(pb::PullCommitRequest { name: "support".into(), r#ref: "production".into(), ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_tag, v1);
    c.set_tag(with_key(tag("production", "canary"), KEY_A)).await.unwrap();
    let history = c
        .tag_history(with_key(pb::TagHistoryRequest { name: "support".into(), tag: "production".into(), ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    let moves: Vec<Option<&str>> = history.moves.iter().map(|m| m.commit_hash.as_deref()).collect();
    assert_eq!(moves, [Some(v1.commit_hash.as_str()), Some(v2.commit_hash.as_str())]);
    let then = c
        .list_tags(with_key(pb::ListTagsRequest { name: "support".into(), as_of: history.moves[0].moved_at, ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        then.tags.iter().map(|t| (t.tag.as_str(), t.commit_hash.as_str())).collect::<Vec<_>>(),
        [("production", v1.commit_hash.as_str())]
    );
    let listed = c
        .list_commits(with_key(pb::ListCommitsRequest { name: "support".into(), limit: 1, ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((listed.total, listed.commits.len()), (2, 1));
    assert_eq!(listed.commits[0].commit_hash, v2.commit_hash);

    // Variants and a stable assignment.
    let variants = vec![pb::Variant { tag: "production".into(), weight: 1 }, pb::Variant { tag: "canary".into(), weight: 1 }];
    let p = c
        .set_variants(with_key(pb::SetVariantsRequest { name: "support".into(), variants, ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.variants.iter().map(|v| v.tag.as_str()).collect::<Vec<_>>(), ["canary", "production"], "sorted by tag");
    let assign = |user: &str| pb::AssignRequest { name: "support".into(), user_id: user.into(), ..Default::default() };
    let a = c.assign(with_key(assign("user-42"), KEY_A)).await.unwrap().into_inner();
    let again = c.assign(with_key(assign("user-42"), KEY_A)).await.unwrap().into_inner();
    assert_eq!(a, again);
    assert_eq!(a.metadata["prompt_variant"], a.variant);
    assert_eq!(a.metadata["lc_hub_commit_hash"], a.commit.as_ref().unwrap().commit_hash);
    assert_eq!(a.metadata["lc_hub_repo"], "support");

    let listed =
        c.list_prompts(with_key(pb::ListPromptsRequest { query: "SUPP".into(), ..Default::default() }, KEY_A)).await.unwrap().into_inner();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.prompts[0].commit_tags, ["canary", "production"]);
    let (_, rest_repo) = rest_get(&h.rest, "/repos/-/support").await;
    assert_eq!(rest_repo["repo"]["id"], listed.prompts[0].id.as_str());
}

#[tokio::test]
async fn grpc_errors_use_the_rest_kinds() {
    let mut h = start().await;
    let c = &mut h.client;
    c.create_prompt(with_key(pb::CreatePromptRequest { name: "p".into(), ..Default::default() }, KEY_A)).await.unwrap();
    let pull = |owner: &str, name: &str, r: &str| pb::PullCommitRequest {
        owner: owner.into(),
        name: name.into(),
        r#ref: r.into(),
        include_model: false,
    };
    let cases = [
        (c.pull_commit(with_key(pull("", "p", ""), KEY_A)).await.unwrap_err(), Code::NotFound, "no commits yet"),
        (c.pull_commit(with_key(pull("", "missing", ""), KEY_A)).await.unwrap_err(), Code::NotFound, "prompt -/missing not found"),
        (c.pull_commit(with_key(pull("someone", "p", ""), KEY_A)).await.unwrap_err(), Code::NotFound, "unknown owner"),
        (c.pull_commit(with_key(pull("", "p", "Prod"), KEY_A)).await.unwrap_err(), Code::InvalidArgument, "not \"latest\""),
        (c.pull_commit(with_key(pull("", "p", "prod"), KEY_A)).await.unwrap_err(), Code::NotFound, "has no tag prod"),
        (c.pull_commit(with_key(pull("", "p", ""), KEY_B)).await.unwrap_err(), Code::NotFound, "prompt -/p not found"),
        (c.pull_commit(Request::new(pull("", "p", ""))).await.unwrap_err(), Code::Unauthenticated, ""),
        (
            c.push_commit(with_key(pb::PushCommitRequest { name: "p".into(), manifest_json: "{nope".into(), ..Default::default() }, KEY_A))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "manifest_json: invalid JSON",
        ),
        (
            c.push_commit(with_key(pb::PushCommitRequest { name: "p".into(), manifest_json: "[]".into(), ..Default::default() }, KEY_A))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "manifest: expected a JSON object",
        ),
        (
            c.set_tag(with_key(
                pb::SetTagRequest { name: "p".into(), tag: "beef".into(), commit: "latest".into(), ..Default::default() },
                KEY_A,
            ))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            "looks like a commit hash",
        ),
        (
            c.assign(with_key(pb::AssignRequest { name: "p".into(), user_id: "u".into(), ..Default::default() }, KEY_A)).await.unwrap_err(),
            Code::AlreadyExists,
            "no variants",
        ),
        (
            c.create_prompt(with_key(pb::CreatePromptRequest { name: "p".into(), ..Default::default() }, KEY_A)).await.unwrap_err(),
            Code::AlreadyExists,
            "already exists",
        ),
        (
            c.list_prompts(with_key(pb::ListPromptsRequest { sort_field: "stars".into(), ..Default::default() }, KEY_A)).await.unwrap_err(),
            Code::InvalidArgument,
            "sort_field",
        ),
        (
            c.list_tags(with_key(
                pb::ListTagsRequest {
                    name: "p".into(),
                    as_of: Some(sextant_proto::prost_types::Timestamp { seconds: 0, nanos: -1 }),
                    ..Default::default()
                },
                KEY_A,
            ))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            "as_of",
        ),
    ];
    for (status, code, needle) in cases {
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(needle), "expected {needle:?} in {:?}", status.message());
    }
}
