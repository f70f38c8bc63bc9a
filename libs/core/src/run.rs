//! Runs and run fragments.
//!
//! The SDK describes one run in several fragments: a `post` when it starts and a `patch` when it
//! ends, merged or separate, in either order, sometimes more than once (retries). The merge rule
//! makes the result independent of arrival order and of duplicates:
//!
//! * a field set by a patch always wins over the same field from a post;
//! * among fragments of the same kind, the later one wins for the fields it sets;
//! * `null` / absent means "unchanged";
//! * `extra` is merged key by key (and `extra.metadata` key by key), with the same precedence.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{ProjectId, RunId};
use crate::json::RawJson;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragmentKind {
    Post,
    Patch,
}

/// An attachment's bytes as received (`attachment.<run_id>.<name>` parts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub mime_type: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// What the stored run keeps about an attachment; the bytes live in the attachment store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    pub name: String,
    pub mime_type: String,
    pub size: u64,
}

/// One post or patch of a run, as the SDK sent it. Every field but `id` is optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFragment {
    pub kind: FragmentKind,
    pub id: RunId,
    #[serde(default)]
    pub trace_id: Option<RunId>,
    #[serde(default)]
    pub parent_run_id: Option<RunId>,
    #[serde(default)]
    pub dotted_order: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub run_type: Option<String>,
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    #[serde(default)]
    pub end_time: Option<Timestamp>,
    #[serde(default)]
    pub first_token_time: Option<Timestamp>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub inputs: Option<RawJson>,
    #[serde(default)]
    pub outputs: Option<RawJson>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub extra: Option<Map<String, Value>>,
    #[serde(default)]
    pub events: Option<RawJson>,
    #[serde(default)]
    pub serialized: Option<RawJson>,
    #[serde(default)]
    pub reference_example_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    #[serde(default)]
    pub completion_tokens: Option<i64>,
    #[serde(default)]
    pub total_tokens: Option<i64>,
    #[serde(default)]
    pub prompt_cost: Option<f64>,
    #[serde(default)]
    pub completion_cost: Option<f64>,
    #[serde(default)]
    pub total_cost: Option<f64>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

impl RunFragment {
    pub fn new(kind: FragmentKind, id: RunId) -> Self {
        Self {
            kind,
            id,
            trace_id: None,
            parent_run_id: None,
            dotted_order: None,
            name: None,
            run_type: None,
            start_time: None,
            end_time: None,
            first_token_time: None,
            tags: None,
            inputs: None,
            outputs: None,
            error: None,
            extra: None,
            events: None,
            serialized: None,
            reference_example_id: None,
            status: None,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            prompt_cost: None,
            completion_cost: None,
            total_cost: None,
            attachments: Vec::new(),
        }
    }

    /// Approximate size in bytes, for metrics and batch limits.
    pub fn approx_size(&self) -> usize {
        let j = |v: &Option<RawJson>| v.as_ref().map_or(0, RawJson::len);
        200 + j(&self.inputs)
            + j(&self.outputs)
            + j(&self.events)
            + j(&self.serialized)
            + self.error.as_ref().map_or(0, String::len)
            + self.attachments.iter().map(|a| a.data.len()).sum::<usize>()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Success,
    Error,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Error => "error",
        }
    }
}

/// Bits of [`Run::patched`]: which fields were last set by a patch, so a post that arrives
/// late does not overwrite them.
mod bit {
    pub const TRACE_ID: u32 = 1 << 0;
    pub const PARENT: u32 = 1 << 1;
    pub const DOTTED: u32 = 1 << 2;
    pub const NAME: u32 = 1 << 3;
    pub const RUN_TYPE: u32 = 1 << 4;
    pub const START: u32 = 1 << 5;
    pub const END: u32 = 1 << 6;
    pub const FIRST_TOKEN: u32 = 1 << 7;
    pub const TAGS: u32 = 1 << 8;
    pub const INPUTS: u32 = 1 << 9;
    pub const OUTPUTS: u32 = 1 << 10;
    pub const ERROR: u32 = 1 << 11;
    pub const EVENTS: u32 = 1 << 12;
    pub const SERIALIZED: u32 = 1 << 13;
    pub const REFERENCE: u32 = 1 << 14;
    pub const STATUS: u32 = 1 << 15;
    pub const TOKENS: u32 = 1 << 16;
    pub const COSTS: u32 = 1 << 17;
    pub const EXTRA: u32 = 1 << 18;
}

/// A run as stored: the merge of every fragment received for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub project_id: ProjectId,
    #[serde(default)]
    pub trace_id: Option<RunId>,
    #[serde(default)]
    pub parent_run_id: Option<RunId>,
    #[serde(default)]
    pub dotted_order: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub run_type: Option<String>,
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    #[serde(default)]
    pub end_time: Option<Timestamp>,
    #[serde(default)]
    pub first_token_time: Option<Timestamp>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub inputs: Option<RawJson>,
    #[serde(default)]
    pub outputs: Option<RawJson>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub extra: Map<String, Value>,
    #[serde(default)]
    pub events: Option<RawJson>,
    #[serde(default)]
    pub serialized: Option<RawJson>,
    #[serde(default)]
    pub reference_example_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub explicit_status: Option<String>,
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    #[serde(default)]
    pub completion_tokens: Option<i64>,
    #[serde(default)]
    pub total_tokens: Option<i64>,
    #[serde(default)]
    pub prompt_cost: Option<f64>,
    #[serde(default)]
    pub completion_cost: Option<f64>,
    #[serde(default)]
    pub total_cost: Option<f64>,
    #[serde(default)]
    pub attachments: Vec<AttachmentMeta>,
    /// Which fields a patch set (see the module docs).
    #[serde(default)]
    pub patched: u32,
    /// Whether a post has been applied: until then the run is known only from patches.
    #[serde(default)]
    pub has_post: bool,
}

impl Run {
    /// An empty run, to which fragments are applied.
    pub fn empty(id: RunId, project_id: ProjectId) -> Self {
        Self {
            id,
            project_id,
            trace_id: None,
            parent_run_id: None,
            dotted_order: None,
            name: None,
            run_type: None,
            start_time: None,
            end_time: None,
            first_token_time: None,
            tags: Vec::new(),
            inputs: None,
            outputs: None,
            error: None,
            extra: Map::new(),
            events: None,
            serialized: None,
            reference_example_id: None,
            explicit_status: None,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            prompt_cost: None,
            completion_cost: None,
            total_cost: None,
            attachments: Vec::new(),
            patched: 0,
            has_post: false,
        }
    }

    /// Applies one fragment with the precedence rules in the module docs. Idempotent:
    /// applying the same fragment twice gives the same run.
    pub fn apply(&mut self, f: &RunFragment) {
        self.apply_owned(f.clone());
    }

    /// [`Run::apply`] taking the fragment by value, so large fields move instead of copying.
    pub fn apply_owned(&mut self, f: RunFragment) {
        let is_patch = f.kind == FragmentKind::Patch;
        if !is_patch {
            self.has_post = true;
        }
        let mut patched = self.patched;
        macro_rules! set {
            ($bit:expr, $dst:expr, $src:expr) => {
                if let Some(v) = $src {
                    if is_patch || patched & $bit == 0 {
                        $dst = Some(v);
                        if is_patch {
                            patched |= $bit;
                        }
                    }
                }
            };
        }
        set!(bit::TRACE_ID, self.trace_id, f.trace_id);
        set!(bit::PARENT, self.parent_run_id, f.parent_run_id);
        set!(bit::DOTTED, self.dotted_order, f.dotted_order);
        set!(bit::NAME, self.name, f.name);
        set!(bit::RUN_TYPE, self.run_type, f.run_type);
        set!(bit::START, self.start_time, f.start_time);
        set!(bit::END, self.end_time, f.end_time);
        set!(bit::FIRST_TOKEN, self.first_token_time, f.first_token_time);
        set!(bit::INPUTS, self.inputs, f.inputs);
        set!(bit::OUTPUTS, self.outputs, f.outputs);
        set!(bit::ERROR, self.error, f.error);
        set!(bit::EVENTS, self.events, f.events);
        set!(bit::SERIALIZED, self.serialized, f.serialized);
        set!(bit::REFERENCE, self.reference_example_id, f.reference_example_id);
        set!(bit::STATUS, self.explicit_status, f.status);
        if (f.prompt_tokens.is_some() || f.completion_tokens.is_some() || f.total_tokens.is_some())
            && (is_patch || patched & bit::TOKENS == 0)
        {
            self.prompt_tokens = f.prompt_tokens.or(self.prompt_tokens);
            self.completion_tokens = f.completion_tokens.or(self.completion_tokens);
            self.total_tokens = f.total_tokens.or(self.total_tokens);
            if is_patch {
                patched |= bit::TOKENS;
            }
        }
        if (f.prompt_cost.is_some() || f.completion_cost.is_some() || f.total_cost.is_some()) && (is_patch || patched & bit::COSTS == 0) {
            self.prompt_cost = f.prompt_cost.or(self.prompt_cost);
            self.completion_cost = f.completion_cost.or(self.completion_cost);
            self.total_cost = f.total_cost.or(self.total_cost);
            if is_patch {
                patched |= bit::COSTS;
            }
        }
        if let Some(tags) = f.tags {
            if is_patch || patched & bit::TAGS == 0 {
                self.tags = tags;
                if is_patch {
                    patched |= bit::TAGS;
                }
            }
        }
        if let Some(extra) = f.extra {
            // The fragment wins unless the run's extra came from a patch and this is a post.
            let incoming_wins = is_patch || patched & bit::EXTRA == 0;
            if is_patch && !extra.is_empty() {
                patched |= bit::EXTRA;
            }
            if self.extra.is_empty() {
                self.extra = extra;
            } else {
                merge_object(&mut self.extra, extra, incoming_wins);
            }
        }
        for a in &f.attachments {
            let meta = AttachmentMeta { name: a.name.clone(), mime_type: a.mime_type.clone(), size: a.data.len() as u64 };
            match self.attachments.iter_mut().find(|m| m.name == a.name) {
                Some(m) => *m = meta,
                None => self.attachments.push(meta),
            }
        }
        self.patched = patched;
    }

    /// Fills what the SDK needs but may not have sent: trace id, dotted order, token counts
    /// from usage metadata. Called after fragments are applied.
    pub fn derive(&mut self) {
        if self.trace_id.is_none() {
            self.trace_id = self
                .dotted_order
                .as_deref()
                .and_then(|d| dotted_segments(d).next())
                .map(|(_, id)| id)
                .or(if self.parent_run_id.is_none() { Some(self.id) } else { None });
        }
        if self.dotted_order.is_none() && self.parent_run_id.is_none() {
            if let Some(start) = self.start_time {
                self.dotted_order = Some(format!("{}{}", start.to_dotted_stamp(), self.id));
            }
        }
        if self.prompt_tokens.is_none() && self.completion_tokens.is_none() && self.total_tokens.is_none() {
            if let Some(usage) = self.usage_metadata() {
                let get = |k: &str| usage.get(k).and_then(Value::as_i64);
                self.prompt_tokens = get("input_tokens");
                self.completion_tokens = get("output_tokens");
                self.total_tokens = get("total_tokens").or(match (self.prompt_tokens, self.completion_tokens) {
                    (Some(p), Some(c)) => p.checked_add(c),
                    _ => None,
                });
                let cost = |k: &str| usage.get(k).and_then(Value::as_f64);
                if self.total_cost.is_none() {
                    self.prompt_cost = cost("input_cost");
                    self.completion_cost = cost("output_cost");
                    self.total_cost = cost("total_cost");
                }
            }
        }
    }

    /// For a child sent without `trace_id`/`dotted_order` (the SDK's `create_run` path):
    /// inherits the parent's trace and extends the parent's dotted order.
    /// The part of this run that [`Run::derive_from_parent`] reads when it is a parent: id,
    /// project, start time, dotted order and trace. Cheap to keep for a whole batch of parents.
    pub fn lineage(&self) -> Run {
        let mut r = Run::empty(self.id, self.project_id);
        r.trace_id = self.trace_id;
        r.parent_run_id = self.parent_run_id;
        r.dotted_order = self.dotted_order.clone();
        r.start_time = self.start_time;
        r
    }

    pub fn derive_from_parent(&mut self, parent: &Run) {
        if self.dotted_order.is_none() {
            if let Some(start) = self.start_time {
                self.dotted_order = Some(format!("{}.{}{}", parent.dotted_order_or_default(), start.to_dotted_stamp(), self.id));
            }
        }
        if self.trace_id.is_none() || self.trace_id == Some(self.id) {
            self.trace_id = Some(parent.trace());
        }
    }

    /// `extra.metadata.usage_metadata`, or `outputs.usage_metadata` for LLM runs.
    fn usage_metadata(&self) -> Option<Map<String, Value>> {
        if let Some(Value::Object(m)) = self.metadata().and_then(|m| m.get("usage_metadata")) {
            return Some(m.clone());
        }
        // Only LLM runs report usage in their outputs; parsing every run's outputs is wasted.
        if self.run_type.as_deref() != Some("llm") {
            return None;
        }
        let outputs = self.outputs.as_ref()?;
        if !outputs.as_str().contains("usage_metadata") {
            return None;
        }
        match outputs.to_value().ok()? {
            Value::Object(mut o) => match o.remove("usage_metadata") {
                Some(Value::Object(m)) => Some(m),
                _ => None,
            },
            _ => None,
        }
    }

    /// `extra.metadata`, the user's metadata.
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.extra.get("metadata").and_then(Value::as_object)
    }

    pub fn status(&self) -> RunStatus {
        match self.explicit_status.as_deref() {
            Some("error") => return RunStatus::Error,
            Some("success") => return RunStatus::Success,
            _ => {}
        }
        if self.error.as_deref().is_some_and(|e| !e.is_empty()) {
            RunStatus::Error
        } else if self.end_time.is_some() {
            RunStatus::Success
        } else {
            RunStatus::Pending
        }
    }

    /// Latency in seconds, when the run has finished.
    pub fn latency_secs(&self) -> Option<f64> {
        match (self.start_time, self.end_time) {
            (Some(s), Some(e)) => Some((e.micros() - s.micros()) as f64 / 1e6),
            _ => None,
        }
    }

    pub fn is_root(&self) -> bool {
        self.parent_run_id.is_none()
    }

    /// The trace this run belongs to (its own id for a root without `trace_id`).
    pub fn trace(&self) -> RunId {
        self.trace_id.unwrap_or(self.id)
    }

    /// Ancestor ids from the root down to the parent, read from `dotted_order`.
    pub fn parent_run_ids(&self) -> Vec<RunId> {
        match &self.dotted_order {
            Some(d) => {
                let mut ids: Vec<RunId> = dotted_segments(d).map(|(_, id)| id).collect();
                ids.pop();
                ids
            }
            None => self.parent_run_id.into_iter().collect(),
        }
    }

    /// The order key within a trace: `dotted_order`, or a stand-in built from start time and id.
    pub fn dotted_order_or_default(&self) -> String {
        match &self.dotted_order {
            Some(d) => d.clone(),
            None => format!("{}{}", self.start_time.unwrap_or(Timestamp(0)).to_dotted_stamp(), self.id),
        }
    }
}

/// Splits a dotted order into `(stamp, run id)` segments, skipping malformed ones.
pub fn dotted_segments(dotted: &str) -> impl Iterator<Item = (&str, RunId)> {
    dotted.split('.').filter_map(|seg| {
        let z = seg.find('Z')?;
        let id = seg[z + 1..].parse().ok()?;
        Some((&seg[..z + 1], id))
    })
}

/// Why a dotted order is not acceptable.
pub fn validate_dotted_order(dotted: &str, id: RunId) -> Result<(), String> {
    if dotted.len() > 64 * 1024 {
        return Err("dotted_order is longer than 65536 bytes".into());
    }
    let mut last = None;
    for seg in dotted.split('.') {
        let z = seg.find('Z').ok_or_else(|| format!("dotted_order segment {seg:?} has no 'Z' timestamp terminator"))?;
        let stamp = &seg[..z];
        if stamp.len() != 21 || stamp.as_bytes()[8] != b'T' {
            return Err(format!("dotted_order segment {seg:?} does not start with YYYYMMDDTHHMMSSffffffZ"));
        }
        let rid: RunId = seg[z + 1..].parse().map_err(|_| format!("dotted_order segment {seg:?} does not end in a run UUID"))?;
        last = Some(rid);
    }
    match last {
        Some(l) if l == id => Ok(()),
        Some(_) => Err("dotted_order does not end with the run's own id".into()),
        None => Err("dotted_order is empty".into()),
    }
}

/// Merges `src` into `dst` key by key; for `metadata` (and other nested objects) one level
/// deeper. On conflict, `src` wins when `src_wins`, otherwise `dst` is kept.
fn merge_object(dst: &mut Map<String, Value>, src: Map<String, Value>, src_wins: bool) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(Value::Object(d)), Value::Object(s)) if k == "metadata" => {
                for (mk, mv) in s {
                    if src_wins || !d.contains_key(&mk) {
                        d.insert(mk, mv);
                    }
                }
            }
            (Some(_), _) if !src_wins => {}
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rid(n: u128) -> RunId {
        RunId(uuid::Uuid::from_u128(n))
    }

    fn post() -> RunFragment {
        let mut f = RunFragment::new(FragmentKind::Post, rid(1));
        f.name = Some("parent".into());
        f.start_time = Some(Timestamp(1_000_000));
        f.tags = Some(vec!["a".into()]);
        f.inputs = Some(RawJson::parse(r#"{"q":1}"#).unwrap());
        f.outputs = Some(RawJson::parse("{}").unwrap());
        f.extra = Some(json!({"metadata": {"user": "u1", "shared": "post"}, "runtime": {"sdk": "py"}}).as_object().unwrap().clone());
        f
    }

    fn patch() -> RunFragment {
        let mut f = RunFragment::new(FragmentKind::Patch, rid(1));
        f.end_time = Some(Timestamp(3_500_000));
        f.tags = Some(vec!["a".into(), "added".into()]);
        f.outputs = Some(RawJson::parse(r#"{"y":2}"#).unwrap());
        f.extra = Some(json!({"metadata": {"shared": "patch", "late": true}}).as_object().unwrap().clone());
        f
    }

    fn merged(order: &[&RunFragment]) -> Run {
        let mut r = Run::empty(rid(1), ProjectId(uuid::Uuid::nil()));
        for f in order {
            r.apply(f);
        }
        r.derive();
        r
    }

    #[test]
    fn a_child_derives_the_same_from_its_parents_lineage_as_from_the_parent() {
        for parent_dotted in [None, Some(format!("19700101T000001000000Z{}", rid(1)))] {
            let mut parent = merged(&[&post(), &patch()]);
            parent.dotted_order = parent_dotted;
            parent.trace_id = Some(rid(7));
            let mut child = Run::empty(rid(2), parent.project_id);
            child.parent_run_id = Some(parent.id);
            child.start_time = Some(Timestamp(2_000_000));
            let (mut from_run, mut from_lineage) = (child.clone(), child);
            from_run.derive_from_parent(&parent);
            from_lineage.derive_from_parent(&parent.lineage());
            assert_eq!(from_run, from_lineage);
            assert_eq!(from_run.trace_id, Some(rid(7)));
            assert!(from_run.dotted_order.as_deref().unwrap().ends_with(&rid(2).to_string()));
            assert!(parent.lineage().extra.is_empty() && parent.lineage().inputs.is_none(), "lineage keeps no payload");
        }
    }

    #[test]
    fn post_then_patch_equals_patch_then_post_and_duplicates() {
        let (p, q) = (post(), patch());
        let a = merged(&[&p, &q]);
        let b = merged(&[&q, &p]);
        let c = merged(&[&q, &p, &p, &q, &p]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.outputs.as_ref().unwrap().as_str(), r#"{"y":2}"#);
        assert_eq!(a.tags, vec!["a", "added"]);
        let md = a.metadata().unwrap();
        assert_eq!(md["user"], "u1");
        assert_eq!(md["shared"], "patch");
        assert_eq!(md["late"], true);
        assert_eq!(a.extra["runtime"]["sdk"], "py");
        assert_eq!(a.latency_secs(), Some(2.5));
        assert_eq!(a.status(), RunStatus::Success);
        assert_eq!(a.trace(), rid(1));
    }

    #[test]
    fn tokens_come_from_usage_metadata() {
        let mut f = post();
        f.run_type = Some("llm".into());
        f.outputs = Some(RawJson::parse(r#"{"usage_metadata":{"input_tokens":11,"output_tokens":3,"total_tokens":14}}"#).unwrap());
        let r = merged(&[&f]);
        assert_eq!((r.prompt_tokens, r.completion_tokens, r.total_tokens), (Some(11), Some(3), Some(14)));
    }

    #[test]
    fn dotted_order_gives_ancestors_and_is_validated() {
        let root = "01a21080-7250-78f6-8000-000000000001";
        let child = "01a21080-7263-7000-8000-000000000002";
        let d = format!("20261125T021943056436Z{root}.20261125T021943075146Z{child}");
        let mut r = Run::empty(child.parse().unwrap(), ProjectId(uuid::Uuid::nil()));
        r.dotted_order = Some(d.clone());
        r.parent_run_id = Some(root.parse().unwrap());
        r.derive();
        assert_eq!(r.trace_id, Some(root.parse().unwrap()));
        assert_eq!(r.parent_run_ids(), vec![root.parse::<RunId>().unwrap()]);
        assert!(validate_dotted_order(&d, child.parse().unwrap()).is_ok());
        assert!(validate_dotted_order(&d, root.parse().unwrap()).is_err());
        assert!(validate_dotted_order("garbage", root.parse().unwrap()).is_err());
    }

    #[test]
    fn error_sets_status() {
        let mut f = patch();
        f.error = Some("ValueError('boom')".into());
        let r = merged(&[&post(), &f]);
        assert_eq!(r.status(), RunStatus::Error);
    }
}

/// A trace shared by public link (`PUT /runs/{id}/share`): whoever holds the token may read
/// the shared run and the runs below it, without an API key, until it is unshared. The token is
/// a random UUIDv4 (the bearer secret the link ends in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunShare {
    pub run_id: RunId,
    pub token: uuid::Uuid,
    pub created_at: Timestamp,
}
