//! Hostile and broken input: every request gets a 4xx that names the problem, the server
//! keeps running, and a rejected batch leaves nothing behind.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{client, project_id, trace, Sextant};

async fn expect(resp: reqwest::Response, status: u16, needle: &str) {
    let got = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(got, StatusCode::from_u16(status).unwrap(), "body: {body}");
    assert!(body.to_lowercase().contains(&needle.to_lowercase()), "expected {needle:?} in {body}");
}

const ID: &str = "01a21085-dddd-7ab9-9494-115de01cbb17";
const B: &str = "eb4651d2d7d94b3fa6445b6be97e9bf5";

fn multipart(parts: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut s = String::new();
    for (name, ct, body) in parts {
        s.push_str(&format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}\r\n",
            body.len()
        ));
    }
    s.push_str(&format!("--{B}--\r\n"));
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_clear_4xx() {
    let s = Sextant::start(None).await;
    let c = client(None);
    let url = &s.url;
    let batch = |body: String| c.post(format!("{url}/runs/batch")).header("content-type", "application/json").body(body).send();

    expect(batch("{not json".into()).await.unwrap(), 400, "body").await;
    expect(batch(r#"{"post": "nope"}"#.into()).await.unwrap(), 422, "post").await;
    expect(batch(r#"{"post": [{"name": "x"}]}"#.into()).await.unwrap(), 422, "id is required").await;
    expect(batch(r#"{"post": [{"id": "not-a-uuid"}]}"#.into()).await.unwrap(), 422, "not a UUID").await;
    expect(batch(format!(r#"{{"post": [{{"id": "{ID}", "start_time": "yesterday"}}]}}"#)).await.unwrap(), 422, "start_time").await;
    expect(batch(format!(r#"{{"post": [{{"id": "{ID}", "tags": [1, 2]}}]}}"#)).await.unwrap(), 422, "tags").await;
    expect(batch(format!(r#"{{"post": [{{"id": "{ID}", "dotted_order": "garbage"}}]}}"#)).await.unwrap(), 422, "dotted_order").await;
    let deep = format!(r#"{{"post": [{{"id": "{ID}", "inputs": {}{}}}]}}"#, "[".repeat(5000), "]".repeat(5000));
    let r = batch(deep).await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // Unknown fields are tolerated.
    let ok = format!(r#"{{"post": [{{"id": "{}", "session_name": "tolerant", "brand_new_field": {{"x": 1}}}}]}}"#, uuid::Uuid::now_v7());
    assert_eq!(batch(ok).await.unwrap().status(), 202);

    // Oversized: 413 naming the limit.
    let big = vec![b'a'; 26 * 1024 * 1024];
    expect(c.post(format!("{url}/runs/batch")).body(big).send().await.unwrap(), 413, "26214400").await;

    // Multipart: lying Content-Length, bad part names, wrong encodings, bad JSON.
    let mp = |body: Vec<u8>, enc: Option<&str>| {
        let mut r = c.post(format!("{url}/runs/multipart")).header("content-type", format!("multipart/form-data; boundary={B}")).body(body);
        if let Some(e) = enc {
            r = r.header("content-encoding", e);
        }
        r.send()
    };
    let mut lying = String::from_utf8(multipart(&[(&format!("post.{ID}"), "application/json", "{}")])).unwrap();
    lying = lying.replace("Content-Length: 2", "Content-Length: 20");
    expect(mp(lying.into_bytes(), None).await.unwrap(), 400, "Content-Length").await;
    expect(mp(multipart(&[("post.nope", "application/json", "{}")]), None).await.unwrap(), 400, "UUID").await;
    expect(mp(multipart(&[(&format!("bogus.{ID}"), "application/json", "{}")]), None).await.unwrap(), 400, "unknown part").await;
    expect(mp(multipart(&[(&format!("post.{ID}.inputs"), "application/json", "{oops")]), None).await.unwrap(), 422, "invalid JSON").await;
    expect(mp(multipart(&[(&format!("post.{ID}"), "application/json", "{}")]), Some("zstd")).await.unwrap(), 400, "zstd").await;
    expect(mp(multipart(&[(&format!("post.{ID}"), "application/json", "{}")]), Some("br")).await.unwrap(), 415, "br").await;
    expect(mp(b"garbage".to_vec(), None).await.unwrap(), 400, "multipart").await;
    let r = c.post(format!("{url}/runs/multipart")).header("content-type", "application/json").body("{}").send().await.unwrap();
    expect(r, 415, "multipart").await;
    // A zstd bomb: small on the wire, huge decoded.
    let bomb = zstd::encode_all(&vec![0u8; 300 * 1024 * 1024][..], 19).unwrap();
    expect(mp(bomb, Some("zstd")).await.unwrap(), 413, "decompressed").await;

    // Reads and queries.
    expect(c.get(format!("{url}/runs/not-a-uuid")).send().await.unwrap(), 422, "not a run id").await;
    expect(c.get(format!("{url}/runs/{ID}")).send().await.unwrap(), 404, "not found").await;
    let q = |body: Value| c.post(format!("{url}/runs/query")).json(&body).send();
    expect(q(json!({"filter": "and(eq(name, \"x\")"})).await.unwrap(), 400, "position").await;
    expect(q(json!({"filter": "eq(nonexistent_field, 1)"})).await.unwrap(), 400, "position").await;
    expect(q(json!({"session": ["nope"]})).await.unwrap(), 422, "UUID").await;
    expect(q(json!({"limit": -5})).await.unwrap(), 422, "limit").await;
    expect(q(json!({"cursor": "forged"})).await.unwrap(), 400, "cursor").await;
    expect(q(json!({"start_time": "not a time"})).await.unwrap(), 422, "start_time").await;
    expect(c.get(format!("{url}/sessions?limit=abc")).send().await.unwrap(), 422, "limit").await;
    expect(c.post(format!("{url}/sessions")).json(&json!({"description": "no name"})).send().await.unwrap(), 422, "name").await;
    expect(c.post(format!("{url}/sessions")).json(&json!({"name": ""})).send().await.unwrap(), 422, "empty").await;

    // Still alive and well.
    assert_eq!(c.get(format!("{url}/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_stores_nothing() {
    let s = Sextant::start(None).await;
    let c = client(None);
    let (mut runs, root) = trace("all-or-nothing", 5);
    runs[3]["start_time"] = json!("not a time");
    let r = c.post(format!("{}/runs/batch", s.url)).json(&json!({"post": runs})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("post[3].start_time"));
    // Give the projector time it would need, then check nothing arrived.
    let (ok_runs, ok_root) = trace("all-or-nothing-probe", 0);
    c.post(format!("{}/runs/batch", s.url)).json(&json!({"post": ok_runs})).send().await.unwrap();
    crate::harness::wait_until(10, || async {
        c.get(format!("{}/runs/{ok_root}", s.url)).send().await.unwrap().status().is_success().then_some(())
    })
    .await
    .unwrap();
    assert_eq!(c.get(format!("{}/runs/{root}", s.url)).send().await.unwrap().status(), 404);
    assert_eq!(project_id(&c, &s.url, "all-or-nothing").await, None);
}
