//! The ingest service's core: transport-free operations on runs and projects. HTTP and gRPC
//! are thin layers over [`Ingest`].
//!
//! Writes are event-sourced: a request is turned into events, the events are made durable on
//! the bus, and only then is the request acknowledged. The run projector (`projector.rs`)
//! folds run events into the store asynchronously; project events are projected in the
//! request itself (write-through) so a client can use a project it has just created.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{error, info, instrument, warn};

use sextant_bus::{BusError, BusErrorKind, EventBus};
use sextant_core::project::validate_project_name;
use sextant_core::{Feedback, FeedbackStats, Project, ProjectId, ProjectPatch, Run, RunFragment, RunId, RunShare, TenantId, Timestamp};
use sextant_events::{Envelope, Event, ProjectCreatedV1, ProjectDeletedV1, ProjectUpdatedV1, RunsIngestedV1, Stream};
use sextant_filter::{FeedbackRow, Filter, RunView};
use sextant_proto::{ApiError, ErrorKind};
use sextant_storage::{
    CreateOutcome, ProjectQuery, ProjectStats, RunCursor, RunMatcher, RunPage, RunQuery, Storage, StorageError, StorageErrorKind,
};

use crate::wire::ProjectRef;

/// The project runs go to when they name none.
pub const DEFAULT_PROJECT: &str = "default";

/// Events are split so none exceeds this many bytes (JetStream's default message limit is
/// 1 MiB; one run larger than this travels alone).
const MAX_EVENT_BYTES: usize = 900 * 1024;
/// Short, because another replica may rename or delete a project: this bounds how long this
/// one keeps routing runs by the old name.
const PROJECT_CACHE_TTL: Duration = Duration::from_secs(5);
const BACKLOG_PROBE_INTERVAL: Duration = Duration::from_millis(25);
const PROJECT_CACHE_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct IngestLimits {
    pub max_body_bytes: usize,
    pub max_decoded_bytes: usize,
    pub max_parts: usize,
    pub max_runs_per_request: usize,
    pub max_query_limit: usize,
    /// Run events the projector may be behind before ingest waits for it (0: never wait).
    /// Bounds how stale reads get and how large the event log grows under overload.
    pub max_projection_backlog: u64,
    /// How long a request waits for the backlog to drain before a 503 with `Retry-After`
    /// (below the SDK's 10 s read timeout for background sends).
    pub backpressure_wait: Duration,
    /// Decoded (decompressed) request bytes all requests together may hold at once
    /// ([`crate::decode::DecodeBudget`]); a request waits briefly for it, then gets a 503.
    pub max_decoded_bytes_in_flight: usize,
    /// How long a run query waits for the projector to apply what was acknowledged before the
    /// query arrived ([`Ingest::await_acknowledged_runs`]; zero: never wait).
    pub read_your_writes_wait: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 25 * 1024 * 1024,
            max_decoded_bytes: 200 * 1024 * 1024,
            max_parts: 100_000,
            max_runs_per_request: 10_000,
            max_query_limit: 1000,
            max_projection_backlog: 2000,
            backpressure_wait: Duration::from_secs(5),
            max_decoded_bytes_in_flight: 512 * 1024 * 1024,
            read_your_writes_wait: Duration::from_secs(1),
        }
    }
}

pub struct Ingest {
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Storage>,
    pub limits: IngestLimits,
    /// Shared by every request that decompresses a body (REST and gRPC).
    pub decode_budget: crate::decode::DecodeBudget,
    project_cache: Mutex<HashMap<(TenantId, String), (ProjectId, Instant)>>,
    backlog_probe: Arc<Mutex<BacklogProbe>>,
    tenants_with_default: Mutex<HashSet<TenantId>>,
}

/// The run projector's backlog as this replica last probed it.
#[derive(Default)]
struct BacklogProbe {
    /// When it was probed, and what it said (`None`: the bus could not say).
    sample: Option<(Instant, Option<u64>)>,
    /// A background refresh is under way.
    refreshing: bool,
}

/// What an accepted ingest request produced.
#[derive(Debug, Clone, Default)]
pub struct IngestReceipt {
    pub runs: usize,
    pub events: usize,
}

pub fn bus_error(e: BusError) -> ApiError {
    match e.kind {
        BusErrorKind::Unavailable => {
            warn!(error = %e, "event bus unavailable");
            ApiError::unavailable("event bus unavailable; retry shortly")
        }
        BusErrorKind::Invalid => ApiError::unprocessable(e.message),
        BusErrorKind::StorageFull => {
            warn!(error = %e, "refusing writes: disk full");
            ApiError::new(sextant_proto::ErrorKind::InsufficientStorage, e.message)
        }
        BusErrorKind::Internal => {
            error!(error = ?e, "event bus failure");
            ApiError::internal()
        }
    }
}

pub fn storage_error(e: StorageError) -> ApiError {
    match e.kind {
        StorageErrorKind::Unavailable => {
            warn!(error = %e, "store unavailable");
            ApiError::unavailable("store unavailable; retry shortly")
        }
        StorageErrorKind::Conflict => ApiError::conflict(e.message),
        StorageErrorKind::Invalid => ApiError::bad_request(e.message),
        StorageErrorKind::Internal => {
            error!(error = ?e, "store failure");
            ApiError::internal()
        }
    }
}

/// The `status` values a run may carry: the ones LangSmith and its SDKs use.
pub const RUN_STATUSES: [&str; 3] = ["success", "error", "pending"];

/// The `run_type` values a run may carry: LangSmith's `RunTypeEnum`.
pub const RUN_TYPES: [&str; 7] = ["tool", "chain", "llm", "retriever", "embedding", "prompt", "parser"];

/// Checks a `run_type` (of a run or a query) against [`RUN_TYPES`].
pub fn check_run_type(run_type: &str) -> Result<(), String> {
    if RUN_TYPES.contains(&run_type) {
        Ok(())
    } else {
        Err(format!("{:?} is not one of {}", sextant_proto::truncate(run_type), RUN_TYPES.join(", ")))
    }
}

/// The rules every run fragment meets, whichever transport brought it (REST JSON, multipart
/// parts, gRPC): [`Ingest::ingest`] applies them to every fragment before anything is written,
/// and the transports apply them early to name the field as the client sent it. `where_`
/// names the run in the message (`post[3]`).
pub fn validate_fragment(f: &RunFragment, where_: &str) -> Result<(), ApiError> {
    let bad = |field: &str, problem: String| Err(ApiError::unprocessable(format!("{where_}.{field}: {problem}")));
    for (field, v) in [("prompt_cost", f.prompt_cost), ("completion_cost", f.completion_cost), ("total_cost", f.total_cost)] {
        if let Some(c) = v {
            if !c.is_finite() || c < 0.0 {
                return bad(field, format!("{c} is not a finite, non-negative number"));
            }
        }
    }
    for (field, v) in [("prompt_tokens", f.prompt_tokens), ("completion_tokens", f.completion_tokens), ("total_tokens", f.total_tokens)] {
        if let Some(n) = v.filter(|n| *n < 0) {
            return bad(field, format!("{n} is negative"));
        }
    }
    if let Some(Err(problem)) = f.run_type.as_deref().map(check_run_type) {
        return bad("run_type", problem);
    }
    if let Some(st) = f.status.as_deref().filter(|s| !RUN_STATUSES.contains(s)) {
        return bad("status", format!("{:?} is not one of {}", sextant_proto::truncate(st), RUN_STATUSES.join(", ")));
    }
    // LangSmith stores inputs and outputs as objects (the SDK wraps anything else in one).
    for (field, v) in [("inputs", &f.inputs), ("outputs", &f.outputs)] {
        if let Some(j) = v.as_ref().filter(|j| !j.is_null() && !j.as_str().trim_start().starts_with('{')) {
            let kind = match j.as_str().trim_start().as_bytes().first() {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                _ => "a number",
            };
            return bad(field, format!("expected a JSON object, got {kind}"));
        }
    }
    Ok(())
}

/// Aggregates over the runs of a query: LangSmith's `RunStats` (`POST /runs/stats`).
/// Percentiles are over the runs that have the value; sums treat a missing value as 0.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub run_count: u64,
    pub error_count: u64,
    /// Runs with a first-token time (streamed).
    pub streamed_count: u64,
    pub latencies: Vec<f64>,
    pub first_tokens: Vec<f64>,
    pub total_tokens: Vec<i64>,
    pub prompt_tokens: Vec<i64>,
    pub completion_tokens: Vec<i64>,
    pub total_costs: Vec<f64>,
    pub prompt_cost: f64,
    pub completion_cost: f64,
    pub last_run_start_time: Option<Timestamp>,
    pub feedback: FeedbackStats,
}

impl RunStats {
    pub fn add(&mut self, run: &Run) {
        self.run_count += 1;
        if run.status() == sextant_core::RunStatus::Error {
            self.error_count += 1;
        }
        self.latencies.extend(run.latency_secs());
        if let (Some(s), Some(f)) = (run.start_time, run.first_token_time) {
            self.streamed_count += 1;
            self.first_tokens.push((f.micros() - s.micros()) as f64 / 1e6);
        }
        self.total_tokens.extend(run.total_tokens);
        self.prompt_tokens.extend(run.prompt_tokens);
        self.completion_tokens.extend(run.completion_tokens);
        self.total_costs.extend(run.total_cost);
        self.prompt_cost += run.prompt_cost.unwrap_or(0.0);
        self.completion_cost += run.completion_cost.unwrap_or(0.0);
        self.last_run_start_time = self.last_run_start_time.max(run.start_time);
    }
}

/// Adds one run's `feedback_stats` into an aggregate (per key: counts, sums, values).
pub fn merge_feedback_stats(into: &mut FeedbackStats, from: &FeedbackStats) {
    for (key, s) in &from.0 {
        let k = into.0.entry(key.clone()).or_default();
        k.n += s.n;
        k.scored += s.scored;
        k.sum += s.sum;
        let sq = k.sum_sq.parse::<i128>().unwrap_or(0) + s.sum_sq.parse::<i128>().unwrap_or(0);
        k.sum_sq = sq.to_string();
        for (v, c) in &s.values {
            *k.values.entry(v.clone()).or_default() += c;
        }
    }
}

/// Runs one page of an oldest-first query may read (see [`Ingest::query_runs_ascending`]).
pub const MAX_ASCENDING_SCAN: usize = 10_000;

/// What `POST /runs/query` (and gRPC `QueryRuns`) asks for, already validated.
#[derive(Debug, Clone, Default)]
pub struct RunQueryRequest {
    pub projects: Vec<ProjectId>,
    pub ids: Option<Vec<RunId>>,
    pub trace: Option<RunId>,
    pub parent_run: Option<RunId>,
    pub is_root: Option<bool>,
    pub run_type: Option<String>,
    pub error: Option<bool>,
    pub reference_examples: Vec<uuid::Uuid>,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub filter: Option<String>,
    pub trace_filter: Option<String>,
    pub tree_filter: Option<String>,
    /// Free text, searched like `search("...")`.
    pub query: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// A parsed filter as a storage predicate; the store loads the run's feedback when the
/// filter has feedback conditions.
struct FilterMatcher {
    filter: Filter,
    needs_feedback: bool,
}

impl RunMatcher for FilterMatcher {
    fn matches(&self, run: &Run, feedback: &[Feedback]) -> bool {
        if !self.needs_feedback {
            return self.filter.matches(&RunView::new(run, &[]));
        }
        let rows: Vec<FeedbackRow> = feedback.iter().map(FeedbackRow::from).collect();
        self.filter.matches(&RunView::new(run, &rows))
    }

    fn needs_feedback(&self) -> bool {
        self.needs_feedback
    }
}

/// Both filters must hold (`filter` and the free-text `query`).
struct BothMatchers(Arc<dyn RunMatcher>, Arc<dyn RunMatcher>);

impl RunMatcher for BothMatchers {
    fn matches(&self, run: &Run, feedback: &[Feedback]) -> bool {
        self.0.matches(run, feedback) && self.1.matches(run, feedback)
    }

    fn needs_feedback(&self) -> bool {
        self.0.needs_feedback() || self.1.needs_feedback()
    }
}

/// One probe of the run projector's backlog (`None`: no projector yet, or the bus cannot say).
async fn probe_backlog(bus: &dyn EventBus) -> Option<u64> {
    bus.pending(crate::projector::RUN_PROJECTOR, Stream::Runs).await.ok().flatten()
}

fn compile(which: &str, src: &Option<String>) -> Result<Option<Arc<dyn RunMatcher>>, ApiError> {
    match src.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => {
            let f = sextant_filter::parse(s).map_err(|e| ApiError::bad_request(format!("{which}: {e}")))?;
            let needs_feedback = f.needs().feedback;
            Ok(Some(Arc::new(FilterMatcher { filter: f, needs_feedback })))
        }
    }
}

impl Ingest {
    pub fn new(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, limits: IngestLimits) -> Self {
        let decode_budget = crate::decode::DecodeBudget::new(limits.max_decoded_bytes_in_flight, crate::decode::DECODE_BUDGET_WAIT);
        Self {
            bus,
            store,
            limits,
            decode_budget,
            project_cache: Mutex::new(HashMap::new()),
            backlog_probe: Arc::default(),
            tenants_with_default: Mutex::new(HashSet::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    pub async fn ready(&self) -> bool {
        self.bus.ready().await
    }

    /// Accepts run fragments: resolves projects, publishes events and returns once they are
    /// durable. All or nothing: a request either becomes events entirely or is rejected.
    pub async fn ingest(&self, tenant: TenantId, fragments: Vec<(RunFragment, ProjectRef)>) -> Result<IngestReceipt, ApiError> {
        self.ingest_with(tenant, fragments, Vec::new()).await
    }

    /// [`Ingest::ingest`], publishing `also` (already validated events of the same request,
    /// such as `/runs/multipart`'s feedback parts) in the same publish as the runs.
    #[instrument(name = "ingest.runs", skip_all, fields(tenant = %tenant, runs = fragments.len()))]
    pub async fn ingest_with(
        &self,
        tenant: TenantId,
        fragments: Vec<(RunFragment, ProjectRef)>,
        also: Vec<Envelope>,
    ) -> Result<IngestReceipt, ApiError> {
        if fragments.len() > self.limits.max_runs_per_request {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("{} runs in one request; the limit is {}", fragments.len(), self.limits.max_runs_per_request),
            ));
        }
        // Everything is checked before anything is written: resolving a project by name may
        // create it, so a bad fragment or project further down must be found first.
        let mut checked: HashSet<&ProjectRef> = HashSet::new();
        for (f, r) in &fragments {
            let kind = match f.kind {
                sextant_core::FragmentKind::Post => "post",
                sextant_core::FragmentKind::Patch => "patch",
            };
            validate_fragment(f, &format!("{kind} {}", f.id))?;
            if checked.insert(r) {
                self.check_project_ref(tenant, r).await?;
            }
        }
        let mut by_project: Vec<(ProjectId, Vec<RunFragment>)> = Vec::new();
        let mut index: HashMap<ProjectId, usize> = HashMap::new();
        let mut resolved: HashMap<ProjectRef, ProjectId> = HashMap::new();
        let runs = fragments.len();
        for (f, r) in fragments {
            let pid = match resolved.get(&r) {
                Some(p) => *p,
                None => {
                    let p = self.resolve_project(tenant, &r, &f).await?;
                    resolved.insert(r, p);
                    p
                }
            };
            let i = *index.entry(pid).or_insert_with(|| {
                by_project.push((pid, Vec::new()));
                by_project.len() - 1
            });
            by_project[i].1.push(f);
        }
        let mut envelopes = Vec::new();
        for (project_id, frags) in by_project {
            let mut chunk = Vec::new();
            let mut size = 0;
            for f in frags {
                let s = f.approx_size();
                if !chunk.is_empty() && size + s > MAX_EVENT_BYTES {
                    envelopes.push(Envelope::new(
                        tenant,
                        Event::RunsIngestedV1(RunsIngestedV1 { project_id, fragments: std::mem::take(&mut chunk) }),
                    ));
                    size = 0;
                }
                size += s;
                chunk.push(f);
            }
            if !chunk.is_empty() {
                envelopes.push(Envelope::new(tenant, Event::RunsIngestedV1(RunsIngestedV1 { project_id, fragments: chunk })));
            }
        }
        envelopes.extend(also);
        if envelopes.is_empty() {
            return Ok(IngestReceipt::default());
        }
        self.admit().await?;
        self.bus.publish(&envelopes).await.map_err(bus_error)?;
        if let Some((_, Some(backlog))) = self.backlog_probe.lock().expect("poisoned").sample.as_mut() {
            *backlog += envelopes.len() as u64;
        }
        metrics::counter!("sextant_ingest_runs_total").increment(runs as u64);
        metrics::histogram!("sextant_ingest_batch_runs").record(runs as f64);
        Ok(IngestReceipt { runs, events: envelopes.len() })
    }

    /// Backpressure: waits while the run projector is too far behind, so that overload turns
    /// into slower acknowledgements rather than ever-staler reads.
    async fn admit(&self) -> Result<(), ApiError> {
        let max = self.limits.max_projection_backlog;
        if max == 0 {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let pending = match self.projection_backlog().await {
                Some(p) => p,
                // No projector yet (start-up) or the bus cannot say: do not block ingest on it.
                None => return Ok(()),
            };
            metrics::gauge!("sextant_projection_backlog_events").set(pending as f64);
            if pending <= max {
                if started.elapsed() > Duration::from_millis(1) {
                    metrics::histogram!("sextant_ingest_backpressure_seconds").record(started.elapsed().as_secs_f64());
                }
                return Ok(());
            }
            if started.elapsed() >= self.limits.backpressure_wait {
                metrics::counter!("sextant_ingest_backpressure_rejections_total").increment(1);
                return Err(ApiError::unavailable(format!("ingest is {pending} events ahead of projection; retry shortly")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The run projector's backlog. With a networked bus a probe is a round trip that the
    /// server answers behind its other work, so a request does not wait for one while the last
    /// sample is under the limit: a sample older than [`BACKLOG_PROBE_INTERVAL`] is refreshed
    /// in the background and used meanwhile (with what this replica published since added to
    /// it). Only with no sample yet, or one over the limit, does the request probe itself.
    async fn projection_backlog(&self) -> Option<u64> {
        {
            let mut probe = self.backlog_probe.lock().expect("poisoned");
            if let Some((at, backlog)) = probe.sample {
                if backlog.is_none_or(|b| b <= self.limits.max_projection_backlog) {
                    if at.elapsed() >= BACKLOG_PROBE_INTERVAL && !probe.refreshing {
                        probe.refreshing = true;
                        let (bus, shared) = (self.bus.clone(), self.backlog_probe.clone());
                        tokio::spawn(async move {
                            let backlog = probe_backlog(bus.as_ref()).await;
                            let mut probe = shared.lock().expect("poisoned");
                            probe.sample = Some((Instant::now(), backlog));
                            probe.refreshing = false;
                        });
                    }
                    return backlog;
                }
            }
        }
        let backlog = probe_backlog(self.bus.as_ref()).await;
        self.backlog_probe.lock().expect("poisoned").sample = Some((Instant::now(), backlog));
        backlog
    }

    /// What [`Ingest::resolve_project`] would refuse, found without creating anything.
    async fn check_project_ref(&self, tenant: TenantId, r: &ProjectRef) -> Result<(), ApiError> {
        match r {
            ProjectRef::Id(id) => {
                if self.store.get_project(tenant, ProjectId(*id)).await.map_err(storage_error)?.is_none() {
                    return Err(ApiError::unprocessable(format!("session_id {id} does not name an existing project")));
                }
                Ok(())
            }
            ProjectRef::Name(name) => validate_project_name(name).map_err(|e| ApiError::unprocessable(format!("session_name: {e}"))),
            ProjectRef::Unspecified => Ok(()),
        }
    }

    async fn resolve_project(&self, tenant: TenantId, r: &ProjectRef, f: &RunFragment) -> Result<ProjectId, ApiError> {
        match r {
            ProjectRef::Id(id) => {
                let pid = ProjectId(*id);
                if self.store.get_project(tenant, pid).await.map_err(storage_error)?.is_none() {
                    // Not 404: the SDK treats a 404 from /runs/multipart as "endpoint missing".
                    return Err(ApiError::unprocessable(format!("session_id {id} does not name an existing project")));
                }
                Ok(pid)
            }
            ProjectRef::Name(name) => self.project_id_for_name(tenant, name).await,
            ProjectRef::Unspecified => {
                // A patch without a project keeps the run's project. The run's post may still
                // be in flight to the store (reads lag writes), so look briefly before
                // falling back to the default project.
                if f.kind == sextant_core::FragmentKind::Patch {
                    for _ in 0..20 {
                        if let Some(run) = self.store.get_run(tenant, f.id).await.map_err(storage_error)? {
                            return Ok(run.project_id);
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
                self.project_id_for_name(tenant, DEFAULT_PROJECT).await
            }
        }
    }

    /// The id of the project with this name, creating it if needed. Ids of implicitly created
    /// projects are derived from the name, so concurrent creators agree.
    async fn project_id_for_name(&self, tenant: TenantId, name: &str) -> Result<ProjectId, ApiError> {
        validate_project_name(name).map_err(|e| ApiError::unprocessable(format!("session_name: {e}")))?;
        let key = (tenant, name.to_string());
        if let Some((id, at)) = self.project_cache.lock().expect("poisoned").get(&key) {
            if at.elapsed() < PROJECT_CACHE_TTL {
                return Ok(*id);
            }
        }
        let id = match self.store.project_by_name(tenant, name).await.map_err(storage_error)? {
            Some(p) => p.id,
            None => {
                let project = Project::new(tenant, ProjectId::derived_from_name(tenant, name), name.to_string());
                match self.create_project_event_sourced(project).await? {
                    CreateOutcome::Created(p) | CreateOutcome::AlreadyExists(p) | CreateOutcome::NameTaken(p) => p.id,
                }
            }
        };
        let mut cache = self.project_cache.lock().expect("poisoned");
        if cache.len() >= PROJECT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (id, Instant::now()));
        Ok(id)
    }

    async fn create_project_event_sourced(&self, project: Project) -> Result<CreateOutcome, ApiError> {
        let tenant = project.tenant_id;
        self.bus
            .publish(&[Envelope::new(tenant, Event::ProjectCreatedV1(ProjectCreatedV1 { project: project.clone() }))])
            .await
            .map_err(bus_error)?;
        self.store.create_project(&project).await.map_err(storage_error)
    }

    /// LangSmith tenants always have a "default" project, and the SDK discovers its tenant
    /// id from the first project it lists.
    pub async fn ensure_default_project(&self, tenant: TenantId) -> Result<(), ApiError> {
        if self.tenants_with_default.lock().expect("poisoned").contains(&tenant) {
            return Ok(());
        }
        self.project_id_for_name(tenant, DEFAULT_PROJECT).await?;
        self.tenants_with_default.lock().expect("poisoned").insert(tenant);
        Ok(())
    }

    pub async fn get_run(&self, tenant: TenantId, id: RunId) -> Result<Run, ApiError> {
        self.await_acknowledged_runs().await;
        self.store.get_run(tenant, id).await.map_err(storage_error)?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))
    }

    /// Shares `run` by public link (LangSmith's `PUT /runs/{id}/share`). Sharing a shared run
    /// returns its existing share; `token` is the caller's choice of token (the SDK sends one).
    #[instrument(name = "ingest.share_run", skip_all, fields(tenant = %tenant, run_id = %run))]
    pub async fn share_run(&self, tenant: TenantId, run: RunId, token: Option<uuid::Uuid>) -> Result<RunShare, ApiError> {
        self.get_run(tenant, run).await?;
        if let Some(existing) = self.store.run_share(tenant, run).await.map_err(storage_error)? {
            return Ok(existing);
        }
        let token = token.unwrap_or_else(uuid::Uuid::new_v4);
        // A caller-chosen token must not take over another run's link.
        if self.store.run_share_by_token(token).await.map_err(storage_error)?.is_some() {
            return Err(ApiError::conflict("that share token is already in use"));
        }
        let share = RunShare { run_id: run, token, created_at: Timestamp::now() };
        self.publish_share(tenant, run, Some(&share)).await?;
        Ok(share)
    }

    pub async fn unshare_run(&self, tenant: TenantId, run: RunId) -> Result<(), ApiError> {
        if self.store.run_share(tenant, run).await.map_err(storage_error)?.is_some() {
            self.publish_share(tenant, run, None).await?;
        }
        Ok(())
    }

    pub async fn run_share(&self, tenant: TenantId, run: RunId) -> Result<Option<RunShare>, ApiError> {
        self.store.run_share(tenant, run).await.map_err(storage_error)
    }

    /// The share a public link names, and the shared run; 404 for an unknown or revoked token.
    pub async fn shared_run(&self, token: uuid::Uuid) -> Result<(TenantId, Run), ApiError> {
        let not_found = || ApiError::not_found("no run is shared with this token");
        let (tenant, share) = self.store.run_share_by_token(token).await.map_err(storage_error)?.ok_or_else(not_found)?;
        let run = self.store.get_run(tenant, share.run_id).await.map_err(storage_error)?.ok_or_else(not_found)?;
        Ok((tenant, run))
    }

    /// The shared run and every run below it, in tree order.
    pub async fn shared_subtree(&self, token: uuid::Uuid) -> Result<(TenantId, Vec<Run>), ApiError> {
        let (tenant, root) = self.shared_run(token).await?;
        let prefix = root.dotted_order_or_default();
        let mut runs: Vec<Run> = self
            .store
            .trace_runs(tenant, root.trace())
            .await
            .map_err(storage_error)?
            .into_iter()
            .filter(|r| r.id == root.id || r.dotted_order_or_default().starts_with(&format!("{prefix}.")))
            .collect();
        runs.sort_by_key(Run::dotted_order_or_default);
        Ok((tenant, runs))
    }

    async fn publish_share(&self, tenant: TenantId, run: RunId, share: Option<&RunShare>) -> Result<(), ApiError> {
        let event = Event::RunShareChangedV1(sextant_events::RunShareChangedV1 { run_id: run, share: share.cloned() });
        self.bus.publish(&[Envelope::new(tenant, event)]).await.map_err(bus_error)?;
        self.store.put_run_share(tenant, run, share, Timestamp::now()).await.map_err(storage_error)
    }

    /// Read your writes: waits (at most `limits.read_your_writes_wait`) until the run projector
    /// has applied every run event acknowledged before this call, so a client that has just had
    /// its traces acknowledged (the SDK's `flush()`) finds them. At idle that is one look at the
    /// consumer's position; under load the wait is the projection lag, bounded. Past the bound
    /// the query answers from what is projected (counted in
    /// `sextant_read_your_writes_timeouts_total`).
    pub async fn await_acknowledged_runs(&self) {
        let budget = self.limits.read_your_writes_wait;
        if budget.is_zero() {
            return;
        }
        let position = || self.bus.progress(crate::projector::RUN_PROJECTOR, Stream::Runs);
        let Ok(Some(start)) = position().await else { return };
        if start.settled_through >= start.last_published {
            return;
        }
        let target = start.last_published;
        let deadline = Instant::now() + budget;
        let started = Instant::now();
        // Short first (projection at idle takes milliseconds), then backing off: with NATS each
        // look is a round trip.
        let mut pause = Duration::from_millis(1);
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
            match position().await {
                Ok(Some(p)) if p.settled_through >= target => break,
                Ok(Some(_)) if Instant::now() < deadline => {}
                _ => {
                    metrics::counter!("sextant_read_your_writes_timeouts_total").increment(1);
                    return;
                }
            }
        }
        metrics::histogram!("sextant_read_your_writes_wait_seconds").record(started.elapsed().as_secs_f64());
    }

    /// One page of runs, once what was acknowledged before the call is readable.
    pub async fn query_runs(&self, tenant: TenantId, req: RunQueryRequest) -> Result<RunPage, ApiError> {
        self.await_acknowledged_runs().await;
        self.query_page(tenant, req).await
    }

    /// One page of runs as projected now. Callers that read many pages wait for their writes
    /// once ([`Ingest::await_acknowledged_runs`]) and then page with this.
    #[instrument(name = "ingest.query", skip_all, fields(tenant = %tenant))]
    pub(crate) async fn query_page(&self, tenant: TenantId, mut req: RunQueryRequest) -> Result<RunPage, ApiError> {
        let mut metadata_pair = None;
        // Conditions the filter implies let the store use an index (roots, trace, ids). Hints
        // are over-approximations, and the full filter is still applied to every candidate.
        if let Some(src) = req.filter.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(f) = sextant_filter::parse(src) {
                for hint in f.hints() {
                    match hint {
                        sextant_filter::Hint::IsRoot(b) if req.is_root.is_none() => req.is_root = Some(b),
                        sextant_filter::Hint::TraceIds(ids) if ids.len() == 1 && req.trace.is_none() => req.trace = Some(ids[0]),
                        sextant_filter::Hint::Ids(ids) if req.ids.is_none() => req.ids = Some(ids),
                        sextant_filter::Hint::MetadataPair { key, value } if metadata_pair.is_none() => metadata_pair = Some((key, value)),
                        _ => {}
                    }
                }
            }
        }
        if let Some(Err(problem)) = req.run_type.as_deref().map(check_run_type) {
            return Err(ApiError::unprocessable(format!("run_type: {problem}")));
        }
        let limit = req.limit.unwrap_or(100);
        if limit == 0 || limit > self.limits.max_query_limit {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {}", self.limits.max_query_limit)));
        }
        let mut filter = compile("filter", &req.filter)?;
        if let Some(text) = req.query.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            let search = format!("search({})", serde_json::to_string(text).expect("a string serialises"));
            let search = compile("query", &Some(search))?.expect("non-empty");
            filter = Some(match filter {
                None => search,
                Some(f) => Arc::new(BothMatchers(f, search)),
            });
        }
        let cursor = req.cursor.as_deref().filter(|c| !c.is_empty()).map(RunCursor::decode).transpose().map_err(storage_error)?;
        let q = RunQuery {
            projects: req.projects,
            ids: req.ids,
            trace: req.trace,
            parent_run: req.parent_run,
            is_root: req.is_root,
            run_type: req.run_type,
            error: req.error,
            reference_examples: req.reference_examples,
            start_from: req.start_time,
            start_before: req.end_time,
            metadata_pair,
            filter,
            trace_filter: compile("trace_filter", &req.trace_filter)?,
            tree_filter: compile("tree_filter", &req.tree_filter)?,
            limit,
            cursor,
        };
        let started = Instant::now();
        let page = self.store.query_runs(tenant, &q).await.map_err(storage_error)?;
        metrics::histogram!("sextant_query_seconds").record(started.elapsed().as_secs_f64());
        Ok(page)
    }

    /// [`Ingest::query_runs`] oldest first (`order: "asc"`, as `read_thread` asks). The store
    /// reads newest first, so a page reads every match newer than the cursor, up to
    /// [`MAX_ASCENDING_SCAN`] runs; a query matching more is refused with a hint to narrow it.
    pub async fn query_runs_ascending(&self, tenant: TenantId, mut req: RunQueryRequest) -> Result<RunPage, ApiError> {
        let limit = req.limit.unwrap_or(100);
        if limit == 0 || limit > self.limits.max_query_limit {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {}", self.limits.max_query_limit)));
        }
        let after = req.cursor.take().filter(|c| !c.is_empty()).map(|c| RunCursor::decode(&c)).transpose().map_err(storage_error)?;
        let key = |r: &Run| (r.start_time.map_or(0, Timestamp::micros), r.id);
        if let Some(c) = after {
            req.start_time = Some(req.start_time.map_or(Timestamp(c.start_us), |t| t.max(Timestamp(c.start_us))));
        }
        req.limit = Some(self.limits.max_query_limit);
        self.await_acknowledged_runs().await;
        let mut runs = Vec::new();
        loop {
            let page = self.query_page(tenant, req.clone()).await?;
            let next = page.next.filter(|_| !page.runs.is_empty());
            runs.extend(page.runs.into_iter().filter(|r| after.is_none_or(|c| key(r) > (c.start_us, c.id))));
            if runs.len() > MAX_ASCENDING_SCAN {
                return Err(ApiError::unprocessable(format!(
                    "order \"asc\" reads at most {MAX_ASCENDING_SCAN} matching runs per page; narrow the query (start_time, filter) or use \"desc\""
                )));
            }
            match next {
                Some(n) => req.cursor = Some(n.encode()),
                None => break,
            }
        }
        runs.sort_by_key(key);
        let next = (runs.len() > limit).then(|| {
            let (start_us, id) = key(&runs[limit - 1]);
            RunCursor { start_us, id }
        });
        runs.truncate(limit);
        Ok(RunPage { runs, next })
    }

    /// Aggregates over every run the query matches (`POST /runs/stats`), read page by page.
    /// `limit` and `cursor` of the request are ignored. LangSmith requires a project.
    #[instrument(name = "ingest.run_stats", skip_all, fields(tenant = %tenant))]
    pub async fn run_stats(&self, tenant: TenantId, mut req: RunQueryRequest) -> Result<RunStats, ApiError> {
        if req.projects.is_empty() {
            return Err(ApiError::unprocessable("session: at least one project id is required"));
        }
        req.limit = Some(self.limits.max_query_limit);
        req.cursor = None;
        let mut stats = RunStats::default();
        self.await_acknowledged_runs().await;
        loop {
            let page = self.query_page(tenant, req.clone()).await?;
            let ids: Vec<RunId> = page.runs.iter().map(|r| r.id).collect();
            for fs in self.run_feedback_stats(tenant, &ids).await?.values() {
                merge_feedback_stats(&mut stats.feedback, fs);
            }
            page.runs.iter().for_each(|r| stats.add(r));
            match page.next {
                Some(next) if !page.runs.is_empty() => req.cursor = Some(next.encode()),
                _ => break,
            }
        }
        Ok(stats)
    }

    pub async fn trace_runs(&self, tenant: TenantId, trace: RunId) -> Result<Vec<Run>, ApiError> {
        self.store.trace_runs(tenant, trace).await.map_err(storage_error)
    }

    pub async fn attachment(&self, tenant: TenantId, run: RunId, name: &str) -> Result<(String, Vec<u8>), ApiError> {
        self.store
            .get_attachment(tenant, run, name)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found("attachment not found"))
    }

    // ---- projects ----

    /// Creates a project. With `upsert`, an existing project of that name is returned instead
    /// of a conflict.
    #[instrument(name = "ingest.create_project", skip_all, fields(tenant = %project.tenant_id, project = %project.id))]
    pub async fn create_project(&self, project: Project, upsert: bool) -> Result<Project, ApiError> {
        validate_project_name(&project.name).map_err(|e| ApiError::unprocessable(format!("name: {e}")))?;
        if let Some(existing) = self.store.project_by_name(project.tenant_id, &project.name).await.map_err(storage_error)? {
            return if upsert {
                Ok(existing)
            } else {
                Err(ApiError::conflict(format!("a project named {:?} already exists", project.name)))
            };
        }
        match self.create_project_event_sourced(project.clone()).await? {
            CreateOutcome::Created(p) => {
                info!(project = %p.id, "project created");
                Ok(p)
            }
            CreateOutcome::AlreadyExists(p) if p.name == project.name => Ok(p),
            CreateOutcome::AlreadyExists(_) => Err(ApiError::conflict(format!("a project with id {} already exists", project.id))),
            CreateOutcome::NameTaken(p) if upsert => Ok(p),
            CreateOutcome::NameTaken(_) => Err(ApiError::conflict(format!("a project named {:?} already exists", project.name))),
        }
    }

    pub async fn get_project(&self, tenant: TenantId, id: ProjectId) -> Result<Project, ApiError> {
        self.store
            .get_project(tenant, id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("project {id} not found")))
    }

    pub async fn list_projects(&self, tenant: TenantId, q: &ProjectQuery) -> Result<Vec<Project>, ApiError> {
        // A listing is a read: it answers even when the default project cannot be created now
        // (the disk is full, the bus is down); it is created on a later listing.
        if let Err(e) = self.ensure_default_project(tenant).await {
            warn!(tenant = %tenant, error = %e.message, "cannot create the default project now; listing without it");
        }
        self.store.list_projects(tenant, q).await.map_err(storage_error)
    }

    pub async fn project_stats(&self, tenant: TenantId, id: ProjectId) -> Result<ProjectStats, ApiError> {
        let mut stats = self.store.project_stats(tenant, id).await.map_err(storage_error)?;
        stats.feedback = self.store.project_feedback_stats(tenant, id).await.map_err(storage_error)?;
        Ok(stats)
    }

    /// `feedback_stats` of these runs (those with feedback).
    pub async fn run_feedback_stats(&self, tenant: TenantId, runs: &[RunId]) -> Result<HashMap<RunId, FeedbackStats>, ApiError> {
        self.store.run_feedback_stats(tenant, runs).await.map_err(storage_error)
    }

    pub async fn update_project(&self, tenant: TenantId, id: ProjectId, patch: ProjectPatch) -> Result<Project, ApiError> {
        if let Some(n) = &patch.name {
            validate_project_name(n).map_err(|e| ApiError::unprocessable(format!("name: {e}")))?;
        }
        let before = self.get_project(tenant, id).await?;
        self.bus
            .publish(&[Envelope::new(tenant, Event::ProjectUpdatedV1(ProjectUpdatedV1 { project_id: id, patch: patch.clone() }))])
            .await
            .map_err(bus_error)?;
        let updated = self
            .store
            .update_project(tenant, id, &patch)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("project {id} not found")))?;
        self.forget_name(tenant, &before.name);
        Ok(updated)
    }

    pub async fn delete_project(&self, tenant: TenantId, id: ProjectId) -> Result<(), ApiError> {
        let before = self.get_project(tenant, id).await?;
        self.bus
            .publish(&[Envelope::new(tenant, Event::ProjectDeletedV1(ProjectDeletedV1 { project_id: id }))])
            .await
            .map_err(bus_error)?;
        self.store.delete_project(tenant, id).await.map_err(storage_error)?;
        self.forget_name(tenant, &before.name);
        if before.name == DEFAULT_PROJECT {
            self.tenants_with_default.lock().expect("poisoned").remove(&tenant);
        }
        info!(tenant = %tenant, project = %id, "project deleted");
        Ok(())
    }

    fn forget_name(&self, tenant: TenantId, name: &str) {
        self.project_cache.lock().expect("poisoned").remove(&(tenant, name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_core::FragmentKind;

    #[test]
    fn run_type_must_be_one_of_langsmiths() {
        // Every transport (REST JSON, multipart, gRPC) ends in this check.
        let mut f = RunFragment::new(FragmentKind::Post, RunId(uuid::Uuid::nil()));
        for t in RUN_TYPES {
            f.run_type = Some(t.into());
            assert!(validate_fragment(&f, "post[0]").is_ok(), "{t}");
        }
        f.run_type = Some("agent".into());
        let e = validate_fragment(&f, "post[0]").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unprocessable);
        assert_eq!(e.message, "post[0].run_type: \"agent\" is not one of tool, chain, llm, retriever, embedding, prompt, parser");
        f.run_type = Some("LLM".into());
        assert!(validate_fragment(&f, "post[0]").is_err(), "run types are lower case");
    }

    #[test]
    fn feedback_stats_merge_per_key() {
        let one = |score: i64, value: Option<&str>| {
            let mut s = FeedbackStats::default();
            let k = s.0.entry("q".into()).or_default();
            k.n = 1;
            k.scored = 1;
            k.sum = score;
            k.sum_sq = (score as i128 * score as i128).to_string();
            if let Some(v) = value {
                k.values.insert(v.into(), 1);
            }
            s
        };
        let mut all = FeedbackStats::default();
        merge_feedback_stats(&mut all, &one(10_000, Some("good")));
        merge_feedback_stats(&mut all, &one(0, Some("good")));
        let q = &all.0["q"];
        assert_eq!((q.n, q.scored, q.sum, q.values["good"]), (2, 2, 10_000, 2));
        assert_eq!(q.mean(), Some(0.5));
        assert_eq!(q.stdev(), Some(0.5));
    }
}
