//! Input the server must refuse, checked against the real binary: trailing content after a
//! JSON body on every service, undecodable gRPC requests on every gRPC service (INVALID_ARGUMENT,
//! not INTERNAL), and links built from the configuration, never from request headers.

use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::harness::{client, Sextant};

async fn status_and_detail(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["detail"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_content_after_a_json_body_is_refused_on_every_service() {
    let s = Sextant::start(None).await;
    let c = client(None);
    let (r1, r2) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let bodies: Vec<(&str, String)> = vec![
        (
            "/runs/batch",
            format!(r#"{{"post":[{{"id":"{r1}","session_name":"trail"}}]}}{{"post":[{{"id":"{r2}","session_name":"trail"}}]}}"#),
        ),
        ("/runs", format!(r#"{{"id":"{r1}"}}garbage"#)),
        ("/api/v1/runs/query", "{}garbage".into()),
        ("/feedback", format!(r#"{{"run_id":"{r1}","key":"k","score":1}}x"#)),
        ("/datasets", r#"{"name":"trail"}{"name":"trail2"}"#.into()),
        ("/repos", r#"{"repo_handle":"trail"}]"#.into()),
        ("/annotation-queues", r#"{"name":"trail"} 1"#.into()),
    ];
    for (path, body) in bodies {
        let r = c.post(format!("{}{path}", s.url)).header("content-type", "application/json").body(body).send().await.unwrap();
        let (status, detail) = status_and_detail(r).await;
        assert_eq!(status, 400, "{path}: {detail}");
        assert!(detail.contains("trailing") || detail.contains("after the JSON value"), "{path}: {detail}");
    }
    // The first run of the two-run body was not taken either.
    assert_eq!(c.get(format!("{}/runs/{r1}", s.url)).send().await.unwrap().status(), 404);
}

/// Sends `body` as the raw body of a gRPC call and returns its status.
async fn raw_call(channel: &Channel, path: &str, extra: &[(&str, &str)], body: Vec<u8>) -> tonic::Status {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("http://sextant{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)))).unwrap();
    let resp = channel.clone().oneshot(req).await.expect("the server answers");
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        return s;
    }
    let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap_or_default();
    tonic::Status::from_header_map(&trailers).expect("a grpc-status")
}

fn frame(flag: u8, declared_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&declared_len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_grpc_requests_are_invalid_argument_on_every_service() {
    let s = Sextant::start(None).await;
    let channel = Channel::from_shared(s.grpc_url.clone()).unwrap().connect().await.expect("gRPC port answers");
    let garbage = [0xff_u8; 11];
    /// What is wrong, extra headers, the body.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("malformed protobuf", vec![], frame(0, garbage.len() as u32, &garbage)),
        ("truncated protobuf", vec![], frame(0, 4, &[0x0a, 50, b'a', b'b'])),
        ("truncated frame", vec![], frame(0, 100, b"abc")),
        ("a partial frame header", vec![], vec![0, 0]),
        ("an empty body", vec![], vec![]),
        ("an invalid compression flag", vec![], frame(9, 1, b"x")),
        ("a frame that does not decompress", vec![("grpc-encoding", "zstd")], frame(1, 5, b"nope!")),
    ];
    let methods = [
        "/sextant.v1.RunService/IngestRuns",
        "/sextant.v1.RunService/StreamTrace",
        "/sextant.v1.FeedbackService/CreateFeedback",
        "/sextant.v1.AnnotationQueueService/CreateQueue",
        "/sextant.v1.DatasetService/CreateExamples",
        "/sextant.v1.EvaluationService/CompareExperiments",
        "/sextant.v1.EvaluationService/RunEvaluation",
        "/sextant.v1.PromptService/PushCommit",
    ];
    for method in methods {
        for (what, headers, body) in &cases {
            let status = raw_call(&channel, method, headers, body.clone()).await;
            // The evaluation service does not take compressed requests: that is its own,
            // already client-side, refusal (UNIMPLEMENTED, as gRPC specifies).
            if method.contains("EvaluationService") && headers.iter().any(|(k, _)| *k == "grpc-encoding") {
                assert_ne!(status.code(), tonic::Code::Internal, "{method}, {what}: {status:?}");
                continue;
            }
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{method}, {what}: {status:?}");
            assert!(!status.message().is_empty(), "{method}, {what}: the message names the problem");
        }
    }
    // The server is fine afterwards.
    assert_eq!(client(None).get(format!("{}/readyz", s.url)).send().await.unwrap().status(), 200);
}

async fn token_url(s: &Sextant, headers: &[(&str, &str)]) -> String {
    let mut r =
        client(None).post(format!("{}/feedback/tokens", s.url)).json(&json!({"run_id": uuid::Uuid::now_v7(), "feedback_key": "vote"}));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_urls_come_from_the_configuration_not_from_request_headers() {
    let forged = [("x-forwarded-host", "evil.example"), ("x-forwarded-proto", "https"), ("host", "evil.example")];
    // Without public_url: the listen address.
    let s = Sextant::start(None).await;
    for headers in [&forged[..], &forged[..1], &[][..]] {
        let url = token_url(&s, headers).await;
        assert!(url.starts_with(&format!("{}/feedback/tokens/", s.url)), "{url}");
    }
    // The token works where the URL says.
    let r = client(None).post(token_url(&s, &forged).await).json(&json!({"score": 1})).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // With public_url: it, with its path.
    let s = Sextant::start(Some("public_url = \"https://sextant.example.com/obs/\"\n")).await;
    let url = token_url(&s, &forged).await;
    assert!(url.starts_with("https://sextant.example.com/obs/feedback/tokens/"), "{url}");
    assert!(!url.contains("evil"), "{url}");
}
