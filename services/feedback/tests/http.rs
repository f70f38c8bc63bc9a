//! The REST routes of presigned tokens and feedback configs with two tenants, in one process:
//! the real router over the real core, the embedded store, the in-process bus and the
//! feedback projector. What the Python suite cannot check against its one-tenant server:
//! tokens and configs stay within their tenant, and old signed tokens still redeem.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

use sextant_auth::{hash_key, ApiKeyConfig, Authenticator};
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::EventBus;
use sextant_core::{FeedbackId, RunId, TenantId, Timestamp};
use sextant_feedback::http::{router, FeedbackState};
use sextant_feedback::projector::run_feedback_projector;
use sextant_feedback::tokens::{Grant, TokenSigner};
use sextant_feedback::{FeedbackService, Queues};
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::Storage;

const KEY_A: &str = "key-tenant-a";
const KEY_B: &str = "key-tenant-b";
const TENANT_A: TenantId = TenantId(Uuid::from_u128(0xa));
const TENANT_B: TenantId = TenantId(Uuid::from_u128(0xb));
const SIGNING_KEY: &[u8] = b"http test key";

struct Harness {
    app: Router,
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Storage>,
    shutdown: watch::Sender<bool>,
    _dir: TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(run_feedback_projector(bus.clone(), store.clone(), shutdown_rx));
    let feedback = Arc::new(FeedbackService::new(bus.clone(), store.clone(), SIGNING_KEY));
    let queues = Arc::new(Queues::new(store.clone(), feedback.clone()));
    let keys = [
        ApiKeyConfig { name: "a".into(), hash: hash_key(KEY_A), tenant: TENANT_A },
        ApiKeyConfig { name: "b".into(), hash: hash_key(KEY_B), tenant: TENANT_B },
    ];
    let auth = Arc::new(Authenticator::new(&keys).unwrap());
    let app = router(FeedbackState { feedback, queues, public_url: "https://sextant.example.com".into() }, auth);
    Harness { app, bus, store, shutdown, _dir: dir }
}

impl Harness {
    async fn call(&self, method: Method, uri: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Polls until the feedback is readable in the tenant (the projector lags writes).
    async fn feedback_of(&self, tenant: TenantId, id: FeedbackId) -> sextant_core::Feedback {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(f) = self.store.get_feedback(tenant, id).await.unwrap() {
                return f;
            }
            assert!(Instant::now() < deadline, "feedback {id} never became readable");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_redeem_into_their_tenant_and_list_only_there() {
    let h = start();
    let run = Uuid::now_v7();
    let fid = Uuid::now_v7();
    let body = json!({"run_id": run, "feedback_key": "vote", "id": fid, "expires_in": {"hours": 1}});
    let (st, token) = h.call(Method::POST, "/feedback/tokens", Some(KEY_A), Some(body)).await;
    assert_eq!(st, StatusCode::OK, "{token}");
    let url = token["url"].as_str().unwrap();
    let id = token["id"].as_str().unwrap();
    assert_eq!(url, format!("https://sextant.example.com/feedback/tokens/{id}"), "links use the configured public URL");
    assert_ne!(id, fid.to_string(), "the token id is its own random secret, not the feedback id");

    // Redeemed without a key, under /api/v1 too: the feedback lands in tenant A only.
    let (st, _) = h.call(Method::POST, &format!("/api/v1/feedback/tokens/{id}"), None, Some(json!({"score": 1}))).await;
    assert_eq!(st, StatusCode::OK);
    let f = h.feedback_of(TENANT_A, FeedbackId(fid)).await;
    assert_eq!((f.key.as_str(), f.run_id), ("vote", Some(RunId(run))));
    assert!(h.store.get_feedback(TENANT_B, FeedbackId(fid)).await.unwrap().is_none());

    let uri = format!("/feedback/tokens?run_id={run}");
    let list = |key| h.call(Method::GET, &uri, Some(key), None);
    let (st, a) = list(KEY_A).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(a.as_array().unwrap().iter().map(|t| t["id"].clone()).collect::<Vec<_>>(), vec![json!(id)]);
    let (_, b) = list(KEY_B).await;
    assert_eq!(b, json!([]), "tenant B sees none of A's tokens");
    let (st, _) = h.call(Method::GET, &uri, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "listing needs a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tokens_handed_out_before_still_redeem() {
    let h = start();
    let fid = Uuid::now_v7();
    let grant = Grant {
        id: fid,
        tenant: TENANT_B,
        run_id: RunId(Uuid::now_v7()),
        key: "stars".into(),
        expires_us: Timestamp::now().micros() + 60_000_000,
        feedback_config: None,
    };
    let signed = TokenSigner::new(SIGNING_KEY).issue(&grant);
    let (st, body) = h.call(Method::GET, &format!("/feedback/tokens/{signed}?score=0.5"), None, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(h.feedback_of(TENANT_B, FeedbackId(fid)).await.key, "stars");
    let forged = TokenSigner::new(b"another key").issue(&grant);
    let (st, _) = h.call(Method::GET, &format!("/feedback/tokens/{forged}?score=1"), None, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_configs_are_per_tenant() {
    let h = start();
    let five = json!({"feedback_key": "rating", "feedback_config": {"type": "continuous", "min": 0, "max": 5}});
    let (st, a) = h.call(Method::POST, "/feedback-configs", Some(KEY_A), Some(five)).await;
    assert_eq!(st, StatusCode::OK, "{a}");
    assert_eq!(a["tenant_id"], json!(TENANT_A.0));
    // Tenant B's "rating" is its own: no conflict with A's, and neither sees the other's.
    let ten = json!({"feedback_key": "rating", "feedback_config": {"type": "continuous", "min": 0, "max": 10}});
    let (st, b) = h.call(Method::POST, "/feedback-configs", Some(KEY_B), Some(ten)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_ne!(a["id"], b["id"]);
    let (_, listed_a) = h.call(Method::GET, "/feedback-configs?key=rating", Some(KEY_A), None).await;
    assert_eq!(listed_a.as_array().unwrap().iter().map(|c| c["feedback_config"]["max"].clone()).collect::<Vec<_>>(), [json!(5)]);
    let (st, _) = h.call(Method::DELETE, "/feedback-configs?feedback_key=rating", Some(KEY_B), None).await;
    assert_eq!(st, StatusCode::OK);
    let (_, listed_b) = h.call(Method::GET, "/feedback-configs", Some(KEY_B), None).await;
    assert_eq!(listed_b, json!([]));
    let (_, listed_a) = h.call(Method::GET, "/api/v1/feedback-configs", Some(KEY_A), None).await;
    assert_eq!(listed_a.as_array().unwrap().len(), 1, "B's delete left A's config alone");
    // Bad input names the problem.
    let (st, e) = h.call(Method::PATCH, "/feedback-configs", Some(KEY_A), Some(json!({"feedback_key": "rating", "id": "x"}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e.to_string().contains("id"), "{e}");
    let (st, _) = h.call(Method::DELETE, "/feedback-configs", Some(KEY_A), None).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "neither feedback_key nor id");
    // Every version went through the bus: the store holds A's live config and B's deleted one.
    let stored_b = h.store.list_feedback_configs(TENANT_B).await.unwrap();
    assert_eq!(stored_b.len(), 1);
    assert!(stored_b[0].deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_stores_tokens_and_configs_from_their_events() {
    use sextant_core::feedback::{FeedbackConfigDef, FeedbackToken};
    use sextant_events::{Envelope, Event, FeedbackConfigChangedV1, FeedbackTokenIssuedV1};
    let h = start();
    // Published by another replica: this process learns of them only through the stream.
    let token = FeedbackToken {
        id: Uuid::new_v4(),
        run_id: RunId(Uuid::now_v7()),
        key: "vote".into(),
        feedback_id: FeedbackId(Uuid::now_v7()),
        expires_at: Timestamp(Timestamp::now().micros() + 60_000_000),
        created_at: Timestamp::now(),
        feedback_config: None,
    };
    let config = FeedbackConfigDef {
        id: Uuid::now_v7(),
        key: "rating".into(),
        config: sextant_core::RawJson::parse(r#"{"type":"freeform"}"#).unwrap(),
        is_lower_score_better: None,
        is_enforced: false,
        deleted: false,
        created_at: Timestamp::now(),
        modified_at: Timestamp::now(),
    };
    let envs = [
        Envelope::new(TENANT_A, Event::FeedbackTokenIssuedV1(FeedbackTokenIssuedV1 { token: token.clone() })),
        Envelope::new(TENANT_A, Event::FeedbackConfigChangedV1(FeedbackConfigChangedV1 { config: config.clone() })),
    ];
    h.bus.publish(&envs).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.store.list_feedback_configs(TENANT_A).await.unwrap().is_empty() || h.store.feedback_token(token.id).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the projector never stored the token and the config");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.store.feedback_token(token.id).await.unwrap(), Some((TENANT_A, token.clone())));
    assert_eq!(h.store.list_feedback_configs(TENANT_A).await.unwrap(), vec![config]);
    let (st, _) = h.call(Method::POST, &format!("/feedback/tokens/{}", token.id), None, Some(json!({"score": 1}))).await;
    assert_eq!(st, StatusCode::OK, "the projected token redeems");
}
