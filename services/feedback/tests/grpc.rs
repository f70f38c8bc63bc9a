//! The gRPC `FeedbackService` and `AnnotationQueueService` end to end in one process: tonic
//! clients talk over `tokio::io::duplex` to the real services, over the real core with the
//! embedded store, the in-process bus and the feedback projector. Reads lag writes, so reads
//! poll with a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Request};
use uuid::Uuid;

use sextant_auth::{hash_key, ApiKeyConfig, Authenticator};
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::EventBus;
use sextant_core::{FragmentKind, Project, ProjectId, RunFragment, RunId, TenantId, Timestamp};
use sextant_feedback::grpc::{feedback_service, queue_service};
use sextant_feedback::projector::run_feedback_projector;
use sextant_feedback::{FeedbackService, Queues};
use sextant_proto::pb;
use sextant_proto::pb::annotation_queue_service_client::AnnotationQueueServiceClient;
use sextant_proto::pb::feedback_service_client::FeedbackServiceClient;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::Storage;

const KEY_A: &str = "key-tenant-a";
const KEY_B: &str = "key-tenant-b";
const TENANT_A: TenantId = TenantId(Uuid::from_u128(0xa));
const TENANT_B: TenantId = TenantId(Uuid::from_u128(0xb));

struct Harness {
    feedback: FeedbackServiceClient<Channel>,
    queues: AnnotationQueueServiceClient<Channel>,
    core: Arc<FeedbackService>,
    store: Arc<dyn Storage>,
    shutdown: watch::Sender<bool>,
    _dir: TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(run_feedback_projector(bus.clone(), store.clone(), shutdown_rx));
    let core = Arc::new(FeedbackService::new(bus, store.clone(), b"grpc test key"));
    let queues = Arc::new(Queues::new(store.clone(), core.clone()));
    let keys = [
        ApiKeyConfig { name: "a".into(), hash: hash_key(KEY_A), tenant: TENANT_A },
        ApiKeyConfig { name: "b".into(), hash: hash_key(KEY_B), tenant: TENANT_B },
    ];
    let auth = Arc::new(Authenticator::new(&keys).unwrap());

    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(server_io) });
    tokio::spawn(
        Server::builder()
            .add_service(feedback_service(core.clone(), auth.clone()))
            .add_service(queue_service(queues, auth))
            .serve_with_incoming(incoming),
    );
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://in-process")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move { io.map(TokioIo::new).ok_or_else(|| std::io::Error::other("the in-process connection is already used")) }
        }))
        .await
        .unwrap();
    Harness {
        feedback: FeedbackServiceClient::new(channel.clone()),
        queues: AnnotationQueueServiceClient::new(channel),
        core,
        store,
        shutdown,
        _dir: dir,
    }
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

/// A finished run of tenant A, written straight into the store (ingest is not under test).
async fn stored_run(store: &Arc<dyn Storage>, name: &str) -> RunId {
    let run = RunId(Uuid::now_v7());
    store_run(store, run, name).await;
    run
}

/// Stores run `run` of tenant A in a new project, which it returns.
async fn store_run(store: &Arc<dyn Storage>, run: RunId, name: &str) -> ProjectId {
    let project = ProjectId(Uuid::now_v7());
    let now = Timestamp::now();
    store
        .create_project(&Project {
            id: project,
            tenant_id: TENANT_A,
            name: format!("grpc-{project}"),
            description: None,
            extra: Default::default(),
            reference_dataset_id: None,
            start_time: now,
            end_time: None,
            experiment: Default::default(),
        })
        .await
        .unwrap();
    let mut post = RunFragment::new(FragmentKind::Post, run);
    post.name = Some(name.into());
    post.start_time = Some(now);
    post.end_time = Some(now);
    store.apply_run_fragments(TENANT_A, project, vec![post]).await.unwrap();
    project
}

fn number(n: f64) -> Option<pb::Score> {
    Some(pb::Score { kind: Some(pb::score::Kind::Number(n)) })
}

#[tokio::test]
async fn feedback_round_trips_and_is_the_same_entry_over_rest() {
    let mut h = start().await;
    let run = stored_run(&h.store, "answer").await;
    let created = h
        .feedback
        .create_feedback(with_key(
            pb::CreateFeedbackRequest {
                feedback: Some(pb::Feedback {
                    run_id: Some(run.to_string()),
                    key: "correctness".into(),
                    score: number(0.25),
                    value_json: Some(r#"{"label":"partly"}"#.into()),
                    comment: Some("misses the second half".into()),
                    ..Default::default()
                }),
            },
            KEY_A,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!created.id.is_empty());
    assert_eq!(created.feedback_source_json.as_deref(), Some(r#"{"type":"api","metadata":{}}"#), "the REST default source");

    let id = created.id.clone();
    let got = wait_until(5, || {
        let mut c = h.feedback.clone();
        let id = id.clone();
        async move { c.get_feedback(with_key(pb::GetFeedbackRequest { id }, KEY_A)).await.ok().map(|r| r.into_inner()) }
    })
    .await;
    assert_eq!(got, created);
    // The core REST uses sees the same entry.
    let via_core = h.core.get(TENANT_A, sextant_core::FeedbackId(id.parse().unwrap())).await.unwrap();
    assert_eq!(via_core.to_json()["score"], json!(0.25));
    assert_eq!(via_core.to_json()["value"], json!({"label": "partly"}));

    // Another tenant does not see it.
    let err = h.feedback.get_feedback(with_key(pb::GetFeedbackRequest { id: id.clone() }, KEY_B)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Update one field, clear another; the rest stays.
    let updated = h
        .feedback
        .update_feedback(with_key(
            pb::UpdateFeedbackRequest { id: id.clone(), score: number(1.0), clear: vec!["comment".into()], ..Default::default() },
            KEY_A,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.score, number(1.0));
    assert_eq!(updated.comment, None);
    assert_eq!(updated.value_json.as_deref(), Some(r#"{"label":"partly"}"#));
    wait_until(5, || {
        let mut c = h.feedback.clone();
        let id = id.clone();
        async move {
            let f = c.get_feedback(with_key(pb::GetFeedbackRequest { id }, KEY_A)).await.ok()?.into_inner();
            (f.score == number(1.0) && f.comment.is_none()).then_some(())
        }
    })
    .await;

    // List by run and key; a boolean score on another key.
    h.feedback
        .create_feedback(with_key(
            pb::CreateFeedbackRequest {
                feedback: Some(pb::Feedback {
                    run_id: Some(run.to_string()),
                    key: "thumbs".into(),
                    score: Some(pb::Score { kind: Some(pb::score::Kind::Boolean(true)) }),
                    ..Default::default()
                }),
            },
            KEY_A,
        ))
        .await
        .unwrap();
    let listed = wait_until(5, || {
        let mut c = h.feedback.clone();
        async move {
            let l = c
                .list_feedback(with_key(pb::ListFeedbackRequest { run_ids: vec![run.to_string()], ..Default::default() }, KEY_A))
                .await
                .ok()?
                .into_inner()
                .feedback;
            (l.len() == 2).then_some(l)
        }
    })
    .await;
    let thumbs = listed.iter().find(|f| f.key == "thumbs").unwrap();
    assert_eq!(thumbs.score, Some(pb::Score { kind: Some(pb::score::Kind::Boolean(true)) }));
    let only = h
        .feedback
        .list_feedback(with_key(pb::ListFeedbackRequest { keys: vec!["correctness".into()], ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner()
        .feedback;
    assert_eq!(only.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);

    // Delete: gone.
    h.feedback.delete_feedback(with_key(pb::DeleteFeedbackRequest { id: id.clone() }, KEY_A)).await.unwrap();
    wait_until(5, || {
        let mut c = h.feedback.clone();
        let id = id.clone();
        async move {
            let r = c.get_feedback(with_key(pb::GetFeedbackRequest { id }, KEY_A)).await;
            matches!(r, Err(ref e) if e.code() == Code::NotFound).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn session_id_is_the_runs_project_and_appears_once_a_late_run_arrives() {
    let mut h = start().await;
    let create = |run: RunId| {
        let f = pb::Feedback { run_id: Some(run.to_string()), key: "k".into(), score: number(1.0), ..Default::default() };
        with_key(pb::CreateFeedbackRequest { feedback: Some(f) }, KEY_A)
    };
    let get = |c: &FeedbackServiceClient<Channel>, id: String| {
        let mut c = c.clone();
        async move { c.get_feedback(with_key(pb::GetFeedbackRequest { id }, KEY_A)).await.ok().map(|r| r.into_inner()) }
    };

    // The run is known: the entry names its project in every answer.
    let run = RunId(Uuid::now_v7());
    let project = store_run(&h.store, run, "answer").await;
    let created = h.feedback.create_feedback(create(run)).await.unwrap().into_inner();
    assert_eq!(created.session_id, Some(project.to_string()));
    let got = wait_until(5, || get(&h.feedback, created.id.clone())).await;
    assert_eq!(got.session_id, Some(project.to_string()));
    let listed = h
        .feedback
        .list_feedback(with_key(pb::ListFeedbackRequest { run_ids: vec![run.to_string()], ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner()
        .feedback;
    assert_eq!(listed.iter().map(|f| f.session_id.clone()).collect::<Vec<_>>(), [Some(project.to_string())]);

    // Feedback before its run: no project yet, the run's once it arrives.
    let late = RunId(Uuid::now_v7());
    let early = h.feedback.create_feedback(create(late)).await.unwrap().into_inner();
    assert_eq!(early.session_id, None);
    let before = wait_until(5, || get(&h.feedback, early.id.clone())).await;
    assert_eq!(before.session_id, None);
    let late_project = store_run(&h.store, late, "late").await;
    let after = get(&h.feedback, early.id.clone()).await.unwrap();
    assert_eq!(after.session_id, Some(late_project.to_string()));
    // An entry that names its project keeps it.
    let named = pb::Feedback { session_id: Some(project.to_string()), ..early.clone() };
    let named = h
        .feedback
        .create_feedback(with_key(pb::CreateFeedbackRequest { feedback: Some(pb::Feedback { id: String::new(), ..named }) }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(named.session_id, Some(project.to_string()));
}

#[tokio::test]
async fn bad_feedback_is_refused_with_the_field_named() {
    let mut h = start().await;
    let create = |f: pb::Feedback| with_key(pb::CreateFeedbackRequest { feedback: Some(f) }, KEY_A);
    let cases: Vec<(pb::Feedback, &str)> = vec![
        (pb::Feedback { key: String::new(), ..Default::default() }, "key"),
        (pb::Feedback { key: "k".into(), run_id: Some("not-a-uuid".into()), ..Default::default() }, "run_id"),
        (pb::Feedback { key: "k".into(), value_json: Some("{oops".into()), ..Default::default() }, "feedback.value_json: invalid JSON"),
        (pb::Feedback { key: "k".into(), score: number(f64::INFINITY), ..Default::default() }, "feedback.score: must be a finite number"),
        (pb::Feedback { key: "k".into(), score: number(5e9), ..Default::default() }, "score"),
        (pb::Feedback { key: "k".into(), feedback_source_json: Some("[1]".into()), ..Default::default() }, "feedback_source"),
        (pb::Feedback { key: "k\u{7}".into(), ..Default::default() }, "key"),
    ];
    for (f, needle) in cases {
        let err = h.feedback.create_feedback(create(f.clone())).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{f:?}");
        assert!(err.message().contains(needle), "{:?} should name {needle:?}", err.message());
    }
    let err = h.feedback.create_feedback(with_key(pb::CreateFeedbackRequest { feedback: None }, KEY_A)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("feedback is required"));

    // Without a key: unauthenticated.
    let err = h.feedback.list_feedback(Request::new(pb::ListFeedbackRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // An id reused for other content is a conflict; the same content again is harmless.
    let f = pb::Feedback { id: Uuid::now_v7().to_string(), key: "k".into(), score: number(0.5), ..Default::default() };
    h.feedback.create_feedback(create(f.clone())).await.unwrap();
    let fid = f.id.clone();
    wait_until(5, || {
        let mut c = h.feedback.clone();
        let id = fid.clone();
        async move { c.get_feedback(with_key(pb::GetFeedbackRequest { id }, KEY_A)).await.ok().map(|_| ()) }
    })
    .await;
    h.feedback.create_feedback(create(f.clone())).await.expect("an identical retry is accepted");
    let err = h.feedback.create_feedback(create(pb::Feedback { score: number(0.9), ..f.clone() })).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let err = h
        .feedback
        .update_feedback(with_key(pb::UpdateFeedbackRequest { id: f.id.clone(), clear: vec!["key".into()], ..Default::default() }, KEY_A))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("clear[0]"), "{}", err.message());
    let err = h
        .feedback
        .update_feedback(with_key(
            pb::UpdateFeedbackRequest { id: f.id.clone(), score: number(0.1), clear: vec!["score".into()], ..Default::default() },
            KEY_A,
        ))
        .await
        .unwrap_err();
    assert!(err.message().contains("both set and cleared"), "{}", err.message());
    let err = h.feedback.get_feedback(with_key(pb::GetFeedbackRequest { id: String::new() }, KEY_A)).await.unwrap_err();
    assert!(err.message().contains("id is required"), "{}", err.message());
}

#[tokio::test]
async fn a_queue_leases_items_records_reviews_as_feedback_and_measures_agreement() {
    let mut h = start().await;
    let queue = h
        .queues
        .create_queue(with_key(
            pb::CreateQueueRequest {
                name: "grpc review".into(),
                rubric_items_json: Some(r#"[{"feedback_key":"helpful"}]"#.into()),
                num_reviewers_per_item: 2,
                ..Default::default()
            },
            KEY_A,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.num_reviewers_per_item, 2);
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(stored_run(&h.store, &format!("answer {i}")).await.to_string());
    }
    let added = h
        .queues
        .add_runs(with_key(pb::AddRunsRequest { queue_id: queue.id.clone(), run_ids: runs.clone() }, KEY_A))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(added.len(), 3);
    // Adding again keeps the items.
    let again = h
        .queues
        .add_runs(with_key(pb::AddRunsRequest { queue_id: queue.id.clone(), run_ids: runs.clone() }, KEY_A))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(again.iter().map(|i| &i.id).collect::<Vec<_>>(), added.iter().map(|i| &i.id).collect::<Vec<_>>());

    // Two reviewers each review all three items; they agree on two of them.
    let verdicts = [("ana", [true, true, false]), ("ben", [true, false, false])];
    for (reviewer, labels) in verdicts {
        for _ in 0..3 {
            let next = h
                .queues
                .next_item(with_key(
                    pb::NextItemRequest { queue_id: queue.id.clone(), reviewer: reviewer.into(), lease_seconds: 60 },
                    KEY_A,
                ))
                .await
                .unwrap()
                .into_inner();
            let item = next.item.expect("an item is left for this reviewer");
            assert_eq!(item.leased_to.as_deref(), Some(reviewer));
            let run = next.run.expect("the run comes with the item");
            assert_eq!(run.id, item.run_id);
            assert_eq!(next.rubric_items_json.as_deref(), Some(r#"[{"feedback_key":"helpful"}]"#));
            let idx = runs.iter().position(|r| *r == item.run_id).unwrap();
            let reviewed = h
                .queues
                .review_item(with_key(
                    pb::ReviewItemRequest {
                        queue_id: queue.id.clone(),
                        item_id: item.id.clone(),
                        reviewer: reviewer.into(),
                        scores: vec![pb::ReviewScore {
                            key: "helpful".into(),
                            score: Some(pb::Score { kind: Some(pb::score::Kind::Boolean(labels[idx])) }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    KEY_A,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(reviewed.reviews.iter().any(|r| r.reviewer == reviewer));
            assert_eq!(reviewed.leased_to, None, "a review releases the lease");
        }
        let none = h
            .queues
            .next_item(with_key(pb::NextItemRequest { queue_id: queue.id.clone(), reviewer: reviewer.into(), lease_seconds: 0 }, KEY_A))
            .await
            .unwrap()
            .into_inner();
        assert!(none.item.is_none(), "{reviewer} has reviewed everything");
    }

    let completed = h
        .queues
        .list_items(with_key(pb::ListItemsRequest { queue_id: queue.id.clone(), status: "completed".into(), ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(completed.len(), 3);
    assert!(completed.iter().all(|i| i.status == "completed" && i.reviews.len() == 2));

    // A second review by the same reviewer is refused.
    let err = h
        .queues
        .review_item(with_key(
            pb::ReviewItemRequest {
                queue_id: queue.id.clone(),
                item_id: completed[0].id.clone(),
                reviewer: "ana".into(),
                scores: vec![pb::ReviewScore { key: "helpful".into(), score: number(1.0), ..Default::default() }],
                ..Default::default()
            },
            KEY_A,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let agreement =
        h.queues.get_agreement(with_key(pb::GetAgreementRequest { queue_id: queue.id.clone() }, KEY_A)).await.unwrap().into_inner();
    let helpful = agreement.keys.iter().find(|k| k.feedback_key == "helpful").unwrap();
    assert_eq!(helpful.items, 3);
    assert!((helpful.raw_agreement.unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // ana: T,T,F; ben: T,F,F -> p_o = 2/3, p_e = (2/3)(1/3) + (1/3)(2/3) = 4/9, kappa = 0.4.
    assert!((helpful.cohen_kappa.unwrap() - 0.4).abs() < 1e-9, "{:?}", helpful.cohen_kappa);

    // The reviews are feedback on the runs, with the reviewer as the source.
    let fb = wait_until(5, || {
        let mut c = h.feedback.clone();
        let runs = runs.clone();
        async move {
            let l = c
                .list_feedback(with_key(
                    pb::ListFeedbackRequest { run_ids: runs, keys: vec!["helpful".into()], ..Default::default() },
                    KEY_A,
                ))
                .await
                .ok()?
                .into_inner()
                .feedback;
            (l.len() == 6).then_some(l)
        }
    })
    .await;
    assert!(fb.iter().all(|f| f.feedback_source_json.as_deref().is_some_and(|s| s.contains(r#""type":"app""#))));

    // Tenant B sees none of it.
    let err = h.queues.get_queue(with_key(pb::GetQueueRequest { id: queue.id.clone() }, KEY_B)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn queue_definitions_rules_and_bad_requests() {
    let mut h = start().await;
    let q = h
        .queues
        .create_queue(with_key(pb::CreateQueueRequest { name: "triage".into(), ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    let updated = h
        .queues
        .update_queue(with_key(
            pb::UpdateQueueRequest { id: q.id.clone(), description: Some("low ratings".into()), ..Default::default() },
            KEY_A,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.description.as_deref(), Some("low ratings"));
    assert_eq!(updated.name, "triage");

    let rule = h
        .queues
        .add_routing_rule(with_key(
            pb::AddRoutingRuleRequest {
                queue_id: q.id.clone(),
                filter: r#"and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))"#.into(),
                sampling_rate: 0.5,
                ..Default::default()
            },
            KEY_A,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rule.sampling_rate, 0.5);
    let listed = h
        .queues
        .list_queues(with_key(pb::ListQueuesRequest { name_contains: Some("tria".into()), ..Default::default() }, KEY_A))
        .await
        .unwrap()
        .into_inner()
        .queues;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].routing_rules.len(), 1);

    let bad_filter = h
        .queues
        .add_routing_rule(with_key(
            pb::AddRoutingRuleRequest { queue_id: q.id.clone(), filter: "eq(status".into(), ..Default::default() },
            KEY_A,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_filter.code(), Code::InvalidArgument);
    assert!(bad_filter.message().starts_with("filter:"), "{}", bad_filter.message());
    let bad_rate = h
        .queues
        .add_routing_rule(with_key(
            pb::AddRoutingRuleRequest {
                queue_id: q.id.clone(),
                filter: "eq(error, true)".into(),
                sampling_rate: 2.0,
                ..Default::default()
            },
            KEY_A,
        ))
        .await
        .unwrap_err();
    assert!(bad_rate.message().contains("sampling_rate"), "{}", bad_rate.message());

    h.queues
        .delete_routing_rule(with_key(pb::DeleteRoutingRuleRequest { queue_id: q.id.clone(), rule_id: rule.id.clone() }, KEY_A))
        .await
        .unwrap();
    let got = h.queues.get_queue(with_key(pb::GetQueueRequest { id: q.id.clone() }, KEY_A)).await.unwrap().into_inner();
    assert!(got.routing_rules.is_empty());

    // A run not ingested yet is accepted: its item waits for the run.
    let early_run = Uuid::now_v7().to_string();
    let early = h
        .queues
        .add_runs(with_key(pb::AddRunsRequest { queue_id: q.id.clone(), run_ids: vec![early_run.clone()] }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(early.items.iter().map(|i| i.run_id.clone()).collect::<Vec<_>>(), vec![early_run]);
    let bad_id =
        h.queues.add_runs(with_key(pb::AddRunsRequest { queue_id: q.id.clone(), run_ids: vec!["nope".into()] }, KEY_A)).await.unwrap_err();
    assert!(bad_id.message().contains("run_ids[0]"), "{}", bad_id.message());
    let bad_status = h
        .queues
        .list_items(with_key(pb::ListItemsRequest { queue_id: q.id.clone(), status: "done-ish".into(), ..Default::default() }, KEY_A))
        .await
        .unwrap_err();
    assert!(bad_status.message().contains("status"), "{}", bad_status.message());
    let no_reviewer = h
        .queues
        .list_items(with_key(
            pb::ListItemsRequest { queue_id: q.id.clone(), status: "needs_my_review".into(), ..Default::default() },
            KEY_A,
        ))
        .await
        .unwrap_err();
    assert!(no_reviewer.message().contains("reviewer"), "{}", no_reviewer.message());
    let bad_lease = h
        .queues
        .next_item(with_key(pb::NextItemRequest { queue_id: q.id.clone(), reviewer: "ana".into(), lease_seconds: 10_000_000 }, KEY_A))
        .await
        .unwrap_err();
    assert!(bad_lease.message().contains("lease_seconds"), "{}", bad_lease.message());
    let empty_name =
        h.queues.create_queue(with_key(pb::CreateQueueRequest { name: " ".into(), ..Default::default() }, KEY_A)).await.unwrap_err();
    assert!(empty_name.message().contains("name"), "{}", empty_name.message());

    h.queues.delete_queue(with_key(pb::DeleteQueueRequest { id: q.id.clone() }, KEY_A)).await.unwrap();
    let gone = h.queues.get_queue(with_key(pb::GetQueueRequest { id: q.id }, KEY_A)).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}
