//! Distributed mode through the real binary: the JetStream bus on a private `nats-server`,
//! roles run separately, and the faults a cluster must survive (NATS going away mid-ingest,
//! `sextant` killed before projection caught up).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use sextant_bus::nats_server::NatsServer;

use crate::harness::{all_runs, client, project_id, trace, wait_until, Sextant};

fn jetstream_config(nats: &NatsServer, roles: &str) -> String {
    format!("roles = [{roles}]\n[bus]\nkind = \"jetstream\"\nservers = [\"{}\"]\npublish_timeout_ms = 2000\n", nats.url())
}

async fn wait_for_runs(c: &reqwest::Client, s: &Sextant, project: &str, expected: &HashSet<String>, secs: u64) -> bool {
    let Some(pid) = wait_until(10, || async { project_id(c, &s.url, project).await }).await else { return false };
    wait_until(secs, || {
        let (c, url, pid) = (c.clone(), s.url.clone(), pid.clone());
        async move {
            let ids: HashSet<String> = all_runs(&c, &url, &pid).await.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
            expected.is_subset(&ids).then_some(())
        }
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_select_what_a_process_serves() {
    let nats = NatsServer::start();
    let projector = Sextant::start(Some(&jetstream_config(&nats, "\"projector\""))).await;
    let c = client(None);
    assert_eq!(c.get(format!("{}/readyz", projector.url)).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{}/metrics", projector.url)).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{}/info", projector.url)).send().await.unwrap().status(), 404, "a projector serves no API");
    // The projector subscribes in the background once serving; give it a moment.
    let started = wait_until(10, || async { projector.log_tail().contains("run projector started").then_some(()) }).await;
    assert!(started.is_some(), "{}", projector.log_tail());

    let ingest = Sextant::start(Some(&jetstream_config(&nats, "\"ingest\""))).await;
    assert_eq!(c.get(format!("{}/info", ingest.url)).send().await.unwrap().status(), 200);
    assert!(!ingest.log_tail().contains("run projector started"), "an ingest-only process runs no projector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_answers_503_with_retry_after_loses_nothing_and_recovers_by_itself() {
    let mut nats = NatsServer::start();
    let s = Sextant::start(Some(&jetstream_config(&nats, "\"ingest\", \"projector\""))).await;
    let c = client(None);
    let project = format!("outage-{}", uuid::Uuid::new_v4());
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let refused = Arc::new(Mutex::new(Vec::<(u16, Option<String>)>::new()));

    // A steady stream of requests while NATS goes away and comes back.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn({
        let (c, url, project, acked, refused) = (c.clone(), s.url.clone(), project.clone(), acked.clone(), refused.clone());
        async move {
            while !*stop_rx.borrow() {
                let (runs, _) = trace(&project, 4);
                let ids: Vec<String> = runs.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
                match c.post(format!("{url}/runs/batch")).json(&json!({"post": runs})).send().await {
                    Ok(r) if r.status() == 202 => acked.lock().unwrap().extend(ids),
                    Ok(r) => {
                        let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                        refused.lock().unwrap().push((r.status().as_u16(), retry_after));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("the server must answer, even with NATS down: {e}"),
                }
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_outage = acked.lock().unwrap().len();
    nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.get(format!("{}/readyz", s.url)).send().await.unwrap().status(), 503, "not ready while NATS is down");
    nats.restart();
    // Recovery needs no restart of sextant: acknowledgements resume by themselves.
    let resumed = wait_until(30, || {
        let acked = acked.clone();
        let during = before_outage;
        async move { (acked.lock().unwrap().len() > during + 20).then_some(()) }
    })
    .await;
    let _ = stop_tx.send(true);
    sender.await.unwrap();
    assert!(resumed.is_some(), "ingest did not resume after NATS came back:\n{}", s.log_tail());
    assert!(before_outage > 0, "nothing was acknowledged before the outage");

    let refused = refused.lock().unwrap().clone();
    assert!(!refused.is_empty(), "no request was refused while NATS was down");
    for (status, retry_after) in &refused {
        assert_eq!(*status, 503, "refusals are 503s: {refused:?}");
        assert!(retry_after.as_deref().is_some_and(|v| v.parse::<u64>().is_ok()), "503 without Retry-After: {refused:?}");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(wait_for_runs(&c, &s, &project, &acked, 60).await, "an acknowledged run was lost across the NATS outage:\n{}", s.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_runs_survive_kill_9_with_jetstream() {
    let nats = NatsServer::start();
    let mut s = Sextant::start(Some(&jetstream_config(&nats, "\"ingest\", \"projector\""))).await;
    let c = client(None);
    let project = format!("durable-js-{}", uuid::Uuid::new_v4());
    let mut acked = HashSet::new();
    let mut handles = Vec::new();
    for _ in 0..40 {
        let (runs, _) = trace(&project, 24);
        let ids: Vec<String> = runs.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        let (c, url) = (c.clone(), s.url.clone());
        handles.push(tokio::spawn(async move {
            (c.post(format!("{url}/runs/batch")).json(&json!({"post": runs})).send().await.unwrap().status(), ids)
        }));
    }
    for h in handles {
        let (status, ids) = h.await.unwrap();
        assert_eq!(status, 202);
        acked.extend(ids);
    }
    // Killed before projection caught up; the restarted process (same durable consumer)
    // finishes the work, including any batch it was killed in the middle of.
    s.kill9();
    s.launch().await;
    assert!(wait_for_runs(&c, &s, &project, &acked, 60).await, "not every acknowledged run was stored:\n{}", s.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trace_id_reaches_the_projector_logs() {
    let nats = NatsServer::start();
    let config = jetstream_config(&nats, "\"ingest\", \"projector\"");
    let s = Sextant::start_with_env(Some(&config), &[("RUST_LOG", "info,sextant_ingest::projector=debug")]).await;
    let c = client(None);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (runs, root) = trace("traced", 1);
    let r = c
        .post(format!("{}/runs/batch", s.url))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"post": runs}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let echoed = r.headers().get("traceparent").unwrap().to_str().unwrap().to_string();
    assert!(
        echoed.starts_with(&format!("00-{trace_id}-")) && !echoed.contains("00f067aa0ba902b7"),
        "continues the trace with its own span: {echoed}"
    );
    wait_until(10, || {
        let (c, url, root) = (c.clone(), s.url.clone(), root.clone());
        async move { c.get(format!("{url}/runs/{root}")).send().await.ok()?.status().is_success().then_some(()) }
    })
    .await
    .expect("projected");
    let log = std::fs::read_to_string(s.log_path()).unwrap();
    let projector_lines: Vec<&str> = log.lines().filter(|l| l.contains("ingest.project_event") && l.contains(trace_id)).collect();
    assert!(!projector_lines.is_empty(), "the projector's log lines carry the request's trace id:\n{}", s.log_tail());
}

#[test]
fn migrate_and_serve_name_an_unreachable_scylladb_and_fail() {
    // No ScyllaDB can run here: what can be checked is that both commands read the storage
    // configuration and fail clearly (non-zero, naming the cluster) instead of hanging.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s.toml");
    std::fs::write(&config, format!("[storage]\nkind = \"scylla\"\ncontact_points = [\"127.0.0.1:{free}\"]\nconnect_timeout_ms = 2000\n"))
        .unwrap();
    let migrate = std::process::Command::new(crate::harness::binary()).arg("migrate").arg("--config").arg(&config).output().unwrap();
    assert!(!migrate.status.success());
    let err = String::from_utf8_lossy(&migrate.stderr);
    assert!(err.contains("sextant migrate") && err.contains("scylla: cannot connect"), "{err}");

    let serve = std::process::Command::new(crate::harness::binary())
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!serve.status.success());
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(err.contains("cannot connect to ScyllaDB"), "{err}");
}
