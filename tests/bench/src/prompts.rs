//! `prompts`: prompt-hub pull throughput (`GET /commits/-/{name}/{ref}`, closed loop over N
//! connections), one timed phase per ref kind: by full hash (what a service that pins a commit
//! does), by 8-character hash (what the SDK puts in URLs), by tag, and by full hash revalidated
//! with `If-None-Match` (the 304 a caching client gets).
//!
//! Setup creates `prompts` prompts with `commits` commits each (a realistic chat prompt of about
//! 1.5 KB) and tags the newest `production`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{Conn, Target};
use crate::util;

#[derive(clap::Args, Debug)]
pub struct PromptArgs {
    #[arg(long, default_value = "http://127.0.0.1:1984")]
    url: String,
    #[arg(long, default_value = "bench")]
    api_key: String,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Length of each timed phase.
    #[arg(long, value_parser = util::parse_duration, default_value = "10s")]
    duration: Duration,
    #[arg(long, default_value_t = 20)]
    prompts: usize,
    #[arg(long, default_value_t = 10)]
    commits: usize,
    /// Phases to run, in order: hash, short, tag, etag.
    #[arg(long, value_delimiter = ',', default_value = "hash,short,tag,etag")]
    phases: Vec<String>,
    #[arg(long)]
    server_pid: Option<u32>,
    /// Tokio worker threads of the load generator (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// A chat prompt as `langchain_core.load.dumps` serialises it.
fn manifest(prompt: usize, version: usize) -> Value {
    let message = |class: &str, template: String, vars: Vec<&str>| {
        json!({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "chat", class],
               "kwargs": {"prompt": {"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
                          "kwargs": {"input_variables": vars, "template": template, "template_format": "f-string"}, "name": "PromptTemplate"}}})
    };
    let system = format!(
        "You are the support assistant of shop {prompt} (prompt version {version}). Answer in the customer's language, \
         cite the order number, never promise refunds outside the 30-day window, and escalate to a human when the \
         customer asks twice. Tone: {{tone}}. Known facts about the customer: {{facts}}."
    );
    json!({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "chat", "ChatPromptTemplate"],
           "kwargs": {"input_variables": ["facts", "question", "tone"], "messages": [
               message("SystemMessagePromptTemplate", system, vec!["facts", "tone"]),
               message("HumanMessagePromptTemplate", "{question}".into(), vec!["question"])]},
           "name": "ChatPromptTemplate"})
}

struct Setup {
    /// `(name, full hashes oldest first)` of each prompt.
    prompts: Vec<(String, Vec<String>)>,
}

async fn setup(target: &Target, a: &PromptArgs) -> Result<Setup> {
    let mut c = Conn::new(target.clone());
    let run = uuid::Uuid::now_v7().simple().to_string();
    let t = Duration::from_secs(30);
    let mut prompts = Vec::with_capacity(a.prompts);
    for p in 0..a.prompts {
        let name = format!("bench-{}-{p}", &run[20..]);
        let (st, body) = c.post_json("/repos", &json!({"repo_handle": name, "is_public": false}), t).await?;
        if !st.is_success() {
            bail!("POST /repos: HTTP {st}: {}", String::from_utf8_lossy(&body));
        }
        let mut hashes = Vec::with_capacity(a.commits);
        for v in 0..a.commits {
            let parent = hashes.last().cloned().map_or(Value::Null, Value::String);
            let (st, body) =
                c.post_json(&format!("/commits/-/{name}"), &json!({"parent_commit": parent, "manifest": manifest(p, v)}), t).await?;
            if !st.is_success() {
                bail!("POST /commits: HTTP {st}: {}", String::from_utf8_lossy(&body));
            }
            let v: Value = serde_json::from_slice(&body)?;
            hashes.push(v["commit"]["commit_hash"].as_str().context("commit_hash in the push response")?.to_owned());
        }
        let (st, body) = c.post_json(&format!("/repos/-/{name}/tags"), &json!({"tag_name": "production", "commit": "latest"}), t).await?;
        if !st.is_success() {
            bail!("POST tags: HTTP {st}: {}", String::from_utf8_lossy(&body));
        }
        prompts.push((name, hashes));
    }
    Ok(Setup { prompts })
}

struct Phase {
    name: String,
    pulls: u64,
    failed: u64,
    elapsed: f64,
    hist: hdrhistogram::Histogram<u64>,
    cpu: Option<f64>,
}

async fn phase(target: &Target, a: &PromptArgs, s: Arc<Setup>, name: &str) -> Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu0 = util::read_cpu_secs(a.server_pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn_no in 0..a.connections {
        let (target, s, stop, pulls, failed, name) =
            (target.clone(), s.clone(), stop.clone(), pulls.clone(), failed.clone(), name.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(target.clone());
            let mut hist = util::new_hist();
            let mut i: u64 = conn_no as u64 + 1;
            // 304 is the success of a revalidation; 200 of everything else.
            let want = if name == "etag" { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let (prompt, hashes) = &s.prompts[(i >> 33) as usize % s.prompts.len()];
                let hash = &hashes[(i >> 13) as usize % hashes.len()];
                let reference = match name.as_str() {
                    "short" => &hash[..8],
                    "tag" => "production",
                    _ => hash.as_str(),
                };
                let mut headers = target.base_headers();
                if name == "etag" {
                    headers.insert(http::header::IF_NONE_MATCH, HeaderValue::from_str(&format!("\"{hash}\"")).expect("hex"));
                }
                let t = Instant::now();
                let path = format!("/commits/-/{prompt}/{reference}");
                match tokio::time::timeout(Duration::from_secs(10), conn.request(Method::GET, &path, headers, Bytes::new())).await {
                    Ok(Ok((st, _))) if st == want => {
                        util::record_us(&mut hist, t.elapsed());
                        pulls.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) | Err(_) => {
                        conn.reset();
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
    let cpu = match (cpu0, util::read_cpu_secs(a.server_pid)) {
        (Some(c0), Some(c1)) => Some(c1 - c0),
        _ => None,
    };
    Ok(Phase { name: name.to_owned(), pulls: pulls.load(Ordering::Relaxed), failed: failed.load(Ordering::Relaxed), elapsed, hist, cpu })
}

pub async fn run(a: PromptArgs) -> Result<()> {
    let target = Target::parse(&a.url, &a.api_key)?;
    for p in &a.phases {
        if !["hash", "short", "tag", "etag"].contains(&p.as_str()) {
            bail!("unknown phase {p:?}: use hash, short, tag or etag");
        }
    }
    let t0 = Instant::now();
    let s = Arc::new(setup(&target, &a).await?);
    eprintln!("setup: {} prompts x {} commits in {:.1}s", a.prompts, a.commits, t0.elapsed().as_secs_f64());
    println!("sextant-loadgen prompts  url={} connections={} prompts={} commits={}", a.url, a.connections, a.prompts, a.commits);
    let mut results = Vec::new();
    for name in &a.phases {
        let p = phase(&target, &a, s.clone(), name).await?;
        let rate = p.pulls as f64 / p.elapsed;
        println!(
            "  pull by {:<5}: {:.0} pulls/s ({} ok, {} failed in {:.1}s); latency {}",
            p.name,
            rate,
            p.pulls,
            p.failed,
            p.elapsed,
            util::hist_line(&p.hist)
        );
        if let Some(cpu) = p.cpu {
            println!("                 server CPU {cpu:.1}s ({:.0}% of one core)", cpu / p.elapsed * 100.0);
        }
        results.push(json!({"phase": p.name, "pulls_per_s": rate, "pulls": p.pulls, "failed": p.failed,
                            "latency_ms": util::hist_json(&p.hist), "server_cpu_s": p.cpu}));
    }
    println!(
        "RESULT {}",
        json!({"kind": "prompts", "connections": a.connections, "prompts": a.prompts, "commits": a.commits, "phases": results})
    );
    Ok(())
}
