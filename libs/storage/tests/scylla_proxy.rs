//! Proxy tests of the ScyllaDB adapter: a real `scylla::Session` talks to `scylla-proxy` in dry
//! mode, which answers CQL frames on 127.0.0.x without any database. The proxy's rules forge
//! the handshake, the PREPARE results (from the same schema the unit tests check) and the
//! replies or errors of each test, and report the frames they matched.
//!
//! Most are not storage tests: nothing is stored. They check the adapter's handshake, error
//! mapping and retry decisions; the conformance suite (`scylla_conformance.rs`) checks storage
//! semantics against a real cluster. The tests at the end answer statements from an in-memory
//! [`Fake`] instead, to run the feedback and queue logic end to end (the conformance tests of
//! both, and the crash and timeout windows of their compare-and-set protocols) where no cluster
//! is available; the fake is simple and linearizable, so it checks the adapter, not ScyllaDB.
#![cfg(feature = "scylla")]

use std::collections::{BTreeMap, HashMap, VecDeque};
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

use sextant_core::annotation::QueueItem;
use sextant_core::prompt::{PromptCommit, PromptRepo, TagMove};
use sextant_core::{
    Feedback as FeedbackEntry, FeedbackChange, FeedbackId, FragmentKind, Project, ProjectId, QueueId, RunFragment, RunId, TenantId,
    Timestamp,
};
use sextant_storage::scylla::testing;
use sextant_storage::scylla::{ScyllaConfig, ScyllaStore};
use sextant_storage::{
    testsuite, CreateOutcome, FeedbackStore, ProjectStore, PromptStore, QueueStore, RepoCreate, RunStore, Storage, StorageErrorKind,
};

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

// ---- an in-memory stand-in for the cluster ----------------------------------------------------

/// Answers the adapter's statements from in-memory tables, well enough to run its feedback and
/// queue logic end to end through a real driver session: single-row reads and writes, scans of
/// a whole partition in clustering order, and the conditions of our lightweight transactions.
/// Range scans (the run indexes) are refused. One lock makes it linearizable: it checks the
/// adapter's protocol (which statements, in which order, with which conditions and how it
/// reads their answers), not ScyllaDB's behaviour under concurrency.
#[derive(Default)]
struct Fake {
    /// Table → primary key values (partition, then clustering) → row.
    tables: HashMap<String, BTreeMap<Vec<Vec<u8>>, FakeRow>>,
    /// Faults to inject, per statement, one per execution.
    faults: HashMap<&'static str, VecDeque<Fault>>,
    /// Executions per statement, and per statement read at `LOCAL_SERIAL` as `NAME@serial`.
    executed: HashMap<String, usize>,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Applies the statement, then answers with a write timeout: the outcome the client cannot
    /// tell from a lost request.
    TimeoutAfterApplying,
    /// Answers with a write timeout without applying.
    TimeoutBeforeApplying,
    /// Answers with an error that is not transient: the writer gives up there, as if its
    /// process died at that point.
    Crash,
}

type SharedFake = Arc<std::sync::Mutex<Fake>>;
/// Column → value (absent: null).
type FakeRow = HashMap<String, Vec<u8>>;
/// Columns of a result row and their cells.
type Cells = (Vec<(String, NativeType)>, Vec<Option<Vec<u8>>>);

fn native(cql_type: &str) -> NativeType {
    match cql_type {
        "uuid" => NativeType::Uuid,
        "bigint" => NativeType::BigInt,
        "int" => NativeType::Int,
        "blob" => NativeType::Blob,
        "text" => NativeType::Text,
        "timestamp" => NativeType::Timestamp,
        "boolean" => NativeType::Boolean,
        other => panic!("no native type {other}"),
    }
}

/// The statement name, consistency and bound values of an EXECUTE body (protocol v4, values by
/// position). Twin statements with the same text (a read and its serial twin) share a name.
fn execute_values(frame: &RequestFrame) -> (String, u16, Vec<Option<Vec<u8>>>) {
    assert_eq!(frame.params.version & 0x7f, 4, "the fake reads protocol v4 frames");
    let take = |b: &mut &[u8], n: usize| {
        let (head, rest) = b.split_at(n);
        *b = rest;
        head.to_vec()
    };
    let mut b = &frame.body[..];
    let id_len = u16::from_be_bytes(take(&mut b, 2).try_into().unwrap()) as usize;
    let id = String::from_utf8(take(&mut b, id_len)).unwrap();
    let consistency = u16::from_be_bytes(take(&mut b, 2).try_into().unwrap());
    let flags = take(&mut b, 1)[0];
    assert_eq!(flags & 0x40, 0, "values are bound by position");
    let mut values = Vec::new();
    if flags & 0x01 != 0 {
        let n = u16::from_be_bytes(take(&mut b, 2).try_into().unwrap());
        for _ in 0..n {
            let len = i32::from_be_bytes(take(&mut b, 4).try_into().unwrap());
            values.push((len >= 0).then(|| take(&mut b, len as usize)));
        }
    }
    (id.trim_end_matches('#').to_string(), consistency, values)
}

/// `LOCAL_SERIAL` in the protocol.
const LOCAL_SERIAL: u16 = 0x0009;

/// The `:marker` names in a piece of CQL, in order.
fn markers(cql: &str) -> Vec<String> {
    cql.split(':').skip(1).map(|s| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()).collect()
}

/// The text between `from` and the first of `to` after it (or the end).
fn between<'a>(cql: &'a str, from: &str, to: &[&str]) -> &'a str {
    let Some(start) = cql.find(from).map(|i| i + from.len()) else { return "" };
    let rest = &cql[start..];
    let end = to.iter().filter_map(|t| rest.find(t)).min().unwrap_or(rest.len());
    &rest[..end]
}

fn void_result(frame: &RequestFrame) -> ResponseFrame {
    let mut b = BytesMut::new();
    b.put_i32(0x0001);
    ResponseFrame::new(frame.params.for_response(), ResponseOpcode::Result, b.freeze())
}

fn refused(frame: &RequestFrame, why: &str) -> ResponseFrame {
    ResponseFrame::forged_error(frame.params, example_db_errors::invalid(), Some(why)).unwrap()
}

impl Fake {
    fn inject(fake: &SharedFake, statement: &'static str, fault: Fault) {
        fake.lock().unwrap().faults.entry(statement).or_default().push_back(fault);
    }

    fn executed(fake: &SharedFake, statement: &str) -> usize {
        fake.lock().unwrap().executed.get(statement).copied().unwrap_or(0)
    }

    fn answer(&mut self, frame: RequestFrame) -> ResponseFrame {
        let (name, consistency, values) = execute_values(&frame);
        *self.executed.entry(name.clone()).or_default() += 1;
        if consistency == LOCAL_SERIAL {
            *self.executed.entry(format!("{name}@serial")).or_default() += 1;
        }
        let fault = self.faults.get_mut(name.as_str()).and_then(VecDeque::pop_front);
        match fault {
            Some(Fault::Crash) => return refused(&frame, "fake: injected crash"),
            Some(Fault::TimeoutBeforeApplying) => {
                return ResponseFrame::forged_error(frame.params, example_db_errors::write_timeout(), None).unwrap()
            }
            _ => {}
        }
        let answer = self.execute(&frame, &name, values);
        match fault {
            Some(Fault::TimeoutAfterApplying) => {
                ResponseFrame::forged_error(frame.params, example_db_errors::write_timeout(), None).unwrap()
            }
            _ => answer,
        }
    }

    fn execute(&mut self, frame: &RequestFrame, name: &str, values: Vec<Option<Vec<u8>>>) -> ResponseFrame {
        let (_, cql) = testing::statements().iter().find(|(n, _)| *n == name).expect("one of our statements");
        let schema = testing::schema();
        let binds = testing::bind_specs(&schema, cql).unwrap();
        assert_eq!(binds.len(), values.len(), "{name}: one value per marker");
        let bound: HashMap<String, Option<Vec<u8>>> = binds.into_iter().map(|(m, _)| m).zip(values).collect();
        let verb = cql.split_whitespace().next().unwrap().to_uppercase();
        let table_name = match verb.as_str() {
            "SELECT" | "DELETE" => between(cql, " FROM ", &[" "]),
            "INSERT" => between(cql, "INSERT INTO ", &[" "]),
            _ => between(cql, "UPDATE ", &[" "]),
        };
        let table = schema.table(table_name).unwrap_or_else(|| panic!("{name}: no table {table_name}"));
        let key_columns: Vec<&String> = table.partition_key.iter().chain(&table.clustering).collect();
        let is_column = |m: &str| table.column_type(m).is_some();
        let where_part = between(cql, " WHERE ", &[" IF "]);
        if where_part.contains('<') || where_part.contains('>') {
            return refused(frame, &format!("fake: {name} reads a range, which the fake does not serve"));
        }
        let condition = between(cql, " IF ", &[]).trim().to_string();
        // The key: every primary key column bound (INSERT), or a prefix of them (the rest).
        let given: Vec<String> = if verb == "INSERT" { markers(cql) } else { markers(where_part) };
        let mut key = Vec::new();
        for c in &key_columns {
            match given.iter().find(|m| m == c) {
                Some(m) => key.push(bound[m].clone().expect("key values are not null")),
                None => break,
            }
        }
        let full = key.len() == key_columns.len();
        let rows = self.tables.entry(table_name.to_string()).or_default();
        let matching: Vec<Vec<Vec<u8>>> = rows.keys().filter(|k| k.starts_with(&key)).cloned().collect();
        let columns_of =
            |row: &FakeRow| -> Cells { table.columns.iter().map(|(c, t)| ((c.clone(), native(t)), row.get(c).cloned())).unzip() };
        let lwt = |applied: bool, extra: Cells| {
            let mut specs = vec![("[applied]".to_string(), NativeType::Boolean)];
            specs.extend(extra.0);
            let mut cells = vec![Some(vec![u8::from(applied)])];
            cells.extend(extra.1);
            forged_rows(frame, &specs, &[cells])
        };
        let set_values = |row: &mut FakeRow, names: &[String]| {
            for m in names.iter().filter(|m| is_column(m)) {
                match &bound[m] {
                    Some(v) => row.insert(m.clone(), v.clone()),
                    None => row.remove(m),
                };
            }
        };
        match verb.as_str() {
            "SELECT" => {
                let specs = testing::result_specs(&schema, cql).unwrap();
                let out: Vec<Vec<Option<Vec<u8>>>> =
                    matching.iter().map(|k| specs.iter().map(|(c, _)| rows[k].get(c).cloned()).collect()).collect();
                forged_rows(frame, &specs, &out)
            }
            "INSERT" => {
                assert!(full, "{name}: an insert binds the whole key");
                if condition == "NOT EXISTS" {
                    if let Some(existing) = rows.get(&key) {
                        return lwt(false, columns_of(existing));
                    }
                }
                set_values(rows.entry(key).or_default(), &given);
                if condition.is_empty() {
                    void_result(frame)
                } else {
                    lwt(true, (vec![], vec![]))
                }
            }
            "UPDATE" | "DELETE" => {
                // `IF EXISTS`, `IF column = :marker`, or no condition.
                let check = if condition.is_empty() {
                    None
                } else if condition == "EXISTS" {
                    Some(None)
                } else {
                    let (column, marker) = condition.split_once(" = :").unwrap_or_else(|| panic!("{name}: condition {condition}"));
                    Some(Some((column.to_string(), marker.to_string())))
                };
                if let Some(check) = &check {
                    assert!(full, "{name}: a conditional write names one row");
                    let current = rows.get(&key);
                    let holds = match (check, current) {
                        (_, None) => false,
                        (None, Some(_)) => true,
                        (Some((column, marker)), Some(row)) => row.get(column) == bound[marker].as_ref(),
                    };
                    if !holds {
                        let shown = match (check, current) {
                            (Some((column, _)), Some(row)) => {
                                let ty = native(table.column_type(column).unwrap());
                                (vec![(column.clone(), ty)], vec![row.get(column).cloned()])
                            }
                            _ => (vec![], vec![]),
                        };
                        return lwt(false, shown);
                    }
                }
                if verb == "UPDATE" {
                    assert!(full, "{name}: an update names one row");
                    set_values(rows.entry(key).or_default(), &markers(between(cql, " SET ", &[" WHERE "])));
                } else {
                    for k in matching {
                        rows.remove(&k);
                    }
                }
                match check {
                    Some(_) => lwt(true, (vec![], vec![])),
                    None => void_result(frame),
                }
            }
            v => refused(frame, &format!("fake: verb {v}")),
        }
    }
}

/// A store whose every statement is answered by a [`Fake`].
async fn faked() -> (Arc<ScyllaStore>, SharedFake, RunningProxy) {
    let fake = SharedFake::default();
    let answering = fake.clone();
    let rule = RequestRule(
        Condition::RequestOpcode(RequestOpcode::Execute),
        RequestReaction::forge_response(Arc::new(move |frame| answering.lock().unwrap().answer(frame))),
    );
    let (addr, proxy, _) = start_proxy(vec![rule]).await;
    let store = ScyllaStore::connect(&config(addr)).await.unwrap();
    (Arc::new(store), fake, proxy)
}

/// The storage conformance tests of feedback and queues, through the driver, against the fake.
#[tokio::test]
async fn proxy_feedback_and_queue_conformance_against_the_fake() {
    let (store, _fake, proxy) = faked().await;
    let s: Arc<dyn Storage> = store;
    testsuite::feedback_stats_stay_exact_under_redelivery_updates_and_deletes(s.clone()).await;
    testsuite::feedback_before_its_run_counts_once_the_run_arrives(s.clone()).await;
    testsuite::feedback_lists_filter_and_page(s.clone()).await;
    testsuite::queue_items_are_unique_per_run_and_leases_exclusive(s.clone()).await;
    testsuite::queue_lifecycle(s).await;
    finish(proxy).await;
}

fn root_run() -> (RunId, RunFragment) {
    let id = RunId(Uuid::now_v7());
    let mut f = RunFragment::new(FragmentKind::Post, id);
    f.trace_id = Some(id);
    f.name = Some("root".into());
    f.start_time = Some(Timestamp(1_700_000_000_000_000));
    (id, f)
}

fn scored(run: RunId, key: &str, score: f64) -> FeedbackEntry {
    let body = serde_json::json!({"key": key, "run_id": run.to_string(), "score": score});
    FeedbackEntry::from_wire(&body, FeedbackId(Uuid::now_v7()), Timestamp(0)).unwrap()
}

/// A project with one stored run, through the fake.
async fn project_with_run(s: &ScyllaStore) -> (TenantId, ProjectId, RunId) {
    let t = TenantId(Uuid::now_v7());
    let p = Project::new(t, ProjectId(Uuid::now_v7()), "p".into());
    s.create_project(&p).await.unwrap();
    let (run, fragment) = root_run();
    s.apply_run_fragments(t, p.id, vec![fragment]).await.unwrap();
    (t, p.id, run)
}

async fn counted(s: &ScyllaStore, t: TenantId, p: ProjectId, run: RunId, key: &str) -> (i64, i64) {
    let run_n = s.run_feedback_stats(t, &[run]).await.unwrap().get(&run).map_or(0, |st| st.0[key].n);
    let project_n = s.project_feedback_stats(t, p).await.unwrap().0.get(key).map_or(0, |k| k.n);
    (run_n, project_n)
}

/// The crash windows of a feedback change: a projector that dies after writing the record (and
/// before the stats), or after the stats (and before recording that they are done), leaves work
/// that the change's redelivery finishes, counting the entry exactly once.
#[tokio::test]
async fn proxy_an_interrupted_feedback_change_is_finished_by_its_redelivery_and_counted_once() {
    let (s, fake, proxy) = faked().await;
    for (statement, fault) in [
        ("GET_STATS", Fault::Crash),       // after the record, before any stats row
        ("INSERT_STATS", Fault::Crash),    // after the record, while writing the stats
        ("UPDATE_FEEDBACK", Fault::Crash), // after both stats rows, before the record says so
    ] {
        let (t, p, run) = project_with_run(&s).await;
        let change = FeedbackChange::Upsert(scored(run, "k", 0.5));
        let stamp = Uuid::now_v7();
        Fake::inject(&fake, statement, fault);
        let err = s.apply_feedback(t, stamp, &change).await.unwrap_err();
        assert_eq!(err.kind, StorageErrorKind::Internal, "{statement}: {err}");
        for delivery in 1..=3 {
            s.apply_feedback(t, stamp, &change).await.unwrap();
            assert_eq!(counted(&s, t, p, run, "k").await, (1, 1), "{statement}: after redelivery {delivery}");
        }
        // Settled: a further redelivery reads, and writes nothing.
        let writes = || ["INSERT_FEEDBACK", "UPDATE_FEEDBACK", "INSERT_STATS", "UPDATE_STATS"].map(|n| Fake::executed(&fake, n));
        let before = writes();
        s.apply_feedback(t, stamp, &change).await.unwrap();
        assert_eq!(writes(), before, "{statement}: a settled change writes nothing on redelivery");
    }
    finish(proxy).await;
}

/// A stats compare-and-set whose answer is lost is neither lost nor counted twice: the writer
/// re-reads the row through Paxos and finds its mark, or applies the delta again.
#[tokio::test]
async fn proxy_a_timed_out_stats_write_counts_once_whether_or_not_it_applied() {
    let (s, fake, proxy) = faked().await;
    for fault in [Fault::TimeoutAfterApplying, Fault::TimeoutBeforeApplying] {
        let (t, p, run) = project_with_run(&s).await;
        let serial_reads = Fake::executed(&fake, "GET_STATS@serial");
        Fake::inject(&fake, "INSERT_STATS", fault);
        s.apply_feedback(t, Uuid::now_v7(), &FeedbackChange::Upsert(scored(run, "k", 0.5))).await.unwrap();
        assert_eq!(counted(&s, t, p, run, "k").await, (1, 1), "{fault:?}");
        assert!(Fake::executed(&fake, "GET_STATS@serial") > serial_reads, "{fault:?}: re-read through Paxos");
    }
    finish(proxy).await;
}

/// Feedback that arrived first, for a run whose writer died between storing the run and
/// adopting the feedback, is adopted by the run's redelivered write.
#[tokio::test]
async fn proxy_orphan_feedback_is_adopted_by_a_redelivered_run_write() {
    let (s, fake, proxy) = faked().await;
    let t = TenantId(Uuid::now_v7());
    let p = Project::new(t, ProjectId(Uuid::now_v7()), "p".into());
    s.create_project(&p).await.unwrap();
    let (run, fragment) = root_run();
    s.apply_feedback(t, Uuid::now_v7(), &FeedbackChange::Upsert(scored(run, "k", 1.0))).await.unwrap();
    assert_eq!(counted(&s, t, p.id, run, "k").await, (1, 0), "no project known yet");
    Fake::inject(&fake, "SCAN_ORPHANS", Fault::Crash);
    assert!(s.apply_run_fragments(t, p.id, vec![fragment.clone()]).await.is_err());
    assert_eq!(counted(&s, t, p.id, run, "k").await, (1, 0), "the run is stored, its feedback not adopted yet");
    s.apply_run_fragments(t, p.id, vec![fragment.clone()]).await.unwrap();
    assert_eq!(counted(&s, t, p.id, run, "k").await, (1, 1));
    s.apply_run_fragments(t, p.id, vec![fragment]).await.unwrap();
    assert_eq!(counted(&s, t, p.id, run, "k").await, (1, 1), "adopted once");
    finish(proxy).await;
}

fn queued(queue: QueueId) -> QueueItem {
    QueueItem {
        id: Uuid::now_v7(),
        queue_id: queue,
        run_id: RunId(Uuid::now_v7()),
        project_id: None,
        start_time: None,
        added_at: Timestamp(0),
        last_reviewed_time: None,
        lease: None,
        reviews: Vec::new(),
        done: false,
    }
}

/// A lease whose compare-and-set timed out after applying is recognised by the serial re-read
/// and returned, not sent again and not abandoned for the next item.
#[tokio::test]
async fn proxy_a_timed_out_lease_is_recognised_not_resent() {
    let (s, fake, proxy) = faked().await;
    let t = TenantId(Uuid::now_v7());
    let q = QueueId(Uuid::now_v7());
    let items = s.add_queue_items(t, q, vec![queued(q), queued(q)]).await.unwrap();
    Fake::inject(&fake, "UPDATE_ITEM", Fault::TimeoutAfterApplying);
    let (now, until) = (Timestamp(10), Timestamp(20));
    let taken = s.take_next_item(t, q, "ann", now, until, 1).await.unwrap().expect("an item");
    assert_eq!(taken.id, items[0].id, "the first item, which the timed-out write did lease");
    assert_eq!(taken.lease.as_ref().map(|l| (l.reviewer.as_str(), l.until)), Some(("ann", until)));
    assert_eq!(Fake::executed(&fake, "UPDATE_ITEM"), 1, "not resent");
    assert_eq!(Fake::executed(&fake, "GET_ITEM@serial"), 1, "recognised by a read through Paxos");
    // A lease whose write did not apply is tried again.
    Fake::inject(&fake, "UPDATE_ITEM", Fault::TimeoutBeforeApplying);
    let taken = s.take_next_item(t, q, "bob", now, until, 1).await.unwrap().expect("an item");
    assert_eq!(taken.id, items[1].id);
    assert_eq!(Fake::executed(&fake, "UPDATE_ITEM"), 3);
    finish(proxy).await;
}

/// An item update whose compare-and-set timed out is reported, not retried: the caller's
/// closure may not be safe to run on its own result.
#[tokio::test]
async fn proxy_a_timed_out_item_update_is_reported_not_retried() {
    let (s, fake, proxy) = faked().await;
    let t = TenantId(Uuid::now_v7());
    let q = QueueId(Uuid::now_v7());
    let item = s.add_queue_items(t, q, vec![queued(q)]).await.unwrap().remove(0);
    Fake::inject(&fake, "UPDATE_ITEM", Fault::TimeoutAfterApplying);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let update: sextant_storage::ItemUpdate = Box::new(move |it: &mut QueueItem| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        it.done = true;
        Ok(true)
    });
    let err = s.update_queue_item(t, q, item.id, update).await.unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::Unavailable, "{err}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(Fake::executed(&fake, "UPDATE_ITEM"), 1);
    finish(proxy).await;
}

fn prompt_repo(handle: &str, updated_at: i64) -> PromptRepo {
    PromptRepo {
        id: sextant_core::RepoId(Uuid::now_v7()),
        handle: handle.into(),
        description: None,
        readme: None,
        labels: Vec::new(),
        is_public: false,
        is_archived: false,
        variants: Vec::new(),
        repo_type: Default::default(),
        created_at: Timestamp(updated_at),
        updated_at: Timestamp(updated_at),
    }
}

/// Prompt repositories through the driver against the fake: handles claimed by
/// compare-and-set, redelivered creates, creates refused after a delete, an interrupted create
/// finished by its redelivery, and a handle left claimed by an interrupted delete released by
/// the next claimant. (The fake serves no ranges or timestamps: prefix scans, commit order and
/// tag histories are left to the conformance suite on a real cluster.)
#[tokio::test]
async fn proxy_prompt_repositories_handles_and_deletes_against_the_fake() {
    let (s, fake, proxy) = faked().await;
    let t = TenantId(Uuid::now_v7());
    let a = prompt_repo("support", 10);
    assert_eq!(s.create_repo(t, &a).await.unwrap(), RepoCreate::Created(a.clone()));
    assert_eq!(s.create_repo(t, &a).await.unwrap(), RepoCreate::AlreadyExists(a.clone()), "a redelivered create");
    assert_eq!(s.create_repo(t, &prompt_repo("support", 11)).await.unwrap(), RepoCreate::NameTaken(a.clone()));
    assert_eq!(s.repo_by_handle(t, "support").await.unwrap(), Some(a.clone()));
    let newer = PromptRepo { description: Some("newer".into()), updated_at: Timestamp(20), ..a.clone() };
    assert!(s.put_repo(t, &newer).await.unwrap());
    assert!(s.put_repo(t, &PromptRepo { description: Some("older".into()), updated_at: Timestamp(15), ..a.clone() }).await.unwrap());
    assert_eq!(s.get_repo(t, a.id).await.unwrap(), Some(newer.clone()));
    let renamed = PromptRepo { handle: "other".into(), updated_at: Timestamp(30), ..a.clone() };
    assert_eq!(s.put_repo(t, &renamed).await.unwrap_err().kind, StorageErrorKind::Invalid);
    assert_eq!(s.list_repos(t).await.unwrap(), [newer]);

    // Commits and tag moves by key.
    let commit = PromptCommit {
        repo_id: a.id,
        hash: "ab".repeat(32),
        parent: None,
        manifest: sextant_core::RawJson::parse(r#"{"id":["x"],"lc":1,"type":"constructor"}"#).unwrap(),
        description: Some("first".into()),
        created_at: Timestamp(40),
    };
    s.put_commit(t, &commit).await.unwrap();
    assert_eq!(s.get_commit(t, a.id, &commit.hash).await.unwrap(), Some(commit.clone()));
    assert_eq!(s.get_commit(t, a.id, &"cd".repeat(32)).await.unwrap(), None);
    let moves = [
        TagMove { repo_id: a.id, tag: "production".into(), commit: Some(commit.hash.clone()), at: Timestamp(50) },
        TagMove { repo_id: a.id, tag: "production".into(), commit: None, at: Timestamp(60) },
    ];
    for m in &moves {
        s.put_tag_move(t, m).await.unwrap();
    }
    assert_eq!(s.tag_moves(t, a.id, Some("production")).await.unwrap(), moves, "a deletion is a move with a null commit");
    s.set_like(t, a.id, t, true, Timestamp(70)).await.unwrap();
    assert_eq!(s.likes(t, a.id).await.unwrap(), [t]);

    // A create interrupted after claiming its handle: the claim alone names nothing, holds the
    // handle against other creates, and the create's redelivery completes it.
    let b = prompt_repo("billing", 80);
    Fake::inject(&fake, "INSERT_PROMPT_REPO", Fault::Crash);
    assert!(s.create_repo(t, &b).await.is_err());
    assert_eq!(s.repo_by_handle(t, "billing").await.unwrap(), None);
    assert_eq!(s.create_repo(t, &prompt_repo("billing", 81)).await.unwrap_err().kind, StorageErrorKind::Unavailable);
    assert_eq!(s.create_repo(t, &b).await.unwrap(), RepoCreate::Created(b.clone()));

    // Deleted: gone, refused if its create is redelivered, the handle free again.
    assert!(s.delete_repo(t, a.id, Timestamp(1000)).await.unwrap());
    assert_eq!((s.get_repo(t, a.id).await.unwrap(), s.repo_by_handle(t, "support").await.unwrap()), (None, None));
    assert_eq!(s.get_commit(t, a.id, &commit.hash).await.unwrap(), None);
    assert_eq!(s.create_repo(t, &a).await.unwrap(), RepoCreate::Deleted);
    let c = prompt_repo("support", 1100);
    assert_eq!(s.create_repo(t, &c).await.unwrap(), RepoCreate::Created(c.clone()));
    // A delete interrupted before it released the handle: the next claimant releases it.
    Fake::inject(&fake, "RELEASE_PROMPT_NAME", Fault::Crash);
    assert!(s.delete_repo(t, c.id, Timestamp(1200)).await.is_err());
    let d = prompt_repo("support", 1300);
    assert_eq!(s.create_repo(t, &d).await.unwrap(), RepoCreate::Created(d.clone()));
    assert_eq!(s.repo_by_handle(t, "support").await.unwrap(), Some(d));
    finish(proxy).await;
}
