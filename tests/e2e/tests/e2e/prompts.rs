//! The prompt hub in the real binary: REST and gRPC on the same prompts (the API role serves
//! `PromptService`), pulls revalidated by `ETag`, and pushes that survive `kill -9`.

use serde_json::{json, Value};
use sextant_proto::pb::prompt_service_client::PromptServiceClient;
use sextant_proto::pb::{PullCommitRequest, SetTagRequest};

use crate::harness::{client, wait_until, Sextant};

fn manifest(template: &str) -> Value {
    json!({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
           "kwargs": {"input_variables": ["q"], "template": template, "template_format": "f-string"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_pushed_over_rest_are_pulled_over_grpc_and_survive_kill_9() {
    let mut s = Sextant::start(None).await;
    let c = client(Some("any"));
    let url = s.url.clone();
    let r = c.post(format!("{url}/api/v1/repos")).json(&json!({"repo_handle": "e2e-prompt", "is_public": false})).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = c
        .post(format!("{url}/commits/-/e2e-prompt"))
        .json(&json!({"parent_commit": null, "manifest": manifest("Q: {q}")}))
        .send()
        .await
        .unwrap();
    let pushed: Value = r.json().await.unwrap();
    let hash = pushed["commit"]["commit_hash"].as_str().expect("a commit hash").to_owned();

    let pull = c.get(format!("{url}/commits/-/e2e-prompt/{}", &hash[..8])).send().await.unwrap();
    assert_eq!(pull.status(), 200);
    let etag = pull.headers()["etag"].to_str().unwrap().to_owned();
    let again = c.get(format!("{url}/commits/-/e2e-prompt/{hash}")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);

    let mut g = PromptServiceClient::connect(s.grpc_url.clone()).await.expect("gRPC port answers");
    let tagged = g
        .set_tag(SetTagRequest { owner: "-".into(), name: "e2e-prompt".into(), tag: "production".into(), commit: hash[..8].into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tagged.commit_hash, hash);
    let by_tag = g
        .pull_commit(PullCommitRequest { owner: "-".into(), name: "e2e-prompt".into(), r#ref: "production".into(), include_model: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_tag.commit_hash, hash);
    assert_eq!(serde_json::from_str::<Value>(&by_tag.manifest_json).unwrap(), manifest("Q: {q}"));

    // Acknowledged means durable: after kill -9 the prompt, its commit and its tag are there.
    s.kill9();
    s.launch().await;
    let url = s.url.clone();
    let pulled = wait_until(10, || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c.get(format!("{url}/commits/-/e2e-prompt/production")).send().await.ok()?;
            if r.status() != 200 {
                return None;
            }
            r.json::<Value>().await.ok()
        }
    })
    .await
    .unwrap_or_else(|| panic!("the prompt did not survive kill -9:\n{}", s.log_tail()));
    assert_eq!(pulled["commit_hash"], hash.as_str());
    assert_eq!(pulled["manifest"], manifest("Q: {q}"));
    let m = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("sextant_http_requests_total"), "{m}");
}
