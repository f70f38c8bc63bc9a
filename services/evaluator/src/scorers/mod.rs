//! Server-side evaluators: a JSON config in, a score with an explaining comment out.
//!
//! An evaluator is configured per dataset or project as a JSON object (`{"type": "keywords",
//! "key": "mentions_policy", ...}`), parsed once by [`parse_evaluator`] into a cheap-to-clone
//! [`Evaluator`], then run over many [`ScoreInput`]s (a run's inputs and outputs and the
//! example's reference outputs). Each [`ScoreOutput`] becomes feedback with source "model";
//! an evaluator that cannot score returns a [`ScoreError`], which the caller records as an
//! evaluator error and never as a score.
//!
//! * `rules`: deterministic rules (keywords, forbidden phrases, length, regex,
//!   JSON, JSON Schema, exact and fuzzy match, numeric claims).
//! * `judge`: LLM-as-judge through an OpenAI-compatible chat-completions
//!   endpoint, with retries, a shared concurrency limit and cost accounting.
//! * `config`, `text`, `claims`, `template`, `answer`: config reading with errors naming the
//!   field, choosing the text a rule scores, numeric-claim extraction, judge prompt templates,
//!   and parsing the judge's answer.
//!
//! Versioning is the caller's: [`Evaluator::config`] returns the config the evaluator was
//! built from, to be stored with each version and with the feedback it produced.

mod answer;
mod claims;
mod config;
mod judge;
mod rules;
mod template;
mod text;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sextant_core::feedback::MAX_KEY_BYTES;

pub use config::ConfigError;
use config::Fields;
pub use judge::{JudgeRuntime, JudgeSettings, Prices, MAX_SAMPLES};
pub use rules::MAX_PATTERN_BYTES;

/// What an evaluator looks at: a run's inputs and outputs, and the example's reference outputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreInput {
    pub inputs: Value,
    pub outputs: Value,
    /// The example's reference outputs; `None` (or JSON null) when the run has no example.
    #[serde(default)]
    pub reference: Option<Value>,
}

/// The `feedback_source.type` of feedback stored from a [`ScoreOutput`].
pub const FEEDBACK_SOURCE_TYPE: &str = "model";

/// One result, to be stored as feedback with source "model" ([`FEEDBACK_SOURCE_TYPE`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreOutput {
    /// The feedback key (the evaluator's `key`).
    pub key: String,
    pub score: f64,
    /// Why this score: what was missing, found, measured, or the judge's reasoning.
    pub comment: String,
    /// What the LLM judge cost; `None` for rules.
    pub cost: Option<Cost>,
}

/// What judge calls cost, summed over samples and retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub usd: f64,
    /// HTTP requests made, failed attempts included.
    pub calls: u32,
}

impl Cost {
    pub fn add(&mut self, other: &Cost) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.usd += other.usd;
        self.calls += other.calls;
    }
}

/// An evaluator that could not score (timeout, garbage answer, ...): recorded as an error,
/// never as a score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreError {
    pub key: String,
    pub kind: ScoreErrorKind,
    pub message: String,
    /// What the failed judge calls cost (they are billed all the same); `None` for rules.
    pub cost: Option<Cost>,
}

/// Why an evaluator could not score, for callers that treat causes differently (e.g. retry an
/// evaluation later after an endpoint outage, but not after a bad answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreErrorKind {
    /// The run or example lacks what the evaluator needs (a field, a reference output, a
    /// prompt placeholder's path), or is too large for it.
    Input,
    /// Every judge attempt timed out.
    Timeout,
    /// The judge endpoint failed: connection errors, HTTP errors, a malformed response body.
    Endpoint,
    /// The judge answered, but not with a usable score (garbage, out of bounds).
    Answer,
}

impl fmt::Display for ScoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "evaluator `{}` could not score: {}", self.key, self.message)
    }
}

impl std::error::Error for ScoreError {}

/// A parsed evaluator; clones share it.
#[derive(Clone)]
pub struct Evaluator(Arc<Inner>);

struct Inner {
    key: String,
    kind: &'static str,
    config: Value,
    imp: Imp,
}

enum Imp {
    Rule(Box<dyn rules::Rule>),
    Judge(Box<judge::LlmJudge>),
}

/// A score and its explanation, before the key and cost are attached.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Scored {
    pub score: f64,
    pub comment: String,
}

/// Why a rule or the judge failed, before the key is attached.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub kind: ScoreErrorKind,
    pub message: String,
}

impl Failure {
    pub fn input(message: impl Into<String>) -> Self {
        Self { kind: ScoreErrorKind::Input, message: message.into() }
    }
}

impl Evaluator {
    /// The feedback key its results are stored under.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The config's `type` (`"keywords"`, `"llm_judge"`, ...).
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// Whether scoring calls an LLM (slow, billed, rate-limited) rather than running a rule.
    pub fn is_llm(&self) -> bool {
        matches!(self.0.imp, Imp::Judge(_))
    }

    /// Whether it needs the example's reference outputs (exact, fuzzy and numeric-claims
    /// matching, judges whose prompt shows `{reference}`): runs without an example, as in
    /// online evaluation, cannot be scored by it.
    pub fn needs_reference(&self) -> bool {
        match &self.0.imp {
            Imp::Rule(r) => r.needs_reference(),
            Imp::Judge(j) => j.needs_reference(),
        }
    }

    /// The config this evaluator was parsed from, as given (for versioning).
    pub fn config(&self) -> &Value {
        &self.0.config
    }

    pub async fn score(&self, input: &ScoreInput) -> Result<ScoreOutput, ScoreError> {
        let key = self.0.key.clone();
        match &self.0.imp {
            Imp::Rule(rule) => match rule.score(input) {
                Ok(s) => Ok(ScoreOutput { key, score: s.score, comment: text::clamp_comment(s.comment), cost: None }),
                Err(f) => Err(ScoreError { key, kind: f.kind, message: f.message, cost: None }),
            },
            Imp::Judge(judge) => {
                let (result, cost) = judge.score(input).await;
                match result {
                    Ok(s) => Ok(ScoreOutput { key, score: s.score, comment: text::clamp_comment(s.comment), cost: Some(cost) }),
                    Err(f) => Err(ScoreError { key, kind: f.kind, message: f.message, cost: Some(cost) }),
                }
            }
        }
    }
}

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evaluator").field("key", &self.0.key).field("type", &self.0.kind).finish_non_exhaustive()
    }
}

/// The evaluator types, as spelled in a config's `type`.
pub const TYPES: [&str; 10] =
    ["keywords", "forbidden", "length", "regex", "json", "json_schema", "exact_match", "fuzzy_match", "numeric_claims", "llm_judge"];

/// Parses an evaluator config. Errors name the field (`keywords[2]`, `prompt`, ...) and, once
/// known, the evaluator's key; unknown fields are errors, so typos do not pass silently.
pub fn parse_evaluator(config: &Value, judge: &JudgeSettings) -> Result<Evaluator, ConfigError> {
    let mut f = Fields::new(config)?;
    let kind = f.req_str("type")?;
    let kind = TYPES
        .into_iter()
        .find(|t| *t == kind)
        .ok_or_else(|| ConfigError::field("type", format!("unknown evaluator type {kind:?}; expected one of {}", TYPES.join(", "))))?;
    let key = f.req_str("key")?.to_owned();
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ConfigError::field("key", format!("feedback keys are 1 to {MAX_KEY_BYTES} bytes")));
    }
    let imp = parse_imp(kind, &mut f, judge).and_then(|imp| f.finish().map(|()| imp)).map_err(|e| e.with_key(&key))?;
    Ok(Evaluator(Arc::new(Inner { key, kind, config: config.clone(), imp })))
}

fn parse_imp(kind: &str, f: &mut Fields<'_>, judge: &JudgeSettings) -> Result<Imp, ConfigError> {
    Ok(match kind {
        "llm_judge" => Imp::Judge(Box::new(judge::LlmJudge::parse(f, judge)?)),
        _ => Imp::Rule(rules::parse(kind, f)?),
    })
}

/// Parses a list of evaluator configs (a dataset's or project's evaluators). Errors name the
/// entry (`[2].pattern`); keys must be unique, as each names one feedback metric.
pub fn parse_evaluators(configs: &Value, judge: &JudgeSettings) -> Result<Vec<Evaluator>, ConfigError> {
    let list = configs.as_array().ok_or_else(|| ConfigError::whole("expected a list of evaluator configs"))?;
    let mut out: Vec<Evaluator> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let e = parse_evaluator(c, judge).map_err(|e| e.in_list(i))?;
        if out.iter().any(|o| o.key() == e.key()) {
            return Err(ConfigError::field("key", format!("duplicate key {:?}", e.key())).in_list(i));
        }
        out.push(e);
    }
    Ok(out)
}
