//! Client commands of the `sextant` binary (`sextant datasets ...`): they talk to a running
//! server over its REST API, as any other client, with the same endpoint and API key
//! variables as the LangSmith SDK.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

#[derive(Args, Clone)]
pub struct Endpoint {
    /// Server URL.
    #[arg(long, env = "LANGSMITH_ENDPOINT", default_value = "http://127.0.0.1:1984")]
    pub endpoint: String,
    /// API key (sent as `x-api-key`).
    #[arg(long, env = "LANGSMITH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Subcommand)]
pub enum DatasetsCommand {
    /// Add every run that matches a filter in a time window to a dataset, with a progress bar.
    Curate {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Dataset name or id.
        #[arg(long)]
        dataset: String,
        /// Run filter, e.g. `and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))`.
        #[arg(long)]
        filter: String,
        /// Project names or ids (repeatable; default: every project).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Runs started within this long before now: `30d`, `12h`, `90m`.
        #[arg(long, conflicts_with = "start_time")]
        since: Option<String>,
        /// Runs started at or after this time (ISO 8601).
        #[arg(long)]
        start_time: Option<String>,
        /// Runs started before this time (ISO 8601).
        #[arg(long)]
        end_time: Option<String>,
        /// Child runs too (default: root runs only).
        #[arg(long)]
        all_runs: bool,
    },
    /// Import examples from a JSONL or CSV file (streamed).
    Import {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Dataset name or id.
        #[arg(long)]
        dataset: String,
        file: PathBuf,
        /// `jsonl` or `csv` (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Write the valid rows even if some are invalid (default: all or nothing).
        #[arg(long)]
        partial: bool,
        /// CSV columns that make the inputs (default: the file has an `inputs` JSON column).
        #[arg(long, value_delimiter = ',')]
        input_keys: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        output_keys: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        metadata_keys: Vec<String>,
    },
    /// Export a dataset (optionally as of a version or tag) as JSONL or CSV.
    Export {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Dataset name or id.
        #[arg(long)]
        dataset: String,
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// A time (ISO 8601) or a tag.
        #[arg(long)]
        as_of: Option<String>,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters (events a consumer gave up on), newest first. Needs an admin key
    /// (`auth.admin_keys`) unless the server runs without keys.
    List {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead-lettered events again (every consumer of the stream sees them again;
    /// handlers are idempotent) and forget them.
    Replay {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Stream name (`runs`, `feedback`, ...); with --sequence and --consumer.
        #[arg(long, required_unless_present = "all")]
        stream: Option<String>,
        #[arg(long, required_unless_present = "all")]
        sequence: Option<u64>,
        #[arg(long, required_unless_present = "all")]
        consumer: Option<String>,
        /// Every replayable dead letter listed (up to --limit).
        #[arg(long, conflicts_with_all = ["stream", "sequence", "consumer"])]
        all: bool,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// `sextant dlq ...`
pub async fn run_dlq(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List { endpoint, limit, json } => {
            let api = Api::new(&endpoint)?;
            let listed = api.json(api.request(reqwest::Method::GET, "/admin/dead-letters").query(&[("limit", limit)])).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(());
            }
            let rows = listed.get("dead_letters").and_then(Value::as_array).cloned().unwrap_or_default();
            println!("{:<16} {:>10} {:<28} {:>10}  reason", "stream", "sequence", "consumer", "bytes");
            for r in &rows {
                println!(
                    "{:<16} {:>10} {:<28} {:>10}  {}",
                    r["stream"].as_str().unwrap_or("?"),
                    r["sequence"].as_u64().unwrap_or(0),
                    r["consumer"].as_str().unwrap_or("?"),
                    r["payload_bytes"].as_u64().unwrap_or(0),
                    r["reason"].as_str().unwrap_or("")
                );
            }
            println!("{} dead letter(s)", rows.len());
            Ok(())
        }
        DlqCommand::Replay { endpoint, stream, sequence, consumer, all, limit } => {
            let api = Api::new(&endpoint)?;
            let targets: Vec<(String, u64, String)> = if all {
                let listed = api.json(api.request(reqwest::Method::GET, "/admin/dead-letters").query(&[("limit", limit)])).await?;
                listed
                    .get("dead_letters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|r| r["replayable"].as_bool() == Some(true))
                    .filter_map(|r| Some((r["stream"].as_str()?.to_owned(), r["sequence"].as_u64()?, r["consumer"].as_str()?.to_owned())))
                    .collect()
            } else {
                match (stream, sequence, consumer) {
                    (Some(s), Some(n), Some(c)) => vec![(s, n, c)],
                    _ => bail!("give --stream, --sequence and --consumer, or --all"),
                }
            };
            for (stream, sequence, consumer) in &targets {
                let body = json!({"stream": stream, "sequence": sequence, "consumer": consumer});
                let r = api.json(api.request(reqwest::Method::POST, "/admin/dead-letters/replay").json(&body)).await?;
                println!("replayed {stream} #{sequence} ({consumer}) as event {}", r["event_id"].as_str().unwrap_or("?"));
            }
            println!("{} replayed", targets.len());
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Run evaluators on the server over an experiment's runs, with a progress bar; results
    /// become feedback. Running again resumes (what is scored is skipped).
    Run {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Experiment (name or id).
        #[arg(long)]
        experiment: String,
        /// A JSON file with a list of evaluator configs.
        #[arg(long)]
        evaluators: PathBuf,
    },
    /// Compare a candidate experiment with a baseline; exit 1 on a regression or a missed
    /// threshold (so a CI job blocks the deploy), 2 when the comparison cannot be made.
    Gate {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Baseline experiment (name or id), e.g. what production runs.
        #[arg(long)]
        baseline: String,
        /// Candidate experiment (name or id).
        #[arg(long)]
        candidate: String,
        /// `metric=minimum` (at most, for lower-is-better metrics); repeatable.
        #[arg(long = "threshold", value_parser = parse_threshold)]
        thresholds: Vec<(String, f64)>,
        /// Metrics where lower is better (`latency` always is); repeatable.
        #[arg(long = "lower-is-better")]
        lower_is_better: Vec<String>,
        /// Fail the gate on a latency regression too (by default latency is only reported).
        #[arg(long)]
        gate_latency: bool,
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        #[arg(long, default_value_t = 2000)]
        resamples: usize,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `metric=0.8`.
pub fn parse_threshold(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected metric=value, such as correctness=0.8"))?;
    let v: f64 = v.trim().parse().map_err(|_| format!("{s:?}: {v:?} is not a number"))?;
    if k.trim().is_empty() || !v.is_finite() {
        return Err(format!("{s:?}: expected metric=value, such as correctness=0.8"));
    }
    Ok((k.trim().to_owned(), v))
}

/// Runs `sextant eval ...`; for the gate, the exit code is its verdict.
pub async fn run_eval(cmd: EvalCommand) -> std::process::ExitCode {
    let (endpoint, experiment, file) = match cmd {
        EvalCommand::Run { endpoint, experiment, evaluators } => (endpoint, experiment, evaluators),
        gate => return run_gate(gate).await,
    };
    match eval_run(&endpoint, &experiment, &file).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sextant eval run: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn eval_run(endpoint: &Endpoint, experiment: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let configs: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let api = Api::new(endpoint)?;
    let id = api.resolve("experiment", "/sessions", experiment).await?;
    let path = format!("/experiments/{id}/evaluate");
    let mut resp = api.send(api.request(reqwest::Method::POST, &path).json(&json!({"evaluators": configs}))).await?;
    let bar = ProgressBar::new(0)
        .with_style(ProgressStyle::with_template("evaluating [{bar:40}] {pos}/{len} {elapsed_precise} {msg}")?.progress_chars("=> "));
    let mut buf = Vec::new();
    let mut last = Value::Null;
    while let Some(chunk) = resp.chunk().await.context("the progress stream was cut off")? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(p) = serde_json::from_slice::<Value>(&line) else { continue };
            if let Some(e) = p.get("error").and_then(Value::as_str) {
                bar.abandon();
                bail!("{e}");
            }
            bar.set_length(p["total"].as_u64().unwrap_or(0));
            bar.set_position(p["scored"].as_u64().unwrap_or(0) + p["skipped"].as_u64().unwrap_or(0) + p["errors"].as_u64().unwrap_or(0));
            bar.set_message(format!("{} errors, ${:.4}", p["errors"], p["cost_usd"].as_f64().unwrap_or(0.0)));
            last = p;
        }
    }
    bar.finish_and_clear();
    if last["done"].as_bool() != Some(true) {
        bail!("the server stopped before the run finished; run the command again to resume");
    }
    println!(
        "{} evaluations: {} scored, {} already scored, {} evaluator errors, {} unscorable; judge cost ${:.4}",
        last["total"],
        last["scored"],
        last["skipped"],
        last["errors"],
        last["unscorable"],
        last["cost_usd"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

async fn run_gate(cmd: EvalCommand) -> std::process::ExitCode {
    let EvalCommand::Gate { endpoint, baseline, candidate, thresholds, lower_is_better, gate_latency, confidence, resamples, json } = cmd
    else {
        unreachable!("run_eval dispatches only the gate here")
    };
    let outcome = async {
        let api = Api::new(&endpoint)?;
        let body = json!({
            "baseline": baseline, "candidate": candidate, "confidence": confidence, "resamples": resamples, "gate_latency": gate_latency,
            "lower_is_better": lower_is_better, "thresholds": thresholds.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<String, Value>>(),
        });
        let report = api.json(api.request(reqwest::Method::POST, "/experiments/compare").json(&body)).await?;
        let parsed: sextant_evaluator::compare::ComparisonReport = serde_json::from_value(report.clone()).context("the server's report")?;
        anyhow::Ok((report, parsed))
    }
    .await;
    match outcome {
        Ok((report, parsed)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", parsed.render());
            }
            if parsed.passed {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("sextant eval gate: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Api {
    fn new(e: &Endpoint) -> anyhow::Result<Self> {
        sextant_evaluator::install_crypto_provider();
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { http, base: e.endpoint.trim_end_matches('/').to_owned(), key: e.api_key.clone() })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.header("x-api-key", k),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = r.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let detail = body.get("detail").and_then(Value::as_str).unwrap_or("no detail").to_owned();
        Err(anyhow!("the server answered {status}: {detail}"))
    }

    async fn json(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        Ok(self.send(r).await?.json().await?)
    }

    /// A dataset or project id from a name or an id.
    async fn resolve(&self, what: &str, path: &str, name_or_id: &str) -> anyhow::Result<String> {
        if uuid::Uuid::parse_str(name_or_id).is_ok() {
            return Ok(name_or_id.to_owned());
        }
        let found = self.json(self.request(reqwest::Method::GET, path).query(&[("name", name_or_id)])).await?;
        found
            .as_array()
            .and_then(|a| a.first())
            .and_then(|d| d.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no {what} named {name_or_id:?}"))
    }
}

/// `30d`, `12h`, `90m`, `45s`, `2w` as a duration.
pub fn parse_since(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| anyhow!("--since {s:?}: add a unit (s, m, h, d or w)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| anyhow!("--since {s:?}: expected a number then a unit, such as 30d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("--since {s:?}: unknown unit {unit:?} (s, m, h, d or w)"),
    };
    Ok(Duration::from_secs(n.checked_mul(secs).ok_or_else(|| anyhow!("--since {s:?}: too long"))?))
}

pub async fn run(cmd: DatasetsCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetsCommand::Curate { endpoint, dataset, filter, projects, since, start_time, end_time, all_runs } => {
            let api = Api::new(&endpoint)?;
            let dataset = api.resolve("dataset", "/datasets", &dataset).await?;
            let mut project_ids = Vec::new();
            for p in &projects {
                project_ids.push(api.resolve("project", "/sessions", p).await?);
            }
            let start_time = match since {
                Some(s) => {
                    let d = parse_since(&s)?;
                    let micros = sextant_core::Timestamp::now().micros() - i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2);
                    Some(sextant_core::Timestamp(micros).to_iso())
                }
                None => start_time,
            };
            let body = json!({"filter": filter, "project_ids": project_ids, "start_time": start_time, "end_time": end_time, "root_only": !all_runs});
            let job = api.json(api.request(reqwest::Method::POST, &format!("/datasets/{dataset}/curate")).json(&body)).await?;
            let job_id = job["id"].as_str().ok_or_else(|| anyhow!("the server's answer has no job id"))?.to_owned();
            curate_progress(&api, &dataset, &job_id).await
        }
        DatasetsCommand::Import { endpoint, dataset, file, format, partial, input_keys, output_keys, metadata_keys } => {
            let api = Api::new(&endpoint)?;
            let dataset = api.resolve("dataset", "/datasets", &dataset).await?;
            let format = match format {
                Some(f) => f,
                None => match file.extension().and_then(|e| e.to_str()) {
                    Some("csv") => "csv".into(),
                    Some("jsonl" | "ndjson") => "jsonl".into(),
                    _ => bail!("cannot tell the format of {}: pass --format jsonl or --format csv", file.display()),
                },
            };
            let f = tokio::fs::File::open(&file).await.with_context(|| format!("cannot open {}", file.display()))?;
            let size = f.metadata().await?.len();
            let bar = ProgressBar::new(size).with_style(
                ProgressStyle::with_template("uploading [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")?.progress_chars("=> "),
            );
            let counted = bar.clone();
            let chunks = futures::stream::unfold(f, |mut f| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 256 * 1024];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<_, std::io::Error>(buf), f))
                    }
                    Err(e) => Some((Err(e), f)),
                }
            });
            let chunks = futures::StreamExt::inspect(chunks, move |c| {
                if let Ok(c) = c {
                    counted.inc(c.len() as u64);
                }
            });
            let mut query = vec![("format", format), ("atomic", (!partial).to_string())];
            for (k, v) in [("input_keys", input_keys), ("output_keys", output_keys), ("metadata_keys", metadata_keys)] {
                if !v.is_empty() {
                    query.push((k, v.join(",")));
                }
            }
            let resp = api
                .request(reqwest::Method::POST, &format!("/datasets/{dataset}/import"))
                .query(&query)
                .header("content-length", size)
                .body(reqwest::Body::wrap_stream(chunks))
                .send()
                .await
                .with_context(|| format!("cannot reach the server at {}", api.base))?;
            bar.finish_and_clear();
            let status = resp.status();
            let report: Value = resp.json().await.unwrap_or(Value::Null);
            if report.get("rows").is_none() {
                bail!("the server answered {status}: {}", report.get("detail").and_then(Value::as_str).unwrap_or("no detail"));
            }
            for e in report["errors"].as_array().into_iter().flatten() {
                eprintln!("  {}", e["error"].as_str().unwrap_or_default());
            }
            if report["errors_truncated"].as_bool() == Some(true) {
                eprintln!("  ... and more");
            }
            println!(
                "{} rows: {} imported, {} rejected{}",
                report["rows"],
                report["imported"],
                report["rejected"],
                report["as_of"].as_str().map(|v| format!(" (version {v})")).unwrap_or_default()
            );
            if !status.is_success() {
                bail!("{}", report["detail"].as_str().unwrap_or("the import was refused"));
            }
            Ok(())
        }
        DatasetsCommand::Export { endpoint, dataset, format, as_of, output } => {
            let api = Api::new(&endpoint)?;
            let dataset = api.resolve("dataset", "/datasets", &dataset).await?;
            let mut query = vec![("format", format)];
            if let Some(a) = as_of {
                query.push(("as_of", a));
            }
            let mut resp = api.send(api.request(reqwest::Method::GET, &format!("/datasets/{dataset}/export")).query(&query)).await?;
            let mut out: Box<dyn Write> = match &output {
                Some(p) => {
                    Box::new(std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?))
                }
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            while let Some(chunk) = resp.chunk().await.context("the export was cut off")? {
                out.write_all(&chunk)?;
            }
            out.flush()?;
            Ok(())
        }
    }
}

/// Polls a curation job, drawing its progress, until it ends.
async fn curate_progress(api: &Api, dataset: &str, job_id: &str) -> anyhow::Result<()> {
    const STEPS: u64 = 1000;
    let bar = ProgressBar::new(STEPS)
        .with_style(ProgressStyle::with_template("curating [{bar:40}] {percent:>3}% {elapsed_precise} {msg}")?.progress_chars("=> "));
    loop {
        let job = api.json(api.request(reqwest::Method::GET, &format!("/datasets/{dataset}/curate/{job_id}"))).await?;
        let counts = format!(
            "{} runs scanned, {} added, {} duplicates, {} without inputs/outputs",
            job["scanned"], job["added"], job["skipped_duplicate"], job["skipped_no_io"]
        );
        if let Some(p) = job["progress"].as_f64() {
            bar.set_position((p * STEPS as f64) as u64);
        }
        bar.set_message(counts.clone());
        match job["state"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(300)).await,
            Some("succeeded") => {
                bar.finish_and_clear();
                println!("curation job {job_id} succeeded: {counts}");
                if let Some(v) = job["as_of"].as_str() {
                    println!("dataset version {v}");
                }
                return Ok(());
            }
            _ => {
                bar.abandon();
                bail!("curation job {job_id} failed: {}", job["error"].as_str().unwrap_or("no reason given"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_or_name_the_problem() {
        assert_eq!(parse_threshold("correctness=0.8"), Ok(("correctness".into(), 0.8)));
        assert!(parse_threshold("correctness").unwrap_err().contains("metric=value"));
        assert!(parse_threshold("correctness=high").unwrap_err().contains("not a number"));
        assert!(parse_threshold("=1").is_err());
    }

    #[test]
    fn since_accepts_units_and_refuses_the_rest() {
        assert_eq!(parse_since("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_since("90m").unwrap(), Duration::from_secs(5400));
        assert!(parse_since("30").unwrap_err().to_string().contains("add a unit"));
        assert!(parse_since("3y").unwrap_err().to_string().contains("unknown unit"));
        assert!(parse_since("d").is_err());
        assert!(parse_since("99999999999999999999w").is_err());
    }
}
