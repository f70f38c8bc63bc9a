//! Comparing two experiments, and the deploy gate built on it.
//!
//! An experiment is a project whose root runs cite dataset examples (`reference_example_id`),
//! as the SDK's `evaluate()` makes it. Each metric is a feedback key (scores; booleans count
//! as 0/1), plus `latency` (seconds, lower is better). Per experiment, a metric's value on an
//! example is the mean over its runs (repetitions); its mean is over the examples scored.
//!
//! The change from baseline to candidate is judged on the examples both scored: a paired
//! bootstrap (resampling examples, so the pairing is kept) gives a confidence interval for the
//! mean difference. IMPROVED or REGRESSED when the interval excludes zero in that direction,
//! NEUTRAL otherwise. The resampling is seeded, so the same data gives the same report.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use sextant_core::{Project, ProjectId, Run, RunId, TenantId};
use sextant_proto::error::storage_error;
use sextant_proto::ApiError;
use sextant_storage::{FeedbackQuery, RunQuery, Storage};

/// The metric computed from runs rather than feedback.
pub const LATENCY: &str = "latency";
/// Runs read per page, and run ids per feedback query.
const PAGE: usize = 1000;
const MAX_RESAMPLES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Two-sided confidence level of the interval, e.g. 0.95.
    pub confidence: f64,
    pub resamples: usize,
    /// Metrics where lower is better (`latency` always is).
    pub lower_is_better: BTreeSet<String>,
    /// The candidate's mean must be at least this (at most, for lower-is-better metrics).
    pub thresholds: BTreeMap<String, f64>,
    /// Whether a latency regression fails the gate. Off by default: latency varies with the
    /// machine and the load, so it is reported, and gated only when asked (or thresholded).
    pub gate_latency: bool,
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            confidence: 0.95,
            resamples: 2000,
            lower_is_better: BTreeSet::new(),
            thresholds: BTreeMap::new(),
            gate_latency: false,
            seed: 0x5e7a47,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Improved,
    Regressed,
    Neutral,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricComparison {
    pub metric: String,
    pub lower_is_better: bool,
    pub baseline_mean: Option<f64>,
    pub candidate_mean: Option<f64>,
    /// Examples each experiment scored on this metric.
    pub baseline_n: usize,
    pub candidate_n: usize,
    /// Examples both scored: what the delta and interval are computed on.
    pub shared_n: usize,
    /// Mean of candidate minus baseline over the shared examples.
    pub delta: Option<f64>,
    /// `delta` relative to the baseline's mean over the shared examples, in percent.
    pub delta_pct: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub verdict: Verdict,
    pub threshold: Option<f64>,
    /// Whether the candidate's mean misses the threshold.
    pub below_threshold: bool,
    /// Whether a regression of this metric fails the gate (latency: only when asked).
    pub gated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: ExperimentRef,
    pub candidate: ExperimentRef,
    pub shared_examples: usize,
    pub confidence: f64,
    pub resamples: usize,
    pub metrics: Vec<MetricComparison>,
    /// True when no metric regressed and none misses its threshold.
    pub passed: bool,
    /// Why the gate fails, one line per reason.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentRef {
    pub id: ProjectId,
    pub name: String,
    pub reference_dataset_id: Option<Uuid>,
    pub runs: usize,
    pub examples: usize,
}

/// Per example, per metric: the values of its runs.
type Scores = HashMap<Uuid, HashMap<String, Vec<f64>>>;

/// An experiment by id or by name.
pub async fn find_experiment(store: &dyn Storage, tenant: TenantId, id_or_name: &str) -> Result<Project, ApiError> {
    let found = match Uuid::parse_str(id_or_name) {
        Ok(id) => store.get_project(tenant, ProjectId(id)).await,
        Err(_) => store.project_by_name(tenant, id_or_name).await,
    }
    .map_err(storage_error)?;
    found.ok_or_else(|| ApiError::not_found(format!("experiment {:?} not found", sextant_proto::truncate(id_or_name))))
}

/// Every root run of the experiment that cites an example, and their feedback scores.
async fn load_scores(store: &dyn Storage, tenant: TenantId, p: &Project) -> Result<(Scores, usize), ApiError> {
    let mut scores: Scores = HashMap::new();
    let mut runs = 0;
    let mut cursor = None;
    loop {
        let q = RunQuery { projects: vec![p.id], is_root: Some(true), limit: PAGE, cursor, ..Default::default() };
        let page = store.query_runs(tenant, &q).await.map_err(storage_error)?;
        let cited: Vec<&Run> = page.runs.iter().filter(|r| r.reference_example_id.is_some()).collect();
        runs += cited.len();
        let example_of: HashMap<RunId, Uuid> = cited.iter().map(|r| (r.id, r.reference_example_id.expect("filtered"))).collect();
        for r in &cited {
            if let Some(l) = r.latency_secs() {
                scores.entry(example_of[&r.id]).or_default().entry(LATENCY.to_owned()).or_default().push(l);
            }
        }
        let ids: Vec<RunId> = example_of.keys().copied().collect();
        for chunk in ids.chunks(PAGE) {
            let mut offset = 0;
            loop {
                let q = FeedbackQuery { runs: chunk.to_vec(), offset, limit: PAGE, ..Default::default() };
                let feedback = store.list_feedback(tenant, &q).await.map_err(storage_error)?;
                for f in &feedback {
                    let (Some(run), Some(score)) = (f.run_id, f.score) else { continue };
                    let Some(example) = example_of.get(&run) else { continue };
                    let v = score.as_f64();
                    if v.is_finite() {
                        scores.entry(*example).or_default().entry(f.key.clone()).or_default().push(v);
                    }
                }
                if feedback.len() < PAGE {
                    break;
                }
                offset += PAGE;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok((scores, runs))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Per example, the mean of its runs' values of `metric`.
fn per_example(scores: &Scores, metric: &str) -> HashMap<Uuid, f64> {
    scores.iter().filter_map(|(e, m)| m.get(metric).filter(|v| !v.is_empty()).map(|v| (*e, mean(v)))).collect()
}

/// A percentile bootstrap interval for the mean of `diffs`, resampling with replacement.
pub fn bootstrap_ci(diffs: &[f64], confidence: f64, resamples: usize, seed: u64) -> (f64, f64) {
    if diffs.len() < 2 {
        let d = diffs.first().copied().unwrap_or(0.0);
        return (d, d);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = diffs.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut sum = 0.0;
            for _ in 0..n {
                sum += diffs[rng.usize(..n)];
            }
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(alpha), at(1.0 - alpha))
}

/// Compares two experiments. Errors when either is unknown, not an experiment (no runs
/// citing examples) or when they share no example.
pub async fn compare(
    store: &dyn Storage,
    tenant: TenantId,
    baseline: &str,
    candidate: &str,
    opts: &CompareOptions,
) -> Result<Comparison, ApiError> {
    if !(0.5..1.0).contains(&opts.confidence) {
        return Err(ApiError::unprocessable("confidence: must be at least 0.5 and below 1"));
    }
    if opts.resamples < 100 || opts.resamples > MAX_RESAMPLES {
        return Err(ApiError::unprocessable(format!("resamples: must be between 100 and {MAX_RESAMPLES}")));
    }
    let (b, c) = (find_experiment(store, tenant, baseline).await?, find_experiment(store, tenant, candidate).await?);
    if b.id == c.id {
        return Err(ApiError::unprocessable("baseline and candidate are the same experiment"));
    }
    let (b_scores, b_runs) = load_scores(store, tenant, &b).await?;
    let (c_scores, c_runs) = load_scores(store, tenant, &c).await?;
    for (p, runs) in [(&b, b_runs), (&c, c_runs)] {
        if runs == 0 {
            return Err(ApiError::unprocessable(format!(
                "{:?} has no runs that cite dataset examples: it is not an experiment (run evaluate() on a dataset)",
                p.name
            )));
        }
    }
    let shared_examples = b_scores.keys().filter(|e| c_scores.contains_key(e)).count();
    if shared_examples == 0 {
        return Err(ApiError::unprocessable(format!(
            "experiments {:?} and {:?} share no example: they cannot be compared (datasets {} and {})",
            b.name,
            c.name,
            b.reference_dataset_id.map_or("none".into(), |d| d.to_string()),
            c.reference_dataset_id.map_or("none".into(), |d| d.to_string()),
        )));
    }
    for k in opts.thresholds.keys() {
        if !c_scores.values().any(|m| m.contains_key(k)) {
            return Err(ApiError::unprocessable(format!("threshold: the candidate has no {k:?} scores")));
        }
    }
    let metrics: BTreeSet<String> = b_scores.values().chain(c_scores.values()).flat_map(|m| m.keys().cloned()).collect();
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for (i, metric) in metrics.iter().enumerate() {
        let lower_is_better = metric == LATENCY || opts.lower_is_better.contains(metric);
        let (bm, cm) = (per_example(&b_scores, metric), per_example(&c_scores, metric));
        let shared: Vec<(f64, f64)> = bm.iter().filter_map(|(e, bv)| cm.get(e).map(|cv| (*bv, *cv))).collect();
        let all_mean = |m: &HashMap<Uuid, f64>| (!m.is_empty()).then(|| m.values().sum::<f64>() / m.len() as f64);
        let (mut delta, mut delta_pct, mut ci) = (None, None, None);
        let mut verdict = Verdict::Neutral;
        if !shared.is_empty() {
            let diffs: Vec<f64> = shared.iter().map(|(b, c)| c - b).collect();
            let d = mean(&diffs);
            let base = mean(&shared.iter().map(|(b, _)| *b).collect::<Vec<_>>());
            delta = Some(d);
            delta_pct = (base.abs() > f64::EPSILON).then(|| 100.0 * d / base.abs());
            let (lo, hi) = bootstrap_ci(&diffs, opts.confidence, opts.resamples, opts.seed.wrapping_add(i as u64));
            ci = Some((lo, hi));
            // Better means up, or down for lower-is-better metrics.
            let (better, worse) = if lower_is_better { (hi < 0.0, lo > 0.0) } else { (lo > 0.0, hi < 0.0) };
            verdict = if better {
                Verdict::Improved
            } else if worse {
                Verdict::Regressed
            } else {
                Verdict::Neutral
            };
        }
        let candidate_mean = all_mean(&cm);
        let threshold = opts.thresholds.get(metric).copied();
        let below_threshold = match (threshold, candidate_mean) {
            (Some(t), Some(m)) => {
                if lower_is_better {
                    m > t
                } else {
                    m < t
                }
            }
            _ => false,
        };
        let gated = metric != LATENCY || opts.gate_latency;
        if verdict == Verdict::Regressed && gated {
            let (lo, hi) = ci.expect("a verdict needs an interval");
            failures.push(format!(
                "{metric} regressed: {:+.4} ({:.0}% interval {lo:+.4} .. {hi:+.4}, {} shared examples)",
                delta.unwrap_or(0.0),
                opts.confidence * 100.0,
                shared.len()
            ));
        }
        if below_threshold {
            let word = if lower_is_better { "above" } else { "below" };
            failures.push(format!(
                "{metric} is {word} its threshold: {:.4} vs {:.4}",
                candidate_mean.unwrap_or(f64::NAN),
                threshold.unwrap_or(f64::NAN)
            ));
        }
        out.push(MetricComparison {
            metric: metric.clone(),
            lower_is_better,
            baseline_mean: all_mean(&bm),
            candidate_mean,
            baseline_n: bm.len(),
            candidate_n: cm.len(),
            shared_n: shared.len(),
            delta,
            delta_pct,
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            verdict,
            threshold,
            below_threshold,
            gated,
        });
    }
    let exp_ref = |p: &Project, runs: usize, s: &Scores| ExperimentRef {
        id: p.id,
        name: p.name.clone(),
        reference_dataset_id: p.reference_dataset_id,
        runs,
        examples: s.len(),
    };
    Ok(Comparison {
        baseline: exp_ref(&b, b_runs, &b_scores),
        candidate: exp_ref(&c, c_runs, &c_scores),
        shared_examples,
        confidence: opts.confidence,
        resamples: opts.resamples,
        metrics: out,
        passed: failures.is_empty(),
        failures,
    })
}

/// The report as a client reads it back (`sextant eval gate`).
pub type ComparisonReport = Comparison;

impl Comparison {
    pub fn render(&self) -> String {
        render(self)
    }
}

/// Options from a JSON body: `{confidence?, resamples?, lower_is_better?: [..],
/// thresholds?: {metric: x}, gate_latency?}`.
pub fn options_from_json(o: &serde_json::Map<String, Value>) -> Result<CompareOptions, ApiError> {
    let mut opts = CompareOptions::default();
    if let Some(v) = o.get("confidence").filter(|v| !v.is_null()) {
        opts.confidence = v.as_f64().ok_or_else(|| ApiError::unprocessable("confidence: expected a number such as 0.95"))?;
    }
    if let Some(v) = o.get("resamples").filter(|v| !v.is_null()) {
        opts.resamples = v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ApiError::unprocessable("resamples: expected a whole number"))?;
    }
    if let Some(v) = o.get("lower_is_better").filter(|v| !v.is_null()) {
        let a = v.as_array().ok_or_else(|| ApiError::unprocessable("lower_is_better: expected a list of metric names"))?;
        for (i, m) in a.iter().enumerate() {
            let m = m.as_str().ok_or_else(|| ApiError::unprocessable(format!("lower_is_better[{i}]: expected a metric name")))?;
            opts.lower_is_better.insert(m.to_owned());
        }
    }
    if let Some(v) = o.get("gate_latency").filter(|v| !v.is_null()) {
        opts.gate_latency = v.as_bool().ok_or_else(|| ApiError::unprocessable("gate_latency: expected true or false"))?;
    }
    if let Some(v) = o.get("thresholds").filter(|v| !v.is_null()) {
        let t = v.as_object().ok_or_else(|| ApiError::unprocessable("thresholds: expected an object {metric: minimum}"))?;
        for (k, x) in t {
            let x = x
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| ApiError::unprocessable(format!("thresholds.{k}: expected a number")))?;
            opts.thresholds.insert(k.clone(), x);
        }
    }
    Ok(opts)
}

/// The report as a plain-text table, for the gate's output.
pub fn render(c: &Comparison) -> String {
    let mut s = format!(
        "baseline  {} ({} runs, {} examples)\ncandidate {} ({} runs, {} examples)\nshared examples: {}; {:.0}% paired bootstrap intervals ({} resamples)\n\n",
        c.baseline.name, c.baseline.runs, c.baseline.examples, c.candidate.name, c.candidate.runs, c.candidate.examples, c.shared_examples,
        c.confidence * 100.0, c.resamples
    );
    s.push_str(&format!(
        "{:<24} {:>10} {:>10} {:>10} {:>8} {:>23} {:>6}  {}\n",
        "metric", "baseline", "candidate", "delta", "delta%", "interval", "n", "verdict"
    ));
    let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for m in &c.metrics {
        let interval = match (m.ci_low, m.ci_high) {
            (Some(lo), Some(hi)) => format!("[{lo:+.4}, {hi:+.4}]"),
            _ => "-".into(),
        };
        let mut verdict = format!("{:?}", m.verdict).to_uppercase();
        if !m.gated {
            verdict.push_str(" (not gated)");
        }
        if m.below_threshold {
            verdict.push_str(&format!(" (threshold {})", num(m.threshold)));
        }
        s.push_str(&format!(
            "{:<24} {:>10} {:>10} {:>10} {:>8} {:>23} {:>6}  {}\n",
            format!("{}{}", m.metric, if m.lower_is_better { " (lower)" } else { "" }),
            num(m.baseline_mean),
            num(m.candidate_mean),
            m.delta.map_or("-".into(), |d| format!("{d:+.4}")),
            m.delta_pct.map_or("-".into(), |d| format!("{d:+.1}%")),
            interval,
            m.shared_n,
            verdict
        ));
    }
    if c.passed {
        s.push_str("\nGATE PASSED: no metric regressed");
        if c.metrics.iter().any(|m| m.threshold.is_some()) {
            s.push_str(" and every threshold is met");
        }
        s.push('\n');
    } else {
        s.push_str("\nGATE FAILED:\n");
        for f in &c.failures {
            s.push_str(&format!("  - {f}\n"));
        }
    }
    s
}

pub fn to_json(c: &Comparison) -> Value {
    serde_json::to_value(c).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_excludes_zero_for_a_clear_shift_and_includes_it_for_noise() {
        let shift: Vec<f64> = (0..50).map(|i| -0.3 + 0.01 * f64::from(i % 5)).collect();
        let (lo, hi) = bootstrap_ci(&shift, 0.95, 2000, 1);
        assert!(hi < 0.0 && lo > -0.3, "{lo} {hi}");
        let noise: Vec<f64> = (0..50).map(|i| if i % 2 == 0 { 0.2 } else { -0.2 }).collect();
        let (lo, hi) = bootstrap_ci(&noise, 0.95, 2000, 1);
        assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
        // Seeded: the same data gives the same interval.
        assert_eq!(bootstrap_ci(&noise, 0.95, 2000, 1), bootstrap_ci(&noise, 0.95, 2000, 1));
    }

    #[test]
    fn options_refuse_wrong_types() {
        let bad = |v: Value| options_from_json(v.as_object().unwrap()).unwrap_err().message;
        assert!(bad(json!({"confidence": "high"})).starts_with("confidence"));
        assert!(bad(json!({"thresholds": {"correct": "x"}})).starts_with("thresholds.correct"));
        assert!(bad(json!({"lower_is_better": "cost"})).starts_with("lower_is_better"));
        let ok = options_from_json(json!({"thresholds": {"correct": 0.8}, "lower_is_better": ["cost"]}).as_object().unwrap()).unwrap();
        assert_eq!(ok.thresholds["correct"], 0.8);
        assert!(ok.lower_is_better.contains("cost"));
    }
}
