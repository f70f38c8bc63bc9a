//! Online evaluation from the configuration: sampled production runs are scored as they
//! finish, errors always; a watch window fires an alert to a webhook when the score drops.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{client, trace, wait_until, Sextant};

/// A one-purpose webhook receiver: collects the JSON bodies POSTed to it.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text[..i]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            let _ = tx.send(serde_json::from_slice(&buf[i + 4..i + 4 + len]).unwrap_or(Value::Null));
                            let _ = sock.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_rules_score_sampled_runs_and_a_window_alert_calls_the_webhook() {
    let (hook, mut alerts) = webhook().await;
    let config = format!(
        r#"
[[online_eval]]
name = "brevity"
project = "prod-bot"
evaluators = [{{ type = "length", key = "short", max = 10 }}]
webhook_url = "{hook}"
[online_eval.window]
size = 4
drop = 0.3
baseline = 1.0

[[online_eval]]
name = "errors-only"
project = "prod-bot"
sampling_rate = 0.0
always_on_errors = true
evaluators = [{{ type = "json", key = "json_output" }}]
"#
    );
    let s = Sextant::start(Some(&config)).await;
    let post = |runs: Vec<Value>| {
        let url = format!("{}/runs/batch", s.url);
        async move {
            let r = client(None).post(url).json(&json!({"post": runs})).send().await.unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    // Four short answers (score 1), then four long ones (score 0): the window's mean falls to 0.
    let mut roots = Vec::new();
    for i in 0..8 {
        let (mut runs, root) = trace("prod-bot", 0);
        runs[0]["outputs"] = json!({"a": if i < 4 { "ok".to_owned() } else { format!("a very long rambling answer {i}") }});
        if i == 0 {
            runs[0]["error"] = json!("boom");
        }
        post(runs).await;
        roots.push(root);
        tokio::time::sleep(Duration::from_millis(150)).await; // keep the window's order
    }
    // Runs of other projects are not scored.
    let (other, other_root) = trace("staging-bot", 0);
    post(other).await;

    let scores = wait_until(20, || {
        let url = format!("{}/feedback?key=short&limit=100", s.url);
        async move {
            let fb: Vec<Value> = client(None).get(url).send().await.ok()?.json().await.ok()?;
            (fb.len() == 8).then_some(fb)
        }
    })
    .await
    .expect("every prod-bot run scored by the brevity rule");
    assert!(scores.iter().all(|f| f["feedback_source"]["type"] == "model" && f["run_id"] != json!(other_root)));
    let short: usize = scores.iter().filter(|f| f["score"] == json!(1.0)).count();
    assert_eq!(short, 4, "{scores:?}");

    let alert = tokio::time::timeout(Duration::from_secs(20), alerts.recv()).await.expect("the webhook is called").unwrap();
    assert_eq!(alert["rule"], "brevity");
    assert_eq!(alert["key"], "short");
    assert!(alert["window_mean"].as_f64().unwrap() < 0.7, "{alert}");
    let linked: Vec<&str> = alert["run_ids"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    // It fires as soon as the mean drops past 0.7 (two long answers in a window of four); the
    // lowest scores, long answers, come first. (Runs enter the window as they are scored, which
    // redelivery can reorder a little.)
    assert_eq!(alert["window_mean"], json!(0.5), "{alert}");
    let long = &roots[4..];
    assert!(linked[..2].iter().all(|r| long.iter().any(|l| l == r)), "the offending runs come first: {alert} {roots:?}");

    // Sampling 0 with always_on_errors: only the run with an error is scored.
    let errors_only = wait_until(10, || {
        let url = format!("{}/feedback?key=json_output&limit=100", s.url);
        async move {
            let fb: Vec<Value> = client(None).get(url).send().await.ok()?.json().await.ok()?;
            (!fb.is_empty()).then_some(fb)
        }
    })
    .await
    .expect("the failed run is scored");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(errors_only.len(), 1);
    assert_eq!(errors_only[0]["run_id"], json!(roots[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_online_rule_is_refused_at_start() {
    let config = r#"
[[online_eval]]
name = "bad"
evaluators = [{ type = "exact_match", key = "e" }]
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sextant.toml");
    std::fs::write(&path, config).unwrap();
    let out =
        std::process::Command::new(crate::harness::binary()).args(["serve", "--dump-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("online_eval[0]") && err.contains("reference"), "{err}");
}
