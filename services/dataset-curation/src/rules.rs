//! Curation rules: continuous curation. A rule is a run selection stored on the dataset; two
//! consumers (one on the run stream, one on the feedback stream) add every run that matches
//! it to the dataset as it happens, e.g. "root runs of project X with `user_rating` < 0.4".
//!
//! A run is looked at when it finishes and again whenever feedback on it arrives, since most
//! rules are about feedback that comes after the run. Rules are evaluated on the stored run
//! and its stored feedback, so a consumer waits (naks, retries shortly) until the projectors
//! have stored what the event announced.
//!
//! Adding is idempotent: a curated example's id is derived from the dataset and the hash of
//! the run's inputs ([`curated_example_id`]), so a redelivered event, a second replica or a
//! curation job that found the same inputs never makes a second example. Inputs already in the
//! dataset under another id (written by hand) are skipped by a per-dataset set of input hashes,
//! reloaded every minute.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};
use tracing::{debug, info_span, warn, Instrument};
use uuid::Uuid;

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_core::dataset::{content_hash, CurationRule, RunSelection};
use sextant_core::{DatasetId, Feedback, FeedbackChange, Run, RunId, TenantId, Timestamp};
use sextant_events::{Event, Stream};
use sextant_filter::Filter;
use sextant_proto::{ApiError, ErrorKind};
use sextant_storage::FeedbackQuery;

use crate::core::{storage_error, Datasets};
use crate::curation::{curated_example_id, example_from_run};

pub const CURATION_RULES_RUNS: &str = "curation-rules-runs";
pub const CURATION_RULES_FEEDBACK: &str = "curation-rules-feedback";
/// Most rules one dataset may have.
pub const MAX_RULES_PER_DATASET: usize = 50;
/// How long the rule set is cached: a new rule applies to events handled after this.
const RULES_TTL: Duration = Duration::from_secs(2);
/// How long a dataset's set of input hashes is trusted before it is read again.
const HASHES_TTL: Duration = Duration::from_secs(60);
/// Retries while a run or feedback entry is not stored yet (500 ms apart).
const MAX_DELIVERIES: u32 = 60;
/// Deliveries (500 ms apart) for which feedback waits for its run to be stored and finished.
const FEEDBACK_WAITS_FOR_RUN: u32 = 20;
/// Feedback entries of one run that a rule looks at.
const MAX_FEEDBACK_PER_RUN: usize = 1000;

// ---- rule management (REST and gRPC) ----

impl Datasets {
    /// Adds a rule to a dataset; it applies to runs finishing (or getting feedback) from now on.
    /// A rule needs a filter: one that adds every run would fill the dataset with traffic.
    pub async fn add_curation_rule(&self, tenant: TenantId, id: DatasetId, selection: RunSelection) -> Result<CurationRule, ApiError> {
        if selection.filter.is_empty() {
            return Err(ApiError::unprocessable("filter: a curation rule needs a run filter"));
        }
        let mut d = self.get_dataset(tenant, id).await?;
        if d.rules.len() >= MAX_RULES_PER_DATASET {
            return Err(ApiError::unprocessable(format!("dataset {id} has {MAX_RULES_PER_DATASET} rules already (the most allowed)")));
        }
        let rule = CurationRule { id: Uuid::now_v7(), selection, created_at: Timestamp::now() };
        d.rules.push(rule.clone());
        self.put_definition(tenant, d).await?;
        Ok(rule)
    }

    pub async fn delete_curation_rule(&self, tenant: TenantId, id: DatasetId, rule: Uuid) -> Result<(), ApiError> {
        let mut d = self.get_dataset(tenant, id).await?;
        let before = d.rules.len();
        d.rules.retain(|r| r.id != rule);
        if d.rules.len() == before {
            return Err(ApiError::not_found(format!("curation rule {rule} not found on dataset {id}")));
        }
        self.put_definition(tenant, d).await.map(|_| ())
    }
}

/// A rule as the API shows it.
pub fn rule_json(dataset: DatasetId, r: &CurationRule) -> Value {
    json!({
        "id": r.id,
        "dataset_id": dataset,
        "filter": r.selection.filter,
        "project_ids": r.selection.project_ids,
        "start_time": r.selection.start_time.map(Timestamp::to_iso),
        "end_time": r.selection.end_time.map(Timestamp::to_iso),
        "root_only": r.selection.root_only,
        "created_at": r.created_at.to_iso(),
    })
}

// ---- the consumers ----

struct CompiledRule {
    dataset: DatasetId,
    rule: CurationRule,
    filter: Filter,
}

impl CompiledRule {
    /// Whether the rule looks at this run at all (before its filter).
    fn selects(&self, run: &Run) -> bool {
        let s = &self.rule.selection;
        (s.project_ids.is_empty() || s.project_ids.contains(&run.project_id))
            && (!s.root_only || run.parent_run_id.is_none())
            && s.start_time.is_none_or(|from| run.start_time.is_some_and(|t| t >= from))
            && s.end_time.is_none_or(|to| run.start_time.is_some_and(|t| t < to))
    }
}

/// When a dataset's input hashes were read, and the hashes.
type InputHashes = (Instant, HashSet<String>);

#[derive(Default)]
struct RuleCache {
    loaded: Option<Instant>,
    by_tenant: HashMap<TenantId, Vec<Arc<CompiledRule>>>,
}

/// The state both consumers share.
pub struct CurationRules {
    datasets: Arc<Datasets>,
    rules: Mutex<RuleCache>,
    /// Input hashes per dataset, for inputs written under ids that are not curated ids.
    hashes: Mutex<HashMap<(TenantId, DatasetId), InputHashes>>,
}

/// What handling one event came to.
enum Outcome {
    Done,
    /// Something the event announced is not stored yet: retry shortly.
    NotYet,
    Failed(ApiError),
}

impl CurationRules {
    pub fn new(datasets: Arc<Datasets>) -> Arc<Self> {
        Arc::new(Self { datasets, rules: Mutex::new(RuleCache::default()), hashes: Mutex::new(HashMap::new()) })
    }

    async fn tenant_rules(&self, tenant: TenantId) -> Vec<Arc<CompiledRule>> {
        let mut cache = self.rules.lock().await;
        if cache.loaded.is_none_or(|at| at.elapsed() >= RULES_TTL) {
            match self.datasets.store().datasets_with_rules().await {
                Ok(datasets) => {
                    let mut by_tenant: HashMap<TenantId, Vec<Arc<CompiledRule>>> = HashMap::new();
                    for (t, d) in datasets {
                        for rule in d.rules {
                            match sextant_filter::parse(&rule.selection.filter) {
                                Ok(filter) => by_tenant.entry(t).or_default().push(Arc::new(CompiledRule { dataset: d.id, rule, filter })),
                                Err(e) => warn!(dataset = %d.id, rule = %rule.id, error = %e, "curation rule no longer parses; skipped"),
                            }
                        }
                    }
                    cache.by_tenant = by_tenant;
                    cache.loaded = Some(Instant::now());
                }
                Err(e) => warn!(error = %e, "cannot load curation rules; keeping the previous set"),
            }
        }
        cache.by_tenant.get(&tenant).cloned().unwrap_or_default()
    }

    /// Whether inputs with this hash are in the dataset already (under any id).
    async fn has_inputs(&self, tenant: TenantId, dataset: DatasetId, hash: &str) -> Result<bool, ApiError> {
        let mut hashes = self.hashes.lock().await;
        let fresh = hashes.get(&(tenant, dataset)).is_some_and(|(at, _)| at.elapsed() < HASHES_TTL);
        if !fresh {
            let mut set = HashSet::new();
            self.datasets
                .scan(tenant, dataset, None, |e| {
                    set.insert(content_hash(&e.inputs));
                })
                .await?;
            hashes.insert((tenant, dataset), (Instant::now(), set));
        }
        Ok(hashes.get(&(tenant, dataset)).is_some_and(|(_, set)| set.contains(hash)))
    }

    /// Looks at one run for every rule of its tenant. `waiting_for` is a feedback entry the
    /// event announced: until the store has it, the run is not judged. `wait_for_run`: whether
    /// a run not stored (or not finished) yet is worth waiting for.
    ///
    /// Each path waits for what its own event announced, so whichever of "run finished" and
    /// "feedback arrived" is stored last is judged with both in the store.
    async fn consider(&self, tenant: TenantId, run_id: RunId, waiting_for: Option<&Feedback>, wait_for_run: bool) -> Outcome {
        let rules = self.tenant_rules(tenant).await;
        if rules.is_empty() {
            return Outcome::Done;
        }
        let store = self.datasets.store();
        let run = match store.get_run(tenant, run_id).await {
            Ok(Some(run)) if run.end_time.is_some() || run.error.is_some() => run,
            // The run projector has not stored (the end of) the run yet.
            Ok(_) if wait_for_run => return Outcome::NotYet,
            // Still not there: a run still going (its finishing event judges it) or never traced.
            Ok(_) => return Outcome::Done,
            Err(e) => return Outcome::Failed(storage_error(e)),
        };
        let applicable: Vec<&Arc<CompiledRule>> = rules.iter().filter(|r| r.selects(&run)).collect();
        if applicable.is_empty() {
            return Outcome::Done;
        }
        let feedback = if waiting_for.is_some() || applicable.iter().any(|r| r.filter.needs().feedback) {
            match store
                .list_feedback(tenant, &FeedbackQuery { runs: vec![run_id], limit: MAX_FEEDBACK_PER_RUN, ..Default::default() })
                .await
            {
                Ok(f) => f,
                Err(e) => return Outcome::Failed(storage_error(e)),
            }
        } else {
            Vec::new()
        };
        if let Some(wanted) = waiting_for {
            // Not stored yet, or stored as it was before this change.
            if !feedback.iter().any(|f| f.id == wanted.id && f.modified_at >= wanted.modified_at) {
                return Outcome::NotYet;
            }
        }
        for r in applicable {
            if !r.filter.matches_run(&run, &feedback) {
                continue;
            }
            if let Err(e) = self.add(tenant, r, &run, &feedback).await {
                return Outcome::Failed(e);
            }
        }
        Outcome::Done
    }

    async fn add(&self, tenant: TenantId, r: &CompiledRule, run: &Run, feedback: &[Feedback]) -> Result<(), ApiError> {
        let Some((hash, input)) = example_from_run(r.dataset, run, feedback, ("curation_rule_id", r.rule.id)) else {
            debug!(run = %run.id, "matching run has no inputs or outputs; not curated");
            return Ok(());
        };
        let store = self.datasets.store();
        if store.get_example(tenant, curated_example_id(r.dataset, &hash), None).await.map_err(storage_error)?.is_some()
            || self.has_inputs(tenant, r.dataset, &hash).await?
        {
            return Ok(());
        }
        match self.datasets.create_examples(tenant, r.dataset, vec![input]).await {
            Ok(_) => {}
            // Another replica curated the same inputs a moment ago.
            Err(e) if e.kind == ErrorKind::Conflict => return Ok(()),
            // The dataset was deleted, or its schema refuses this run: nothing to retry.
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Unprocessable) => {
                warn!(dataset = %r.dataset, rule = %r.rule.id, run = %run.id, error = %e.message, "run matches a curation rule but cannot be added");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if let Some((_, set)) = self.hashes.lock().await.get_mut(&(tenant, r.dataset)) {
            set.insert(hash);
        }
        debug!(dataset = %r.dataset, rule = %r.rule.id, run = %run.id, "run curated into dataset");
        metrics::counter!("sextant_curation_rule_examples_total").increment(1);
        Ok(())
    }

    async fn settle(d: Delivery, outcome: Outcome) {
        let _ = match outcome {
            Outcome::Done => d.ack().await,
            Outcome::NotYet => d.nak(Duration::from_millis(500)).await,
            Outcome::Failed(e) => {
                warn!(seq = d.sequence, error = %e.message, "curation rule failed on an event; will retry");
                d.nak(Duration::from_secs(1)).await
            }
        };
    }

    async fn on_run_event(&self, d: Delivery) {
        let Ok(env) = &d.payload else {
            let _ = d.ack().await; // the run projector dead-letters undecodable events
            return;
        };
        let Event::RunsCompletedV1(ev) = &env.event else {
            let _ = d.ack().await;
            return;
        };
        let span = info_span!("curation_rules.runs", tenant = %env.tenant, seq = d.sequence);
        let mut outcome = Outcome::Done;
        for run in &ev.runs {
            outcome = self.consider(env.tenant, run.id, None, true).instrument(span.clone()).await;
            if !matches!(outcome, Outcome::Done) {
                break;
            }
        }
        Self::settle(d, outcome).await;
    }

    async fn on_feedback_event(&self, d: Delivery) {
        let Ok(env) = &d.payload else {
            let _ = d.ack().await;
            return;
        };
        let tenant = env.tenant;
        let feedback_id = match &env.event {
            Event::FeedbackChangedV1(ev) => match &ev.change {
                FeedbackChange::Upsert(f) => f.id,
                FeedbackChange::Patch { id, .. } => *id,
                FeedbackChange::Delete { .. } => {
                    let _ = d.ack().await; // removing feedback never adds a run
                    return;
                }
            },
            Event::FeedbackPartReceivedV1(p) => sextant_core::FeedbackId(p.feedback_id),
            _ => {
                let _ = d.ack().await;
                return;
            }
        };
        let span = info_span!("curation_rules.feedback", tenant = %tenant, feedback = %feedback_id, seq = d.sequence);
        let outcome = async {
            if self.tenant_rules(tenant).await.is_empty() {
                return Outcome::Done;
            }
            let stored = match self.datasets.store().get_feedback(tenant, feedback_id).await {
                Ok(Some(f)) => f,
                Ok(None) => return Outcome::NotYet,
                Err(e) => return Outcome::Failed(storage_error(e)),
            };
            let announced = match &env.event {
                Event::FeedbackChangedV1(ev) => match &ev.change {
                    FeedbackChange::Upsert(f) => f.clone(),
                    _ => stored.clone(),
                },
                _ => stored.clone(),
            };
            match stored.run_id {
                // Feedback often arrives with (or before) the run it rates: wait a while for it.
                Some(run_id) => self.consider(tenant, run_id, Some(&announced), d.delivery_count < FEEDBACK_WAITS_FOR_RUN).await,
                None => Outcome::Done,
            }
        }
        .instrument(span)
        .await;
        Self::settle(d, outcome).await;
    }
}

/// Runs both rule consumers until `shutdown`.
pub async fn run_curation_rules(bus: Arc<dyn EventBus>, rules: Arc<CurationRules>, shutdown: watch::Receiver<bool>) {
    let spec = |name: &str, stream| {
        let mut s = ConsumerSpec::new(name, stream);
        s.max_deliveries = MAX_DELIVERIES;
        s
    };
    let runs = {
        let rules = &rules;
        sextant_bus::consume_batches(
            bus.as_ref(),
            spec(CURATION_RULES_RUNS, Stream::RunCompletions),
            256,
            shutdown.clone(),
            move |batch| async move {
                for d in batch {
                    rules.on_run_event(d).await;
                }
            },
        )
    };
    let feedback = {
        let rules = &rules;
        sextant_bus::consume_batches(
            bus.as_ref(),
            spec(CURATION_RULES_FEEDBACK, Stream::Feedback),
            256,
            shutdown,
            move |batch| async move {
                for d in batch {
                    rules.on_feedback_event(d).await;
                }
            },
        )
    };
    tokio::join!(runs, feedback);
}
