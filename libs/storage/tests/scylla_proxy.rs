//! Proxy tests of the ScyllaDB adapter: a real `scylla::Session` talks to `scylla-proxy` in dry
//! mode, which answers CQL frames on 127.0.0.x without any database. The proxy's rules forge
//! the handshake, the PREPARE results (from the same schema the unit tests check) and the
//! replies or errors of each test, and report the frames they matched.
//!
//! These are not storage tests: nothing is stored. They check the adapter's handshake, error
//! mapping and retry decisions; the conformance suite (`scylla_conformance.rs`) checks storage
//! semantics against a real cluster.
#![cfg(feature = "scylla")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use scylla::frame::response::result::NativeType;
use scylla_proxy::{
    example_db_errors, Condition, Node, Proxy, Reaction, RequestFrame, RequestOpcode, RequestReaction, RequestRule, ResponseFrame,
    ResponseOpcode, RunningProxy,
};
use tokio::sync::mpsc;
use uuid::Uuid;

use sextant_core::{Project, ProjectId, RunId, TenantId};
use sextant_storage::scylla::testing;
use sextant_storage::scylla::{ScyllaConfig, ScyllaStore};
use sextant_storage::{CreateOutcome, ProjectStore, RunStore, StorageErrorKind};

const KEYSPACE: &str = "sextant_proxy";

type Feedback = mpsc::UnboundedReceiver<(RequestFrame, Option<u16>)>;

// ---- CQL v4 frame bodies -------------------------------------------------------------------

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_u16(s.len() as u16);
    b.put_slice(s.as_bytes());
}

fn type_id(t: &NativeType) -> u16 {
    match t {
        NativeType::BigInt => 0x0002,
        NativeType::Blob => 0x0003,
        NativeType::Boolean => 0x0004,
        NativeType::Int => 0x0009,
        NativeType::Timestamp => 0x000B,
        NativeType::Uuid => 0x000C,
        NativeType::Text => 0x000D,
        other => panic!("no type id for {other:?}"),
    }
}

/// Column specs with a global table spec.
fn put_specs(b: &mut BytesMut, specs: &[(String, NativeType)]) {
    put_string(b, KEYSPACE);
    put_string(b, "t");
    for (name, ty) in specs {
        put_string(b, name);
        b.put_u16(type_id(ty));
    }
}

/// The query string of a PREPARE or QUERY body (a `[long string]` first).
fn query_text(body: &[u8]) -> String {
    let len = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&body[4..4 + len]).into_owned()
}

/// The name of one of our statements, which the forged PREPARE uses as statement id (with a
/// `#` so no id is a prefix of another).
fn statement_id(name: &str) -> Vec<u8> {
    format!("{name}#").into_bytes()
}

/// RESULT Prepared for one of the adapter's statements, its markers typed from the schema; a
/// server error for anything else (the driver's own metadata queries, which it survives).
fn forged_prepared(frame: RequestFrame) -> ResponseFrame {
    let text = query_text(&frame.body);
    let Some((name, _)) = testing::statements().iter().find(|(_, cql)| *cql == text) else {
        return ResponseFrame::forged_error(frame.params, example_db_errors::server_error(), None).unwrap();
    };
    let binds = testing::bind_specs(&testing::schema(), &text).unwrap();
    let mut b = BytesMut::new();
    b.put_i32(0x0004);
    let id = statement_id(name);
    b.put_u16(id.len() as u16);
    b.put_slice(&id);
    b.put_i32(0x0001); // global table spec
    b.put_i32(binds.len() as i32);
    b.put_i32(0); // no partition key indexes: the driver routes without tokens
    put_specs(&mut b, &binds);
    b.put_i32(0x0004); // result metadata: none (rows carry their own)
    b.put_i32(0);
    ResponseFrame::new(frame.params.for_response(), ResponseOpcode::Result, b.freeze())
}

/// RESULT Rows with the given columns and rows (`None` cells are null).
fn forged_rows(frame: &RequestFrame, specs: &[(String, NativeType)], rows: &[Vec<Option<Vec<u8>>>]) -> ResponseFrame {
    let mut b = BytesMut::new();
    b.put_i32(0x0002);
    b.put_i32(0x0001);
    b.put_i32(specs.len() as i32);
    put_specs(&mut b, specs);
    b.put_i32(rows.len() as i32);
    for row in rows {
        for cell in row {
            match cell {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    }
    ResponseFrame::new(frame.params.for_response(), ResponseOpcode::Result, b.freeze())
}

/// RESULT Rows of a statement's SELECT columns, with no rows.
fn no_rows(statement: &str) -> Arc<dyn Fn(RequestFrame) -> ResponseFrame + Send + Sync> {
    let (_, cql) = testing::statements().iter().find(|(n, _)| *n == statement).unwrap();
    let specs = testing::result_specs(&testing::schema(), cql).unwrap();
    Arc::new(move |frame| forged_rows(&frame, &specs, &[]))
}

fn forged_set_keyspace(frame: RequestFrame) -> ResponseFrame {
    let text = query_text(&frame.body);
    let ks = text.trim_start_matches("USE ").trim_matches('"').to_string();
    let mut b = BytesMut::new();
    b.put_i32(0x0003);
    put_string(&mut b, &ks);
    ResponseFrame::new(frame.params.for_response(), ResponseOpcode::Result, b.freeze())
}

// ---- the proxy -----------------------------------------------------------------------------

fn executes(statement: &str) -> Condition {
    Condition::RequestOpcode(RequestOpcode::Execute).and(Condition::BodyContainsCaseSensitive(statement_id(statement).into()))
}

/// `rules`, then the handshake, `USE` and PREPARE of our statements; anything else (the
/// driver's metadata queries included) gets a server error, which the driver tolerates.
async fn start_proxy(rules: Vec<RequestRule>) -> (SocketAddr, RunningProxy, Feedback) {
    // `RUST_LOG=debug` shows the driver's and the proxy's view of each exchange.
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    let addr = SocketAddr::new(scylla_proxy::get_exclusive_local_address(), 9042);
    let (prepare_tx, prepare_rx) = mpsc::unbounded_channel();
    // The test's rules come first: the first matching rule applies.
    let mut all = rules;
    all.extend([
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Options),
            RequestReaction::forge_response(Arc::new(|f: RequestFrame| {
                ResponseFrame::forged_supported(f.params, &HashMap::new()).unwrap()
            })),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Startup).or(Condition::RequestOpcode(RequestOpcode::Register)),
            RequestReaction::forge_response(Arc::new(|f: RequestFrame| ResponseFrame::forged_ready(f.params))),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Query).and(Condition::BodyContainsCaseSensitive(Box::new(*b"USE "))),
            RequestReaction::forge_response(Arc::new(forged_set_keyspace)),
        ),
        RequestRule(
            Condition::RequestOpcode(RequestOpcode::Prepare),
            RequestReaction::forge_response(Arc::new(forged_prepared)).with_feedback_when_performed(prepare_tx),
        ),
    ]);
    all.push(RequestRule(Condition::True, RequestReaction::forge().server_error()));
    let proxy =
        Proxy::builder().with_node(Node::builder().proxy_address(addr).request_rules(all).build_dry_mode()).build().run().await.unwrap();
    (addr, proxy, prepare_rx)
}

fn config(addr: SocketAddr) -> ScyllaConfig {
    ScyllaConfig {
        contact_points: vec![addr.to_string()],
        keyspace: KEYSPACE.into(),
        connect_timeout_ms: 2_000,
        request_timeout_ms: 2_000,
        ..Default::default()
    }
}

/// Stops the proxy. Its report is not checked: it counts the driver's connections closing
/// (the session outlives the rules) as errors.
async fn finish(proxy: RunningProxy) {
    let _ = proxy.finish().await;
}

fn count(rx: &mut Feedback) -> usize {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

fn ids() -> (TenantId, RunId) {
    (TenantId(Uuid::new_v4()), RunId(Uuid::new_v4()))
}

// ---- the tests -----------------------------------------------------------------------------

#[tokio::test]
async fn proxy_connect_uses_the_keyspace_and_prepares_every_statement_once() {
    let (use_tx, mut use_rx) = mpsc::unbounded_channel();
    let rules = vec![RequestRule(
        Condition::RequestOpcode(RequestOpcode::Query)
            .and(Condition::BodyContainsCaseSensitive(format!("USE {KEYSPACE}").into_bytes().into())),
        RequestReaction::forge_response(Arc::new(forged_set_keyspace)).with_feedback_when_performed(use_tx),
    )];
    let (addr, proxy, mut prepares) = start_proxy(rules).await;
    let _store = ScyllaStore::connect(&config(addr)).await.expect("connects through the proxy");
    assert!(count(&mut use_rx) >= 1, "the session switches to the configured keyspace");
    let mut texts = Vec::new();
    let mut expected: Vec<&str> = testing::statements().iter().map(|(_, cql)| *cql).collect();
    while let Ok((frame, _)) = prepares.try_recv() {
        let text = query_text(&frame.body);
        if expected.contains(&text.as_str()) {
            texts.push(text); // not the driver's own metadata statements
        }
    }
    texts.sort();
    expected.sort();
    assert_eq!(texts, expected, "every statement prepared exactly once, at connect");
    finish(proxy).await;
}

#[tokio::test]
async fn proxy_connect_refuses_an_invalid_config_without_connecting() {
    let cfg = ScyllaConfig { keyspace: "Not-Valid".into(), ..Default::default() };
    let err = ScyllaStore::connect(&cfg).await.err().expect("refused");
    assert_eq!(err.kind, StorageErrorKind::Invalid);
    assert!(err.message.contains("not a valid keyspace name"));
}

/// Overload, unavailable replicas and server-side timeouts are all "retry later" to callers,
/// after a bounded number of attempts of the idempotent read.
#[tokio::test]
async fn proxy_transient_server_errors_are_unavailable_after_bounded_retries() {
    for error in [example_db_errors::overloaded(), example_db_errors::unavailable(), example_db_errors::read_timeout()] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rule = RequestRule(executes("GET_HEAD"), RequestReaction::forge_with_error(error.clone()).with_feedback_when_performed(tx));
        let (addr, proxy, _) = start_proxy(vec![rule]).await;
        let store = ScyllaStore::connect(&config(addr)).await.unwrap();
        let (t, r) = ids();
        let err = store.get_run(t, r).await.unwrap_err();
        assert_eq!(err.kind, StorageErrorKind::Unavailable, "{error:?}: {err}");
        assert_eq!(count(&mut rx), testing::MAX_ATTEMPTS as usize, "{error:?}: attempts");
        finish(proxy).await;
    }
}

/// A server that does not answer within the request timeout is unavailable too.
#[tokio::test]
async fn proxy_client_timeout_is_unavailable() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rule = RequestRule(executes("GET_HEAD"), RequestReaction::drop_frame().with_feedback_when_performed(tx));
    let (addr, proxy, _) = start_proxy(vec![rule]).await;
    let store = ScyllaStore::connect(&ScyllaConfig { request_timeout_ms: 200, ..config(addr) }).await.unwrap();
    let (t, r) = ids();
    let err = store.get_run(t, r).await.unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::Unavailable, "{err}");
    assert!(err.message.contains("timeout"), "{err}");
    assert_eq!(count(&mut rx), testing::MAX_ATTEMPTS as usize);
    finish(proxy).await;
}

#[tokio::test]
async fn proxy_a_transient_error_then_success_is_retried() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rules = vec![
        RequestRule(
            executes("GET_HEAD").and(Condition::TrueForLimitedTimes(1)),
            RequestReaction::forge().overloaded().with_feedback_when_performed(tx.clone()),
        ),
        RequestRule(executes("GET_HEAD"), RequestReaction::forge_response(no_rows("GET_HEAD")).with_feedback_when_performed(tx)),
    ];
    let (addr, proxy, _) = start_proxy(rules).await;
    let store = ScyllaStore::connect(&config(addr)).await.unwrap();
    let (t, r) = ids();
    assert!(store.get_run(t, r).await.expect("the retry succeeds").is_none());
    assert_eq!(count(&mut rx), 2, "one failure, one success");
    finish(proxy).await;
}

/// A lightweight transaction that timed out may have applied: it is never resent as such.
#[tokio::test]
async fn proxy_a_timed_out_lwt_is_not_resent() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rules = vec![
        RequestRule(executes("GET_PROJECT"), RequestReaction::forge_response(no_rows("GET_PROJECT"))),
        RequestRule(executes("CLAIM_NAME"), RequestReaction::forge().write_timeout().with_feedback_when_performed(tx)),
    ];
    let (addr, proxy, _) = start_proxy(rules).await;
    let store = ScyllaStore::connect(&config(addr)).await.unwrap();
    let project = Project::new(TenantId(Uuid::new_v4()), ProjectId(Uuid::new_v4()), "p".into());
    let err = store.create_project(&project).await.unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::Unavailable, "{err}");
    assert_eq!(count(&mut rx), 1, "the name claim was sent once");
    finish(proxy).await;
}

/// A claim lost to another project reads that project and reports the name as taken.
#[tokio::test]
async fn proxy_a_lost_name_claim_is_name_taken() {
    let other = Project::new(TenantId(Uuid::new_v4()), ProjectId(Uuid::new_v4()), "p".into());
    let other_body = rmp_serde::to_vec_named(&other).unwrap();
    let other_id = other.id.0;
    let rules = vec![
        // The first read (our id) finds nothing; the second (the owner's) finds the owner.
        RequestRule(
            executes("GET_PROJECT").and(Condition::TrueForLimitedTimes(1)),
            RequestReaction::forge_response(no_rows("GET_PROJECT")),
        ),
        RequestRule(
            executes("GET_PROJECT"),
            RequestReaction::forge_response(Arc::new(move |f| {
                let specs = vec![("body".to_string(), NativeType::Blob), ("version".to_string(), NativeType::BigInt)];
                forged_rows(&f, &specs, &[vec![Some(other_body.clone()), Some(1i64.to_be_bytes().to_vec())]])
            })),
        ),
        RequestRule(
            executes("CLAIM_NAME"),
            RequestReaction::forge_response(Arc::new(move |f| {
                let specs = vec![("[applied]".to_string(), NativeType::Boolean), ("project".to_string(), NativeType::Uuid)];
                forged_rows(&f, &specs, &[vec![Some(vec![0]), Some(other_id.as_bytes().to_vec())]])
            })),
        ),
    ];
    let (addr, proxy, _) = start_proxy(rules).await;
    let store = ScyllaStore::connect(&config(addr)).await.unwrap();
    let mine = Project::new(other.tenant_id, ProjectId(Uuid::new_v4()), "p".into());
    match store.create_project(&mine).await.unwrap() {
        CreateOutcome::NameTaken(p) => assert_eq!(p, other),
        o => panic!("unexpected {o:?}"),
    }
    finish(proxy).await;
}

/// A statement the server refuses is a bug: `Internal`, with the server's message, not retried.
#[tokio::test]
async fn proxy_a_refused_statement_is_internal_and_not_retried() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rule = RequestRule(
        executes("GET_HEAD"),
        RequestReaction::forge_with_error_and_message(example_db_errors::invalid(), Some("unconfigured table run_by_id".into()))
            .with_feedback_when_performed(tx),
    );
    let (addr, proxy, _) = start_proxy(vec![rule]).await;
    let store = ScyllaStore::connect(&config(addr)).await.unwrap();
    let (t, r) = ids();
    let err = store.get_run(t, r).await.unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::Internal);
    assert!(err.message.contains("unconfigured table run_by_id"), "{err}");
    assert_eq!(count(&mut rx), 1);
    finish(proxy).await;
}

/// A connection the server drops mid-request is unavailable, not a crash.
#[tokio::test]
async fn proxy_a_dropped_connection_is_unavailable() {
    let rule = RequestRule(executes("GET_HEAD"), RequestReaction::drop_connection());
    let (addr, proxy, _) = start_proxy(vec![rule]).await;
    let store = ScyllaStore::connect(&config(addr)).await.unwrap();
    let (t, r) = ids();
    let err = store.get_run(t, r).await.unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::Unavailable, "{err}");
    finish(proxy).await;
}
