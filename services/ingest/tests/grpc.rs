//! The gRPC `RunService` end to end in one process: a tonic client talks over
//! `tokio::io::duplex` to the real service, over a real `Ingest` with the embedded store, the
//! in-process bus and the run projector. Reads lag writes, so reads poll with a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Request, Status};

use sextant_auth::{hash_key, ApiKeyConfig, Authenticator};
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::EventBus;
use sextant_core::{TenantId, Timestamp};
use sextant_ingest::grpc::service;
use sextant_ingest::projector::run_projector;
use sextant_ingest::{Ingest, IngestLimits};
use sextant_proto::grpc::timestamp_to_pb;
use sextant_proto::pb;
use sextant_proto::pb::run_service_client::RunServiceClient;
use sextant_proto::prost_types;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::Storage;

const KEY_A: &str = "key-tenant-a";
const KEY_B: &str = "key-tenant-b";
const TENANT_A: TenantId = TenantId(uuid::Uuid::from_u128(0xa));
const TENANT_B: TenantId = TenantId(uuid::Uuid::from_u128(0xb));

struct Harness {
    client: RunServiceClient<Channel>,
    /// The same connection, for hand-built requests.
    channel: Channel,
    shutdown: watch::Sender<bool>,
    _dir: TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn start(limits: IngestLimits) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(run_projector(bus.clone(), store.clone(), shutdown_rx));
    let ingest = Arc::new(Ingest::new(bus, store, limits));
    let keys = [
        ApiKeyConfig { name: "a".into(), hash: hash_key(KEY_A), tenant: TENANT_A },
        ApiKeyConfig { name: "b".into(), hash: hash_key(KEY_B), tenant: TENANT_B },
    ];
    let auth = Arc::new(Authenticator::new(&keys).unwrap());

    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(server_io) });
    tokio::spawn(Server::builder().add_service(service(ingest, auth)).serve_with_incoming(incoming));
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://in-process")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move { io.map(TokioIo::new).ok_or_else(|| std::io::Error::other("the in-process connection is already used")) }
        }))
        .await
        .unwrap();
    let client = RunServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    Harness { client, channel, shutdown, _dir: dir }
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    r
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
async fn wait_until<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {secs}s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A run in a trace: its id and dotted order.
#[derive(Clone)]
struct Node {
    id: String,
    dotted: String,
    start: Timestamp,
}

fn node(parent: Option<&Node>, start: Timestamp) -> Node {
    let id = uuid::Uuid::now_v7().to_string();
    let seg = format!("{}{id}", start.to_dotted_stamp());
    let dotted = match parent {
        Some(p) => format!("{}.{seg}", p.dotted),
        None => seg,
    };
    Node { id, dotted, start }
}

fn post(n: &Node, parent: Option<&Node>, trace: &Node, name: &str, run_type: &str) -> pb::Run {
    pb::Run {
        id: n.id.clone(),
        trace_id: Some(trace.id.clone()),
        parent_run_id: parent.map(|p| p.id.clone()),
        dotted_order: Some(n.dotted.clone()),
        session_name: Some("grpc-tests".into()),
        name: Some(name.into()),
        run_type: Some(run_type.into()),
        start_time: Some(timestamp_to_pb(n.start)),
        inputs_json: Some(format!(r#"{{"question": "what is {name}?"}}"#)),
        tags: vec!["grpc".into()],
        extra_json: Some(r#"{"metadata": {"user": "u1"}}"#.into()),
        ..Default::default()
    }
}

fn patch(n: &Node, end: Timestamp) -> pb::Run {
    pb::Run {
        id: n.id.clone(),
        trace_id: None,
        end_time: Some(timestamp_to_pb(end)),
        outputs_json: Some(r#"{"answer": 42}"#.into()),
        ..Default::default()
    }
}

fn at(base: Timestamp, ms: i64) -> Timestamp {
    Timestamp(base.micros() + ms * 1000)
}

async fn ingest(c: &mut RunServiceClient<Channel>, key: &str, post: Vec<pb::Run>, patch: Vec<pb::Run>) -> Result<u64, Status> {
    c.ingest_runs(with_key(pb::IngestRunsRequest { post, patch }, key)).await.map(|r| r.into_inner().runs)
}

async fn stream_trace(c: &mut RunServiceClient<Channel>, key: &str, trace: &str) -> Result<Vec<pb::Run>, Status> {
    let mut stream = c.stream_trace(with_key(pb::StreamTraceRequest { trace_id: trace.into() }, key)).await?.into_inner();
    let mut runs = Vec::new();
    while let Some(r) = stream.message().await? {
        runs.push(r);
    }
    Ok(runs)
}

async fn query(c: &mut RunServiceClient<Channel>, key: &str, q: pb::QueryRunsRequest) -> Result<pb::QueryRunsResponse, Status> {
    c.query_runs(with_key(q, key)).await.map(|r| r.into_inner())
}

/// root ─┬─ child-1 (llm) ── grandchild (tool)
///       └─ child-2 (llm)
struct Trace {
    root: Node,
    child1: Node,
    grandchild: Node,
    child2: Node,
}

impl Trace {
    fn new() -> Self {
        let base = Timestamp::now();
        let root = node(None, base);
        let child1 = node(Some(&root), at(base, 1));
        let grandchild = node(Some(&child1), at(base, 2));
        let child2 = node(Some(&root), at(base, 3));
        Self { root, child1, grandchild, child2 }
    }

    /// Posts in an order unlike the trace's (children first), then every patch.
    async fn ingest(&self, c: &mut RunServiceClient<Channel>, key: &str) {
        let posts = vec![
            post(&self.child2, Some(&self.root), &self.root, "child-2", "llm"),
            post(&self.grandchild, Some(&self.child1), &self.root, "grandchild", "tool"),
            post(&self.root, None, &self.root, "root", "chain"),
            post(&self.child1, Some(&self.root), &self.root, "child-1", "llm"),
        ];
        let base = self.root.start;
        let mut patches: Vec<pb::Run> =
            [&self.root, &self.child1, &self.grandchild, &self.child2].iter().map(|n| patch(n, at(base, 10))).collect();
        patches[1].prompt_tokens = Some(11);
        patches[1].completion_tokens = Some(3);
        patches[1].total_tokens = Some(14);
        patches[2].error = Some("ValueError('boom')".into());
        assert_eq!(ingest(c, key, posts, patches).await.unwrap(), 8);
    }

    /// Waits until every run and every patch has been projected; returns the streamed trace.
    async fn wait_projected(&self, c: &mut RunServiceClient<Channel>, key: &str) -> Vec<pb::Run> {
        let trace = self.root.id.clone();
        wait_until(10, || {
            let mut c = c.clone();
            let trace = trace.clone();
            async move {
                let runs = stream_trace(&mut c, key, &trace).await.unwrap();
                (runs.len() == 4 && runs.iter().all(|r| r.end_time.is_some())).then_some(runs)
            }
        })
        .await
    }
}

fn code_and_message(r: Result<impl std::fmt::Debug, Status>) -> (Code, String) {
    let e = r.expect_err("expected an error");
    (e.code(), e.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_trace_is_readable_by_get_query_and_stream() {
    let h = start(IngestLimits::default()).await;
    let mut c = h.client.clone();
    let t = Trace::new();
    t.ingest(&mut c, KEY_A).await;

    // StreamTrace: every run, parents before children, in dotted order.
    let runs = t.wait_projected(&mut c, KEY_A).await;
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [&t.root.id, &t.child1.id, &t.grandchild.id, &t.child2.id]);
    let dotted: Vec<&str> = runs.iter().map(|r| r.dotted_order.as_deref().unwrap()).collect();
    assert!(dotted.windows(2).all(|w| w[0] < w[1]), "{dotted:?}");

    // GetRun: the merge of post and patch, every field through.
    let r = c.get_run(with_key(pb::GetRunRequest { id: t.child1.id.clone() }, KEY_A)).await.unwrap().into_inner();
    assert_eq!(r.name.as_deref(), Some("child-1"));
    assert_eq!(r.run_type.as_deref(), Some("llm"));
    assert_eq!(r.trace_id.as_deref(), Some(t.root.id.as_str()));
    assert_eq!(r.parent_run_id.as_deref(), Some(t.root.id.as_str()));
    assert_eq!(r.parent_run_ids, [t.root.id.as_str()]);
    assert_eq!(r.dotted_order.as_deref(), Some(t.child1.dotted.as_str()));
    assert_eq!(r.inputs_json.as_deref(), Some(r#"{"question": "what is child-1?"}"#));
    assert_eq!(r.outputs_json.as_deref(), Some(r#"{"answer": 42}"#));
    assert_eq!(r.status.as_deref(), Some("success"));
    assert_eq!(r.tags, ["grpc"]);
    assert_eq!((r.prompt_tokens, r.completion_tokens, r.total_tokens), (Some(11), Some(3), Some(14)));
    let extra: serde_json::Value = serde_json::from_str(r.extra_json.as_deref().unwrap()).unwrap();
    assert_eq!(extra["metadata"]["user"], "u1");
    assert_eq!(r.start_time, Some(timestamp_to_pb(t.child1.start)), "the start time, to the microsecond");
    let session = r.session_id.clone().unwrap();
    assert_eq!(runs[0].session_id.as_deref(), Some(session.as_str()));
    let g = &runs[2];
    assert_eq!(g.status.as_deref(), Some("error"));
    assert_eq!(g.error.as_deref(), Some("ValueError('boom')"));

    // QueryRuns with the filter language and the structured fields.
    let llms = query(
        &mut c,
        KEY_A,
        pb::QueryRunsRequest { trace: t.root.id.clone(), filter: r#"eq(run_type, "llm")"#.into(), ..Default::default() },
    )
    .await
    .unwrap();
    let mut got: Vec<String> = llms.runs.into_iter().map(|r| r.id).collect();
    got.sort();
    let mut want = vec![t.child1.id.clone(), t.child2.id.clone()];
    want.sort();
    assert_eq!(got, want);
    assert!(llms.next_cursor.is_empty());

    let q = pb::QueryRunsRequest {
        session_ids: vec![session],
        filter: r#"and(eq(status, "error"), has(tags, "grpc"))"#.into(),
        trace_filter: r#"eq(name, "root")"#.into(),
        ..Default::default()
    };
    let errors = query(&mut c, KEY_A, q).await.unwrap();
    assert_eq!(errors.runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [t.grandchild.id.as_str()]);

    let roots = query(&mut c, KEY_A, pb::QueryRunsRequest { is_root: Some(true), ..Default::default() }).await.unwrap();
    assert_eq!(roots.runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [t.root.id.as_str()]);

    // Paging: newest first, a cursor until the last page.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page =
            query(&mut c, KEY_A, pb::QueryRunsRequest { trace: t.root.id.clone(), limit: 3, cursor, ..Default::default() }).await.unwrap();
        seen.extend(page.runs.into_iter().map(|r| r.id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(seen, [t.child2.id.as_str(), &t.grandchild.id, &t.child1.id, &t.root.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_filter_is_invalid_argument_with_the_position() {
    let h = start(IngestLimits::default()).await;
    let mut c = h.client.clone();
    for (which, q) in [
        ("filter", pb::QueryRunsRequest { filter: r#"and(eq(run_type "llm"))"#.into(), ..Default::default() }),
        ("trace_filter", pb::QueryRunsRequest { trace_filter: "eq(name,".into(), ..Default::default() }),
        ("tree_filter", pb::QueryRunsRequest { tree_filter: "frobnicate(name, 1)".into(), ..Default::default() }),
    ] {
        let (code, message) = code_and_message(query(&mut c, KEY_A, q).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.starts_with(&format!("{which}: invalid filter at position ")), "{message}");
    }
    let (code, message) = code_and_message(query(&mut c, KEY_A, pb::QueryRunsRequest { limit: 5000, ..Default::default() }).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("limit"), "{message}");
    let (code, _) = code_and_message(query(&mut c, KEY_A, pb::QueryRunsRequest { cursor: "garbage".into(), ..Default::default() }).await);
    assert_eq!(code, Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_times_and_json_are_invalid_argument() {
    let h = start(IngestLimits::default()).await;
    let mut c = h.client.clone();

    let (code, message) = code_and_message(c.get_run(with_key(pb::GetRunRequest { id: "not-a-uuid".into() }, KEY_A)).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("not-a-uuid"), "{message}");
    let (code, message) = code_and_message(stream_trace(&mut c, KEY_A, "").await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("trace_id is required"), "{message}");
    let (code, message) =
        code_and_message(query(&mut c, KEY_A, pb::QueryRunsRequest { session_ids: vec!["nope".into()], ..Default::default() }).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("session_ids"), "{message}");
    let (code, message) = code_and_message(
        query(
            &mut c,
            KEY_A,
            pb::QueryRunsRequest { start_time: Some(prost_types::Timestamp { seconds: 0, nanos: -5 }), ..Default::default() },
        )
        .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("start_time"), "{message}");

    // Runs go through the REST validation: errors name the run and the field.
    let t = Trace::new();
    let good = post(&t.root, None, &t.root, "root", "chain");
    type Edit = fn(&mut pb::Run);
    let cases: [(Edit, &str); 6] = [
        (|r| r.parent_run_id = Some("123".into()), "post[1].parent_run_id"),
        (|r| r.start_time = Some(prost_types::Timestamp { seconds: 0, nanos: 1_000_000_000 }), "post[1].start_time: nanos"),
        (|r| r.inputs_json = Some("{not json".into()), "post[1].inputs_json"),
        (|r| r.dotted_order = Some("garbage".into()), "post[1].dotted_order"),
        (|r| r.id = String::new(), "post[1].id is required"),
        (|r| r.run_type = Some("agent".into()), "post[1].run_type: \"agent\" is not one of tool, chain, llm"),
    ];
    for (edit, expected) in cases {
        let mut bad = post(&t.child1, Some(&t.root), &t.root, "child", "llm");
        edit(&mut bad);
        let (code, message) = code_and_message(ingest(&mut c, KEY_A, vec![good.clone(), bad], vec![]).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let mut bad_patch = patch(&t.root, Timestamp::now());
    bad_patch.end_time = Some(prost_types::Timestamp { seconds: 300_000_000_000, nanos: 0 });
    let (code, message) = code_and_message(ingest(&mut c, KEY_A, vec![], vec![bad_patch]).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("patch[0].end_time"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_tenants_are_isolated() {
    let h = start(IngestLimits::default()).await;
    let mut c = h.client.clone();

    let (code, _) = code_and_message(c.get_run(Request::new(pb::GetRunRequest { id: uuid::Uuid::nil().to_string() })).await);
    assert_eq!(code, Code::Unauthenticated);
    let (code, _) = code_and_message(ingest(&mut c, "wrong-key", vec![], vec![]).await);
    assert_eq!(code, Code::Unauthenticated);
    let mut mismatched = with_key(pb::QueryRunsRequest::default(), KEY_A);
    mismatched.metadata_mut().insert("x-tenant-id", TENANT_B.to_string().parse().unwrap());
    let (code, _) = code_and_message(c.query_runs(mismatched).await);
    assert_eq!(code, Code::PermissionDenied);
    let mut bearer = Request::new(pb::QueryRunsRequest::default());
    bearer.metadata_mut().insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
    bearer.metadata_mut().insert("x-tenant-id", TENANT_A.to_string().parse().unwrap());
    c.query_runs(bearer).await.expect("a bearer token and a matching tenant are accepted");

    // Tenant A's trace is invisible to tenant B, by id, by query and by stream.
    let t = Trace::new();
    t.ingest(&mut c, KEY_A).await;
    t.wait_projected(&mut c, KEY_A).await;
    let (code, _) = code_and_message(c.get_run(with_key(pb::GetRunRequest { id: t.root.id.clone() }, KEY_B)).await);
    assert_eq!(code, Code::NotFound);
    let by_id = query(&mut c, KEY_B, pb::QueryRunsRequest { ids: vec![t.root.id.clone()], ..Default::default() }).await.unwrap();
    assert!(by_id.runs.is_empty());
    let by_trace = query(&mut c, KEY_B, pb::QueryRunsRequest { trace: t.root.id.clone(), ..Default::default() }).await.unwrap();
    assert!(by_trace.runs.is_empty());
    assert!(stream_trace(&mut c, KEY_B, &t.root.id).await.unwrap().is_empty());
    let all_of_b = query(&mut c, KEY_B, pb::QueryRunsRequest::default()).await.unwrap();
    assert!(all_of_b.runs.is_empty());
    // ... and still there for A.
    c.get_run(with_key(pb::GetRunRequest { id: t.root.id.clone() }, KEY_A)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_larger_than_a_query_page_streams_completely() {
    // More runs than one query page may hold (1000): StreamTrace has no cap.
    const RUNS: usize = 1500;
    let h = start(IngestLimits::default()).await;
    let mut c = h.client.clone();
    let base = Timestamp::now();
    let root = node(None, base);
    let mut nodes = vec![root.clone()];
    let mut posts = vec![post(&root, None, &root, "root", "chain")];
    for i in 1..RUNS {
        // Every tenth run nests under the previous one, so the order is not just by start.
        let parent = if i % 10 == 0 { nodes[i - 1].clone() } else { root.clone() };
        let n = node(Some(&parent), at(base, i as i64));
        posts.push(post(&n, Some(&parent), &root, &format!("step-{i}"), "tool"));
        nodes.push(n);
    }
    assert_eq!(ingest(&mut c, KEY_A, posts, vec![]).await.unwrap(), RUNS as u64);

    let runs = wait_until(30, || {
        let mut c = c.clone();
        let trace = root.id.clone();
        async move {
            let runs = stream_trace(&mut c, KEY_A, &trace).await.unwrap();
            (runs.len() == RUNS).then_some(runs)
        }
    })
    .await;
    let mut want: Vec<(&str, &str)> = nodes.iter().map(|n| (n.dotted.as_str(), n.id.as_str())).collect();
    want.sort();
    let got: Vec<(&str, &str)> = runs.iter().map(|r| (r.dotted_order.as_deref().unwrap(), r.id.as_str())).collect();
    assert_eq!(got, want);
    assert_eq!(runs[0].id, root.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_are_refused() {
    let limits = IngestLimits { max_body_bytes: 64 * 1024, max_runs_per_request: 10, ..IngestLimits::default() };
    let h = start(limits).await;
    let mut c = h.client.clone();
    let base = Timestamp::now();
    let root = node(None, base);

    let too_many: Vec<pb::Run> = (0..11)
        .map(|i| {
            let n = node(Some(&root), at(base, i));
            post(&n, Some(&root), &root, "step", "tool")
        })
        .collect();
    let (code, message) = code_and_message(ingest(&mut c, KEY_A, too_many, vec![]).await);
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("the limit is 10"), "{message}");

    // Over the request size limit: refused by the transport before any work is done.
    let mut big = post(&root, None, &root, "root", "chain");
    big.inputs_json = Some(format!(r#"{{"text": "{}"}}"#, "x".repeat(100 * 1024)));
    let (code, message) = code_and_message(ingest(&mut c, KEY_A, vec![big], vec![]).await);
    assert_eq!(code, Code::OutOfRange, "{message}");
    assert!(message.contains("65536"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_are_accepted() {
    let h = start(IngestLimits::default()).await;
    let mut c = h
        .client
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    let root = node(None, Timestamp::now());
    let mut p = post(&root, None, &root, "root", "chain");
    p.inputs_json = Some(format!(r#"{{"text": "{}"}}"#, "compressible ".repeat(10_000)));
    assert_eq!(ingest(&mut c, KEY_A, vec![p], vec![]).await.unwrap(), 1);
    let run = wait_until(10, || {
        let mut c = c.clone();
        let id = root.id.clone();
        async move { c.get_run(with_key(pb::GetRunRequest { id }, KEY_A)).await.ok() }
    })
    .await
    .into_inner();
    assert!(run.inputs_json.unwrap().len() > 100_000);
}

/// Sends `body` as the raw body of a gRPC call (no framing added) and returns its status.
async fn raw_call(channel: &Channel, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Status {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("http://in-process{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", KEY_A);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)))).unwrap();
    let resp = channel.clone().oneshot(req).await.expect("the server answers");
    if let Some(s) = Status::from_header_map(resp.headers()) {
        return s;
    }
    let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap_or_default();
    Status::from_header_map(&trailers).expect("a grpc-status")
}

/// A gRPC message frame: the compression flag, the length, the bytes.
fn frame(flag: u8, declared_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&declared_len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_argument_not_internal() {
    let h = start(IngestLimits::default()).await;
    let garbage = [0xff_u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    /// What is wrong, extra headers, the body, and what the message must say.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed protobuf", vec![], frame(0, garbage.len() as u32, &garbage), "not a valid protobuf message"),
        // Field 1 (a string) says 50 bytes follow; 2 do.
        ("truncated protobuf", vec![], frame(0, 4, &[0x0a, 50, b'a', b'b']), "not a valid protobuf message"),
        ("truncated frame", vec![], frame(0, 100, b"abc"), "truncated"),
        ("a partial frame header", vec![], vec![0, 0, 0], "truncated"),
        ("an empty body", vec![], vec![], "no gRPC message"),
        ("an invalid compression flag", vec![], frame(7, 1, b"x"), "compression flag"),
        ("a frame that does not decompress", vec![("grpc-encoding", "gzip")], frame(1, 5, b"nope!"), "does not decompress"),
    ];
    for path in ["/sextant.v1.RunService/IngestRuns", "/sextant.v1.RunService/GetRun", "/sextant.v1.RunService/StreamTrace"] {
        for (what, headers, body, needle) in &cases {
            let status = raw_call(&h.channel, path, headers, body.clone()).await;
            assert_eq!(status.code(), Code::InvalidArgument, "{path}, {what}: {status:?}");
            assert!(status.message().contains(needle), "{path}, {what}: {:?}", status.message());
        }
    }
    // A well-formed request still reaches the service, and its own answers are untouched.
    let status = raw_call(&h.channel, "/sextant.v1.RunService/GetRun", &[], frame(0, 0, &[])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("id is required"), "{:?}", status.message());
}
