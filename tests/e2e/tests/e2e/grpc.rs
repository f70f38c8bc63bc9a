//! The binary serves the gRPC `RunService` on `--grpc`, over the same data as REST.

use serde_json::json;
use sextant_proto::pb::run_service_client::RunServiceClient;
use sextant_proto::pb::{GetRunRequest, IngestRunsRequest, QueryRunsRequest, Run, StreamTraceRequest};

use crate::harness::{client, trace, wait_until, Sextant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reads_what_rest_wrote_and_writes_what_rest_reads() {
    let s = Sextant::start(None).await;
    let mut g = RunServiceClient::connect(s.grpc_url.clone()).await.expect("gRPC port answers");

    // Written over REST, read over gRPC.
    let (runs, root) = trace("grpc-e2e", 3);
    let r = client(None).post(format!("{}/runs/batch", s.url)).json(&json!({"post": runs})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let got = wait_until(10, || {
        let mut g = g.clone();
        let root = root.clone();
        async move { g.get_run(GetRunRequest { id: root }).await.ok().map(|r| r.into_inner()) }
    })
    .await
    .expect("run visible over gRPC");
    assert_eq!(got.name.as_deref(), Some("root"));
    let streamed = wait_until(10, || {
        let mut g = g.clone();
        let root = root.clone();
        async move {
            let mut stream = g.stream_trace(StreamTraceRequest { trace_id: root }).await.ok()?.into_inner();
            let mut n = 0;
            while let Some(run) = stream.message().await.ok()? {
                let _: Run = run;
                n += 1;
            }
            (n == 4).then_some(n)
        }
    })
    .await;
    assert_eq!(streamed, Some(4), "the whole trace streams");

    // A bad filter is InvalidArgument with the position, as REST gives 400.
    let err = g.query_runs(QueryRunsRequest { filter: "and(eq(name, 'x')".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("position"), "{}", err.message());

    // Written over gRPC, read over REST.
    let id = uuid::Uuid::now_v7().to_string();
    let post = Run {
        id: id.clone(),
        name: Some("from-grpc".into()),
        run_type: Some("tool".into()),
        session_name: Some("grpc-e2e".into()),
        start_time: Some("2026-11-25T02:19:43.056436Z".into()),
        inputs_json: Some(r#"{"q":1}"#.into()),
        ..Default::default()
    };
    g.ingest_runs(IngestRunsRequest { post: vec![post], patch: vec![] }).await.unwrap();
    let rest = wait_until(10, || {
        let url = format!("{}/runs/{id}", s.url);
        async move {
            let r = client(None).get(url).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.json::<serde_json::Value>().await.ok()
        }
    })
    .await
    .expect("gRPC-written run visible over REST");
    assert_eq!(rest["name"], "from-grpc");
    assert_eq!(rest["inputs"], json!({"q": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_feedback_and_queues_over_grpc() {
    use sextant_proto::pb::annotation_queue_service_client::AnnotationQueueServiceClient;
    use sextant_proto::pb::feedback_service_client::FeedbackServiceClient;
    use sextant_proto::pb::{score, AddRunsRequest, CreateFeedbackRequest, CreateQueueRequest, Feedback, NextItemRequest, Score};

    let s = Sextant::start(None).await;
    let (runs, root) = trace("grpc-feedback-e2e", 0);
    let r = client(None).post(format!("{}/runs/batch", s.url)).json(&json!({"post": runs})).send().await.unwrap();
    assert_eq!(r.status(), 202);

    // Feedback written over gRPC is read over REST, with the run's feedback_stats.
    let mut fb = FeedbackServiceClient::connect(s.grpc_url.clone()).await.expect("gRPC port answers");
    let created = fb
        .create_feedback(CreateFeedbackRequest {
            feedback: Some(Feedback {
                run_id: Some(root.clone()),
                key: "user_rating".into(),
                score: Some(Score { kind: Some(score::Kind::Number(0.2)) }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let rest = wait_until(10, || {
        let url = format!("{}/feedback/{}", s.url, created.id);
        async move {
            let r = client(None).get(url).send().await.ok()?;
            r.status().is_success().then_some(())?;
            r.json::<serde_json::Value>().await.ok()
        }
    })
    .await
    .expect("gRPC-written feedback visible over REST");
    assert_eq!(rest["key"], "user_rating");
    assert_eq!(rest["run_id"], json!(root));

    // A queue over gRPC leases the REST-ingested run with its content.
    let mut q = AnnotationQueueServiceClient::connect(s.grpc_url.clone()).await.unwrap();
    let queue = q.create_queue(CreateQueueRequest { name: "grpc e2e".into(), ..Default::default() }).await.unwrap().into_inner();
    wait_until(10, || {
        let mut q = q.clone();
        let req = AddRunsRequest { queue_id: queue.id.clone(), run_ids: vec![root.clone()] };
        async move { q.add_runs(req).await.ok() }
    })
    .await
    .expect("the run can be queued once it is stored");
    let next =
        q.next_item(NextItemRequest { queue_id: queue.id.clone(), reviewer: "ana".into(), lease_seconds: 0 }).await.unwrap().into_inner();
    assert_eq!(next.run.expect("the run comes with the item").name.as_deref(), Some("root"));
}
