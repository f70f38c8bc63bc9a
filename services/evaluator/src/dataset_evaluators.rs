//! Evaluators configured on a dataset, versioned, that score every experiment run against it
//! as the run finishes: a team sets its checks once and every `evaluate()` is scored the same
//! way on the server, whatever evaluators the SDK call passed.
//!
//! Configs live on the dataset's definition (a `DatasetChangedV1` event), so they are
//! event-sourced like the rest of the dataset. Changing the config under a key adds a version
//! and retires the previous one; results name the version in their feedback source. The
//! consumer (`experiment-evaluator`, run stream) scores finished root runs that cite an
//! example of such a dataset, with the example's reference outputs. Result ids derive from
//! run, key and config (as `sextant eval run`), so a redelivered event, or an `eval run` over
//! the same experiment, records nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};
use tracing::{debug, info_span, warn, Instrument};

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_core::dataset::DatasetEvaluator;
use sextant_core::{DatasetId, ExampleId, RawJson, Run, TenantId, Timestamp};
use sextant_dataset_curation::Datasets;
use sextant_events::{CompletedRun, Stream};
use sextant_feedback::FeedbackService;
use sextant_proto::ApiError;

use crate::finished::runs_to_score;
use crate::run::{result_feedback, result_id};
use crate::scorers::{parse_evaluator, Evaluator, JudgeSettings, ScoreInput};

pub const EXPERIMENT_EVALUATOR: &str = "experiment-evaluator";
const MAX_DELIVERIES: u32 = 60;
/// How long a dataset's evaluators are cached: a change applies to runs finishing after this.
const CACHE_TTL: Duration = Duration::from_secs(2);
pub const MAX_EVALUATORS_PER_DATASET: usize = 20;

/// A dataset's active evaluator versions, parsed.
type ActiveEvaluators = Arc<Vec<(DatasetEvaluator, Evaluator)>>;

pub struct DatasetEvaluators {
    datasets: Arc<Datasets>,
    feedback: Arc<FeedbackService>,
    judge: JudgeSettings,
    cache: Mutex<HashMap<(TenantId, DatasetId), (Instant, ActiveEvaluators)>>,
}

pub fn evaluator_json(dataset: DatasetId, e: &DatasetEvaluator) -> Value {
    json!({"dataset_id": dataset, "key": e.key, "version": e.version, "config": e.config.as_raw(), "active": e.active, "created_at": e.created_at.to_iso()})
}

impl DatasetEvaluators {
    pub fn new(datasets: Arc<Datasets>, feedback: Arc<FeedbackService>, judge: JudgeSettings) -> Arc<Self> {
        Arc::new(Self { datasets, feedback, judge, cache: Mutex::new(HashMap::new()) })
    }

    /// Adds a config (a new key, or a new version of an existing key); 422 if it does not parse.
    pub async fn set(&self, tenant: TenantId, dataset: DatasetId, config: &Value) -> Result<DatasetEvaluator, ApiError> {
        let parsed = parse_evaluator(config, &self.judge).map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let mut d = self.datasets.get_dataset(tenant, dataset).await?;
        let key = parsed.key().to_owned();
        if !d.evaluators.iter().any(|e| e.key == key) && d.evaluators.iter().filter(|e| e.active).count() >= MAX_EVALUATORS_PER_DATASET {
            return Err(ApiError::unprocessable(format!("dataset {dataset} has {MAX_EVALUATORS_PER_DATASET} evaluators already")));
        }
        let config_raw = RawJson::from_value(parsed.config());
        if let Some(current) = d.evaluators.iter().find(|e| e.key == key && e.active) {
            if current.config == config_raw {
                return Ok(current.clone()); // unchanged: no new version
            }
        }
        let version = d.evaluators.iter().filter(|e| e.key == key).map(|e| e.version).max().unwrap_or(0) + 1;
        for e in d.evaluators.iter_mut().filter(|e| e.key == key) {
            e.active = false;
        }
        let added = DatasetEvaluator { key, version, config: config_raw, created_at: Timestamp::now(), active: true };
        d.evaluators.push(added.clone());
        self.datasets.put_definition(tenant, d).await?;
        Ok(added)
    }

    /// Retires the active version of `key` (its history stays).
    pub async fn retire(&self, tenant: TenantId, dataset: DatasetId, key: &str) -> Result<(), ApiError> {
        let mut d = self.datasets.get_dataset(tenant, dataset).await?;
        let Some(e) = d.evaluators.iter_mut().find(|e| e.key == key && e.active) else {
            return Err(ApiError::not_found(format!("dataset {dataset} has no active evaluator {key:?}")));
        };
        e.active = false;
        self.datasets.put_definition(tenant, d).await.map(|_| ())
    }

    pub async fn list(&self, tenant: TenantId, dataset: DatasetId) -> Result<Vec<DatasetEvaluator>, ApiError> {
        Ok(self.datasets.get_dataset(tenant, dataset).await?.evaluators)
    }

    /// The active evaluators of a dataset, parsed (cached briefly).
    async fn active(&self, tenant: TenantId, dataset: DatasetId) -> Result<ActiveEvaluators, ApiError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, v)) = cache.get(&(tenant, dataset)) {
            if at.elapsed() < CACHE_TTL {
                return Ok(v.clone());
            }
        }
        let d = match self.datasets.get_dataset(tenant, dataset).await {
            Ok(d) => d,
            Err(e) if e.kind == sextant_proto::ErrorKind::NotFound => {
                cache.insert((tenant, dataset), (Instant::now(), Arc::new(Vec::new())));
                return Ok(Arc::new(Vec::new()));
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in d.evaluators.into_iter().filter(|e| e.active) {
            match parse_evaluator(&e.config.to_value_or_null(), &self.judge) {
                Ok(parsed) => out.push((e, parsed)),
                Err(err) => warn!(dataset = %dataset, key = %e.key, error = %err, "a dataset evaluator no longer parses; skipped"),
            }
        }
        let out = Arc::new(out);
        cache.insert((tenant, dataset), (Instant::now(), out.clone()));
        Ok(out)
    }

    /// Scores one finished root run that cites an example with its dataset's evaluators.
    async fn score(&self, tenant: TenantId, run: &Run) -> Result<(), ApiError> {
        let Some(example_id) = run.reference_example_id else { return Ok(()) };
        let store = self.datasets.store();
        let Some(project) = store.get_project(tenant, run.project_id).await.map_err(sextant_proto::error::storage_error)? else {
            return Ok(());
        };
        let Some(dataset) = project.reference_dataset_id else { return Ok(()) };
        let evaluators = self.active(tenant, sextant_core::DatasetId(dataset)).await?;
        if evaluators.is_empty() || run.outputs.is_none() {
            return Ok(());
        }
        let reference = store
            .get_example(tenant, ExampleId(example_id), None)
            .await
            .map_err(sextant_proto::error::storage_error)?
            .and_then(|e| e.outputs.map(|o| o.to_value_or_null()));
        let input = ScoreInput {
            inputs: run.inputs.as_ref().map_or(Value::Null, RawJson::to_value_or_null),
            outputs: run.outputs.as_ref().map_or(Value::Null, RawJson::to_value_or_null),
            reference: reference.clone(),
        };
        let mut entries = Vec::new();
        for (def, e) in evaluators.iter() {
            let id = result_id(run.id, e);
            if store.get_feedback(tenant, id).await.map_err(sextant_proto::error::storage_error)?.is_some() {
                continue;
            }
            if e.needs_reference() && reference.is_none() {
                continue;
            }
            let outcome = e.score(&input).await;
            if let Some((mut f, _, _)) = result_feedback(project.id.0, (run.id, run.trace_id.unwrap_or(run.id)), e, id, outcome) {
                // Name the version in the source, so a result says which config made it.
                let mut source =
                    f.feedback_source.as_ref().and_then(|s| s.to_value().ok()).filter(Value::is_object).unwrap_or_else(|| json!({}));
                source["metadata"]["dataset_evaluator_version"] = json!(def.version);
                f.feedback_source = Some(RawJson::from_value(&source));
                entries.push(f);
            }
        }
        if !entries.is_empty() {
            let n = entries.len() as u64;
            self.feedback.create_validated(tenant, entries).await?;
            metrics::counter!("sextant_experiment_runs_scored_total").increment(1);
            metrics::counter!("sextant_evaluator_results_total", "outcome" => "dataset").increment(n);
            debug!(run = %run.id, results = n, "experiment run scored by dataset evaluators");
        }
        Ok(())
    }

    async fn on_event(&self, d: Delivery) {
        let select = |r: &CompletedRun| r.reference_example_id.is_some();
        let Some((d, tenant, runs)) = runs_to_score(self.datasets.store().as_ref(), d, EXPERIMENT_EVALUATOR, select).await else {
            return;
        };
        let span = info_span!("experiment_eval", tenant = %tenant, seq = d.sequence);
        for run in &runs {
            if let Err(e) = self.score(tenant, run).instrument(span.clone()).await {
                warn!(error = %e.message, run = %run.id, "experiment_eval failed; will retry");
                let _ = d.nak(Duration::from_secs(1)).await;
                return;
            }
        }
        let _ = d.ack().await;
    }
}

pub async fn run_experiment_evaluator(bus: Arc<dyn EventBus>, evaluators: Arc<DatasetEvaluators>, shutdown: watch::Receiver<bool>) {
    let mut spec = ConsumerSpec::new(EXPERIMENT_EVALUATOR, Stream::RunCompletions);
    spec.max_deliveries = MAX_DELIVERIES;
    let evaluators = &evaluators;
    sextant_bus::consume_batches(bus.as_ref(), spec, 64, shutdown, move |batch| async move {
        for d in batch {
            evaluators.on_event(d).await;
        }
    })
    .await;
}
