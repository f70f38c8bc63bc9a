//! What a filter is evaluated against: the [`Record`] trait, and its implementation over a
//! stored [`Run`] plus its feedback ([`RunView`]).

use std::cell::OnceCell;

use serde_json::Value;
use sextant_core::{RawJson, Run, RunId, Timestamp};

use crate::ast::{Doc, IdField, NumberField, TextField, TimeField};

/// One feedback entry of a run, as the feedback fields (`feedback_key`, `feedback_score`,
/// `feedback_value`, `feedback_source`) see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedbackRow {
    pub key: String,
    /// Boolean scores are stored as 1.0 / 0.0 (see [`score_from_json`]).
    pub score: Option<f64>,
    pub value: Option<Value>,
    /// The source type (`feedback_source.type`), e.g. `"api"`, `"model"`, `"app"`.
    pub source: Option<String>,
}

impl From<&sextant_core::Feedback> for FeedbackRow {
    fn from(f: &sextant_core::Feedback) -> Self {
        Self {
            key: f.key.clone(),
            score: f.score.map(sextant_core::feedback::Score::as_f64),
            value: f.value.as_ref().and_then(|v| v.to_value().ok()),
            source: f.source_type(),
        }
    }
}

/// A feedback score as the SDK sends it (number or boolean) to the number filters compare.
pub fn score_from_json(score: &Value) -> Option<f64> {
    match score {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// The metadata keys that name a run's thread, in order of precedence (LangSmith's rule).
pub const THREAD_KEYS: [&str; 3] = ["thread_id", "session_id", "conversation_id"];

/// The thread a run belongs to: the first of [`THREAD_KEYS`] in `extra.metadata` that holds
/// a non-empty string.
pub fn thread_id(run: &Run) -> Option<&str> {
    let metadata = run.extra.get("metadata")?.as_object()?;
    THREAD_KEYS.iter().find_map(|k| metadata.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
}

/// A run as seen by a filter. Storage adapters may implement it over their own row types;
/// only the parts [`crate::Filter::needs`] names are ever asked for.
///
/// Absent values are `None`; a filter compares them as missing (`eq(x, null)` holds).
pub trait Record {
    /// `name`, `run_type`, `status` (`"success"`, `"error"` or `"pending"`), `error`
    /// (`None` unless the run failed with a non-empty error) and `thread_id` ([`thread_id`]).
    fn text(&self, field: TextField) -> Option<&str>;
    /// `id`, `trace_id`, `parent_run_id`, `session_id`, `reference_example_id`, each a UUID
    /// carried in a [`RunId`]. `trace_id` is [`Run::trace`]: a root without one is its own
    /// trace. Indexes serving [`crate::Hint::TraceIds`] must use the same rule.
    fn id(&self, field: IdField) -> Option<RunId>;
    fn time(&self, field: TimeField) -> Option<Timestamp>;
    /// Latencies in seconds, token counts, costs, and `execution_order` (1 for roots, else 2).
    fn number(&self, field: NumberField) -> Option<f64>;
    fn is_root(&self) -> bool;
    fn tags(&self) -> &[String];
    /// `extra.metadata`, the inputs or the outputs. Inputs and outputs may be parsed on
    /// first use; an implementation should cache the result.
    fn document(&self, doc: Doc) -> Option<&Value>;
    /// The run's feedback entries.
    fn feedback(&self) -> &[FeedbackRow];
}

/// A [`Run`] and its feedback, evaluated in place. Inputs and outputs are parsed at most
/// once, and only if the filter looks at them.
pub struct RunView<'a> {
    run: &'a Run,
    feedback: &'a [FeedbackRow],
    inputs: OnceCell<Option<Value>>,
    outputs: OnceCell<Option<Value>>,
}

impl<'a> RunView<'a> {
    /// `feedback` may be empty when the filter does not need it ([`crate::Needs::feedback`]).
    pub fn new(run: &'a Run, feedback: &'a [FeedbackRow]) -> Self {
        Self { run, feedback, inputs: OnceCell::new(), outputs: OnceCell::new() }
    }

    pub fn run(&self) -> &'a Run {
        self.run
    }
}

/// Parses stored JSON text. Text is validated when it is first accepted, but a corrupt value
/// must not take the server down, so it reads as absent.
fn parse_raw(raw: Option<&RawJson>) -> Option<Value> {
    serde_json::from_str(raw?.as_str()).ok()
}

fn secs_between(from: Option<Timestamp>, to: Option<Timestamp>) -> Option<f64> {
    Some((to?.micros() - from?.micros()) as f64 / 1e6)
}

impl Record for RunView<'_> {
    fn text(&self, field: TextField) -> Option<&str> {
        match field {
            TextField::Name => self.run.name.as_deref(),
            TextField::RunType => self.run.run_type.as_deref(),
            TextField::Status => Some(self.run.status().as_str()),
            TextField::Error => self.run.error.as_deref().filter(|e| !e.is_empty()),
            TextField::ThreadId => thread_id(self.run),
        }
    }

    fn id(&self, field: IdField) -> Option<RunId> {
        match field {
            IdField::Id => Some(self.run.id),
            IdField::TraceId => Some(self.run.trace()),
            IdField::ParentRunId => self.run.parent_run_id,
            IdField::SessionId => Some(RunId(self.run.project_id.0)),
            IdField::ReferenceExampleId => self.run.reference_example_id.map(RunId),
        }
    }

    fn time(&self, field: TimeField) -> Option<Timestamp> {
        match field {
            TimeField::StartTime => self.run.start_time,
            TimeField::EndTime => self.run.end_time,
        }
    }

    fn number(&self, field: NumberField) -> Option<f64> {
        let r = self.run;
        match field {
            NumberField::Latency => r.latency_secs(),
            NumberField::FirstTokenTime => secs_between(r.start_time, r.first_token_time),
            NumberField::TotalTokens => r.total_tokens.map(|n| n as f64),
            NumberField::PromptTokens => r.prompt_tokens.map(|n| n as f64),
            NumberField::CompletionTokens => r.completion_tokens.map(|n| n as f64),
            NumberField::TotalCost => r.total_cost,
            NumberField::PromptCost => r.prompt_cost,
            NumberField::CompletionCost => r.completion_cost,
            NumberField::ExecutionOrder => Some(if r.is_root() { 1.0 } else { 2.0 }),
        }
    }

    fn is_root(&self) -> bool {
        self.run.is_root()
    }

    fn tags(&self) -> &[String] {
        &self.run.tags
    }

    fn document(&self, doc: Doc) -> Option<&Value> {
        match doc {
            Doc::Metadata => self.run.extra.get("metadata"),
            Doc::Inputs => self.inputs.get_or_init(|| parse_raw(self.run.inputs.as_ref())).as_ref(),
            Doc::Outputs => self.outputs.get_or_init(|| parse_raw(self.run.outputs.as_ref())).as_ref(),
        }
    }

    fn feedback(&self) -> &[FeedbackRow] {
        self.feedback
    }
}
