//! What was acknowledged survives `kill -9`, and SIGTERM stops the server cleanly.

use std::collections::HashSet;

use serde_json::json;

use crate::harness::{all_runs, client, project_id, trace, wait_until, Sextant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_runs_survive_kill_9() {
    let mut s = Sextant::start(None).await;
    let c = client(Some("any"));
    let project = format!("durable-{}", uuid::Uuid::new_v4());
    let mut acked: HashSet<String> = HashSet::new();
    // Many concurrent requests, then kill -9 the moment the last one is acknowledged:
    // the projector has certainly not caught up with all of them.
    let mut handles = Vec::new();
    for _ in 0..40 {
        let (runs, _) = trace(&project, 24);
        let ids: Vec<String> = runs.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        let c = c.clone();
        let url = s.url.clone();
        handles.push(tokio::spawn(async move {
            let r = c.post(format!("{url}/runs/batch")).json(&json!({"post": runs})).send().await.unwrap();
            (r.status(), ids)
        }));
    }
    for h in handles {
        let (status, ids) = h.await.unwrap();
        assert_eq!(status, 202);
        acked.extend(ids);
    }
    s.kill9();
    s.launch().await;
    let pid = wait_until(10, || async { project_id(&c, &s.url, &project).await }).await.expect("project survived");
    let stored = wait_until(30, || {
        let (c, url, pid, acked) = (c.clone(), s.url.clone(), pid.clone(), acked.clone());
        async move {
            let ids: HashSet<String> = all_runs(&c, &url, &pid).await.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
            (ids == acked).then_some(ids)
        }
    })
    .await;
    assert!(stored.is_some(), "not every acknowledged run was stored after kill -9 and restart:\n{}", s.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let mut s = Sextant::start(None).await;
    let c = client(None);
    let (runs, root) = trace("sigterm", 3);
    assert_eq!(c.post(format!("{}/runs/batch", s.url)).json(&json!({"post": runs})).send().await.unwrap().status(), 202);
    let status = s.terminate();
    assert!(status.success(), "exit status {status}:\n{}", s.log_tail());
    assert!(s.log_tail().contains("stopped"));
    s.launch().await;
    let got = wait_until(10, || {
        let (c, url, root) = (c.clone(), s.url.clone(), root.clone());
        async move {
            let r = c.get(format!("{url}/runs/{root}")).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    assert!(got.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_exposed() {
    let s = Sextant::start(None).await;
    let c = client(None);
    let (runs, _) = trace("metrics", 2);
    c.post(format!("{}/runs/batch", s.url)).json(&json!({"post": runs})).send().await.unwrap();
    assert_eq!(c.get(format!("{}/healthz", s.url)).send().await.unwrap().status(), 200);
    let m = c.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("sextant_ingest_runs_total"), "{m}");
    assert!(m.contains("sextant_http_requests_total"), "{m}");
}
