//! Datasets: versioned sets of examples, the team's regression suite.
//!
//! A dataset is event-sourced. Every write (one request: create, bulk create, update, delete)
//! is one [`DatasetChange`] stamped with a version time `as_of`; an example's history is the
//! list of its versions, and the dataset "as of" a time is, for every example, its newest
//! version at or before that time (absent if that version is a deletion). Replaying the
//! changes in any order, any number of times, gives the same history.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DatasetId, ExampleId, ProjectId, RawJson, RunId, Timestamp};

/// The split an example is in when none is given (LangSmith's default).
pub const DEFAULT_SPLIT: &str = "base";
/// Where an example's splits live, as LangSmith keeps them.
pub const SPLIT_KEY: &str = "dataset_split";
pub const MAX_DATASET_NAME_BYTES: usize = 512;
pub const MAX_TAG_BYTES: usize = 128;
pub const MAX_SPLIT_BYTES: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    Kv,
    Llm,
    Chat,
}

impl DataType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kv" => Some(Self::Kv),
            "llm" => Some(Self::Llm),
            "chat" => Some(Self::Chat),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kv => "kv",
            Self::Llm => "llm",
            Self::Chat => "chat",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub id: DatasetId,
    pub name: String,
    pub description: Option<String>,
    pub data_type: DataType,
    /// JSON Schemas every example's inputs and outputs must satisfy.
    pub inputs_schema: Option<RawJson>,
    pub outputs_schema: Option<RawJson>,
    pub transformations: Option<RawJson>,
    /// `extra.metadata` as the SDK sends it.
    pub metadata: Option<RawJson>,
    pub created_at: Timestamp,
    pub modified_at: Timestamp,
    /// Rules that add matching runs as they happen.
    pub rules: Vec<CurationRule>,
    /// Server-side evaluators that score every experiment run against this dataset, every
    /// version of each kept (the active one scores).
    #[serde(default)]
    pub evaluators: Vec<DatasetEvaluator>,
}

/// One version of an evaluator configured on a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetEvaluator {
    pub key: String,
    /// 1 for the first config under this key, then one more per change.
    pub version: u32,
    /// The evaluator's JSON config (the evaluator service parses it).
    pub config: RawJson,
    pub created_at: Timestamp,
    /// Whether this version scores new runs (the latest of its key, unless retired).
    pub active: bool,
}

/// A file attached to an example; the bytes are stored once, by content hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExampleAttachment {
    pub name: String,
    pub mime_type: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes: the blob's key.
    pub sha256: String,
}

/// One version of an example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub id: ExampleId,
    pub dataset_id: DatasetId,
    /// A JSON object.
    pub inputs: RawJson,
    /// A JSON object, or absent.
    pub outputs: Option<RawJson>,
    /// A JSON object; `dataset_split` holds the splits.
    pub metadata: RawJson,
    pub source_run_id: Option<RunId>,
    pub attachments: Vec<ExampleAttachment>,
    pub created_at: Timestamp,
    /// The version that wrote this state.
    pub modified_at: Timestamp,
}

impl Example {
    /// The splits the example is in (`metadata.dataset_split`; "base" when unset).
    pub fn splits(&self) -> Vec<String> {
        splits_of(&self.metadata.to_value_or_null())
    }

    /// Whether its metadata has every key of `want` with an equal value.
    pub fn metadata_matches(&self, want: &Map<String, Value>) -> bool {
        let md = self.metadata.to_value_or_null();
        want.iter().all(|(k, v)| md.get(k) == Some(v))
    }

    /// What a version compares by: everything a user can change.
    pub fn same_content(&self, other: &Example) -> bool {
        self.inputs == other.inputs
            && self.outputs == other.outputs
            && self.metadata == other.metadata
            && self.source_run_id == other.source_run_id
            && self.attachments == other.attachments
    }
}

pub fn splits_of(metadata: &Value) -> Vec<String> {
    match metadata.get(SPLIT_KEY) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => vec![DEFAULT_SPLIT.to_owned()],
    }
}

/// A hex SHA-256 of a JSON document's canonical form (keys sorted, no whitespace): two inputs
/// with the same content hash alike however they were formatted.
pub fn content_hash(doc: &RawJson) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's map is ordered by key (no `preserve_order`), so this is canonical. A stored
    // document that cannot be read hashes by its text.
    let canonical = doc.to_value().map_or_else(|_| doc.as_str().to_owned(), |v| v.to_string());
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// One example's change in a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExampleChange {
    Put(Example),
    Delete(ExampleId),
}

impl ExampleChange {
    pub fn id(&self) -> ExampleId {
        match self {
            Self::Put(e) => e.id,
            Self::Delete(id) => *id,
        }
    }
}

/// A change to a dataset: the payload of `DatasetChangedV1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DatasetChange {
    /// Created, or its definition (name, description, schemas, rules) replaced. The newest
    /// `modified_at` wins.
    Put(Dataset),
    Delete {
        id: DatasetId,
        at: Timestamp,
    },
    /// A new version: these examples written or removed at `as_of`.
    Examples {
        dataset_id: DatasetId,
        as_of: Timestamp,
        changes: Vec<ExampleChange>,
    },
    /// Points `tag` at the version `as_of`; the newest `at` wins.
    Tag {
        dataset_id: DatasetId,
        tag: String,
        as_of: Timestamp,
        at: Timestamp,
    },
}

impl DatasetChange {
    pub fn dataset_id(&self) -> DatasetId {
        match self {
            Self::Put(d) => d.id,
            Self::Delete { id, .. } => *id,
            Self::Examples { dataset_id, .. } | Self::Tag { dataset_id, .. } => *dataset_id,
        }
    }
}

/// A version of a dataset and the tags pointing at it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetVersion {
    pub as_of: Timestamp,
    pub tags: Vec<String>,
}

/// What changed between two versions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionDiff {
    pub added: Vec<ExampleId>,
    pub removed: Vec<ExampleId>,
    pub modified: Vec<ExampleId>,
}

/// Which runs become examples: the filter language over runs, in a time window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSelection {
    /// A run filter (`and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))`); empty
    /// means every run.
    pub filter: String,
    pub project_ids: Vec<ProjectId>,
    /// Only runs that started at or after / before these times.
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub root_only: bool,
}

/// Adds every finished run matching `selection` to the dataset, as runs and feedback arrive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurationRule {
    pub id: uuid::Uuid,
    pub selection: RunSelection,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// A server-side curation job and its progress, pollable while it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurationJob {
    pub id: uuid::Uuid,
    pub dataset_id: DatasetId,
    pub selection: RunSelection,
    pub state: JobState,
    /// Runs looked at, and of those: matched the filter, added, skipped.
    pub scanned: u64,
    pub matched: u64,
    pub added: u64,
    pub skipped_no_io: u64,
    pub skipped_duplicate: u64,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// The version the job's examples were written in (one per batch; the last one).
    pub as_of: Option<Timestamp>,
    /// How much of the time window has been scanned, 0 to 1 (runs are read newest first);
    /// `None` while unknown (no `start_time`: the window's far end is the first run).
    #[serde(default)]
    pub progress: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_ignores_formatting_and_key_order() {
        let a = RawJson::parse(r#"{"q": "refund?", "ctx": {"b": 1, "a": [1, 2]}}"#).unwrap();
        let b = RawJson::parse(r#"{"ctx":{"a":[1,2],"b":1},"q":"refund?"}"#).unwrap();
        let c = RawJson::parse(r#"{"ctx":{"a":[2,1],"b":1},"q":"refund?"}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn splits_default_to_base() {
        assert_eq!(splits_of(&serde_json::json!({})), ["base"]);
        assert_eq!(splits_of(&serde_json::json!({"dataset_split": "test"})), ["test"]);
        assert_eq!(splits_of(&serde_json::json!({"dataset_split": ["train", "test"]})), ["train", "test"]);
    }
}
