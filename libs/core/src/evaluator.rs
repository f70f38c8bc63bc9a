//! Online evaluators (LangSmith's `/platform/evaluators`): a named LLM, code or decision-model
//! evaluator of a workspace. A change is a whole new version; a delete is a version marked
//! `deleted`. Stores keep the version with the newest `updated_at`, so redelivered and
//! reordered versions converge.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{RawJson, Timestamp};

/// What kind of evaluator it is (the wire's `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineEvaluatorKind {
    Llm,
    Code,
    DecisionModel,
}

impl OnlineEvaluatorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Code => "code",
            Self::DecisionModel => "decision_model",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "llm" => Some(Self::Llm),
            "code" => Some(Self::Code),
            "decision_model" => Some(Self::DecisionModel),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineEvaluatorDef {
    pub id: Uuid,
    pub name: String,
    pub kind: OnlineEvaluatorKind,
    /// The `llm_evaluator` object as validated (prompt repo handle, commit or tag, variable
    /// mapping, model configuration id).
    #[serde(default)]
    pub llm: Option<RawJson>,
    /// The `code_evaluator` object as validated (code, language, dependencies, ...).
    #[serde(default)]
    pub code: Option<RawJson>,
    #[serde(default)]
    pub metadata: Option<RawJson>,
    #[serde(default)]
    pub deleted: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
