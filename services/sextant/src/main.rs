//! `sextant`: the command line. `serve` runs every configured service in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use sextant::config::{Config, Overrides, Role};

// glibc malloc spent a quarter of ingest CPU and fragmented badly across worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sextant", version, about = "Self-hosted LLM observability and evaluation, LangSmith-compatible")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the services (all of them by default) in this process.
    Serve {
        #[arg(long, env = "SEXTANT_CONFIG")]
        config: Option<PathBuf>,
        /// HTTP listen address (default 127.0.0.1:1984).
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
        /// gRPC listen address (default 127.0.0.1:1985).
        #[arg(long)]
        grpc: Option<std::net::SocketAddr>,
        /// Where the embedded bus and store keep their files (default ./sextant-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Comma-separated services to run: `ingest`, `projector` (default: all).
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        /// Print the effective configuration and exit.
        #[arg(long)]
        dump_config: bool,
    },
    /// Create or update the ScyllaDB schema named by `storage` (idempotent), then exit.
    Migrate {
        #[arg(long, env = "SEXTANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the hash to put in `auth.api_keys` for an API key.
    HashKey { key: String },
    /// Evaluation on a running server: the deploy gate.
    Eval {
        #[command(subcommand)]
        command: sextant::cli::EvalCommand,
    },
    /// Datasets on a running server: curate from runs, import, export.
    Datasets {
        #[command(subcommand)]
        command: sextant::cli::DatasetsCommand,
    },
    /// Dead letters on a running server: list them, replay them (operators; admin key).
    Dlq {
        #[command(subcommand)]
        command: sextant::cli::DlqCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sextant_evaluator::install_crypto_provider();
    match cli.command {
        Command::Eval { command } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            rt.block_on(sextant::cli::run_eval(command))
        }
        Command::Datasets { command } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(sextant::cli::run(command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sextant datasets: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dlq { command } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(sextant::cli::run_dlq(command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sextant dlq: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HashKey { key } => {
            println!("{}", sextant_auth::hash_key(&key));
            ExitCode::SUCCESS
        }
        Command::Migrate { config } => {
            let cfg = match Config::load(config.as_deref(), &Overrides::default()) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            sextant::telemetry::init_logging(&cfg.log);
            let sextant::config::StorageConfig::Scylla(scylla) = &cfg.storage else {
                eprintln!("sextant migrate: storage is embedded; it needs no migration");
                return ExitCode::SUCCESS;
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(sextant_storage::scylla::migrate(scylla)) {
                Ok(applied) => {
                    for name in &applied {
                        println!("applied {name}");
                    }
                    println!("schema of keyspace {} is up to date ({} applied now)", scylla.keyspace, applied.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sextant migrate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config, http, grpc, data_dir, roles, dump_config } => {
            let roles = match roles.map(|r| r.iter().map(|s| Role::parse(s)).collect::<Result<Vec<_>, _>>()).transpose() {
                Ok(r) => r,
                Err(e) => return config_error(&e),
            };
            let overrides = Overrides { http, grpc, data_dir, roles };
            let cfg = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            if dump_config {
                print!("{}", cfg.dump());
                return ExitCode::SUCCESS;
            }
            sextant::telemetry::init_logging(&cfg.log);
            sextant::telemetry::init_metrics();
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "sextant failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Exit code 64 (EX_USAGE) for configuration errors.
fn config_error(e: &str) -> ExitCode {
    eprintln!("sextant: invalid configuration: {e}");
    ExitCode::from(64)
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    // Bind before starting work so a port conflict fails fast.
    let http = TcpListener::bind(cfg.http).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.http))?;
    let grpc = TcpListener::bind(cfg.grpc).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.grpc))?;
    let server = sextant::Server::build(cfg).await?;
    sextant::serve(server, http, grpc, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
