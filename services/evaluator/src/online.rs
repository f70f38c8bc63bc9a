//! Online evaluation: rules from the configuration score production runs as they finish.
//!
//! A rule names a run filter (and optionally a project), a sampling rate (decided by a hash
//! of the run id, so a redelivered event samples alike and replicas agree), whether runs with
//! an error are always scored, and evaluators (reference-free ones: production runs have no
//! reference). Results are feedback (source `model`) with ids derived from run, rule and
//! evaluator, so redelivery records nothing twice.
//!
//! A rule may watch its scores: when a key's mean over the latest `size` scores drops more than
//! `drop` below its baseline (fixed, or the mean of the first full window), an
//! `EvaluationAlertV1` event is published and the webhook, if any, is called with the window's
//! runs, lowest scores first. An alert re-arms after `cooldown_secs`. Windows live in the
//! process that consumes the events (one replica per event), so with several replicas each
//! watches its share of the traffic.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Mutex};
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_core::{Feedback, FeedbackId, Run, RunId, TenantId, Timestamp};
use sextant_events::{Envelope, EvaluationAlertV1, Event, Stream};
use sextant_feedback::FeedbackService;
use sextant_filter::Filter;
use sextant_storage::Storage;

use crate::finished::runs_to_score;
use crate::scorers::{parse_evaluator, Evaluator, JudgeSettings, ScoreInput, FEEDBACK_SOURCE_TYPE};

pub const ONLINE_EVALUATOR: &str = "online-evaluator";
/// Retries while a finished run is not stored yet (500 ms apart).
const MAX_DELIVERIES: u32 = 60;

/// One online-evaluation rule, as written in the configuration (`[[online_eval]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineRuleConfig {
    pub name: String,
    /// A run filter; empty scores every finished root run (subject to sampling).
    #[serde(default)]
    pub filter: String,
    /// Only runs of this project (by name).
    #[serde(default)]
    pub project: Option<String>,
    /// Fraction of matching runs scored, 0 to 1.
    #[serde(default = "one")]
    pub sampling_rate: f64,
    /// Score every run that has an error, whatever the sampling.
    #[serde(default)]
    pub always_on_errors: bool,
    /// Evaluator configs (see `scorers`); reference-free only.
    pub evaluators: Vec<Value>,
    #[serde(default)]
    pub window: Option<WindowConfig>,
    /// Called with a JSON alert when a window fires.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Scores per window.
    #[serde(default = "default_window")]
    pub size: usize,
    /// How far below the baseline the window's mean may go before the alert fires.
    pub drop: f64,
    /// A fixed baseline; by default the mean of the first full window.
    #[serde(default)]
    pub baseline: Option<f64>,
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
}

fn default_window() -> usize {
    50
}

fn default_cooldown() -> u64 {
    600
}

struct Rule {
    config: OnlineRuleConfig,
    filter: Option<Filter>,
    evaluators: Vec<Evaluator>,
}

/// A key's recent scores under one rule.
#[derive(Default)]
struct Window {
    scores: VecDeque<(f64, RunId)>,
    baseline: Option<f64>,
    quiet_until: Option<Instant>,
}

pub struct OnlineEvaluator {
    rules: Vec<Rule>,
    store: Arc<dyn Storage>,
    bus: Arc<dyn EventBus>,
    feedback: Arc<FeedbackService>,
    windows: Mutex<HashMap<(TenantId, String, String), Window>>,
    http: reqwest::Client,
}

/// Checks every rule; errors name the rule and the field.
pub fn validate_rules(rules: &[OnlineRuleConfig], judge: &JudgeSettings) -> Result<(), String> {
    compile(rules, judge).map(|_| ())
}

fn compile(rules: &[OnlineRuleConfig], judge: &JudgeSettings) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("online_eval[{i}] ({:?})", r.name);
        if r.name.trim().is_empty() {
            return Err(format!("online_eval[{i}].name: required"));
        }
        if !(0.0..=1.0).contains(&r.sampling_rate) {
            return Err(format!("{at}.sampling_rate: must be between 0 and 1"));
        }
        let filter = match r.filter.trim() {
            "" => None,
            f => Some(sextant_filter::parse(f).map_err(|e| format!("{at}.filter: {e}"))?),
        };
        if r.evaluators.is_empty() {
            return Err(format!("{at}.evaluators: at least one is required"));
        }
        let mut evaluators = Vec::new();
        for (j, c) in r.evaluators.iter().enumerate() {
            let e = parse_evaluator(c, judge).map_err(|e| format!("{at}.evaluators[{j}]: {e}"))?;
            if e.needs_reference() {
                return Err(format!(
                    "{at}.evaluators[{j}]: {:?} compares with a reference output, which production runs do not have",
                    e.key()
                ));
            }
            evaluators.push(e);
        }
        if let Some(w) = &r.window {
            if w.size == 0 || w.size > 100_000 || !(w.drop.is_finite() && w.drop > 0.0) {
                return Err(format!("{at}.window: size must be 1 to 100000 and drop a positive number"));
            }
        }
        if let Some(u) = &r.webhook_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!("{at}.webhook_url: expected an http(s) URL"));
            }
        }
        out.push(Rule { config: r.clone(), filter, evaluators });
    }
    Ok(out)
}

/// Whether the run falls in the sample: a hash of run and rule below the rate.
fn sampled(run: RunId, rule: &str, rate: f64) -> bool {
    let h = Sha256::digest(format!("{}/{rule}", run.0).as_bytes());
    let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
    x < rate
}

impl OnlineEvaluator {
    pub fn new(
        rules: &[OnlineRuleConfig],
        judge: &JudgeSettings,
        store: Arc<dyn Storage>,
        bus: Arc<dyn EventBus>,
        feedback: Arc<FeedbackService>,
    ) -> Result<Arc<Self>, String> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        Ok(Arc::new(Self { rules: compile(rules, judge)?, store, bus, feedback, windows: Mutex::new(HashMap::new()), http }))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    async fn on_event(&self, d: Delivery) {
        let Some((d, tenant, runs)) = runs_to_score(self.store.as_ref(), d, ONLINE_EVALUATOR, |_| true).await else { return };
        let span = info_span!("online_eval", tenant = %tenant, seq = d.sequence);
        for run in &runs {
            if let Err(e) = self.score_run(tenant, run).instrument(span.clone()).await {
                warn!(error = %e, run = %run.id, "online_eval failed; will retry");
                let _ = d.nak(Duration::from_secs(1)).await;
                return;
            }
        }
        let _ = d.ack().await;
    }

    async fn score_run(&self, tenant: TenantId, run: &Run) -> Result<(), String> {
        let mut project_name = None;
        for rule in &self.rules {
            let c = &rule.config;
            if let Some(p) = &c.project {
                if project_name.is_none() {
                    project_name = self.store.get_project(tenant, run.project_id).await.map_err(|e| e.to_string())?.map(|p| p.name);
                }
                if project_name.as_deref() != Some(p.as_str()) {
                    continue;
                }
            }
            let forced = c.always_on_errors && run.error.is_some();
            if !forced && !sampled(run.id, &c.name, c.sampling_rate) {
                continue;
            }
            if let Some(f) = &rule.filter {
                let feedback = if f.needs().feedback {
                    let q = sextant_storage::FeedbackQuery { runs: vec![run.id], limit: 1000, ..Default::default() };
                    self.store.list_feedback(tenant, &q).await.map_err(|e| e.to_string())?
                } else {
                    Vec::new()
                };
                if !f.matches_run(run, &feedback) {
                    continue;
                }
            }
            let input = ScoreInput {
                inputs: run.inputs.as_ref().map_or(Value::Null, sextant_core::RawJson::to_value_or_null),
                outputs: run.outputs.as_ref().map_or(Value::Null, sextant_core::RawJson::to_value_or_null),
                reference: None,
            };
            let mut entries = Vec::new();
            let mut scores = Vec::new();
            for e in &rule.evaluators {
                let id = FeedbackId(Uuid::new_v5(
                    &Uuid::from_u128(0x5e7a_47c0_0e1a_5e70_8000_c0de_c0de_0003),
                    format!("{}/{}/{}", run.id.0, c.name, e.key()).as_bytes(),
                ));
                if self.store.get_feedback(tenant, id).await.map_err(|e| e.to_string())?.is_some() {
                    continue; // redelivered: scored already
                }
                let (score, value, comment) = match e.score(&input).await {
                    Ok(s) => {
                        scores.push((e.key().to_owned(), s.score));
                        (json!(s.score), Value::Null, s.comment)
                    }
                    Err(err) => (Value::Null, json!({"error": err.message}), format!("evaluator error: {}", err.message)),
                };
                let body = json!({
                    "id": id.0, "run_id": run.id, "trace_id": run.trace_id.unwrap_or(run.id), "key": e.key(),
                    "score": score, "value": value, "comment": comment,
                    "feedback_source": {"type": FEEDBACK_SOURCE_TYPE, "metadata": {"online_rule": c.name, "evaluator": e.kind()}},
                });
                match Feedback::from_wire(&body, id, Timestamp::now()) {
                    Ok(f) => entries.push(f),
                    Err(err) => warn!(error = %err, "an online result could not be recorded"),
                }
            }
            if !entries.is_empty() {
                self.feedback.create_validated(tenant, entries).await.map_err(|e| e.message)?;
                metrics::counter!("sextant_online_eval_runs_scored_total").increment(1);
                debug!(rule = %c.name, run = %run.id, "run scored online");
            }
            if let Some(w) = &c.window {
                for (key, score) in scores {
                    self.observe(tenant, c, w, &key, score, run.id).await;
                }
            }
        }
        Ok(())
    }

    async fn observe(&self, tenant: TenantId, rule: &OnlineRuleConfig, w: &WindowConfig, key: &str, score: f64, run: RunId) {
        let alert = {
            let mut windows = self.windows.lock().await;
            let win = windows.entry((tenant, rule.name.clone(), key.to_owned())).or_default();
            win.scores.push_back((score, run));
            while win.scores.len() > w.size {
                win.scores.pop_front();
            }
            if win.scores.len() < w.size {
                return;
            }
            let mean = win.scores.iter().map(|(s, _)| s).sum::<f64>() / w.size as f64;
            let baseline = *win.baseline.get_or_insert(w.baseline.unwrap_or(mean));
            if mean >= baseline - w.drop || win.quiet_until.is_some_and(|t| Instant::now() < t) {
                return;
            }
            win.quiet_until = Some(Instant::now() + Duration::from_secs(w.cooldown_secs));
            let mut runs: Vec<(f64, RunId)> = win.scores.iter().copied().collect();
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            EvaluationAlertV1 {
                rule: rule.name.clone(),
                key: key.to_owned(),
                window_mean: mean,
                baseline,
                window_size: w.size as u32,
                run_ids: runs.into_iter().map(|(_, r)| r).collect(),
                at: Timestamp::now(),
            }
        };
        warn!(rule = %alert.rule, key = %alert.key, window_mean = alert.window_mean, baseline = alert.baseline, "online evaluation alert");
        metrics::counter!("sextant_online_eval_alerts_total").increment(1);
        let webhook = rule.webhook_url.clone();
        if let Err(e) = self.bus.publish(&[Envelope::new(tenant, Event::EvaluationAlertV1(alert.clone()))]).await {
            warn!(error = %e, "could not publish the alert event");
        }
        if let Some(url) = webhook {
            let body = json!({
                "alert": "score_drop", "tenant": tenant, "rule": alert.rule, "key": alert.key,
                "window_mean": alert.window_mean, "baseline": alert.baseline, "window_size": alert.window_size,
                "run_ids": alert.run_ids, "run_links": alert.run_ids.iter().map(|r| format!("/runs/{r}")).collect::<Vec<_>>(),
                "at": alert.at.to_iso(),
            });
            for attempt in 0..3u32 {
                match self.http.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => warn!(status = %r.status(), attempt, "alert webhook refused"),
                    Err(e) => warn!(error = %e, attempt, "alert webhook unreachable"),
                }
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
        }
    }
}

/// Runs the online evaluator until `shutdown` (returns at once without rules).
pub async fn run_online_evaluator(bus: Arc<dyn EventBus>, online: Arc<OnlineEvaluator>, shutdown: watch::Receiver<bool>) {
    if online.is_empty() {
        return;
    }
    info!(rules = online.rules.len(), "online evaluation rules loaded");
    let mut spec = ConsumerSpec::new(ONLINE_EVALUATOR, Stream::RunCompletions);
    spec.max_deliveries = MAX_DELIVERIES;
    let online = &online;
    sextant_bus::consume_batches(bus.as_ref(), spec, 64, shutdown, move |batch| async move {
        for d in batch {
            online.on_event(d).await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_stable_and_near_the_rate() {
        let runs: Vec<RunId> = (0..10_000u128).map(|i| RunId(Uuid::from_u128(i * 7919))).collect();
        let picked = runs.iter().filter(|r| sampled(**r, "persona", 0.1)).count();
        assert!((800..1200).contains(&picked), "{picked}");
        assert!(runs.iter().all(|r| sampled(*r, "persona", 0.1) == sampled(*r, "persona", 0.1)));
        assert!(runs.iter().all(|r| !sampled(*r, "x", 0.0)) && runs.iter().all(|r| sampled(*r, "x", 1.0)));
    }

    #[test]
    fn rules_are_validated_with_the_field_named() {
        let judge = JudgeSettings::default();
        let rule = |v: Value| -> OnlineRuleConfig { serde_json::from_value(v).unwrap() };
        let ok = rule(json!({"name": "len", "evaluators": [{"type": "length", "key": "len", "max": 10}]}));
        assert!(validate_rules(&[ok], &judge).is_ok());
        let bad_rate = rule(json!({"name": "r", "sampling_rate": 2.0, "evaluators": [{"type": "json", "key": "j"}]}));
        assert!(validate_rules(&[bad_rate], &judge).unwrap_err().contains("sampling_rate"));
        let needs_ref = rule(json!({"name": "r", "evaluators": [{"type": "exact_match", "key": "e"}]}));
        assert!(validate_rules(&[needs_ref], &judge).unwrap_err().contains("reference"));
        let bad_filter = rule(json!({"name": "r", "filter": "eq(", "evaluators": [{"type": "json", "key": "j"}]}));
        assert!(validate_rules(&[bad_filter], &judge).unwrap_err().contains(".filter"));
    }
}
