//! `datasets`: bulk example writes (`POST /examples/bulk`, N connections), then a streamed
//! export of the whole dataset (JSONL) while the server's RSS is sampled, then an atomic
//! import of that export into a new dataset.
//!
//! What it shows: examples written per second; export rows per second and that the server's
//! memory stays flat however large the dataset (peak RSS during the export minus RSS before);
//! import rows per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{Conn, Target};
use crate::util;

#[derive(clap::Args, Debug)]
pub struct DatasetArgs {
    #[arg(long, default_value = "http://127.0.0.1:1984")]
    url: String,
    #[arg(long, default_value = "bench")]
    api_key: String,
    /// Examples written (and then exported).
    #[arg(long, default_value_t = 1_000_000)]
    examples: usize,
    /// Examples per bulk request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Skip the import phase.
    #[arg(long)]
    no_import: bool,
    #[arg(long)]
    server_pid: Option<u32>,
}

fn example(i: usize) -> Value {
    json!({
        "inputs": {"question": format!("How do I get a refund for order #{i}? It arrived damaged."), "lang": "en"},
        "outputs": {"answer": format!("Sorry about order #{i}. Refunds within 30 days: open Orders, choose the order, then Refund.")},
        "metadata": {"source": "bench", "n": i},
        "split": if i % 10 == 0 { "test" } else { "train" },
    })
}

pub async fn run(a: DatasetArgs) -> Result<()> {
    let target = Target::parse(&a.url, &a.api_key)?;
    let mut setup = Conn::new(target.clone());
    let name = format!("bench-datasets-{}", uuid::Uuid::now_v7().simple());
    let (st, body) = setup.post_json("/datasets", &json!({"name": name}), Duration::from_secs(10)).await?;
    if !st.is_success() {
        bail!("create dataset: HTTP {st}: {}", String::from_utf8_lossy(&body));
    }
    let dataset: Value = serde_json::from_slice(&body)?;
    let dataset_id = dataset["id"].as_str().context("dataset id")?.to_owned();
    let rss_start = a.server_pid.and_then(util::read_rss_kb);

    // ---- bulk writes ----
    let next = Arc::new(AtomicU64::new(0));
    let total = a.examples as u64;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.connections {
        let (next, target, dataset_id, batch) = (next.clone(), target.clone(), dataset_id.clone(), a.batch as u64);
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(target);
            let mut hist = util::new_hist();
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= total {
                    return Ok::<_, anyhow::Error>(hist);
                }
                let to = (from + batch).min(total);
                let body: Vec<Value> = (from..to)
                    .map(|i| {
                        let mut e = example(i as usize);
                        e["dataset_id"] = json!(dataset_id);
                        e
                    })
                    .collect();
                let t = Instant::now();
                let (st, resp) = conn.post_json("/examples/bulk", &Value::Array(body), Duration::from_secs(120)).await?;
                if !st.is_success() {
                    bail!("/examples/bulk: HTTP {st}: {}", String::from_utf8_lossy(&resp));
                }
                util::record_us(&mut hist, t.elapsed());
            }
        }));
    }
    let mut hist = util::new_hist();
    for w in workers {
        hist.add(w.await??)?;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let rss_after_write = a.server_pid.and_then(util::read_rss_kb);
    eprintln!(
        "bulk write: {} examples in {write_secs:.1}s = {:.0} examples/s ({} per request, {} connections); request latency {}",
        a.examples,
        a.examples as f64 / write_secs,
        a.batch,
        a.connections,
        util::hist_line(&hist)
    );

    // ---- streamed export, sampling the server's RSS ----
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = a.server_pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kb) = util::read_rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let rss_before_export = a.server_pid.and_then(util::read_rss_kb);
    let started = Instant::now();
    let (bytes, lines, export) = stream_export(&target, &dataset_id, !a.no_import).await?;
    let export_secs = started.elapsed().as_secs_f64();
    if let Some(s) = sampler {
        s.abort();
    }
    if lines != a.examples as u64 {
        bail!("export returned {lines} rows, expected {}", a.examples);
    }
    let rss_peak_export = a.server_pid.map(|_| peak.load(Ordering::Relaxed));
    eprintln!(
        "export: {lines} rows, {:.1} MiB in {export_secs:.1}s = {:.0} rows/s; server RSS before {} MiB, peak during export {} MiB",
        util::mib(bytes as f64),
        lines as f64 / export_secs,
        rss_before_export.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
        rss_peak_export.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
    );

    // ---- atomic import of the export into a new dataset ----
    let mut import = json!(null);
    if let Some(file) = export {
        let (st, body) = setup.post_json("/datasets", &json!({"name": format!("{name}-copy")}), Duration::from_secs(10)).await?;
        if !st.is_success() {
            bail!("create dataset: HTTP {st}: {}", String::from_utf8_lossy(&body));
        }
        let copy: Value = serde_json::from_slice(&body)?;
        let copy_id = copy["id"].as_str().context("dataset id")?;
        let started = Instant::now();
        let h = target.base_headers();
        let (st, body) = setup.request(Method::POST, &format!("/datasets/{copy_id}/import?format=jsonl&ids=new"), h, file).await?;
        let secs = started.elapsed().as_secs_f64();
        if st != StatusCode::CREATED {
            bail!("import: HTTP {st}: {}", String::from_utf8_lossy(&body));
        }
        let report: Value = serde_json::from_slice(&body)?;
        eprintln!("import (atomic, JSONL): {} rows in {secs:.1}s = {:.0} rows/s", report["imported"], lines as f64 / secs);
        import = json!({"rows": report["imported"], "seconds": secs, "rows_per_sec": lines as f64 / secs});
    }
    let out = json!({
        "examples": a.examples,
        "batch": a.batch,
        "connections": a.connections,
        "write": {"seconds": write_secs, "examples_per_sec": a.examples as f64 / write_secs, "request_latency_us": util::hist_json(&hist)},
        "export": {"rows": lines, "bytes": bytes, "seconds": export_secs, "rows_per_sec": lines as f64 / export_secs},
        "import": import,
        "server_rss_kb": {"start": rss_start, "after_write": rss_after_write, "before_export": rss_before_export, "peak_during_export": rss_peak_export},
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Streams `GET /datasets/{id}/export?format=jsonl`, counting bytes and rows as they arrive;
/// keeps the body only if asked (for the import phase).
async fn stream_export(target: &Target, dataset_id: &str, keep: bool) -> Result<(u64, u64, Option<Bytes>)> {
    let tcp = tokio::net::TcpStream::connect(&target.authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::new(http_body_util::Empty::<Bytes>::new());
    *req.uri_mut() = format!("{}/datasets/{dataset_id}/export?format=jsonl", target.prefix).parse()?;
    *req.headers_mut() = target.base_headers();
    let res = sender.send_request(req).await?;
    if !res.status().is_success() {
        bail!("export: HTTP {}", res.status());
    }
    let mut body = res.into_body();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len() as u64;
            lines += data.iter().filter(|b| **b == b'\n').count() as u64;
            if keep {
                kept.extend_from_slice(&data);
            }
        }
    }
    Ok((bytes, lines, keep.then(|| Bytes::from(kept))))
}
