//! A request is checked whole before anything is written, with the same rules on every route:
//! trailing content after a JSON body is refused, run fields meet one set of rules (costs,
//! token counts, status, inputs and outputs as objects) whichever way they arrive, a bad run
//! or project further down a request leaves no project behind, and `/runs/multipart` publishes
//! its runs and feedback together or not at all.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use sextant_auth::Authenticator;
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::{BusError, BusErrorKind, ConsumerSpec, DeadLetter, EventBus, Subscription};
use sextant_core::{FragmentKind, RawJson, RunFragment, RunId, LOCAL_TENANT};
use sextant_events::{Envelope, Event, Stream};
use sextant_ingest::http::{router, HttpState};
use sextant_ingest::signing::UrlSigner;
use sextant_ingest::wire::ProjectRef;
use sextant_ingest::{Ingest, IngestLimits};
use sextant_proto::ErrorKind;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::Storage;

/// The in-process bus, recording what is published; publishes that carry feedback fail when
/// `fail_feedback` is set (the bus refusing part of a request).
struct RecordingBus {
    inner: InProcessBus,
    published: Mutex<Vec<Envelope>>,
    fail_feedback: bool,
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), BusError> {
        if self.fail_feedback && envelopes.iter().any(|e| matches!(e.event, Event::FeedbackPartReceivedV1(_))) {
            return Err(BusError::new(BusErrorKind::Unavailable, "refusing feedback"));
        }
        self.inner.publish(envelopes).await?;
        self.published.lock().unwrap().extend_from_slice(envelopes);
        Ok(())
    }
    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(spec).await
    }
    async fn pending(&self, durable: &str, stream: Stream) -> Result<Option<u64>, BusError> {
        self.inner.pending(durable, stream).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.dead_letters(limit).await
    }
}

struct Fixture {
    ingest: Arc<Ingest>,
    store: Arc<dyn Storage>,
    bus: Arc<RecordingBus>,
    app: Router,
    _dir: tempfile::TempDir,
}

fn fixture(fail_feedback: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bus =
        Arc::new(RecordingBus { inner: InProcessBus::open(&dir.path().join("bus")).unwrap(), published: Mutex::default(), fail_feedback });
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let dyn_bus: Arc<dyn EventBus> = bus.clone();
    let ingest = Arc::new(Ingest::new(dyn_bus.clone(), store.clone(), IngestLimits::default()));
    let state = HttpState { ingest: ingest.clone(), signer: UrlSigner::new(vec![7; 32]), bus: dyn_bus };
    let app = router(state, Arc::new(Authenticator::new(&[]).unwrap()));
    Fixture { ingest, store, bus, app, _dir: dir }
}

impl Fixture {
    async fn send(&self, method: Method, path: &str, content_type: &str, body: impl Into<Body>) -> (StatusCode, String) {
        let req = Request::builder().method(method).uri(path).header("content-type", content_type).body(body.into()).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body["detail"].as_str().unwrap_or_default().to_owned())
    }

    fn run_events(&self) -> usize {
        self.bus.published.lock().unwrap().iter().filter(|e| matches!(e.event, Event::RunsIngestedV1(_))).count()
    }
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

const B: &str = "eb4651d2d7d94b3fa6445b6be97e9bf5";

fn multipart(parts: &[(String, &str)]) -> String {
    let mut s = String::new();
    for (name, body) in parts {
        s.push_str(&format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\r\n",
            body.len()
        ));
    }
    s.push_str(&format!("--{B}--\r\n"));
    s
}

#[tokio::test]
async fn trailing_content_after_a_json_body_is_refused_on_every_run_route() {
    let f = fixture(false);
    let (r1, r2) = (id(), id());
    let two = format!(r#"{{"post":[{{"id":"{r1}"}}]}}{{"post":[{{"id":"{r2}"}}]}}"#);
    let (status, detail) = f.send(Method::POST, "/runs/batch", "application/json", two).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{detail}");
    assert!(detail.contains("unexpected content after the JSON value"), "{detail}");
    let (status, detail) = f.send(Method::POST, "/api/v1/runs", "application/json", format!(r#"{{"id":"{r1}"}}garbage"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{detail}");
    let (status, _) = f.send(Method::PATCH, &format!("/runs/{r1}"), "application/json", "{}garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = f.send(Method::POST, "/runs/query", "application/json", "{}{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = f.send(Method::POST, "/sessions", "application/json", r#"{"name":"a"}x"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mp = multipart(&[(format!("post.{r1}"), &format!(r#"{{"id":"{r1}"}}{{"id":"{r2}"}}"#))]);
    let (status, detail) = f.send(Method::POST, "/runs/multipart", &format!("multipart/form-data; boundary={B}"), mp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{detail}");
    assert!(detail.contains(&format!("part post.{r1}")), "{detail}");
    // Trailing whitespace is not content.
    let (status, detail) =
        f.send(Method::POST, "/runs/batch", "application/json", format!("{{\"post\":[{{\"id\":\"{r1}\"}}]}} \r\n")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{detail}");
    assert_eq!(f.run_events(), 1, "only the well-formed request was published");
}

#[tokio::test]
async fn rest_runs_meet_the_same_rules_as_grpc_runs() {
    let f = fixture(false);
    let batch = |run: Value| json!({ "post": [run] }).to_string();
    for (field, value, needle) in [
        ("prompt_tokens", json!(-1), "post[0].prompt_tokens: -1 is negative"),
        ("completion_tokens", json!(-20), "post[0].completion_tokens"),
        ("total_tokens", json!(-3), "post[0].total_tokens"),
        ("prompt_cost", json!(-0.01), "post[0].prompt_cost"),
        ("total_cost", json!(-1e300), "post[0].total_cost"),
        ("status", json!("exploded"), "post[0].status"),
        ("inputs", json!(5), "post[0].inputs: expected a JSON object, got a number"),
        ("inputs", json!("text"), "post[0].inputs: expected a JSON object, got a string"),
        ("outputs", json!([1]), "post[0].outputs: expected a JSON object, got an array"),
    ] {
        let mut run = json!({"id": id(), "session_name": "rules"});
        run[field] = value;
        let (status, detail) = f.send(Method::POST, "/runs/batch", "application/json", batch(run)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {detail}");
        assert!(detail.contains(needle), "{field}: expected {needle:?} in {detail:?}");
    }
    // The same on a patch, and through multipart sub-parts (which bypass the run JSON).
    let r = id();
    let (status, detail) = f.send(Method::PATCH, &format!("/runs/{r}"), "application/json", r#"{"total_tokens": -5}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{detail}");
    let ct = format!("multipart/form-data; boundary={B}");
    let mp = multipart(&[(format!("post.{r}"), &format!(r#"{{"id":"{r}"}}"#)), (format!("post.{r}.outputs"), "\"just text\"")]);
    let (status, detail) = f.send(Method::POST, "/runs/multipart", &ct, mp).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{detail}");
    assert!(detail.contains("outputs: expected a JSON object"), "{detail}");
    // What the SDK sends passes: objects, zero costs, null outputs, a known status.
    let ok = json!({"id": r, "session_name": "rules", "inputs": {"q": 1}, "outputs": null, "status": "success",
        "prompt_tokens": 0, "total_cost": 0.0});
    let (status, detail) = f.send(Method::POST, "/runs/batch", "application/json", batch(ok)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{detail}");
    assert_eq!(f.run_events(), 1);
}

#[tokio::test]
async fn a_bad_run_or_project_later_in_a_request_leaves_no_project_behind() {
    let f = fixture(false);
    let post = |project: ProjectRef| (RunFragment::new(FragmentKind::Post, RunId(uuid::Uuid::now_v7())), project);

    // The second run names a project id that does not exist.
    let missing = uuid::Uuid::now_v7();
    let err = f.ingest.ingest(LOCAL_TENANT, vec![post(ProjectRef::Name("made-too-early".into())), post(ProjectRef::Id(missing))]).await;
    let err = err.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unprocessable);
    assert!(err.message.contains(&missing.to_string()), "{}", err.message);
    assert!(f.store.project_by_name(LOCAL_TENANT, "made-too-early").await.unwrap().is_none(), "no project was created");

    // The second run has a bad field (as a multipart sub-part can leave it).
    let (mut bad, p) = post(ProjectRef::Name("other".into()));
    bad.inputs = Some(RawJson::parse("[1, 2]").unwrap());
    let err = f.ingest.ingest(LOCAL_TENANT, vec![post(ProjectRef::Name("made-too-early".into())), (bad, p)]).await.unwrap_err();
    assert!(err.message.contains("inputs: expected a JSON object"), "{}", err.message);
    // The second run has an invalid project name.
    let err = f
        .ingest
        .ingest(LOCAL_TENANT, vec![post(ProjectRef::Name("made-too-early".into())), post(ProjectRef::Name("x".repeat(5000)))])
        .await;
    assert!(err.unwrap_err().message.contains("session_name"));
    assert!(f.store.project_by_name(LOCAL_TENANT, "made-too-early").await.unwrap().is_none(), "no project was created");
    assert!(f.bus.published.lock().unwrap().is_empty(), "nothing was published: {:?}", f.bus.published.lock().unwrap().len());
}

#[tokio::test]
async fn multipart_runs_and_feedback_are_published_together_or_not_at_all() {
    let f = fixture(true);
    let (r, fb) = (id(), id());
    let ct = format!("multipart/form-data; boundary={B}");
    let mp = multipart(&[
        (format!("post.{r}"), &format!(r#"{{"id":"{r}","session_name":"together","inputs":{{"q":1}}}}"#)),
        (format!("feedback.{fb}"), &format!(r#"{{"id":"{fb}","run_id":"{r}","key":"correct","score":1}}"#)),
    ]);
    let (status, detail) = f.send(Method::POST, "/runs/multipart", &ct, mp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{detail}");
    assert_eq!(f.run_events(), 0, "the runs were published although the request failed");
}
