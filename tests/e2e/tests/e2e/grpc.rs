//! The binary serves Sextant's gRPC services on `--grpc`, over the same data as REST, with the
//! standard health and reflection services beside them.

use serde_json::json;
use sextant_proto::pb::run_service_client::RunServiceClient;
use sextant_proto::pb::{GetRunRequest, IngestRunsRequest, QueryRunsRequest, Run, StreamTraceRequest};
use sextant_proto::prost_types::Timestamp;

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
    // Times are google.protobuf.Timestamp, exact to the microsecond REST was sent.
    assert_eq!(got.start_time.map(|t| t.to_string()).as_deref(), Some("2026-11-25T02:19:43.056436Z"));
    assert_eq!(got.end_time, Some(ts("2026-11-25T02:19:44Z")));
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
        start_time: Some(ts("2026-11-25T02:19:43.056436Z")),
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
    assert_eq!(rest["start_time"], "2026-11-25T02:19:43.056436");

    // Runs selected by a Timestamp window.
    let window = |start: &str, end: &str| QueryRunsRequest {
        session_ids: vec![got.session_id.clone().unwrap()],
        start_time: Some(ts(start)),
        end_time: Some(ts(end)),
        ..Default::default()
    };
    let page = g.query_runs(window("2026-11-25T02:19:43Z", "2026-11-25T02:19:43.056437Z")).await.unwrap().into_inner();
    assert!(page.runs.iter().any(|r| r.id == root), "the root started inside the window: {:?}", page.runs);
    let page = g.query_runs(window("2026-11-25T02:19:43.056437Z", "2026-11-25T02:20:00Z")).await.unwrap().into_inner();
    assert!(!page.runs.iter().any(|r| r.id == root), "the root started before the window");
}

fn ts(rfc3339: &str) -> Timestamp {
    rfc3339.parse().expect("an RFC 3339 time")
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
    // Once its run is stored, the entry names the run's project (resolved from the run).
    let runs = RunServiceClient::connect(s.grpc_url.clone()).await.unwrap();
    let run = wait_until(10, || {
        let mut runs = runs.clone();
        let id = root.clone();
        async move { runs.get_run(GetRunRequest { id }).await.ok().map(|r| r.into_inner()) }
    })
    .await
    .expect("the REST-ingested run is stored");
    let project = run.session_id.expect("a run has a project");
    let got = fb.get_feedback(sextant_proto::pb::GetFeedbackRequest { id: created.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.session_id.as_deref(), Some(project.as_str()));
    assert_eq!(got.created_at, created.created_at, "created_at is a Timestamp, read back unchanged");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_datasets_over_grpc_and_curation_rules_add_runs_as_feedback_arrives() {
    use sextant_proto::pb::dataset_service_client::DatasetServiceClient;
    use sextant_proto::pb::{
        AddCurationRuleRequest, CreateDatasetRequest, CreateExamplesRequest, DiffVersionsRequest, Example, ListExamplesRequest,
        RunSelection, SetDatasetTagRequest,
    };

    let s = Sextant::start(None).await;
    let mut ds = DatasetServiceClient::connect(s.grpc_url.clone()).await.expect("gRPC port answers");
    let dataset = ds
        .create_dataset(CreateDatasetRequest {
            name: "grpc-curated".into(),
            inputs_schema_json: Some(r#"{"type":"object","required":["q"]}"#.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Examples over gRPC: validated like REST, versioned, tagged, diffed.
    let bad = ds
        .create_examples(CreateExamplesRequest {
            dataset_id: dataset.id.clone(),
            examples: vec![Example { inputs_json: r#"{"other": 1}"#.into(), ..Default::default() }],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("examples[0].inputs"), "{}", bad.message());
    let first = ds
        .create_examples(CreateExamplesRequest {
            dataset_id: dataset.id.clone(),
            examples: vec![Example { inputs_json: r#"{"q": "hand-written"}"#.into(), splits: vec!["test".into()], ..Default::default() }],
        })
        .await
        .unwrap()
        .into_inner();
    // A version's time is a Timestamp; a version reference is text (a tag or an RFC 3339 time).
    let first_version = first.as_of.expect("the version the examples were written in").to_string();
    let tagged = ds
        .set_tag(SetDatasetTagRequest { dataset_id: dataset.id.clone(), tag: "prod".into(), as_of: first_version })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tagged.as_of, first.as_of);

    // A rule: root runs with a low user rating join the dataset as the rating arrives.
    let filter = r#"and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))"#;
    let rule = ds
        .add_curation_rule(AddCurationRuleRequest {
            dataset_id: dataset.id.clone(),
            selection: Some(RunSelection { filter: filter.into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!rule.id.is_empty());
    let bad_rule = ds
        .add_curation_rule(AddCurationRuleRequest {
            dataset_id: dataset.id.clone(),
            selection: Some(RunSelection { filter: "lt(feedback_score".into(), ..Default::default() }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_rule.code(), tonic::Code::InvalidArgument);

    // Three traces: two rated low (one of them twice), one rated high.
    let mut roots = Vec::new();
    for (i, q) in ["refund please", "cancel my order", "thanks!"].iter().enumerate() {
        let (mut runs, root) = trace("grpc-curation-e2e", 1);
        runs[0]["inputs"] = json!({"q": q});
        runs[0]["start_time"] = json!(format!("2026-11-25T02:19:4{i}.000000+00:00"));
        let r = client(None).post(format!("{}/runs/batch", s.url)).json(&json!({"post": runs})).send().await.unwrap();
        assert_eq!(r.status(), 202);
        roots.push(root);
    }
    for (root, score) in [(&roots[0], 0.1), (&roots[1], 0.2), (&roots[1], 0.0), (&roots[2], 0.9)] {
        let r = client(None)
            .post(format!("{}/feedback", s.url))
            .json(&json!({"run_id": root, "key": "user_rating", "score": score}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let list = |ds: &DatasetServiceClient<tonic::transport::Channel>| {
        let mut ds = ds.clone();
        let id = dataset.id.clone();
        async move {
            ds.list_examples(ListExamplesRequest { dataset_id: id, limit: 100, ..Default::default() }).await.unwrap().into_inner().examples
        }
    };
    let curated = wait_until(20, || {
        let ds = ds.clone();
        async move {
            let examples = list(&ds).await;
            (examples.len() >= 3).then_some(examples)
        }
    })
    .await
    .expect("both low-rated runs are curated");
    // Give a duplicate every chance to appear (the second low rating of roots[1]).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let examples = list(&ds).await;
    assert_eq!(examples.len(), 3, "one hand-written and two curated, each once: {examples:?}");
    let sources: Vec<_> = examples.iter().filter_map(|e| e.source_run_id.clone()).collect();
    assert!(sources.contains(&roots[0]) && sources.contains(&roots[1]) && !sources.contains(&roots[2]), "{sources:?} vs {roots:?}");
    let curated_example = examples.iter().find(|e| e.source_run_id.as_deref() == Some(roots[0].as_str())).unwrap();
    let md: serde_json::Value = serde_json::from_str(curated_example.metadata_json.as_deref().unwrap()).unwrap();
    assert_eq!(md["curation_rule_id"], json!(rule.id));
    assert_eq!(md["feedback"]["user_rating"]["score"], json!(0.1));
    assert_eq!(curated.len(), 3);

    // The tag still names the first version; the diff lists what the rule added.
    let tagged = ds
        .list_examples(ListExamplesRequest { dataset_id: dataset.id.clone(), as_of: "prod".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .examples;
    assert_eq!(tagged.len(), 1);
    let latest = examples.iter().filter_map(|e| e.modified_at).max_by_key(|t| (t.seconds, t.nanos)).unwrap().to_string();
    let diff = ds
        .diff_versions(DiffVersionsRequest { dataset_id: dataset.id.clone(), from_version: "prod".into(), to_version: latest })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(diff.examples_added.len(), 2, "{diff:?}");
    let missing = ds
        .list_examples(ListExamplesRequest { dataset_id: dataset.id.clone(), as_of: "staging".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_compares_experiments_over_grpc() {
    use sextant_proto::pb::evaluation_service_client::EvaluationServiceClient;
    use sextant_proto::pb::CompareExperimentsRequest;

    let s = Sextant::start(None).await;
    // Two experiments over the same 30 examples: the candidate gets half of them wrong.
    let examples: Vec<String> = (0..30).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (project, wrong_every) in [("exp-baseline", 0), ("exp-candidate", 2)] {
        let mut runs = Vec::new();
        let mut feedback = Vec::new();
        for (i, ex) in examples.iter().enumerate() {
            let (mut trace, root) = trace(project, 0);
            trace[0]["reference_example_id"] = json!(ex);
            runs.extend(trace);
            let score = if wrong_every > 0 && i % wrong_every == 0 { 0.0 } else { 1.0 };
            feedback.push(json!({"run_id": root, "key": "correct", "score": score}));
        }
        let r = client(None).post(format!("{}/runs/batch", s.url)).json(&json!({"post": runs})).send().await.unwrap();
        assert_eq!(r.status(), 202);
        for f in feedback {
            let r = client(None).post(format!("{}/feedback", s.url)).json(&f).send().await.unwrap();
            assert!(r.status().is_success());
        }
    }
    // gzip both ways, as every Sextant service takes it (an unsupported encoding is UNIMPLEMENTED).
    let mut ev = EvaluationServiceClient::connect(s.grpc_url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let report = wait_until(20, || {
        let mut ev = ev.clone();
        async move {
            let req =
                CompareExperimentsRequest { baseline: "exp-baseline".into(), candidate: "exp-candidate".into(), ..Default::default() };
            let r = ev.compare_experiments(req).await.ok()?.into_inner();
            r.metrics.iter().any(|m| m.metric == "correct" && m.baseline_n == 30 && m.candidate_n == 30).then_some(r)
        }
    })
    .await
    .expect("both experiments scored");
    let correct = report.metrics.iter().find(|m| m.metric == "correct").unwrap();
    assert_eq!(correct.verdict, "REGRESSED");
    assert!((correct.delta.unwrap() + 0.5).abs() < 1e-9, "{correct:?}");
    assert!(!report.passed && report.report.contains("GATE FAILED"), "{}", report.report);

    let missing = ev
        .compare_experiments(CompareExperimentsRequest { baseline: "exp-baseline".into(), candidate: "nope".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let empty = ev.compare_experiments(CompareExperimentsRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert!(empty.message().contains("baseline"));

    // Evaluators run over an experiment on the server, progress streamed, resumable.
    use sextant_proto::pb::{RunEvaluationRequest, SetDatasetEvaluatorRequest};
    let run = |ev: &mut EvaluationServiceClient<tonic::transport::Channel>| {
        let req = RunEvaluationRequest {
            experiment: "exp-candidate".into(),
            evaluators_json: r#"[{"type": "length", "key": "short", "max": 10}]"#.into(),
        };
        let mut ev = ev.clone();
        async move {
            let mut stream = ev.run_evaluation(req).await.unwrap().into_inner();
            let mut last = None;
            while let Some(p) = stream.message().await.unwrap() {
                last = Some(p);
            }
            last.expect("progress is streamed")
        }
    };
    let first = run(&mut ev).await;
    assert!(first.done && first.total == 30 && first.scored == 30 && first.errors == 0, "{first:?}");
    let again = run(&mut ev).await;
    assert!(again.done && again.scored == 0 && again.skipped == 30, "{again:?}");
    let bad = ev
        .run_evaluation(RunEvaluationRequest {
            experiment: "exp-candidate".into(),
            evaluators_json: r#"[{"type": "nope", "key": "k"}]"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let bad = ev
        .set_dataset_evaluator(SetDatasetEvaluatorRequest {
            dataset_id: uuid::Uuid::now_v7().to_string(),
            config_json: r#"{"type": "json", "key": "j"}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::NotFound, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_grpc_health_and_reflection() {
    use prost::Message;
    use sextant_proto::prost_types::FileDescriptorProto;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    const SERVICES: [&str; 6] = [
        "sextant.v1.RunService",
        "sextant.v1.FeedbackService",
        "sextant.v1.AnnotationQueueService",
        "sextant.v1.DatasetService",
        "sextant.v1.EvaluationService",
        "sextant.v1.PromptService",
    ];
    let s = Sextant::start(None).await;

    // Health: the server ("") and each service SERVING once ready; no API key needed.
    let channel = tonic::transport::Endpoint::from_shared(s.grpc_url.clone()).unwrap().connect().await.expect("gRPC port answers");
    let health = HealthClient::new(channel.clone());
    for service in std::iter::once("").chain(SERVICES) {
        let serving = wait_until(10, || {
            let mut h = health.clone();
            async move {
                let r = h.check(HealthCheckRequest { service: service.into() }).await.ok()?.into_inner();
                (r.status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
        assert!(serving.is_some(), "{service:?} is SERVING");
    }
    let unknown = health.clone().check(HealthCheckRequest { service: "sextant.v1.Nope".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Reflection: the services, and the descriptor of a file with what it imports.
    let reflection = ServerReflectionClient::new(channel.clone());
    let ask = |req: MessageRequest| {
        let mut r = reflection.clone();
        async move {
            let req = ServerReflectionRequest { host: String::new(), message_request: Some(req) };
            let mut answers = r.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
            answers.message().await.unwrap().expect("one answer").message_response.expect("a response")
        }
    };
    let MessageResponse::ListServicesResponse(list) = ask(MessageRequest::ListServices(String::new())).await else {
        panic!("not a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in SERVICES.iter().chain(&["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]) {
        assert!(names.iter().any(|n| n == want), "{want} listed: {names:?}");
    }
    let MessageResponse::FileDescriptorResponse(files) = ask(MessageRequest::FileContainingSymbol("sextant.v1.RunService".into())).await
    else {
        panic!("not a file descriptor")
    };
    let files: Vec<FileDescriptorProto> =
        files.file_descriptor_proto.iter().map(|b| FileDescriptorProto::decode(b.as_slice()).unwrap()).collect();
    let runs = files.iter().find(|f| f.name.as_deref() == Some("sextant/v1/runs.proto")).expect("runs.proto");
    assert_eq!(runs.package.as_deref(), Some("sextant.v1"));
    assert!(runs.service.iter().any(|s| s.name.as_deref() == Some("RunService")));
    assert!(runs.dependency.iter().any(|d| d == "google/protobuf/timestamp.proto"), "{:?}", runs.dependency);
    let MessageResponse::FileDescriptorResponse(ts) = ask(MessageRequest::FileByFilename("google/protobuf/timestamp.proto".into())).await
    else {
        panic!("not a file descriptor")
    };
    assert!(!ts.file_descriptor_proto.is_empty(), "the imported well-known type is served too");

    // v1alpha, for older tools, lists the same.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut old = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let answer = old.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner().message().await.unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answer.and_then(|a| a.message_response)
    else {
        panic!("not a service list")
    };
    let old_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(SERVICES.iter().all(|s| old_names.iter().any(|n| n == s)), "{old_names:?}");
}
