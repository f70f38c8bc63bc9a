//! Feedback: what the SDK sends (`POST /feedback`, `feedback.<id>` multipart parts), the
//! rules that validate it, and the per-key aggregates (`feedback_stats`) the stores keep.
//!
//! Aggregates are kept *exact* under any order of creates, updates, deletes and redeliveries:
//! each stored entry contributes a [`Contribution`], and a change applies the difference
//! between the old and the new contribution. Scores are summed in fixed point (1e-4, the
//! precision the SDK rounds to), so adding and then removing a score leaves no residue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{FeedbackId, ProjectId, RawJson, RunId, Timestamp};

/// Longest feedback key, in bytes. Keys name metrics ("correctness", "user_rating").
pub const MAX_KEY_BYTES: usize = 256;
/// Largest score magnitude: keeps the fixed-point sums exact in 64-bit integers.
pub const MAX_SCORE_ABS: f64 = 1e9;
/// Longest comment, in bytes.
pub const MAX_COMMENT_BYTES: usize = 64 * 1024;
/// Largest `value`, `correction`, `feedback_source`, `feedback_config` or `extra`, in bytes.
pub const MAX_DOC_BYTES: usize = 1024 * 1024;

/// A score as the SDK sends it: a number, or a boolean (`evaluate()` sends `true`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Score {
    Bool(bool),
    Number(f64),
}

impl Score {
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Bool(b) => f64::from(u8::from(b)),
            Self::Number(n) => n,
        }
    }

    /// The score in units of 1e-4.
    fn fixed(self) -> i64 {
        (self.as_f64() * 1e4).round() as i64
    }

    pub fn to_json(self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(b),
            Self::Number(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        }
    }

    /// A label for agreement statistics: equal scores give equal labels.
    pub fn label(self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Number(n) => format!("{}", (n * 1e4).round() / 1e4),
        }
    }
}

/// One feedback entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub id: FeedbackId,
    /// Absent for project-level feedback.
    pub run_id: Option<RunId>,
    pub trace_id: Option<RunId>,
    /// The project, as sent (the stores resolve it from the run when absent).
    pub session_id: Option<ProjectId>,
    pub key: String,
    pub score: Option<Score>,
    pub value: Option<RawJson>,
    pub comment: Option<String>,
    pub correction: Option<RawJson>,
    /// `{type, metadata, user_id, user_name}`.
    pub feedback_source: Option<RawJson>,
    pub feedback_config: Option<RawJson>,
    pub created_at: Timestamp,
    pub modified_at: Timestamp,
    pub start_time: Option<Timestamp>,
    pub comparative_experiment_id: Option<Uuid>,
    pub feedback_group_id: Option<Uuid>,
    pub extra: Option<RawJson>,
}

/// One field a `PATCH /feedback/{id}` sets (the SDK sends only the ones given).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FeedbackField {
    Score(Option<Score>),
    Value(Option<RawJson>),
    Comment(Option<String>),
    Correction(Option<RawJson>),
}

impl FeedbackField {
    /// Index into [`FieldStamps`].
    pub fn slot(&self) -> usize {
        match self {
            Self::Score(_) => 0,
            Self::Value(_) => 1,
            Self::Comment(_) => 2,
            Self::Correction(_) => 3,
        }
    }

    pub fn apply(&self, f: &mut Feedback) {
        match self {
            Self::Score(s) => f.score = *s,
            Self::Value(v) => f.value = v.clone(),
            Self::Comment(c) => f.comment = c.clone(),
            Self::Correction(c) => f.correction = c.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidFeedback(pub String);

fn bad(msg: impl Into<String>) -> InvalidFeedback {
    InvalidFeedback(msg.into())
}

fn opt_uuid(obj: &Map<String, Value>, field: &str) -> Result<Option<Uuid>, InvalidFeedback> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Uuid::parse_str(s).map(Some).map_err(|_| bad(format!("{field}: {s:?} is not a UUID"))),
        Some(other) => Err(bad(format!("{field}: expected a UUID string, got {}", kind_of(other)))),
    }
}

fn opt_time(obj: &Map<String, Value>, field: &str) -> Result<Option<Timestamp>, InvalidFeedback> {
    match obj.get(field) {
        None => Ok(None),
        Some(v) => Timestamp::from_json(v).map_err(|e| bad(format!("{field}: {e}"))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON document field, size-checked. `objects_only` refuses scalars (e.g. `feedback_source`).
fn opt_doc(obj: &Map<String, Value>, field: &str, objects_only: bool) -> Result<Option<RawJson>, InvalidFeedback> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if objects_only && !v.is_object() => Err(bad(format!("{field}: expected an object, got {}", kind_of(v)))),
        Some(v) => {
            let raw = RawJson::from_client_value(v).map_err(|e| bad(format!("{field}: {e}")))?;
            if raw.len() > MAX_DOC_BYTES {
                return Err(bad(format!("{field}: larger than {MAX_DOC_BYTES} bytes")));
            }
            Ok(Some(raw))
        }
    }
}

/// Checks a score: a finite number of magnitude at most [`MAX_SCORE_ABS`], a boolean, or null.
pub fn parse_score(v: Option<&Value>) -> Result<Option<Score>, InvalidFeedback> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(Score::Bool(*b))),
        Some(Value::Number(n)) => {
            let f = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| bad("score: not a finite number"))?;
            if f.abs() > MAX_SCORE_ABS {
                return Err(bad(format!("score: {f} is outside ±{MAX_SCORE_ABS}")));
            }
            Ok(Some(Score::Number(f)))
        }
        Some(other) => Err(bad(format!("score: expected a number or a boolean, got {}", kind_of(other)))),
    }
}

pub fn parse_value(v: Option<&Value>) -> Result<Option<RawJson>, InvalidFeedback> {
    let mut m = Map::new();
    if let Some(v) = v {
        m.insert("value".into(), v.clone());
    }
    opt_doc(&m, "value", false)
}

pub fn parse_comment(v: Option<&Value>) -> Result<Option<String>, InvalidFeedback> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_COMMENT_BYTES => Err(bad(format!("comment: longer than {MAX_COMMENT_BYTES} bytes"))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!("comment: expected a string, got {}", kind_of(other)))),
    }
}

pub fn parse_correction(v: Option<&Value>) -> Result<Option<RawJson>, InvalidFeedback> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v @ (Value::Object(_) | Value::String(_))) => {
            let mut m = Map::new();
            m.insert("correction".into(), v.clone());
            opt_doc(&m, "correction", false)
        }
        Some(other) => Err(bad(format!("correction: expected an object or a string, got {}", kind_of(other)))),
    }
}

/// Checks a feedback key: non-empty, at most [`MAX_KEY_BYTES`], no control characters.
pub fn check_key(key: &str) -> Result<(), InvalidFeedback> {
    if key.trim().is_empty() {
        return Err(bad("key: must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(bad(format!("key: longer than {MAX_KEY_BYTES} bytes")));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("key: must not contain control characters"));
    }
    Ok(())
}

impl Feedback {
    /// Validates a feedback object as `POST /feedback` or a multipart part carries it.
    /// `id` is the part's id (multipart) or a fallback for a body without one.
    pub fn from_wire(v: &Value, id: FeedbackId, now: Timestamp) -> Result<Self, InvalidFeedback> {
        let obj = v.as_object().ok_or_else(|| bad(format!("feedback: expected an object, got {}", kind_of(v))))?;
        let key = match obj.get("key") {
            Some(Value::String(k)) => k.clone(),
            None | Some(Value::Null) => return Err(bad("key: required")),
            Some(other) => return Err(bad(format!("key: expected a string, got {}", kind_of(other)))),
        };
        check_key(&key)?;
        let id = match opt_uuid(obj, "id")? {
            Some(body_id) if body_id != id.0 && !id.0.is_nil() => {
                return Err(bad(format!("id: {body_id} differs from the part's id {id}")));
            }
            Some(body_id) => FeedbackId(body_id),
            None if id.0.is_nil() => FeedbackId(Uuid::now_v7()),
            None => id,
        };
        let created_at = opt_time(obj, "created_at")?.unwrap_or(now);
        Ok(Self {
            id,
            run_id: opt_uuid(obj, "run_id")?.map(RunId),
            trace_id: opt_uuid(obj, "trace_id")?.map(RunId),
            session_id: opt_uuid(obj, "session_id")?.map(ProjectId),
            key,
            score: parse_score(obj.get("score"))?,
            value: parse_value(obj.get("value"))?,
            comment: parse_comment(obj.get("comment"))?,
            correction: parse_correction(obj.get("correction"))?,
            feedback_source: opt_doc(obj, "feedback_source", true)?,
            feedback_config: opt_doc(obj, "feedback_config", true)?,
            created_at,
            modified_at: opt_time(obj, "modified_at")?.unwrap_or(created_at),
            start_time: opt_time(obj, "start_time")?,
            comparative_experiment_id: opt_uuid(obj, "comparative_experiment_id")?,
            feedback_group_id: opt_uuid(obj, "feedback_group_id")?,
            extra: opt_doc(obj, "extra", true)?,
        })
    }

    /// `feedback_source.type` (`"api"`, `"model"`, `"app"`, ...).
    pub fn source_type(&self) -> Option<String> {
        let src = self.feedback_source.as_ref()?.to_value().ok()?;
        src.get("type").and_then(Value::as_str).map(str::to_owned)
    }

    /// The `value` as a categorical label (strings, numbers and booleans).
    pub fn value_label(&self) -> Option<String> {
        match self.value.as_ref()?.to_value().ok()? {
            Value::String(s) => Some(s),
            v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
            _ => None,
        }
    }

    /// What this entry adds to its run's and project's `feedback_stats`.
    pub fn contribution(&self) -> Contribution {
        Contribution { key: self.key.clone(), score: self.score.map(Score::fixed), value: self.value_label() }
    }

    /// The object the SDK parses (spec §13): `run_id` and `trace_id` present even when null.
    pub fn to_json(&self) -> Value {
        let raw = |r: &Option<RawJson>| r.as_ref().map_or(Value::Null, RawJson::to_value_or_null);
        let mut source = raw(&self.feedback_source);
        // The SDK's model reads `user_id`/`user_name` at the top of `feedback_source`.
        if let Value::Object(m) = &mut source {
            m.entry("type").or_insert(Value::Null);
            m.entry("metadata").or_insert(Value::Null);
        }
        serde_json::json!({
            "id": self.id,
            "run_id": self.run_id,
            "trace_id": self.trace_id,
            "session_id": self.session_id,
            "key": self.key,
            "score": self.score.map_or(Value::Null, Score::to_json),
            "value": raw(&self.value),
            "comment": self.comment,
            "correction": raw(&self.correction),
            "feedback_source": source,
            "feedback_config": raw(&self.feedback_config),
            "created_at": self.created_at.to_iso(),
            "modified_at": self.modified_at.to_iso(),
            "start_time": self.start_time.map(Timestamp::to_iso),
            "comparative_experiment_id": self.comparative_experiment_id,
            "feedback_group_id": self.feedback_group_id,
            "extra": raw(&self.extra),
        })
    }
}

/// A change to one feedback entry, as the feedback stream carries it.
// Upserts are by far the most common change and each is moved a few times: boxing would add
// an allocation per event to save bytes on the rare patch.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FeedbackChange {
    /// Create (or re-send) the whole entry.
    Upsert(Feedback),
    /// Set some mutable fields.
    Patch {
        id: FeedbackId,
        fields: Vec<FeedbackField>,
        modified_at: Timestamp,
    },
    Delete {
        id: FeedbackId,
    },
}

impl FeedbackChange {
    pub fn id(&self) -> FeedbackId {
        match self {
            Self::Upsert(f) => f.id,
            Self::Patch { id, .. } | Self::Delete { id } => *id,
        }
    }
}

/// Per-field last-writer-wins stamps (event ids, UUIDv7, so time-ordered) for the fields a
/// patch can set, plus the create and delete stamps. A change older than a field's stamp
/// does not touch it, so redelivered or reordered changes converge to the same entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldStamps {
    pub created: Option<Uuid>,
    pub fields: [Option<Uuid>; 4],
    pub deleted: Option<Uuid>,
}

/// A stored feedback entry: the entry (once created), its stamps and the project it counts
/// towards (resolved from the run when the entry does not name one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    pub feedback: Option<Feedback>,
    /// Fields patched before the create arrived.
    pub early_fields: Vec<FeedbackField>,
    pub stamps: FieldStamps,
    pub project: Option<ProjectId>,
}

impl FeedbackRecord {
    pub fn empty() -> Self {
        Self { feedback: None, early_fields: Vec::new(), stamps: FieldStamps::default(), project: None }
    }

    /// Created and not deleted since.
    pub fn alive(&self) -> Option<&Feedback> {
        let f = self.feedback.as_ref()?;
        match (self.stamps.created, self.stamps.deleted) {
            (Some(c), Some(d)) if d >= c => None,
            _ => Some(f),
        }
    }

    /// Applies a change stamped with `stamp` (its event id). Idempotent, and commutative for
    /// changes with distinct stamps.
    pub fn apply(&mut self, stamp: Uuid, change: &FeedbackChange) {
        match change {
            FeedbackChange::Upsert(new) => {
                if self.stamps.created.is_some_and(|c| c >= stamp) {
                    return;
                }
                let mut next = new.clone();
                // Fields set by a newer patch keep the patched value.
                if let Some(cur) = &self.feedback {
                    for (slot, s) in self.stamps.fields.iter().enumerate() {
                        if s.is_some_and(|s| s > stamp) {
                            copy_field(slot, cur, &mut next);
                        }
                    }
                    next.modified_at = next.modified_at.max(cur.modified_at);
                } else {
                    for field in &self.early_fields {
                        if self.stamps.fields[field.slot()].is_some_and(|s| s > stamp) {
                            field.apply(&mut next);
                        }
                    }
                    self.early_fields.clear();
                }
                for s in &mut self.stamps.fields {
                    if s.is_none_or(|s| s < stamp) {
                        *s = Some(stamp);
                    }
                }
                self.stamps.created = Some(stamp);
                self.feedback = Some(next);
            }
            FeedbackChange::Patch { fields, modified_at, .. } => {
                for field in fields {
                    let slot = field.slot();
                    if self.stamps.fields[slot].is_some_and(|s| s >= stamp) {
                        continue;
                    }
                    self.stamps.fields[slot] = Some(stamp);
                    match &mut self.feedback {
                        Some(f) => {
                            field.apply(f);
                            f.modified_at = f.modified_at.max(*modified_at);
                        }
                        None => {
                            self.early_fields.retain(|e| e.slot() != slot);
                            self.early_fields.push(field.clone());
                        }
                    }
                }
            }
            FeedbackChange::Delete { .. } => {
                if self.stamps.deleted.is_none_or(|d| d < stamp) {
                    self.stamps.deleted = Some(stamp);
                }
            }
        }
    }
}

fn copy_field(slot: usize, from: &Feedback, to: &mut Feedback) {
    match slot {
        0 => to.score = from.score,
        1 => to.value = from.value.clone(),
        2 => to.comment = from.comment.clone(),
        _ => to.correction = from.correction.clone(),
    }
}

/// What one live entry adds to `feedback_stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contribution {
    pub key: String,
    /// Score in units of 1e-4.
    pub score: Option<i64>,
    pub value: Option<String>,
}

/// Aggregates of one feedback key. Sums are fixed point, so they are exact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    /// Entries with this key.
    pub n: i64,
    /// Entries with a score.
    pub scored: i64,
    /// Sum of scores, 1e-4 units.
    pub sum: i64,
    /// Sum of squared scores, 1e-8 units, as a decimal string (it needs 128 bits).
    pub sum_sq: String,
    /// Count of each categorical value.
    pub values: BTreeMap<String, i64>,
}

impl KeyStats {
    fn sum_sq(&self) -> i128 {
        self.sum_sq.parse().unwrap_or(0)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.sum as f64 / 1e4 / self.scored as f64)
    }

    /// Population standard deviation of the scores.
    pub fn stdev(&self) -> Option<f64> {
        if self.scored == 0 {
            return None;
        }
        let n = self.scored as i128;
        // n²·var = n·Σx² − (Σx)², all in exact integers.
        let num = n * self.sum_sq() - (self.sum as i128) * (self.sum as i128);
        Some(((num.max(0) as f64).sqrt() / n as f64) / 1e4)
    }
}

/// `feedback_stats` of a run or a project: aggregates per feedback key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackStats(pub BTreeMap<String, KeyStats>);

impl FeedbackStats {
    /// Adds (`sign` = 1) or removes (`sign` = -1) one entry's contribution.
    pub fn add(&mut self, c: &Contribution, sign: i64) {
        let k = self.0.entry(c.key.clone()).or_default();
        k.n += sign;
        if let Some(s) = c.score {
            k.scored += sign;
            k.sum += sign * s;
            k.sum_sq = (k.sum_sq() + i128::from(sign) * i128::from(s) * i128::from(s)).to_string();
        }
        if let Some(v) = &c.value {
            let count = k.values.entry(v.clone()).or_default();
            *count += sign;
            if *count == 0 {
                k.values.remove(v);
            }
        }
        if k.n == 0 {
            self.0.remove(&c.key);
        }
    }

    /// Moves from `old` to `new` (either may be absent: created, deleted).
    pub fn replace(&mut self, old: Option<&Contribution>, new: Option<&Contribution>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.add(o, -1);
        }
        if let Some(n) = new {
            self.add(n, 1);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The shape LangSmith returns: `{key: {n, avg, stdev, errors, values}}`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (key, s) in &self.0 {
            out.insert(
                key.clone(),
                serde_json::json!({
                    "n": s.n,
                    "avg": s.mean(),
                    "stdev": s.stdev(),
                    "errors": 0,
                    "values": s.values,
                }),
            );
        }
        Value::Object(out)
    }
}

/// A presigned feedback token (`POST /feedback/tokens`): whoever holds its id may post
/// feedback with one key on one run until it expires, without an API key. The id is random
/// (UUIDv4 from the OS's CSPRNG), so it serves as the bearer secret the token URL ends in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackToken {
    pub id: Uuid,
    pub run_id: RunId,
    pub key: String,
    /// The entry posting with the token writes: posting again (a changed vote) replaces it.
    pub feedback_id: FeedbackId,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    #[serde(default)]
    pub feedback_config: Option<RawJson>,
}

/// How feedback under one key is interpreted (`/feedback-configs`): continuous bounds,
/// categories, freeform. A delete is a newer version marked `deleted`; stores keep the
/// version with the newest `modified_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackConfigDef {
    pub id: Uuid,
    pub key: String,
    /// The `feedback_config` object as validated (`type`, `min`, `max`, `categories`, ...).
    pub config: RawJson,
    #[serde(default)]
    pub is_lower_score_better: Option<bool>,
    #[serde(default)]
    pub is_enforced: bool,
    #[serde(default)]
    pub deleted: bool,
    pub created_at: Timestamp,
    pub modified_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fb(key: &str, score: Option<Score>) -> Feedback {
        Feedback::from_wire(&json!({"key": key, "run_id": Uuid::nil()}), FeedbackId(Uuid::now_v7()), Timestamp(0))
            .map(|mut f| {
                f.score = score;
                f
            })
            .unwrap()
    }

    #[test]
    fn wire_validation_names_the_problem() {
        let id = FeedbackId(Uuid::now_v7());
        let err = |v: Value| Feedback::from_wire(&v, id, Timestamp(0)).unwrap_err().0;
        assert!(err(json!({"key": ""})).contains("key: must not be empty"));
        assert!(err(json!({"key": "k".repeat(300)})).contains("longer than 256"));
        assert!(err(json!({"key": "k", "score": "high"})).contains("score: expected a number or a boolean, got a string"));
        assert!(err(json!({"key": "k", "score": 1e12})).contains("outside"));
        assert!(err(json!({"key": "k", "run_id": "nope"})).contains("run_id"));
        assert!(err(json!({"score": 1})).contains("key: required"));
        assert!(err(json!({"key": "k", "feedback_source": "api"})).contains("feedback_source: expected an object"));
        assert!(err(json!({"key": "k", "id": Uuid::now_v7()})).contains("differs"));
        let ok = Feedback::from_wire(&json!({"key": "k", "score": true, "value": {"a": 1}}), id, Timestamp(0)).unwrap();
        assert_eq!(ok.score, Some(Score::Bool(true)));
        assert_eq!(ok.to_json()["score"], json!(true));
        assert_eq!(ok.to_json()["run_id"], Value::Null);
    }

    #[test]
    fn stats_are_exact_after_adds_and_removes() {
        let mut st = FeedbackStats::default();
        let scores = [0.1, 0.2, 0.3, 0.7, 0.9999];
        let cs: Vec<_> = scores.iter().map(|s| fb("q", Some(Score::Number(*s))).contribution()).collect();
        for c in &cs {
            st.add(c, 1);
        }
        assert_eq!(st.0["q"].n, 5);
        assert!((st.0["q"].mean().unwrap() - 2.2999 / 5.0).abs() < 1e-12);
        for c in &cs[1..] {
            st.add(c, -1);
        }
        assert_eq!(st.0["q"].sum, 1000, "no floating-point residue");
        assert_eq!(st.0["q"].stdev(), Some(0.0));
        st.add(&cs[0], -1);
        assert!(st.is_empty());
    }

    #[test]
    fn reordered_and_repeated_changes_converge() {
        let f = fb("k", Some(Score::Number(0.5)));
        let id = f.id;
        let (s1, s2, s3, s4) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let changes = vec![
            (s1, FeedbackChange::Upsert(f.clone())),
            (s2, FeedbackChange::Patch { id, fields: vec![FeedbackField::Score(Some(Score::Number(0.9)))], modified_at: Timestamp(5) }),
            (s3, FeedbackChange::Patch { id, fields: vec![FeedbackField::Comment(Some("c".into()))], modified_at: Timestamp(6) }),
            (s4, FeedbackChange::Patch { id, fields: vec![FeedbackField::Score(Some(Score::Number(0.1)))], modified_at: Timestamp(7) }),
        ];
        let mut expected = FeedbackRecord::empty();
        for (s, c) in &changes {
            expected.apply(*s, c);
        }
        let want = expected.alive().unwrap().clone();
        assert_eq!(want.score, Some(Score::Number(0.1)));
        assert_eq!(want.comment.as_deref(), Some("c"));
        // Every permutation, each change delivered twice.
        let orders = [[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1], [0, 3, 1, 2]];
        for order in orders {
            let mut r = FeedbackRecord::empty();
            for i in order.iter().chain(order.iter()) {
                let (s, c) = &changes[*i];
                r.apply(*s, c);
            }
            assert_eq!(r.alive().unwrap().score, want.score, "{order:?}");
            assert_eq!(r.alive().unwrap().comment, want.comment, "{order:?}");
        }
        let mut r = expected.clone();
        let del = Uuid::now_v7();
        r.apply(del, &FeedbackChange::Delete { id });
        assert!(r.alive().is_none());
        r.apply(s1, &FeedbackChange::Upsert(f));
        assert!(r.alive().is_none(), "a redelivered create does not resurrect a deleted entry");
    }
}
