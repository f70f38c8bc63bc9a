//! `sextant-loadgen query`: latency of `POST /runs/query` with realistic filters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::client::{url_encode, Conn, Target};
use crate::util::{self, hist_json, hist_line, new_hist, record_us};

#[derive(clap::Args, Debug, Clone)]
pub struct QueryArgs {
    #[arg(long, default_value = "http://127.0.0.1:1984")]
    pub url: String,
    #[arg(long, env = "SEXTANT_API_KEY", default_value = "")]
    pub api_key: String,
    /// Project name, resolved with `GET /sessions?name=NAME&limit=1`.
    #[arg(long, default_value = "sextant-bench")]
    pub project: String,
    /// Use this project id instead of resolving --project.
    #[arg(long)]
    pub project_id: Option<String>,
    /// Timed iterations per filter.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Untimed iterations per filter first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Filter DSL string; repeat for several. Default: a built-in realistic set.
    #[arg(long)]
    pub filter: Vec<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Do not send the SDK's default `select` list.
    #[arg(long)]
    pub no_select: bool,
    #[arg(long, value_parser = util::parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

/// The `select` list `Client.list_runs` sends by default (wire reference §4).
const SDK_SELECT: &[&str] = &[
    "app_path",
    "completion_cost",
    "completion_tokens",
    "dotted_order",
    "end_time",
    "error",
    "events",
    "extra",
    "feedback_stats",
    "first_token_time",
    "id",
    "inputs",
    "name",
    "outputs",
    "parent_run_id",
    "parent_run_ids",
    "prompt_cost",
    "prompt_tokens",
    "reference_example_id",
    "run_type",
    "s3_urls",
    "session_id",
    "start_time",
    "status",
    "tags",
    "total_cost",
    "total_tokens",
    "trace_id",
];

struct Case {
    label: String,
    filter: Option<String>,
    extra: Map<String, Value>,
}

fn builtin_cases() -> Vec<Case> {
    let f = |label: &str, filter: &str| Case { label: label.into(), filter: Some(filter.into()), extra: Map::new() };
    let mut roots = Map::new();
    roots.insert("is_root".into(), json!(true));
    vec![
        f("llm_slow", r#"and(eq(run_type, "llm"), gt(latency, 1))"#),
        f("tag_has", r#"has(tags, "experiment-a")"#),
        f("metadata_kv", r#"and(eq(metadata_key, "user_id"), eq(metadata_value, "user_0042"))"#),
        f("name_eq", r#"eq(name, "ChatAnthropic")"#),
        f("errors", r#"neq(error, null)"#),
        Case { label: "roots".into(), filter: None, extra: roots },
    ]
}

pub async fn run(args: QueryArgs) -> Result<()> {
    let target = Target::parse(&args.url, &args.api_key)?;
    let mut conn = Conn::new(target);
    conn.connect().await?;

    let project_id = match &args.project_id {
        Some(id) => id.clone(),
        None => {
            let path = format!("/sessions?name={}&limit=1", url_encode(&args.project));
            let (st, body) = conn.get(&path, args.timeout).await?;
            if !st.is_success() {
                bail!("GET {path}: HTTP {st}: {}", String::from_utf8_lossy(&body));
            }
            let v: Value = serde_json::from_slice(&body).context("GET /sessions: not JSON")?;
            let first = v.as_array().and_then(|a| a.first()).cloned();
            match first.as_ref().and_then(|p| p["id"].as_str()) {
                Some(id) => id.to_string(),
                None => bail!("project {:?} not found (GET {path} returned {v})", args.project),
            }
        }
    };

    let cases: Vec<Case> = if args.filter.is_empty() {
        builtin_cases()
    } else {
        args.filter
            .iter()
            .enumerate()
            .map(|(i, f)| Case { label: format!("filter{}", i + 1), filter: Some(f.clone()), extra: Map::new() })
            .collect()
    };

    println!(
        "sextant-loadgen query  url={} project={} ({project_id}) iterations={} limit={}",
        args.url, args.project, args.iterations, args.limit
    );
    let mut results = Vec::new();
    for case in &cases {
        let mut body = Map::new();
        body.insert("session".into(), json!([project_id]));
        if let Some(f) = &case.filter {
            body.insert("filter".into(), json!(f));
        }
        for (k, v) in &case.extra {
            body.insert(k.clone(), v.clone());
        }
        if !args.no_select {
            body.insert("select".into(), json!(SDK_SELECT));
        }
        body.insert("limit".into(), json!(args.limit));
        let body = Value::Object(body);

        let mut hist = new_hist();
        let mut status: BTreeMap<String, u64> = BTreeMap::new();
        let mut errors = 0u64;
        let (mut min_n, mut max_n, mut last_n) = (u64::MAX, 0u64, 0u64);
        let mut has_next = false;
        let mut first_error: Option<String> = None;
        for i in 0..args.warmup + args.iterations {
            let t0 = Instant::now();
            let r = conn.post_json("/runs/query", &body, args.timeout).await;
            let dt = t0.elapsed();
            match r {
                Ok((st, b)) if st.is_success() => {
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    let n = v["runs"].as_array().map(|a| a.len() as u64);
                    let Some(n) = n else {
                        errors += 1;
                        first_error.get_or_insert_with(|| "response has no \"runs\" list".into());
                        continue;
                    };
                    if i >= args.warmup {
                        record_us(&mut hist, dt);
                        min_n = min_n.min(n);
                        max_n = max_n.max(n);
                        last_n = n;
                        has_next = v["cursors"]["next"].is_string();
                    }
                }
                Ok((st, b)) => {
                    *status.entry(st.as_u16().to_string()).or_default() += 1;
                    first_error.get_or_insert_with(|| format!("HTTP {st}: {}", String::from_utf8_lossy(&b[..b.len().min(300)])));
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        let shown = case.filter.clone().unwrap_or_else(|| serde_json::to_string(&case.extra).unwrap_or_default());
        println!("  {:<12} {}", case.label, shown);
        if hist.is_empty() {
            println!("               no successful responses; non-2xx {status:?}, errors {errors}");
        } else {
            println!(
                "               {} (ms); results {}{}{}",
                hist_line(&hist),
                if min_n == max_n { min_n.to_string() } else { format!("{min_n}..{max_n}") },
                if has_next { " (+ next cursor)" } else { "" },
                if status.is_empty() && errors == 0 { String::new() } else { format!("; non-2xx {status:?}, errors {errors}") }
            );
        }
        if let Some(e) = &first_error {
            println!("               first error: {e}");
        }
        results.push(json!({
            "label": case.label,
            "filter": case.filter,
            "body_extra": case.extra,
            "latency_ms": hist_json(&hist),
            "results_min": if hist.is_empty() { Value::Null } else { json!(min_n) },
            "results_max": if hist.is_empty() { Value::Null } else { json!(max_n) },
            "results_last": last_n,
            "has_next_cursor": has_next,
            "non_2xx": status,
            "errors": errors,
            "first_error": first_error,
        }));
    }
    let result = json!({
        "kind": "query",
        "url": args.url,
        "project": args.project,
        "project_id": project_id,
        "iterations": args.iterations,
        "limit": args.limit,
        "select": !args.no_select,
        "filters": results,
    });
    println!("RESULT {result}");
    Ok(())
}
