//! `sextant-loadgen ingest`: timed ingestion load, then "time until queryable".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, HeaderValue, Method};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::{Conn, Target};
use crate::gen::{build_pool, remap_id, zstd_compress, GenConfig, Mode, Pool};
use crate::prom;
use crate::util::{self, hist_json, hist_line, mib, new_hist, record_us};

#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Server base URL (a path prefix such as /api/v1 is kept).
    #[arg(long, default_value = "http://127.0.0.1:1984")]
    pub url: String,
    /// Sent as `x-api-key` (omitted when empty).
    #[arg(long, env = "SEXTANT_API_KEY", default_value = "")]
    pub api_key: String,
    #[arg(long, value_enum, default_value = "multipart")]
    pub mode: Mode,
    /// Concurrent workers, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Timed phase length (e.g. 30s, 2m). Default 30s unless --runs is given.
    #[arg(long, value_parser = util::parse_duration, conflicts_with = "runs")]
    pub duration: Option<Duration>,
    /// Send exactly this many runs (rounded up to a multiple of --runs-per-request).
    #[arg(long)]
    pub runs: Option<u64>,
    /// Runs per trace (root chain + children, depth 2-3).
    #[arg(long, default_value_t = 10)]
    pub trace_size: usize,
    /// Approximate JSON size of one run (inputs/outputs text is sized to hit it).
    #[arg(long, default_value_t = 1500)]
    pub run_bytes: usize,
    #[arg(long, default_value_t = 100)]
    pub runs_per_request: usize,
    /// Sample VmRSS / CPU of this process (the server) during the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Project name (`session_name`) of the generated runs.
    #[arg(long, default_value = "sextant-bench")]
    pub project: String,
    /// Fraction of runs sent as a post without end_time followed by a patch (zstd-path style).
    #[arg(long, default_value_t = 0.2)]
    pub split_fraction: f64,
    /// Fraction of llm/tool/retriever runs that fail with an `error`.
    #[arg(long, default_value_t = 0.03)]
    pub error_rate: f64,
    /// RNG seed (default: derived from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Offered load in runs/s (0: as fast as the connections go). Requests are scheduled at
    /// this rate and their latency counts from the scheduled time, so a server that falls
    /// behind shows it in the percentiles (no coordinated omission).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Memory budget for pre-generated bodies; beyond it bodies are replayed with fresh ids.
    #[arg(long, default_value_t = 256)]
    pub pool_mb: u64,
    /// Tokio worker threads of the load generator (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// zstd level for multipart-zstd (the SDK default is 1).
    #[arg(long, default_value_t = 1)]
    pub zstd_level: i32,
    /// Per-request timeout.
    #[arg(long, value_parser = util::parse_duration, default_value = "60s")]
    pub timeout: Duration,
    /// Attempts per request (retries on connection errors, timeouts, 408/429/5xx; 1 = none).
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Give up waiting for the last run to become queryable after this long.
    #[arg(long, value_parser = util::parse_duration, default_value = "60s")]
    pub queryable_timeout: Duration,
    /// Skip the "time until queryable" probe.
    #[arg(long)]
    pub no_queryable: bool,
    /// Progress line interval on stderr (0 = off).
    #[arg(long, value_parser = util::parse_duration, default_value = "5s")]
    pub progress: Duration,
}

#[derive(Default)]
struct Shared {
    next: AtomicU64,
    acked_runs: AtomicU64,
    acked_reqs: AtomicU64,
    failed_reqs: AtomicU64,
    stop: AtomicBool,
}

struct WorkerStats {
    hist: Histogram<u64>,
    sent: u64,
    ok: u64,
    ok_runs: u64,
    failed: u64,
    status: BTreeMap<u16, u64>,
    conn_errors: u64,
    timeouts: u64,
    wire_bytes: u64,
    raw_bytes: u64,
    replayed: u64,
    retries: u64,
    first_error: Option<String>,
    last_ack: Option<(Instant, Uuid, Uuid)>,
}

struct Plan {
    total_requests: Option<u64>,
    deadline: Option<Instant>,
    seed: u64,
    mode: Mode,
    zstd_level: i32,
    timeout: Duration,
    max_attempts: u32,
    /// With `--rate`: when the timed phase began and the interval between requests.
    pace: Option<(Instant, Duration)>,
}

async fn worker(mut conn: Conn, pool: Arc<Pool>, shared: Arc<Shared>, plan: Arc<Plan>) -> WorkerStats {
    let mut st = WorkerStats {
        hist: new_hist(),
        sent: 0,
        ok: 0,
        ok_runs: 0,
        failed: 0,
        status: BTreeMap::new(),
        conn_errors: 0,
        timeouts: 0,
        wire_bytes: 0,
        raw_bytes: 0,
        replayed: 0,
        retries: 0,
        first_error: None,
        last_ack: None,
    };
    let mut headers = conn_headers(conn.target(), &pool, plan.mode);
    let path = plan.mode.path();
    let n = pool.templates.len() as u64;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(d) = plan.deadline {
            if Instant::now() >= d {
                break;
            }
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if let Some(total) = plan.total_requests {
            if i >= total {
                break;
            }
        }
        let scheduled = match plan.pace {
            Some((start, interval)) => {
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                Some(due)
            }
            None => None,
        };
        let t = &pool.templates[(i % n) as usize];
        let cycle = i / n;
        let (wire, raw_len) = if cycle == 0 {
            (t.wire.clone(), t.raw.len())
        } else {
            st.replayed += 1;
            let raw = t.rewrite(plan.seed, cycle);
            let len = raw.len();
            let wire = if plan.mode == Mode::MultipartZstd { zstd_compress(&raw, plan.zstd_level) } else { raw };
            (Bytes::from(wire), len)
        };
        if plan.mode == Mode::MultipartZstd {
            headers.insert("x-pre-compressed-size", HeaderValue::from(raw_len));
            headers.insert("x-post-compressed-size", HeaderValue::from(wire.len()));
        }
        st.sent += 1;
        // Like the SDK: retry connection errors, timeouts, 408/429/5xx with backoff. The ack
        // latency runs from the first attempt, so it includes retries.
        let first = scheduled.unwrap_or_else(Instant::now);
        let mut done = false;
        for attempt in 0..plan.max_attempts {
            if attempt > 0 {
                st.retries += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
            let r = tokio::time::timeout(plan.timeout, conn.request(Method::POST, path, headers.clone(), wire.clone())).await;
            match r {
                Ok(Ok((status, body))) => {
                    let now = Instant::now();
                    if status.is_success() {
                        record_us(&mut st.hist, now - first);
                        st.ok += 1;
                        st.ok_runs += t.runs as u64;
                        st.wire_bytes += wire.len() as u64;
                        st.raw_bytes += raw_len as u64;
                        st.last_ack = Some((now, remap_id(t.probe, plan.seed, cycle), remap_id(t.probe_trace, plan.seed, cycle)));
                        shared.acked_runs.fetch_add(t.runs as u64, Ordering::Relaxed);
                        shared.acked_reqs.fetch_add(1, Ordering::Relaxed);
                        done = true;
                        break;
                    }
                    *st.status.entry(status.as_u16()).or_default() += 1;
                    if st.first_error.is_none() {
                        st.first_error = Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
                    }
                    let retryable = matches!(status.as_u16(), 408 | 425 | 429 | 500 | 502 | 503 | 504);
                    if !retryable {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    st.conn_errors += 1;
                    if st.first_error.is_none() {
                        st.first_error = Some(format!("connection error (attempt {}): {e:#}", attempt + 1));
                    }
                    conn.reset();
                }
                Err(_) => {
                    st.timeouts += 1;
                    conn.reset();
                }
            }
        }
        if !done {
            st.failed += 1;
            shared.failed_reqs.fetch_add(1, Ordering::Relaxed);
        }
    }
    st
}

fn conn_headers(target: &Target, pool: &Pool, mode: Mode) -> http::HeaderMap {
    let mut h = target.base_headers();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&pool.content_type).unwrap());
    if mode == Mode::MultipartZstd {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    }
    h
}

pub async fn run(args: IngestArgs) -> Result<()> {
    if args.connections == 0 || args.runs_per_request == 0 || args.trace_size == 0 {
        bail!("--connections, --runs-per-request and --trace-size must be > 0");
    }
    let target = Target::parse(&args.url, &args.api_key)?;
    let seed = args.seed.unwrap_or_else(|| util::now_unix_us() as u64 ^ std::process::id() as u64);
    let rpr = args.runs_per_request as u64;
    let duration = match (args.duration, args.runs) {
        (Some(d), _) => Some(d),
        (None, None) => Some(Duration::from_secs(30)),
        (None, Some(_)) => None,
    };
    let total_requests = args.runs.map(|r| r.div_ceil(rpr).max(1));
    if let Some(r) = args.runs {
        if r % rpr != 0 {
            eprintln!("note: --runs {r} rounded up to {} (a multiple of --runs-per-request)", total_requests.unwrap() * rpr);
        }
    }

    // ---- pre-generation (not timed)
    let cfg = GenConfig {
        project: args.project.clone(),
        trace_size: args.trace_size,
        run_bytes: args.run_bytes,
        runs_per_request: args.runs_per_request,
        split_fraction: args.split_fraction,
        error_rate: args.error_rate,
        seed,
        // Traces start 10 minutes ago and advance ~1 ms apart.
        start_us: util::now_unix_us() - 600_000_000,
        zstd_level: args.zstd_level,
    };
    let t_gen = Instant::now();
    let mode = args.mode;
    let budget = args.pool_mb.saturating_mul(1024 * 1024);
    let max_req = total_requests.unwrap_or(u64::MAX);
    let pool = tokio::task::spawn_blocking(move || build_pool(&cfg, mode, max_req, budget)).await?;
    let gen_secs = t_gen.elapsed().as_secs_f64();
    let avg_run_json = pool.run_json_bytes as f64 / pool.runs.max(1) as f64;
    eprintln!(
        "pre-generated {} bodies ({} runs, {:.1} MiB raw, {:.1} MiB on the wire) in {:.2}s; avg run JSON {:.0} B, avg body {:.0} B/run",
        pool.templates.len(),
        pool.runs,
        mib(pool.raw_bytes as f64),
        mib(pool.wire_bytes as f64),
        gen_secs,
        avg_run_json,
        pool.raw_bytes as f64 / pool.runs.max(1) as f64,
    );
    let pool = Arc::new(pool);

    // ---- connections
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut c = Conn::new(target.clone());
        c.connect().await?;
        conns.push(c);
    }

    // ---- server sampling
    let rss_peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = args.server_pid.map(|pid| {
        let peak = rss_peak.clone();
        let on = sampling.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(250));
            while on.load(Ordering::Relaxed) {
                iv.tick().await;
                if let Some(kb) = util::read_rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
            }
        })
    });
    let server_cpu0 = args.server_pid.and_then(|p| util::read_cpu_secs(Some(p)));
    let self_cpu0 = util::read_cpu_secs(None);
    // The server's own histograms, read again after the run: the difference is this run.
    let mut metrics_conn = Conn::new(target.clone());
    let metrics0 = prom::scrape(&mut metrics_conn).await.ok();

    // ---- timed phase
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let plan = Arc::new(Plan {
        total_requests,
        deadline: duration.map(|d| start + d),
        seed,
        mode,
        zstd_level: args.zstd_level,
        timeout: args.timeout,
        max_attempts: args.max_attempts.max(1),
        pace: (args.rate > 0).then(|| (start, Duration::from_secs_f64(args.runs_per_request as f64 / args.rate as f64))),
    });
    let handles: Vec<_> = conns.into_iter().map(|c| tokio::spawn(worker(c, pool.clone(), shared.clone(), plan.clone()))).collect();
    let progress = if args.progress.is_zero() {
        None
    } else {
        let shared = shared.clone();
        let every = args.progress;
        let total_runs = total_requests.map(|r| r * rpr);
        Some(tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(every).await;
                let runs = shared.acked_runs.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (runs - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, runs);
                let of = total_runs.map(|t| format!("/{t}")).unwrap_or_default();
                eprintln!(
                    "[{:6.1}s] {runs}{of} runs acked ({rate:.0} runs/s now), {} requests failed",
                    (now - start).as_secs_f64(),
                    shared.failed_reqs.load(Ordering::Relaxed)
                );
            }
        }))
    };
    let mut stats = Vec::with_capacity(handles.len());
    for h in handles {
        stats.push(h.await?);
    }
    if let Some(p) = progress {
        p.abort();
    }
    shared.stop.store(true, Ordering::Relaxed);

    // ---- aggregate
    let mut hist = new_hist();
    let mut status: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut sent, mut ok, mut ok_runs, mut failed, mut conn_errors, mut timeouts) = (0, 0, 0, 0, 0, 0);
    let (mut wire_bytes, mut raw_bytes, mut replayed, mut retries) = (0u64, 0u64, 0u64, 0u64);
    let mut last_ack: Option<(Instant, Uuid, Uuid)> = None;
    let mut first_error = None;
    for s in &stats {
        hist.add(&s.hist).ok();
        for (k, v) in &s.status {
            *status.entry(*k).or_default() += v;
        }
        sent += s.sent;
        ok += s.ok;
        ok_runs += s.ok_runs;
        failed += s.failed;
        conn_errors += s.conn_errors;
        timeouts += s.timeouts;
        wire_bytes += s.wire_bytes;
        raw_bytes += s.raw_bytes;
        replayed += s.replayed;
        retries += s.retries;
        if first_error.is_none() {
            first_error = s.first_error.clone();
        }
        if let Some(la) = s.last_ack {
            if last_ack.is_none_or(|cur| la.0 > cur.0) {
                last_ack = Some(la);
            }
        }
    }
    let end = last_ack.map(|l| l.0).unwrap_or_else(Instant::now);
    let elapsed = (end - start).as_secs_f64().max(1e-9);
    let server_cpu = match (server_cpu0, args.server_pid.and_then(|p| util::read_cpu_secs(Some(p)))) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let self_cpu = match (self_cpu0, util::read_cpu_secs(None)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };

    // ---- time until queryable
    let mut queryable: Value = Value::Null;
    let mut queryable_line = "skipped".to_string();
    if let (false, Some((ack_at, probe, probe_trace))) = (args.no_queryable, last_ack) {
        let mut c = Conn::new(target.clone());
        let body = json!({"id": [probe], "limit": 1});
        let deadline = ack_at + args.queryable_timeout;
        let mut polls = 0u64;
        let mut last_status = None;
        let mut last_err = None;
        let found = loop {
            polls += 1;
            match c.post_json("/runs/query", &body, Duration::from_secs(10)).await {
                Ok((st, b)) => {
                    last_status = Some(st.as_u16());
                    if st.is_success() {
                        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                        let hit = v["runs"].as_array().is_some_and(|rs| rs.iter().any(|r| r["id"] == json!(probe)));
                        if hit {
                            break Some(Instant::now() - ack_at);
                        }
                    }
                }
                Err(e) => last_err = Some(format!("{e:#}")),
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        match found {
            Some(d) => {
                let ms = d.as_secs_f64() * 1000.0;
                queryable = json!({"ms": (ms * 1000.0).round() / 1000.0, "polls": polls, "run_id": probe, "trace_id": probe_trace});
                queryable_line = format!("{ms:.1} ms after the last ack ({polls} polls; run {probe})");
            }
            None => {
                queryable = json!({"ms": null, "timed_out_after_s": args.queryable_timeout.as_secs_f64(), "polls": polls,
                                   "run_id": probe, "last_status": last_status, "last_error": last_err});
                queryable_line = format!(
                    "NOT queryable within {:?} ({polls} polls, last status {:?}, last error {:?}; run {probe})",
                    args.queryable_timeout, last_status, last_err
                );
            }
        }
    }

    // ---- the server's view: projection lag of every event of this run, publish and backpressure
    let server_metrics = match metrics0 {
        Some(before) => server_histograms(&mut metrics_conn, &before).await,
        None => Value::Null,
    };

    sampling.store(false, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let rss_final = args.server_pid.and_then(util::read_rss_kb);
    if let Some(f) = rss_final {
        rss_peak.fetch_max(f, Ordering::Relaxed);
    }
    let rss_peak = rss_peak.load(Ordering::Relaxed);

    // ---- report
    let rps = ok as f64 / elapsed;
    let runs_ps = ok_runs as f64 / elapsed;
    let non2xx: BTreeMap<String, u64> = status.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    println!("sextant-loadgen ingest  mode={} url={} project={}", mode.as_str(), args.url, args.project);
    println!(
        "  config:      {} connections, {} loadgen thread(s), {} runs/request, {} runs/trace, ~{} B/run, split {:.0}%, errors {:.0}%, seed {seed}",
        args.connections,
        args.threads,
        args.runs_per_request,
        args.trace_size,
        args.run_bytes,
        args.split_fraction * 100.0,
        args.error_rate * 100.0
    );
    println!(
        "  pool:        {} bodies / {} runs pre-generated in {:.2}s (avg run JSON {:.0} B, {:.0} B/run in the body); {} requests replayed with fresh ids",
        pool.templates.len(),
        pool.runs,
        gen_secs,
        avg_run_json,
        pool.raw_bytes as f64 / pool.runs.max(1) as f64,
        replayed
    );
    println!("  timed phase: {elapsed:.2} s");
    println!(
        "  requests:    {sent} sent, {ok} acked (2xx), {failed} failed; non-2xx {:?}; connection errors {conn_errors}, timeouts {timeouts}, retries {retries}",
        non2xx
    );
    println!(
        "  throughput:  {rps:.1} req/s, {runs_ps:.0} runs/s acked, {:.2} MiB/s on the wire ({:.2} MiB/s uncompressed)",
        mib(wire_bytes as f64) / elapsed,
        mib(raw_bytes as f64) / elapsed
    );
    println!("  ack latency: {} (ms)", hist_line(&hist));
    println!("  queryable:   {queryable_line}");
    for h in SERVER_HISTOGRAMS {
        let v = &server_metrics[h.key];
        if v.is_object() {
            println!(
                "  {:<13} (server, s): {} samples, p50 {} p90 {} p99 {}; share within {}",
                h.label, v["count"], v["p50"], v["p90"], v["p99"], v["within"]
            );
        }
    }
    if let Some(pid) = args.server_pid {
        println!(
            "  server {pid}:  RSS peak {:.1} MiB, final {:.1} MiB; CPU {} during the timed phase",
            rss_peak as f64 / 1024.0,
            rss_final.unwrap_or(0) as f64 / 1024.0,
            server_cpu.map(|c| format!("{c:.1}s ({:.0}% of one core)", c / elapsed * 100.0)).unwrap_or("n/a".into())
        );
    }
    if let Some(c) = self_cpu {
        println!("  loadgen CPU: {c:.1}s ({:.0}% of one core)", c / elapsed * 100.0);
    }
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    let mut result = json!({
        "kind": "ingest",
        "mode": mode.as_str(),
        "url": args.url,
        "project": args.project,
        "connections": args.connections,
        "offered_runs_per_s": args.rate,
        "threads": args.threads,
        "runs_per_request": args.runs_per_request,
        "trace_size": args.trace_size,
        "run_bytes_target": args.run_bytes,
        "run_json_bytes_avg": avg_run_json.round(),
        "body_bytes_per_run_avg": (pool.raw_bytes as f64 / pool.runs.max(1) as f64).round(),
        "split_fraction": args.split_fraction,
        "error_rate": args.error_rate,
        "seed": seed,
        "pool_requests": pool.templates.len(),
        "pregen_s": (gen_secs * 1000.0).round() / 1000.0,
        "replayed_requests": replayed,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "requests_sent": sent,
        "requests_ok": ok,
        "requests_failed": failed,
        "non_2xx": non2xx,
        "connection_errors": conn_errors,
        "timeouts": timeouts,
        "retries": retries,
        "max_attempts": args.max_attempts,
        "runs_acked": ok_runs,
        "requests_per_s": (rps * 10.0).round() / 10.0,
        "runs_per_s": runs_ps.round(),
        "wire_bytes": wire_bytes,
        "wire_bytes_per_s": (wire_bytes as f64 / elapsed).round(),
        "uncompressed_bytes_per_s": (raw_bytes as f64 / elapsed).round(),
        "ack_latency_ms": hist_json(&hist),
        "queryable": queryable,
        "server_pid": args.server_pid,
        "server_rss_peak_kb": args.server_pid.map(|_| rss_peak),
        "server_rss_final_kb": rss_final,
        "server_cpu_s": server_cpu.map(|c| (c * 100.0).round() / 100.0),
        "loadgen_cpu_s": self_cpu.map(|c| (c * 100.0).round() / 100.0),
        "first_error": first_error,
    });
    for h in SERVER_HISTOGRAMS {
        result[h.key] = server_metrics[h.key].clone();
    }
    println!("RESULT {result}");
    if ok == 0 {
        bail!("no request was acknowledged");
    }
    Ok(())
}

/// A server histogram the ingest benchmark reports: RESULT key, label, metric, and the bounds
/// (seconds) whose share it gives.
struct ServerHistogram {
    key: &'static str,
    label: &'static str,
    metric: &'static str,
    bounds: &'static [f64],
}

const LAG: &str = "sextant_projection_lag_seconds";

const SERVER_HISTOGRAMS: [ServerHistogram; 6] = [
    ServerHistogram { key: "projection_lag_s", label: "projection lag", metric: LAG, bounds: &[0.1, 0.5, 1.0, 2.0] },
    ServerHistogram { key: "bus_publish_s", label: "bus publish", metric: "sextant_bus_publish_seconds", bounds: &[0.01, 0.05, 0.1] },
    ServerHistogram {
        key: "backpressure_s",
        label: "backpressure",
        metric: "sextant_ingest_backpressure_seconds",
        bounds: &[0.01, 0.05, 0.1],
    },
    ServerHistogram {
        key: "projector_apply_s",
        label: "store apply",
        metric: "sextant_projector_apply_seconds",
        bounds: &[0.05, 0.1, 0.5],
    },
    ServerHistogram { key: "projector_sync_s", label: "store sync", metric: "sextant_projector_sync_seconds", bounds: &[0.01, 0.05, 0.1] },
    ServerHistogram { key: "projector_batch_s", label: "proj. batch", metric: "sextant_projector_batch_seconds", bounds: &[0.1, 0.5, 1.0] },
];

/// The server's histograms over this run, keyed as in [`SERVER_HISTOGRAMS`]. The run projector
/// records an event's lag once it is applied and durable, so the scrape waits (up to 10 s)
/// until that count stops growing.
async fn server_histograms(conn: &mut Conn, before: &str) -> Value {
    let mut text = String::new();
    let mut last_count = -1.0;
    for _ in 0..40 {
        let Ok(t) = prom::scrape(conn).await else { return Value::Null };
        let count = prom::parse(&t, LAG).map_or(0.0, |h| h.count);
        text = t;
        if count == last_count {
            break;
        }
        last_count = count;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let read = |h: &ServerHistogram| match prom::parse(&text, h.metric) {
        Some(now) => now.since(prom::parse(before, h.metric).as_ref()).to_json(h.bounds),
        None => Value::Null,
    };
    Value::Object(SERVER_HISTOGRAMS.iter().map(|h| (h.key.to_string(), read(h))).collect())
}
