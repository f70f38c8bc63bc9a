//! Running evaluators on the server over an experiment's runs (`sextant eval run`, `POST
//! /experiments/{id}/evaluate`): every root run that cites an example is scored by each
//! evaluator against the example's reference outputs, and each result becomes feedback
//! (source `model`, with a comment saying why), published as feedback events.
//!
//! Resumable and idempotent: a result's feedback id is derived from the run, the evaluator's
//! key and a hash of its config, so running again skips what is scored already (an
//! interrupted run picks up where it stopped) and re-scoring with a changed or new evaluator
//! adds its results beside the old ones. An evaluator that cannot score (a judge timing out or
//! answering garbage) records an error entry (no score, `value.error`), never a made-up score.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use sextant_core::{ExampleId, Feedback, FeedbackId, Run, RunId, TenantId, Timestamp};
use sextant_feedback::FeedbackService;
use sextant_proto::error::storage_error;
use sextant_proto::ApiError;
use sextant_storage::{RunQuery, Storage};

use crate::compare::find_experiment;
use crate::scorers::{parse_evaluators, Evaluator, JudgeSettings, ScoreInput, FEEDBACK_SOURCE_TYPE};

/// Runs listed per page.
const PAGE: usize = 1000;
/// Evaluations in flight at once (judges have their own, shared limit).
const CONCURRENCY: usize = 32;
/// Feedback entries published per event batch.
const PUBLISH_BATCH: usize = 200;

#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalProgress {
    pub experiment_id: Option<Uuid>,
    /// Evaluations to do: runs × evaluators.
    pub total: u64,
    pub scored: u64,
    /// Already scored by an earlier run with the same evaluator.
    pub skipped: u64,
    /// Evaluator errors (recorded as such).
    pub errors: u64,
    /// Runs without outputs, or whose example is gone, for evaluators that need them.
    pub unscorable: u64,
    pub cost_usd: f64,
    pub done: bool,
}

pub struct EvalRunner {
    store: Arc<dyn Storage>,
    feedback: Arc<FeedbackService>,
    judge: JudgeSettings,
}

/// The feedback id of one evaluator's result on one run.
pub(crate) fn result_id(run: RunId, evaluator: &Evaluator) -> FeedbackId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x5e7a_47c0_e7a1_5e70_8000_c0de_c0de_0002);
    let config = hex::encode(Sha256::digest(serde_json::to_vec(evaluator.config()).unwrap_or_default()));
    FeedbackId(Uuid::new_v5(&NAMESPACE, format!("{}/{}/{config}", run.0, evaluator.key()).as_bytes()))
}

impl EvalRunner {
    pub fn new(store: Arc<dyn Storage>, feedback: Arc<FeedbackService>, judge: JudgeSettings) -> Self {
        Self { store, feedback, judge }
    }

    /// Evaluator configs (a JSON list) as evaluators, or a 422 naming the bad field.
    pub fn parse(&self, configs: &Value) -> Result<Vec<Evaluator>, ApiError> {
        if configs.as_array().is_none_or(|a| a.is_empty()) {
            return Err(ApiError::unprocessable("evaluators: expected a non-empty list of evaluator configs"));
        }
        parse_evaluators(configs, &self.judge).map_err(|e| ApiError::unprocessable(format!("evaluators: {e}")))
    }

    /// Scores the experiment's runs; sends progress after every batch and a last `done` one.
    #[instrument(name = "evaluator.run", skip_all, fields(tenant = %tenant, experiment = %experiment))]
    pub async fn run(
        &self,
        tenant: TenantId,
        experiment: &str,
        evaluators: Vec<Evaluator>,
        progress: mpsc::Sender<EvalProgress>,
    ) -> Result<EvalProgress, ApiError> {
        let project = find_experiment(self.store.as_ref(), tenant, experiment).await?;
        let mut runs: Vec<Run> = Vec::new();
        let mut cursor = None;
        loop {
            let q = RunQuery { projects: vec![project.id], is_root: Some(true), limit: PAGE, cursor, ..Default::default() };
            let page = self.store.query_runs(tenant, &q).await.map_err(storage_error)?;
            runs.extend(page.runs.into_iter().filter(|r| r.reference_example_id.is_some()));
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        if runs.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "{:?} has no runs that cite dataset examples: it is not an experiment",
                project.name
            )));
        }
        let mut state =
            EvalProgress { experiment_id: Some(project.id.0), total: (runs.len() * evaluators.len()) as u64, ..Default::default() };
        let _ = progress.send(state.clone()).await;
        let mut references: HashMap<Uuid, Option<Value>> = HashMap::new();
        for chunk in runs.chunks(PUBLISH_BATCH / evaluators.len().max(1) + 1) {
            // Reference outputs of the chunk's examples, read once each.
            for r in chunk {
                let ex = r.reference_example_id.expect("filtered");
                if let std::collections::hash_map::Entry::Vacant(v) = references.entry(ex) {
                    let example = self.store.get_example(tenant, ExampleId(ex), None).await.map_err(storage_error)?;
                    v.insert(example.and_then(|e| e.outputs.map(|o| o.to_value_or_null())));
                }
            }
            let mut todo = Vec::new();
            for r in chunk {
                for e in &evaluators {
                    let id = result_id(r.id, e);
                    if self.store.get_feedback(tenant, id).await.map_err(storage_error)?.is_some() {
                        state.skipped += 1;
                        continue;
                    }
                    let reference = references.get(&r.reference_example_id.expect("filtered")).cloned().flatten();
                    if r.outputs.is_none() || (e.needs_reference() && reference.is_none()) {
                        state.unscorable += 1;
                        continue;
                    }
                    let input = ScoreInput {
                        inputs: r.inputs.as_ref().map_or(Value::Null, sextant_core::RawJson::to_value_or_null),
                        outputs: r.outputs.as_ref().map_or(Value::Null, sextant_core::RawJson::to_value_or_null),
                        reference,
                    };
                    todo.push(((r.id, r.trace_id.unwrap_or(r.id)), e.clone(), id, input));
                }
            }
            let experiment_id = project.id.0;
            let results: Vec<Option<(Feedback, bool, f64)>> = futures::stream::iter(todo)
                .map(move |(run, e, id, input)| async move {
                    let outcome = e.score(&input).await;
                    result_feedback(experiment_id, run, &e, id, outcome)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let mut entries = Vec::with_capacity(results.len());
            for (f, ok, cost) in results.into_iter().flatten() {
                if ok {
                    state.scored += 1;
                } else {
                    state.errors += 1;
                }
                state.cost_usd += cost;
                entries.push(f);
            }
            if !entries.is_empty() {
                self.feedback.create_validated(tenant, entries).await?;
            }
            let _ = progress.send(state.clone()).await;
        }
        state.done = true;
        info!(scored = state.scored, skipped = state.skipped, errors = state.errors, cost_usd = state.cost_usd, "evaluation run finished");
        metrics::counter!("sextant_evaluator_results_total", "outcome" => "scored").increment(state.scored);
        metrics::counter!("sextant_evaluator_results_total", "outcome" => "error").increment(state.errors);
        let _ = progress.send(state.clone()).await;
        Ok(state)
    }
}

/// One result as a feedback entry: `(entry, scored, cost)`; `None` if it cannot be encoded
/// (never expected: the fields are ours).
pub(crate) fn result_feedback(
    experiment: Uuid,
    (run_id, trace_id): (RunId, RunId),
    e: &Evaluator,
    id: FeedbackId,
    outcome: Result<crate::scorers::ScoreOutput, crate::scorers::ScoreError>,
) -> Option<(Feedback, bool, f64)> {
    let (score, value, comment, cost, ok) = match outcome {
        Ok(s) => (json!(s.score), Value::Null, s.comment, s.cost.map(|c| json!(c)), true),
        Err(err) => {
            let kind = format!("{:?}", err.kind).to_lowercase();
            let comment = format!("evaluator error ({kind}): {}", err.message);
            (Value::Null, json!({"error": err.message, "kind": kind}), comment, err.cost.map(|c| json!(c)), false)
        }
    };
    let cost_usd = cost.as_ref().and_then(|c| c.get("usd")).and_then(Value::as_f64).unwrap_or(0.0);
    let body = json!({
        "id": id.0,
        "run_id": run_id,
        "trace_id": trace_id,
        "session_id": experiment,
        "key": e.key(),
        "score": score,
        "value": value,
        "comment": comment,
        "feedback_source": {"type": FEEDBACK_SOURCE_TYPE, "metadata": {"evaluator": e.kind(), "server_side": true, "config": e.config(), "cost": cost}},
    });
    match Feedback::from_wire(&body, id, Timestamp::now()) {
        Ok(f) => Some((f, ok, cost_usd)),
        Err(err) => {
            warn!(error = %err, key = e.key(), "an evaluator result could not be recorded");
            None
        }
    }
}
