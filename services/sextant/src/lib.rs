//! The all-in-one Sextant server: builds the adapters named in [`Config`], binds nothing
//! itself (callers pass listeners, so tests and scripts can use port 0), runs every service
//! present in `roles`, and drains gracefully on shutdown.

pub mod admin;
pub mod cli;
pub mod config;
pub mod grpc_meta;
pub mod listen;
pub mod telemetry;
pub mod workers;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;
use tracing::{info, info_span, warn};

use sextant_auth::Authenticator;
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::jetstream::JetStreamBus;
use sextant_bus::EventBus;
use sextant_dataset_curation::http::DatasetState;
use sextant_dataset_curation::Datasets;
use sextant_feedback::http::FeedbackState;
use sextant_feedback::{FeedbackService, Queues};
use sextant_ingest::http::HttpState;
use sextant_ingest::signing::UrlSigner;
use sextant_ingest::Ingest;
use sextant_prompt_hub::Prompts;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::scylla::ScyllaStore;
use sextant_storage::Storage;

pub use config::{Config, Role};

/// Everything a running server is made of, for `serve` and for tests.
pub struct Server {
    pub config: Config,
    pub bus: Arc<dyn EventBus>,
    pub store: Arc<dyn Storage>,
    pub ingest: Arc<Ingest>,
    pub feedback: Arc<FeedbackService>,
    pub queues: Arc<Queues>,
    pub datasets: Arc<Datasets>,
    pub prompts: Arc<Prompts>,
    pub dataset_evaluators: Arc<sextant_evaluator::dataset_evaluators::DatasetEvaluators>,
    pub auth: Arc<Authenticator>,
    pub signer: UrlSigner,
    /// Signs dataset attachment URLs.
    pub url_key: Arc<Vec<u8>>,
    /// Which supervised workers are down (the process is unready while any is).
    pub workers: Arc<workers::WorkerHealth>,
}

impl Server {
    /// Opens the bus and the store named by the configuration.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
        let bus: Arc<dyn EventBus> = match &config.bus {
            config::BusConfig::InProcess => {
                Arc::new(InProcessBus::open_with_reserve(&config.data_dir.join("bus"), config.limits.min_free_disk_bytes)?)
            }
            config::BusConfig::Jetstream(js) => {
                let bus = JetStreamBus::connect(js.clone()).await.context("cannot start the JetStream bus")?;
                info!(servers = ?js.servers, runs_stream = %bus.stream_name(sextant_events::Stream::Runs), "event bus: NATS JetStream");
                Arc::new(bus)
            }
        };
        let store: Arc<dyn Storage> = match &config.storage {
            config::StorageConfig::Embedded => Arc::new(EmbeddedStore::open(&config.data_dir.join("store"))?),
            config::StorageConfig::Scylla(sc) => {
                let store = ScyllaStore::connect(sc).await.context("cannot connect to ScyllaDB (has `sextant migrate` run?)")?;
                info!(contact_points = ?sc.contact_points, keyspace = %sc.keyspace, "store: ScyllaDB");
                Arc::new(store)
            }
        };
        if !config.runs_every_role() && config.storage == config::StorageConfig::Embedded {
            warn!(
                roles = ?config.roles,
                "this process runs only some roles on an embedded store that no other process can read: \
                 use storage.kind = \"scylla\" to split roles across processes"
            );
        }
        let auth = Arc::new(Authenticator::new(&config.auth.api_keys)?.with_admin_keys(&config.auth.admin_keys)?);
        if auth.is_open() {
            warn!(
                "NO API KEYS CONFIGURED: every request is accepted as the single local tenant. \
                 Configure auth.api_keys before exposing this server."
            );
        }
        let key = signing_key(&config)?;
        let feedback = Arc::new(FeedbackService::new(bus.clone(), store.clone(), &key));
        let queues = Arc::new(Queues::new(store.clone(), feedback.clone()));
        let datasets = Arc::new(Datasets::new(bus.clone(), store.clone()));
        let prompts = Arc::new(Prompts::new(bus.clone(), store.clone()));
        let dataset_evaluators =
            sextant_evaluator::dataset_evaluators::DatasetEvaluators::new(datasets.clone(), feedback.clone(), config.judge.clone());
        let url_key = Arc::new(key.clone());
        let signer = UrlSigner::new(key);
        let ingest = Arc::new(Ingest::new(bus.clone(), store.clone(), config.ingest_limits()));
        let workers = Arc::new(workers::WorkerHealth::default());
        Ok(Self { config, bus, store, ingest, feedback, queues, datasets, prompts, dataset_evaluators, auth, signer, url_key, workers })
    }

    /// The HTTP application: every service's routes plus health and metrics.
    pub fn router(&self) -> Router {
        let ready_state = ReadyState { bus: self.bus.clone(), workers: self.workers.clone() };
        let mut app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz).with_state(ready_state))
            .route("/metrics", get(|| async { telemetry::render_metrics() }))
            .merge(admin::router(self.bus.clone(), self.auth.clone()));
        if self.config.roles.contains(&Role::Ingest) {
            let state = HttpState { ingest: self.ingest.clone(), signer: self.signer.clone(), bus: self.bus.clone() };
            app = app.merge(sextant_ingest::http::router(state, self.auth.clone()));
            let public_url = self.config.public_base_url().into();
            let state = FeedbackState { feedback: self.feedback.clone(), queues: self.queues.clone(), public_url };
            app = app.merge(sextant_feedback::http::router(state, self.auth.clone()));
            let state = DatasetState { datasets: self.datasets.clone(), url_key: self.url_key.clone() };
            app = app.merge(sextant_dataset_curation::http::router(state, self.auth.clone()));
            let runner = sextant_evaluator::run::EvalRunner::new(self.store.clone(), self.feedback.clone(), self.config.judge.clone());
            let state = sextant_evaluator::http::EvaluatorState {
                store: self.store.clone(),
                runner: Arc::new(runner),
                dataset_evaluators: self.dataset_evaluators.clone(),
                platform: sextant_evaluator::platform::PlatformEvaluators::new(self.bus.clone(), self.store.clone()),
            };
            app = app.merge(sextant_evaluator::http::router(state, self.auth.clone()));
            app = app.merge(sextant_prompt_hub::http::router(self.prompts.clone(), self.auth.clone()));
        }
        // A handler that panics answers 500 (and is logged and counted) instead of dropping
        // the connection; the panic stays in its request.
        let app = app
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(handler_panicked))
            .layer(middleware::from_fn(record_http_metrics))
            .layer(middleware::from_fn(trace_context))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
                info_span!("http", method = %req.method(), route = %route, tenant = tracing::field::Empty, trace_id = tracing::field::Empty)
            }));
        // The SDKs send `POST /repos/`, `GET /datasets/` and the like: a trailing slash names the
        // same resource. Normalising must happen before routing, so it wraps the whole router
        // (a layer added with `Router::layer` runs after the route is chosen).
        Router::new().fallback_service(tower_http::normalize_path::NormalizePath::trim_trailing_slash(app))
    }
}

fn handler_panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = sextant_bus::panic_message(panic.as_ref());
    tracing::error!(panic = %message, "a request handler panicked");
    metrics::counter!("sextant_http_handler_panics_total").increment(1);
    sextant_proto::ApiError::new(sextant_proto::ErrorKind::Internal, "the server failed on this request (a bug: it has been logged)")
        .into_response()
}

#[derive(Clone)]
struct ReadyState {
    bus: Arc<dyn EventBus>,
    workers: Arc<workers::WorkerHealth>,
}

impl ReadyState {
    /// Why the process is not ready (`None`: it is). `/readyz` and gRPC health share it.
    async fn not_ready(&self) -> Option<String> {
        if let Some(reason) = self.bus.not_ready_reason().await {
            return Some(format!("not ready: {reason}"));
        }
        if !self.bus.ready().await {
            return Some("event bus not ready".into());
        }
        let down = self.workers.down();
        if !down.is_empty() {
            return Some(format!("workers down (restarting): {}", down.join(", ")));
        }
        None
    }
}

async fn readyz(State(s): State<ReadyState>) -> Response {
    match s.not_ready().await {
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
        None => (StatusCode::OK, "ready").into_response(),
    }
}

/// W3C trace context: continues the caller's trace (or starts one), logs its id on the request
/// span, makes it the cause of every event the request publishes (it travels with them to
/// other services), and returns it in the `traceparent` response header.
async fn trace_context(req: Request, next: Next) -> Response {
    let traceparent = sextant_events::continue_or_start_trace(req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    tracing::Span::current().record("trace_id", sextant_events::trace_id_of(&traceparent).unwrap_or_default());
    let mut resp = sextant_events::with_traceparent(traceparent.clone(), next.run(req)).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&traceparent) {
        resp.headers_mut().insert("traceparent", v);
    }
    resp
}

/// The gRPC side of [`trace_context`]: every call runs in the trace its `traceparent` metadata
/// names (or a new one), so the events it publishes carry it.
#[derive(Clone, Copy)]
struct GrpcTraceContextLayer;

impl<S> tower::Layer<S> for GrpcTraceContextLayer {
    type Service = GrpcTraceContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcTraceContext(inner)
    }
}

#[derive(Clone)]
struct GrpcTraceContext<S>(S);

impl<S, B> tower::Service<axum::http::Request<B>> for GrpcTraceContext<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let traceparent = sextant_events::continue_or_start_trace(req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
        Box::pin(sextant_events::with_traceparent(traceparent, self.0.call(req)))
    }
}

async fn record_http_metrics(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    if let Some(err) = resp.extensions().get::<sextant_proto::ApiError>() {
        if resp.status().is_server_error() {
            warn!(route = %route, status = %status, error = %err.message, "request failed");
        }
    }
    metrics::counter!("sextant_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status).increment(1);
    metrics::histogram!("sextant_http_request_seconds", "route" => route, "method" => method).record(started.elapsed().as_secs_f64());
    resp
}

/// The attachment-URL signing key: configured, or generated once and kept in the data dir.
fn signing_key(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(k) = &config.auth.signing_key {
        return Ok(hex::decode(k)?);
    }
    let path = config.data_dir.join("signing.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return hex::decode(existing.trim()).context("signing.key is corrupt");
    }
    let key: Vec<u8> = uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).copied().collect();
    write_private(&path, &hex::encode(&key))?;
    Ok(key)
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

/// Runs the server on the given listeners until `shutdown` resolves, then drains.
pub async fn serve(
    server: Server,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    if server.config.roles.contains(&Role::Projector) {
        let online = sextant_evaluator::online::OnlineEvaluator::new(
            &server.config.online_eval,
            &server.config.judge,
            server.store.clone(),
            server.bus.clone(),
            server.feedback.clone(),
        )
        .map_err(|e| anyhow::anyhow!("online_eval: {e}"))?;
        let curation = sextant_dataset_curation::rules::CurationRules::new(server.datasets.clone());
        let (bus, store) = (server.bus.clone(), server.store.clone());
        // Each worker is made again from these handles if it has to be restarted.
        let health = server.workers.clone();
        macro_rules! supervise {
            ($name:literal, $make:expr) => {
                workers::supervise(&mut tasks, health.clone(), $name, stop_rx.clone(), $make)
            };
        }
        let (b, s) = (bus.clone(), store.clone());
        supervise!("run-projector", move |stop| sextant_ingest::projector::run_projector(b.clone(), s.clone(), stop));
        let (b, s) = (bus.clone(), store.clone());
        supervise!("feedback-projector", move |stop| sextant_feedback::projector::run_feedback_projector(b.clone(), s.clone(), stop));
        let (b, s) = (bus.clone(), store.clone());
        supervise!("dataset-projector", move |stop| sextant_dataset_curation::projector::run_dataset_projector(b.clone(), s.clone(), stop));
        let (b, s) = (bus.clone(), store.clone());
        supervise!("prompt-projector", move |stop| sextant_prompt_hub::projector::run_prompt_projector(b.clone(), s.clone(), stop));
        let (b, s) = (bus.clone(), store.clone());
        supervise!("evaluator-projector", move |stop| sextant_evaluator::platform::run_evaluator_projector(b.clone(), s.clone(), stop));
        let (b, s, q) = (bus.clone(), store.clone(), server.queues.clone());
        supervise!("annotation-router", move |stop| sextant_feedback::router::run_annotation_router(b.clone(), s.clone(), q.clone(), stop));
        if !online.is_empty() {
            let b = bus.clone();
            supervise!("online-evaluator", move |stop| sextant_evaluator::online::run_online_evaluator(b.clone(), online.clone(), stop));
        }
        let (b, e) = (bus.clone(), server.dataset_evaluators.clone());
        supervise!("experiment-evaluator", move |stop| sextant_evaluator::dataset_evaluators::run_experiment_evaluator(
            b.clone(),
            e.clone(),
            stop
        ));
        let b = bus.clone();
        supervise!("curation-rules", move |stop| sextant_dataset_curation::rules::run_curation_rules(b.clone(), curation.clone(), stop));
    }

    let app = server.router();
    info!(http = %http.local_addr()?, grpc = %grpc.local_addr()?, roles = ?server.config.roles, "sextant serving");
    // Timeouts, connection caps (fitted to the open-file limit) and refusals: `listen.rs`.
    let listen = Arc::new(listen::Settings::new(&server.config.server, server.config.limits.max_body_bytes));
    listen::return_large_c_allocations();
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(listen::serve_http(http, app, listen.clone(), async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));
    let mut grpc_stop = stop_rx.clone();
    let mut grpc_server = listen::grpc_server(&listen)
        .layer(listen::GrpcConnLayer::new(&listen, server.ingest.decode_budget.clone()))
        .layer(GrpcTraceContextLayer);
    // The API role serves every service's gRPC surface, as it serves their REST routes.
    let api = server.config.roles.contains(&Role::Ingest);
    // Health (following readiness) and reflection on every gRPC port (`grpc_meta.rs`).
    let served: Vec<&'static str> = if api { grpc_meta::API_SERVICES.to_vec() } else { Vec::new() };
    let (health, health_service) = tonic_health::server::health_reporter();
    grpc_meta::set_not_serving(&health, &served).await;
    let (reflection_v1, reflection_v1alpha) = grpc_meta::reflection(&served)?;
    let ready_state = ReadyState { bus: server.bus.clone(), workers: server.workers.clone() };
    tasks.spawn(grpc_meta::follow_readiness(
        health,
        served,
        move || {
            let s = ready_state.clone();
            async move { s.not_ready().await }
        },
        stop_rx.clone(),
    ));
    let grpc_router = grpc_server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(api.then(|| sextant_ingest::grpc::service(server.ingest.clone(), server.auth.clone())))
        .add_optional_service(api.then(|| sextant_feedback::grpc::feedback_service(server.feedback.clone(), server.auth.clone())))
        .add_optional_service(api.then(|| sextant_feedback::grpc::queue_service(server.queues.clone(), server.auth.clone())))
        .add_optional_service(api.then(|| sextant_dataset_curation::grpc::dataset_service(server.datasets.clone(), server.auth.clone())))
        .add_optional_service(api.then(|| {
            let runner =
                sextant_evaluator::run::EvalRunner::new(server.store.clone(), server.feedback.clone(), server.config.judge.clone());
            sextant_evaluator::grpc::evaluation_service(
                server.store.clone(),
                Arc::new(runner),
                server.dataset_evaluators.clone(),
                server.auth.clone(),
            )
        }))
        .add_optional_service(api.then(|| sextant_prompt_hub::grpc::prompt_service(server.prompts.clone(), server.auth.clone())));
    let grpc_task = tokio::spawn(async move {
        grpc_router
            .serve_with_incoming_shutdown(listen::grpc_incoming(grpc, listen), async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            })
            .await
    });

    shutdown.await;
    info!("shutting down: draining requests");
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(server.config.shutdown_grace_secs);
    if tokio::time::timeout(grace, http_task).await.is_err() {
        warn!("HTTP requests still running after the grace period; stopping anyway");
    }
    let _ = tokio::time::timeout(grace, grpc_task).await;
    while let Ok(Some(_)) = tokio::time::timeout(grace, tasks.join_next()).await {}
    if let Err(e) = server.store.sync().await {
        warn!(error = %e, "final store sync failed");
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grpc_calls_run_in_the_callers_trace() {
        use tower::{Layer, Service, ServiceExt};
        let mut svc = GrpcTraceContextLayer.layer(tower::service_fn(|_req: axum::http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(sextant_events::current_traceparent())
        }));
        let req = axum::http::Request::builder()
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(())
            .unwrap();
        let seen = svc.ready().await.unwrap().call(req).await.unwrap().expect("a trace context inside the call");
        assert_eq!(sextant_events::trace_id_of(&seen), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let seen = svc.ready().await.unwrap().call(axum::http::Request::new(())).await.unwrap();
        assert!(seen.as_deref().and_then(sextant_events::trace_id_of).is_some(), "a call without one starts a trace");
    }
}
