//! How runs and projects look on the wire (spec §13): the JSON the SDK's pydantic models
//! parse. Runs are serialised field by field so `select` costs nothing and large JSON values
//! are copied verbatim, never re-parsed.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

use sextant_core::{FeedbackStats, Project, Run, TenantId, Timestamp};
use sextant_storage::ProjectStats;

use crate::core::RunStats;
use crate::signing::UrlSigner;

/// Fields always returned, whatever `select` says: the SDK's Run model requires them.
const REQUIRED: [&str; 5] = ["id", "name", "run_type", "start_time", "trace_id"];

/// Which run fields a response includes.
#[derive(Debug, Clone, Default)]
pub struct Select(Option<Vec<String>>);

impl Select {
    pub fn all() -> Self {
        Self(None)
    }
    pub fn only(fields: Vec<String>) -> Self {
        if fields.is_empty() {
            Self(None)
        } else {
            Self(Some(fields))
        }
    }
    pub fn wants(&self, field: &str) -> bool {
        match &self.0 {
            None => true,
            Some(f) => REQUIRED.contains(&field) || f.iter().any(|s| s == field),
        }
    }
}

pub struct RunJson<'a> {
    pub run: &'a Run,
    pub tenant: TenantId,
    pub select: &'a Select,
    pub signer: &'a UrlSigner,
    pub feedback_stats: Option<&'a FeedbackStats>,
}

fn iso(t: Option<Timestamp>) -> Option<String> {
    t.map(Timestamp::to_iso)
}

impl Serialize for RunJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.run;
        let mut m = s.serialize_map(None)?;
        macro_rules! field {
            ($name:literal, $value:expr) => {
                if self.select.wants($name) {
                    m.serialize_entry($name, &$value)?;
                }
            };
        }
        let start = r.start_time.or(r.end_time).unwrap_or(Timestamp(0));
        field!("id", r.id);
        field!("name", r.name.as_deref().unwrap_or(""));
        field!("run_type", r.run_type.as_deref().unwrap_or("chain"));
        field!("start_time", start.to_iso());
        field!("end_time", iso(r.end_time));
        field!("trace_id", r.trace());
        field!("dotted_order", r.dotted_order_or_default());
        field!("parent_run_id", r.parent_run_id);
        field!("parent_run_ids", r.parent_run_ids());
        field!("session_id", r.project_id);
        field!("status", r.status().as_str());
        field!("inputs", r.inputs.as_ref().map(|j| j.as_raw()).unwrap_or_else(|| empty_object()));
        field!("outputs", r.outputs.as_ref().map(|j| j.as_raw()));
        field!("error", r.error.as_deref());
        field!("events", r.events.as_ref().map(|j| j.as_raw()));
        field!("serialized", r.serialized.as_ref().map(|j| j.as_raw()));
        field!("extra", &r.extra);
        field!("tags", &r.tags);
        field!("reference_example_id", r.reference_example_id);
        field!("first_token_time", iso(r.first_token_time));
        field!("prompt_tokens", r.prompt_tokens);
        field!("completion_tokens", r.completion_tokens);
        field!("total_tokens", r.total_tokens);
        field!("prompt_cost", r.prompt_cost);
        field!("completion_cost", r.completion_cost);
        field!("total_cost", r.total_cost);
        field!("feedback_stats", self.feedback_stats.map(FeedbackStats::to_json));
        field!("child_run_ids", Option::<Value>::None);
        field!("in_dataset", false);
        // LangSmith's thread: `metadata.thread_id`, else `session_id`, else `conversation_id`.
        field!("thread_id", sextant_filter::thread_id(r));
        if self.select.wants("app_path") {
            let path =
                format!("/o/{}/projects/p/{}/r/{}?trace_id={}&start_time={}", self.tenant, r.project_id, r.id, r.trace(), start.to_iso());
            m.serialize_entry("app_path", &path)?;
        }
        if self.select.wants("s3_urls") {
            let mut urls = serde_json::Map::new();
            for a in &r.attachments {
                urls.insert(
                    format!("attachment.{}", a.name),
                    json!({"presigned_url": self.signer.attachment_url(self.tenant, r.id, &a.name), "mime_type": a.mime_type}),
                );
            }
            m.serialize_entry("s3_urls", &urls)?;
        }
        m.end()
    }
}

fn empty_object() -> &'static serde_json::value::RawValue {
    static EMPTY: std::sync::OnceLock<Box<serde_json::value::RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| serde_json::value::RawValue::from_string("{}".into()).expect("valid JSON"))
}

/// A TracerSession (project), with stats when asked for.
pub fn project_json(p: &Project, stats: Option<&ProjectStats>) -> Value {
    let mut v = json!({
        "id": p.id,
        "tenant_id": p.tenant_id,
        "name": p.name,
        "description": p.description,
        "extra": p.extra,
        "reference_dataset_id": p.reference_dataset_id,
        "default_dataset_id": null,
        "start_time": p.start_time.to_iso(),
        "end_time": iso(p.end_time),
        "trace_tier": null,
    });
    let obj = v.as_object_mut().expect("an object");
    for (k, val) in &p.experiment {
        obj.entry(k.clone()).or_insert_with(|| val.clone());
    }
    if let Some(s) = stats {
        let error_rate = if s.run_count == 0 { 0.0 } else { s.error_count as f64 / s.run_count as f64 };
        obj.insert("run_count".into(), json!(s.run_count));
        obj.insert("latency_p50".into(), json!(s.latency_p50));
        obj.insert("latency_p99".into(), json!(s.latency_p99));
        obj.insert("first_token_p50".into(), json!(s.first_token_p50));
        obj.insert("first_token_p99".into(), json!(s.first_token_p99));
        obj.insert("total_tokens".into(), json!(s.total_tokens));
        obj.insert("prompt_tokens".into(), json!(s.prompt_tokens));
        obj.insert("completion_tokens".into(), json!(s.completion_tokens));
        obj.insert("total_cost".into(), json!(s.total_cost));
        obj.insert("prompt_cost".into(), json!(s.prompt_cost));
        obj.insert("completion_cost".into(), json!(s.completion_cost));
        obj.insert("last_run_start_time".into(), json!(iso(s.last_run_start_time)));
        obj.insert("error_rate".into(), json!(error_rate));
        obj.insert("feedback_stats".into(), s.feedback.to_json());
        obj.insert("session_feedback_stats".into(), json!({}));
        obj.insert("run_facets".into(), json!([]));
    }
    v
}

/// Nearest-rank percentile (`q` in 0..=1) of the values, `None` when there are none.
fn percentile<T: Copy + PartialOrd>(v: &mut [T], q: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Some(v[((v.len() - 1) as f64 * q).round() as usize])
}

/// `POST /runs/stats`: LangSmith's `RunStats` (latencies in seconds, costs in USD). The
/// per-category token and cost details are not tracked, so they are `null`.
pub fn run_stats_json(mut s: RunStats) -> Value {
    let rate = |n: u64| (s.run_count > 0).then(|| n as f64 / s.run_count as f64);
    let sum = |v: &[i64]| v.iter().sum::<i64>();
    json!({
        "run_count": s.run_count,
        "latency_p50": percentile(&mut s.latencies, 0.5),
        "latency_p99": percentile(&mut s.latencies, 0.99),
        "first_token_p50": percentile(&mut s.first_tokens, 0.5),
        "first_token_p99": percentile(&mut s.first_tokens, 0.99),
        "total_tokens": sum(&s.total_tokens),
        "prompt_tokens": sum(&s.prompt_tokens),
        "completion_tokens": sum(&s.completion_tokens),
        "median_tokens": percentile(&mut s.total_tokens, 0.5),
        "tokens_p99": percentile(&mut s.total_tokens, 0.99),
        "prompt_tokens_p50": percentile(&mut s.prompt_tokens, 0.5),
        "prompt_tokens_p99": percentile(&mut s.prompt_tokens, 0.99),
        "completion_tokens_p50": percentile(&mut s.completion_tokens, 0.5),
        "completion_tokens_p99": percentile(&mut s.completion_tokens, 0.99),
        "total_cost": s.total_costs.iter().sum::<f64>(),
        "prompt_cost": s.prompt_cost,
        "completion_cost": s.completion_cost,
        "cost_p50": percentile(&mut s.total_costs, 0.5),
        "cost_p99": percentile(&mut s.total_costs, 0.99),
        "last_run_start_time": iso(s.last_run_start_time),
        "error_rate": rate(s.error_count),
        "streaming_rate": rate(s.streamed_count),
        "feedback_stats": s.feedback.to_json(),
        "run_facets": [],
        "prompt_token_details": null,
        "completion_token_details": null,
        "prompt_cost_details": null,
        "completion_cost_details": null,
    })
}
