//! `sextant-loadgen`: load generator for Sextant's LangSmith-compatible HTTP API.
//!
//! * `ingest`: timed ingestion through `/runs/multipart` (plain or zstd) or `/runs/batch`,
//!   then "time until queryable" of the last acknowledged run.
//! * `query`: latency of `POST /runs/query` with realistic filters.
//! * `feedback`: `POST /feedback` throughput, then time until all of it is in `feedback_stats`.
//! * `datasets`: bulk example writes, a streamed export of them (server RSS sampled), and
//!   an atomic import of the export.
//! * `prompts`: prompt pulls per second by full hash, short hash, tag, and 304 revalidation.
//! * `wait`: polls `GET /readyz` until it answers 200 (used by bench/ingest.sh).

mod client;
mod datasets;
mod feedback;
mod gen;
mod ingest;
mod prom;
mod prompts;
mod query;
mod util;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "sextant-loadgen", version, about = "Load generator for Sextant (LangSmith wire API)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Ingestion throughput / latency, then time until the last run is queryable.
    Ingest(ingest::IngestArgs),
    /// POST /runs/query latency for a set of filters.
    Query(query::QueryArgs),
    /// Feedback write throughput, then time until visible in feedback_stats.
    Feedback(feedback::FeedbackArgs),
    /// Bulk example writes, streamed export with the server's memory sampled, import.
    Datasets(datasets::DatasetArgs),
    /// Prompt pulls per second (by full hash, short hash, tag; 304 revalidation).
    Prompts(prompts::PromptArgs),
    /// Wait until GET <url>/readyz returns 200.
    Wait(WaitArgs),
    /// Print one generated request body (uncompressed) to stdout, for inspection.
    Dump(DumpArgs),
}

#[derive(clap::Args, Debug)]
struct DumpArgs {
    #[arg(long, value_enum, default_value = "multipart")]
    mode: gen::Mode,
    #[arg(long, default_value_t = 10)]
    trace_size: usize,
    #[arg(long, default_value_t = 1500)]
    run_bytes: usize,
    #[arg(long, default_value_t = 10)]
    runs_per_request: usize,
    #[arg(long, default_value_t = 0.2)]
    split_fraction: f64,
    #[arg(long, default_value_t = 0.03)]
    error_rate: f64,
    #[arg(long, default_value = "sextant-bench")]
    project: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn dump(a: DumpArgs) -> Result<()> {
    use std::io::Write;
    let cfg = gen::GenConfig {
        project: a.project,
        trace_size: a.trace_size,
        run_bytes: a.run_bytes,
        runs_per_request: a.runs_per_request,
        split_fraction: a.split_fraction,
        error_rate: a.error_rate,
        seed: a.seed,
        start_us: util::now_unix_us() - 600_000_000,
        zstd_level: 1,
    };
    let pool = gen::build_pool(&cfg, a.mode, 1, u64::MAX);
    eprintln!("Content-Type: {}", pool.content_type);
    std::io::stdout().write_all(&pool.templates[0].raw)?;
    Ok(())
}

#[derive(clap::Args, Debug)]
struct WaitArgs {
    #[arg(long, default_value = "http://127.0.0.1:1984")]
    url: String,
    #[arg(long, default_value = "/readyz")]
    path: String,
    #[arg(long, value_parser = util::parse_duration, default_value = "60s")]
    timeout: Duration,
    /// Stop waiting early if this process exits.
    #[arg(long)]
    pid: Option<u32>,
}

/// False once the process is gone or a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn wait_ready(a: WaitArgs) -> Result<()> {
    let target = client::Target::parse(&a.url, "")?;
    let start = Instant::now();
    let mut last = String::from("no attempt");
    while start.elapsed() < a.timeout {
        if let Some(pid) = a.pid {
            if !process_alive(pid) {
                bail!("process {pid} exited while waiting for {}{}", a.url, a.path);
            }
        }
        let mut c = client::Conn::new(target.clone());
        match c.get(&a.path, Duration::from_secs(2)).await {
            Ok((st, _)) if st.as_u16() == 200 => {
                eprintln!("{}{} ready after {:.2}s", a.url, a.path, start.elapsed().as_secs_f64());
                return Ok(());
            }
            Ok((st, _)) => last = format!("HTTP {st}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{}{} not ready after {:?} (last: {last})", a.url, a.path, a.timeout)
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sextant-loadgen: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Dump(a) = cli.cmd {
        return dump(a);
    }
    let threads = match &cli.cmd {
        Cmd::Ingest(a) => a.threads.max(1),
        Cmd::Prompts(a) => a.threads.max(1),
        _ => 1,
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Ingest(a) => ingest::run(a).await,
            Cmd::Query(a) => query::run(a).await,
            Cmd::Wait(a) => wait_ready(a).await,
            Cmd::Feedback(a) => feedback::run(a).await,
            Cmd::Datasets(a) => datasets::run(a).await,
            Cmd::Prompts(a) => prompts::run(a).await,
            Cmd::Dump(_) => unreachable!(),
        }
    })
}
