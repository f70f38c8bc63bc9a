//! `feedback`: feedback write throughput (`POST /feedback`, closed loop over N connections),
//! then the time until every acknowledged entry counts in the project's `feedback_stats`.
//!
//! Setup creates a project with `runs` runs (`POST /runs/batch`); the timed phase posts
//! feedback (a score and a categorical value, three keys) on random runs of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::client::{Conn, Target};
use crate::{prom, util};

const LAG: &str = "sextant_feedback_projection_lag_seconds";

#[derive(clap::Args, Debug)]
pub struct FeedbackArgs {
    #[arg(long, default_value = "http://127.0.0.1:1984")]
    url: String,
    #[arg(long, default_value = "bench")]
    api_key: String,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, value_parser = util::parse_duration, default_value = "20s")]
    duration: Duration,
    /// Runs the feedback is spread over.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    #[arg(long)]
    server_pid: Option<u32>,
}

pub async fn run(a: FeedbackArgs) -> Result<()> {
    let target = Target::parse(&a.url, &a.api_key)?;
    let project = format!("bench-feedback-{}", uuid::Uuid::now_v7().simple());
    let now = util::now_unix_us();
    let run_ids: Vec<uuid::Uuid> = (0..a.runs).map(|_| uuid::Uuid::now_v7()).collect();
    let mut setup = Conn::new(target.clone());
    for chunk in run_ids.chunks(500) {
        let post: Vec<Value> = chunk
            .iter()
            .map(|id| {
                json!({"id": id, "trace_id": id, "dotted_order": format!("{}{}", util::dotted_stamp(now), id), "name": "answer", "run_type": "llm",
                       "start_time": util::iso_utc(now), "end_time": util::iso_utc(now + 1000), "inputs": {"q": "?"}, "outputs": {"a": "!"},
                       "session_name": project})
            })
            .collect();
        let (st, body) = setup.post_json("/runs/batch", &json!({"post": post}), Duration::from_secs(30)).await?;
        if !st.is_success() {
            bail!("setup /runs/batch: HTTP {st}: {}", String::from_utf8_lossy(&body));
        }
    }
    // The project id, once the runs are visible.
    let project_id = loop {
        let (st, body) = setup.get(&format!("/sessions?name={project}"), Duration::from_secs(10)).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if st.is_success() {
            if let Some(id) = v.get(0).and_then(|p| p.get("id")).and_then(Value::as_str) {
                break id.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("setup: {} runs in project {project}", a.runs);

    let run_ids = Arc::new(run_ids);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu0 = util::read_cpu_secs(a.server_pid);
    let metrics0 = prom::scrape(&mut setup).await.ok();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let (target, run_ids, stop, acked, failed) = (target.clone(), run_ids.clone(), stop.clone(), acked.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(target);
            let mut hist = util::new_hist();
            let mut i: u64 = c as u64;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let run = run_ids[(i >> 33) as usize % run_ids.len()];
                let key = ["user_rating", "correctness", "thumbs"][(i >> 20) as usize % 3];
                let value = ["good", "bad", "meh"][(i >> 10) as usize % 3];
                let body = json!({"id": uuid::Uuid::now_v7(), "run_id": run, "key": key, "score": ((i >> 40) % 101) as f64 / 100.0,
                                  "value": value, "comment": "bench",
                                  "feedback_source": {"type": "api", "metadata": {}}});
                let t = Instant::now();
                match conn.post_json("/feedback", &body, Duration::from_secs(10)).await {
                    Ok((st, _)) if st.is_success() => {
                        util::record_us(&mut hist, t.elapsed());
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(a.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = util::new_hist();
    for t in tasks {
        hist.add(t.await?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let last_ack = Instant::now();
    let cpu = match (cpu0, util::read_cpu_secs(a.server_pid)) {
        (Some(a0), Some(a1)) => Some(a1 - a0),
        _ => None,
    };
    let total = acked.load(Ordering::Relaxed);
    // Until every acknowledged entry counts in the project's feedback_stats.
    let visible_ms = loop {
        let (st, body) =
            setup.get(&format!("/sessions/{project_id}?include_stats=true"), Duration::from_secs(30)).await.context("read stats")?;
        if st.is_success() {
            let v: Value = serde_json::from_slice(&body)?;
            let n: u64 = v["feedback_stats"].as_object().map(|m| m.values().filter_map(|k| k["n"].as_u64()).sum()).unwrap_or(0);
            if n >= total {
                break last_ack.elapsed().as_secs_f64() * 1000.0;
            }
        }
        if last_ack.elapsed() > Duration::from_secs(120) {
            bail!("feedback_stats did not reach {total} entries within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lag = match (metrics0, prom::scrape(&mut setup).await) {
        (Some(before), Ok(after)) => {
            prom::parse(&after, LAG).map_or(Value::Null, |h| h.since(prom::parse(&before, LAG).as_ref()).to_json(&[0.01, 0.1, 1.0]))
        }
        _ => Value::Null,
    };
    let rate = total as f64 / elapsed;
    println!("sextant-loadgen feedback  url={} connections={} runs={}", a.url, a.connections, a.runs);
    println!("  timed phase: {elapsed:.2} s; {total} feedback acked ({rate:.0}/s), {} failed", failed.load(Ordering::Relaxed));
    println!("  ack latency: {}", util::hist_line(&hist));
    println!("  all {total} counted in project feedback_stats {visible_ms:.1} ms after the last ack");
    if lag.is_object() {
        println!(
            "  projection lag (server, publish -> applied and durable, s): p50 {} p90 {} p99 {}; share within {}",
            lag["p50"], lag["p90"], lag["p99"], lag["within"]
        );
    }
    if let Some(cpu) = cpu {
        println!("  server CPU: {cpu:.1}s ({:.0}% of one core)", cpu / elapsed * 100.0);
    }
    println!(
        "RESULT {}",
        json!({"kind": "feedback", "feedback_per_s": rate, "acked": total, "failed": failed.load(Ordering::Relaxed), "connections": a.connections,
               "ack_latency_ms": util::hist_json(&hist), "visible_in_stats_ms": visible_ms, "projection_lag_s": lag, "server_cpu_s": cpu})
    );
    Ok(())
}
