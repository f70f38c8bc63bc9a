//! Online evaluators as LangSmith's platform API has them (`/platform/evaluators`, the SDKs'
//! `client.evaluators` / `online_evaluators` resource): named LLM, code and decision-model
//! evaluators of a workspace, created, listed, read, updated and deleted.
//!
//! Every change is a whole new version of one evaluator, published as
//! `OnlineEvaluatorChangedV1` (durable once acknowledged) and written through to the store at
//! once, so a read right after a write sees it; [`run_evaluator_projector`] applies the same
//! event again, idempotently (stores keep the newest `updated_at`). A delete is a version
//! marked deleted.
//!
//! What an evaluator created here does not do (yet): it is a stored definition only. Nothing
//! attaches it to runs: LangSmith attaches evaluators through run rules, which this API only
//! lists (`run_rules` is always empty), so it scores nothing by itself. Scoring production
//! runs is configured with `[[online_eval]]` rules (see [`crate::online`]). Code evaluators
//! are never executed (Sextant runs no user code; `evaluator_build_status` stays null), and
//! `feedback_keys` is empty (LangSmith derives it from the prompt's output schema).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tracing::{error, info, instrument, warn};
use uuid::Uuid;

use sextant_bus::{ConsumerSpec, EventBus};
use sextant_core::evaluator::{OnlineEvaluatorDef, OnlineEvaluatorKind};
use sextant_core::{RawJson, TenantId, Timestamp};
use sextant_events::{Envelope, Event, OnlineEvaluatorChangedV1, Stream};
use sextant_proto::error::{bus_error, storage_error};
use sextant_proto::http::QueryParams;
use sextant_proto::ApiError;
use sextant_storage::{Storage, StorageErrorKind};

pub const EVALUATOR_PROJECTOR: &str = "evaluator-projector";
/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most ids one bulk delete takes.
pub const MAX_BULK_DELETE: usize = 100;
/// Largest `code`, in bytes.
pub const MAX_CODE_BYTES: usize = 256 * 1024;
const CODE_INPUTS: [&str; 5] = ["thread", "all_messages", "human_ai_pairs", "first_human_last_ai", "trajectory"];

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable(msg)
}

pub struct PlatformEvaluators {
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Storage>,
}

/// What `GET /platform/evaluators` asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub name_contains: Option<String>,
    pub kind: Option<OnlineEvaluatorKind>,
    pub feedback_key: Option<String>,
    /// Containment: every key of this object has the same value in the evaluator's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Filters on attachments (run rules, tags, agents): nothing is attached here, so any of
    /// them matches no evaluator.
    pub attached_to_something: bool,
    pub sort_by: SortBy,
    pub desc: bool,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortBy {
    #[default]
    CreatedAt,
    UpdatedAt,
    Name,
}

impl ListQuery {
    pub fn from_params(q: &QueryParams) -> Result<Self, ApiError> {
        let kind = match q.get("type") {
            None | Some("") => None,
            Some(t) => Some(
                OnlineEvaluatorKind::parse(t)
                    .ok_or_else(|| bad(format!("query parameter type: {t:?} is not llm, code or decision_model")))?,
            ),
        };
        let metadata = match q.get("metadata") {
            None | Some("") => None,
            Some(m) => match serde_json::from_str::<Value>(m) {
                Ok(Value::Object(o)) => Some(o),
                _ => return Err(bad("query parameter metadata: expected a JSON object")),
            },
        };
        let limit = q.usize("limit")?.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(bad(format!("query parameter limit: {limit} is not between 1 and 100")));
        }
        let sort_by = match q.get("sort_by") {
            None | Some("") | Some("created_at") => SortBy::CreatedAt,
            Some("updated_at") => SortBy::UpdatedAt,
            Some("name") => SortBy::Name,
            Some(s) => return Err(bad(format!("query parameter sort_by: {s:?} is not created_at, updated_at or name"))),
        };
        // Repeated or comma-separated (the SDKs differ); each must be a UUID.
        let mut attached = false;
        for k in ["resource_id", "tag_value_id", "agent_id"] {
            attached |= !q.uuids(k)?.is_empty();
        }
        Ok(Self {
            name_contains: q.get("name_contains").filter(|s| !s.is_empty()).map(str::to_lowercase),
            kind,
            feedback_key: q.get("feedback_key").filter(|s| !s.is_empty()).map(str::to_owned),
            metadata,
            attached_to_something: attached,
            sort_by,
            desc: q.bool("sort_by_desc")?.unwrap_or(sort_by != SortBy::Name),
            offset: q.usize("offset")?.unwrap_or(0),
            limit,
        })
    }
}

/// A string field, if present and not null.
fn opt_str<'a>(o: &'a Map<String, Value>, k: &str, at: &str) -> Result<Option<&'a str>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{at}{k}: expected a string"))),
    }
}

fn opt_bool(o: &Map<String, Value>, k: &str, at: &str) -> Result<Option<bool>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("{at}{k}: expected a boolean"))),
    }
}

fn check_name(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            if s.len() > MAX_NAME_BYTES {
                return Err(bad(format!("name: longer than {MAX_NAME_BYTES} bytes")));
            }
            Ok(s.trim().to_owned())
        }
        Some(Value::String(_)) => Err(bad("name: must not be empty")),
        None | Some(Value::Null) => Err(bad("name: required (a non-empty string)")),
        Some(_) => Err(bad("name: expected a string")),
    }
}

fn check_metadata(v: &Value) -> Result<Option<RawJson>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(_) => RawJson::from_client_value(v).map(Some).map_err(|e| bad(format!("metadata: {e}"))),
        _ => Err(bad("metadata: expected an object or null")),
    }
}

/// Validates an `llm_evaluator` object, merged over `base` (an update's current value), and
/// returns it as stored. `update` admits the fields only an update takes.
fn check_llm(v: &Value, base: Option<&Value>, update: bool) -> Result<RawJson, ApiError> {
    let at = "llm_evaluator.";
    let o = v.as_object().ok_or_else(|| bad("llm_evaluator: expected an object"))?;
    let mut out = base.and_then(Value::as_object).cloned().unwrap_or_default();
    for k in ["prompt_repo_handle", "commit_hash_or_tag", "playground_settings_id"] {
        if let Some(s) = opt_str(o, k, at)? {
            out.insert(k.into(), json!(s));
        }
    }
    if let Some(s) = opt_str(o, "playground_settings_id", at)? {
        sextant_proto::http::uuid_param("llm_evaluator.playground_settings_id", s)?;
    }
    match o.get("variable_mapping") {
        None => {}
        Some(Value::Null) => {
            out.remove("variable_mapping");
        }
        Some(m @ Value::Object(map)) => {
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(bad(format!("llm_evaluator.variable_mapping.{k}: expected a string (a path into the run)")));
            }
            out.insert("variable_mapping".into(), m.clone());
        }
        Some(_) => return Err(bad("llm_evaluator.variable_mapping: expected an object")),
    }
    for k in ["num_few_shot_examples", "use_corrections_dataset"] {
        if o.contains_key(k) && !update {
            return Err(bad(format!("llm_evaluator.{k}: only an update sets it")));
        }
    }
    match o.get("num_few_shot_examples") {
        None | Some(Value::Null) => {}
        Some(n) => match n.as_u64().filter(|n| *n <= 100) {
            Some(n) => {
                out.insert("num_few_shot_examples".into(), json!(n));
            }
            None => return Err(bad("llm_evaluator.num_few_shot_examples: expected an integer from 0 to 100")),
        },
    }
    if let Some(b) = opt_bool(o, "use_corrections_dataset", at)? {
        out.insert("use_corrections_dataset".into(), json!(b));
    }
    match out.get("prompt_repo_handle").and_then(Value::as_str) {
        Some(h) if !h.trim().is_empty() => {}
        _ => return Err(bad("llm_evaluator.prompt_repo_handle: required (the judge prompt's repository handle)")),
    }
    Ok(RawJson::from_value(&Value::Object(out)))
}

/// Validates a `code_evaluator` object, merged over `base`, and returns it as stored.
fn check_code(v: &Value, base: Option<&Value>, update: bool) -> Result<RawJson, ApiError> {
    let at = "code_evaluator.";
    let o = v.as_object().ok_or_else(|| bad("code_evaluator: expected an object"))?;
    let mut out = base.and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(code) = opt_str(o, "code", at)? {
        if code.len() > MAX_CODE_BYTES {
            return Err(bad(format!("code_evaluator.code: longer than {MAX_CODE_BYTES} bytes")));
        }
        out.insert("code".into(), json!(code));
    }
    if let Some(lang) = opt_str(o, "language", at)? {
        if !["python", "javascript", "typescript"].contains(&lang) {
            return Err(bad(format!("code_evaluator.language: {lang:?} is not python, javascript or typescript")));
        }
        out.insert("language".into(), json!(lang));
    }
    if o.contains_key("dependencies") {
        let d = opt_str(o, "dependencies", at)?;
        out.insert("dependencies".into(), json!(d));
    }
    if o.contains_key("code_evaluator_input") {
        match opt_str(o, "code_evaluator_input", at)? {
            Some(i) if !CODE_INPUTS.contains(&i) => {
                return Err(bad(format!("code_evaluator.code_evaluator_input: {i:?} is not one of {}", CODE_INPUTS.join(", "))))
            }
            i => {
                out.insert("code_evaluator_input".into(), json!(i));
            }
        }
    }
    for k in ["advanced_features_enabled", "require_attachments"] {
        if let Some(b) = opt_bool(o, k, at)? {
            out.insert(k.into(), json!(b));
        }
    }
    match o.get("workspace_secrets_keys") {
        None | Some(Value::Null) => {}
        Some(Value::Array(keys)) if keys.iter().all(Value::is_string) => {
            out.insert("workspace_secrets_keys".into(), Value::Array(keys.clone()));
        }
        Some(_) => return Err(bad("code_evaluator.workspace_secrets_keys: expected an array of strings")),
    }
    if o.contains_key("managed_code_evaluator_key") {
        if update {
            return Err(bad("code_evaluator.managed_code_evaluator_key: set only when the evaluator is created"));
        }
        match opt_str(o, "managed_code_evaluator_key", at)? {
            Some("voice_metrics") => {
                out.insert("managed_code_evaluator_key".into(), json!("voice_metrics"));
            }
            Some(k) => return Err(bad(format!("code_evaluator.managed_code_evaluator_key: {k:?} is not voice_metrics"))),
            None => {}
        }
    }
    match o.get("managed_code_evaluator_settings") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, s) in m {
                let s =
                    s.as_object().ok_or_else(|| bad(format!("code_evaluator.managed_code_evaluator_settings.{k}: expected an object")))?;
                opt_bool(s, "is_enabled", &format!("code_evaluator.managed_code_evaluator_settings.{k}."))?;
                opt_str(s, "key_name", &format!("code_evaluator.managed_code_evaluator_settings.{k}."))?;
            }
            out.insert("managed_code_evaluator_settings".into(), Value::Object(m.clone()));
        }
        Some(_) => return Err(bad("code_evaluator.managed_code_evaluator_settings: expected an object")),
    }
    let has_code = out.get("code").and_then(Value::as_str).is_some_and(|c| !c.trim().is_empty());
    if !has_code && !out.contains_key("managed_code_evaluator_key") {
        return Err(bad("code_evaluator.code: required (the evaluator's source) unless managed_code_evaluator_key is set"));
    }
    out.entry("language").or_insert(json!("python"));
    Ok(RawJson::from_value(&Value::Object(out)))
}

/// The OnlineEvaluator the SDKs parse.
pub fn evaluator_json(tenant: TenantId, e: &OnlineEvaluatorDef) -> Value {
    let id = e.id.to_string();
    let llm = e.llm.as_ref().map(|l| {
        let l = l.to_value_or_null();
        json!({
            "evaluator_id": id,
            "prompt_repo_handle": l.get("prompt_repo_handle"),
            "commit_hash_or_tag": l.get("commit_hash_or_tag"),
            "variable_mapping": l.get("variable_mapping"),
            "num_few_shot_examples": l.get("num_few_shot_examples"),
            // Derived from run rules in LangSmith; there are none here.
            "use_corrections_dataset": Value::Null,
            "prompt_id": Value::Null,
            "annotation_queue_id": Value::Null,
            "corrections_dataset_id": Value::Null,
        })
    });
    let code = e.code.as_ref().map(|c| {
        let mut c = c.to_value_or_null();
        if let Some(o) = c.as_object_mut() {
            o.insert("evaluator_id".into(), json!(id));
            // Sextant never builds or runs evaluator code.
            o.insert("evaluator_build_status".into(), Value::Null);
            o.insert("evaluator_build_error".into(), Value::Null);
        }
        c
    });
    json!({
        "id": id,
        "tenant_id": tenant,
        "name": e.name,
        "type": e.kind.as_str(),
        "metadata": e.metadata.as_ref().map(RawJson::to_value_or_null),
        "llm_evaluator": llm,
        "code_evaluator": code,
        "feedback_keys": [],
        "run_rules": [],
        "is_managed": false,
        "created_by": Value::Null,
        "created_at": e.created_at.to_iso(),
        "updated_at": e.updated_at.to_iso(),
    })
}

/// `YYYY-MM-DD` as the midnight (UTC) that starts it.
fn parse_day(s: &str) -> Option<Timestamp> {
    let ok = s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
    if !ok {
        return None;
    }
    let t = Timestamp::parse(&format!("{s}T00:00:00Z")).ok()?;
    (t.to_iso().get(..10) == Some(s)).then_some(t)
}

fn day_after(t: Timestamp, days: i64) -> String {
    let t = Timestamp(t.micros() + days * 86_400_000_000);
    t.to_iso().get(..10).unwrap_or_default().to_owned()
}

impl PlatformEvaluators {
    pub fn new(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(Self { bus, store })
    }

    /// Publishes (durable) then writes through (visible).
    async fn commit(&self, tenant: TenantId, e: OnlineEvaluatorDef) -> Result<OnlineEvaluatorDef, ApiError> {
        let env = Envelope::new(tenant, Event::OnlineEvaluatorChangedV1(OnlineEvaluatorChangedV1 { evaluator: e.clone() }));
        self.bus.publish(&[env]).await.map_err(bus_error)?;
        self.store.put_online_evaluator(tenant, &e).await.map_err(storage_error)?;
        metrics::counter!("sextant_online_evaluator_changes_total").increment(1);
        Ok(e)
    }

    /// The live evaluator, or 404.
    async fn live(&self, tenant: TenantId, id: Uuid) -> Result<OnlineEvaluatorDef, ApiError> {
        match self.store.get_online_evaluator(tenant, id).await.map_err(storage_error)? {
            Some(e) if !e.deleted => Ok(e),
            _ => Err(ApiError::not_found(format!("evaluator {id} not found"))),
        }
    }

    /// A new version of `e`: later than the stored one, so it wins in every store.
    fn next_version(e: &OnlineEvaluatorDef) -> OnlineEvaluatorDef {
        let now = Timestamp::now();
        OnlineEvaluatorDef { updated_at: Timestamp(now.micros().max(e.updated_at.micros() + 1)), ..e.clone() }
    }

    /// `POST /platform/evaluators`: `{name, type, llm_evaluator | code_evaluator, metadata}`.
    #[instrument(name = "online_evaluators.create", skip_all, fields(tenant = %tenant))]
    pub async fn create(&self, tenant: TenantId, body: &Value) -> Result<Value, ApiError> {
        let o = body.as_object().ok_or_else(|| bad("body: expected a JSON object"))?;
        let name = check_name(o.get("name"))?;
        let kind = match o.get("type") {
            Some(Value::String(t)) => {
                OnlineEvaluatorKind::parse(t).ok_or_else(|| bad(format!("type: {t:?} is not llm, code or decision_model")))?
            }
            None | Some(Value::Null) => return Err(bad("type: required (llm, code or decision_model)")),
            Some(_) => return Err(bad("type: expected a string (llm, code or decision_model)")),
        };
        let present = |k: &str| o.get(k).is_some_and(|v| !v.is_null());
        let (llm, code) = match kind {
            OnlineEvaluatorKind::Llm => {
                if present("code_evaluator") {
                    return Err(bad("code_evaluator: not allowed on an llm evaluator"));
                }
                let l =
                    o.get("llm_evaluator").filter(|v| !v.is_null()).ok_or_else(|| bad("llm_evaluator: required for an llm evaluator"))?;
                (Some(check_llm(l, None, false)?), None)
            }
            OnlineEvaluatorKind::Code => {
                if present("llm_evaluator") {
                    return Err(bad("llm_evaluator: not allowed on a code evaluator"));
                }
                let c =
                    o.get("code_evaluator").filter(|v| !v.is_null()).ok_or_else(|| bad("code_evaluator: required for a code evaluator"))?;
                (None, Some(check_code(c, None, false)?))
            }
            OnlineEvaluatorKind::DecisionModel => {
                for k in ["llm_evaluator", "code_evaluator"] {
                    if present(k) {
                        return Err(bad(format!("{k}: not allowed on a decision_model evaluator")));
                    }
                }
                (None, None)
            }
        };
        let metadata = check_metadata(o.get("metadata").unwrap_or(&Value::Null))?;
        let now = Timestamp::now();
        let e =
            OnlineEvaluatorDef { id: Uuid::now_v7(), name, kind, llm, code, metadata, deleted: false, created_at: now, updated_at: now };
        let e = self.commit(tenant, e).await?;
        Ok(json!({"evaluator": evaluator_json(tenant, &e)}))
    }

    pub async fn get(&self, tenant: TenantId, id: Uuid) -> Result<Value, ApiError> {
        Ok(evaluator_json(tenant, &self.live(tenant, id).await?))
    }

    /// `PATCH /platform/evaluators/{id}`: any of `name`, `metadata` (null clears it), and the
    /// sub-object of its type (merged over the current one).
    #[instrument(name = "online_evaluators.update", skip_all, fields(tenant = %tenant))]
    pub async fn update(&self, tenant: TenantId, id: Uuid, body: &Value) -> Result<Value, ApiError> {
        let o = body.as_object().ok_or_else(|| bad("body: expected a JSON object"))?;
        if o.contains_key("type") {
            return Err(bad("type: an evaluator's type cannot change"));
        }
        let current = self.live(tenant, id).await?;
        let mut e = Self::next_version(&current);
        if o.contains_key("name") {
            e.name = check_name(o.get("name"))?;
        }
        if let Some(m) = o.get("metadata") {
            e.metadata = check_metadata(m)?;
        }
        match (o.get("llm_evaluator").filter(|v| !v.is_null()), current.kind) {
            (None, _) => {}
            (Some(l), OnlineEvaluatorKind::Llm) => {
                e.llm = Some(check_llm(l, current.llm.as_ref().map(RawJson::to_value_or_null).as_ref(), true)?)
            }
            (Some(_), k) => return Err(bad(format!("llm_evaluator: not allowed on a {} evaluator", k.as_str()))),
        }
        match (o.get("code_evaluator").filter(|v| !v.is_null()), current.kind) {
            (None, _) => {}
            (Some(c), OnlineEvaluatorKind::Code) => {
                e.code = Some(check_code(c, current.code.as_ref().map(RawJson::to_value_or_null).as_ref(), true)?)
            }
            (Some(_), k) => return Err(bad(format!("code_evaluator: not allowed on a {} evaluator", k.as_str()))),
        }
        let e =
            if (e.name.as_str(), &e.metadata, &e.llm, &e.code) == (current.name.as_str(), &current.metadata, &current.llm, &current.code) {
                current // unchanged: no new version
            } else {
                self.commit(tenant, e).await?
            };
        Ok(json!({"evaluator": evaluator_json(tenant, &e)}))
    }

    /// Deletes one evaluator (a version marked deleted). No run rule ever references one here,
    /// so `delete_run_rules` changes nothing.
    #[instrument(name = "online_evaluators.delete", skip_all, fields(tenant = %tenant))]
    pub async fn delete(&self, tenant: TenantId, id: Uuid) -> Result<(), ApiError> {
        let current = self.live(tenant, id).await?;
        let e = OnlineEvaluatorDef { deleted: true, ..Self::next_version(&current) };
        self.commit(tenant, e).await.map(|_| ())
    }

    /// `DELETE /platform/evaluators?evaluator_ids=...`: each id succeeds or fails on its own.
    pub async fn bulk_delete(&self, tenant: TenantId, ids: &[String]) -> Result<Value, ApiError> {
        let ids: Vec<&str> = ids.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()).collect();
        if ids.is_empty() {
            return Err(bad("query parameter evaluator_ids: required (one or more evaluator ids)"));
        }
        if ids.len() > MAX_BULK_DELETE {
            return Err(bad(format!("query parameter evaluator_ids: at most {MAX_BULK_DELETE} ids, got {}", ids.len())));
        }
        let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
        for raw in ids {
            let outcome = match Uuid::parse_str(raw) {
                Err(_) => Err(bad(format!("{:?} is not a UUID", sextant_proto::truncate(raw)))),
                Ok(id) => self.delete(tenant, id).await,
            };
            match outcome {
                Ok(()) => succeeded.push(json!(raw)),
                // The store or bus down fails the whole request (the client retries it).
                Err(e) if e.kind == sextant_proto::ErrorKind::Unavailable => return Err(e),
                Err(e) => failed.push(json!({"id": raw, "error": e.message})),
            }
        }
        Ok(json!({"succeeded": succeeded, "failed": failed}))
    }

    /// Every live evaluator matching the query, sorted, with the total before paging.
    pub async fn list(&self, tenant: TenantId, q: &ListQuery) -> Result<Value, ApiError> {
        let mut all: Vec<OnlineEvaluatorDef> = self.store.list_online_evaluators(tenant).await.map_err(storage_error)?;
        all.retain(|e| {
            !e.deleted
                && !q.attached_to_something
                // No evaluator has feedback keys here (see the module docs).
                && q.feedback_key.is_none()
                && q.kind.is_none_or(|k| k == e.kind)
                && q.name_contains.as_ref().is_none_or(|n| e.name.to_lowercase().contains(n.as_str()))
                && q.metadata.as_ref().is_none_or(|want| {
                    let have = e.metadata.as_ref().map(RawJson::to_value_or_null).unwrap_or(Value::Null);
                    want.iter().all(|(k, v)| have.get(k) == Some(v))
                })
        });
        all.sort_by(|a, b| {
            let o = match q.sort_by {
                SortBy::CreatedAt => a.created_at.cmp(&b.created_at),
                SortBy::UpdatedAt => a.updated_at.cmp(&b.updated_at),
                SortBy::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
            }
            .then(a.id.cmp(&b.id));
            if q.desc {
                o.reverse()
            } else {
                o
            }
        });
        let total = all.len();
        let page: Vec<Value> = all.iter().skip(q.offset).take(q.limit).map(|e| evaluator_json(tenant, e)).collect();
        Ok(json!({"evaluators": page, "total": total}))
    }

    /// `GET /platform/evaluators/spend`: the documented shape, every amount zero. Sextant does
    /// not meter judge spend per evaluator here (the judge's token use is measured by the
    /// judge client's metrics), and nothing runs API-created evaluators, so zero is the truth
    /// for them. Validates the query as LangSmith does.
    pub async fn spend(&self, tenant: TenantId, q: &QueryParams) -> Result<Value, ApiError> {
        let start_s = q.get("period_start").ok_or_else(|| bad("query parameter period_start: required (YYYY-MM-DD)"))?;
        let start =
            parse_day(start_s).ok_or_else(|| bad(format!("query parameter period_start: {start_s:?} is not a date (YYYY-MM-DD)")))?;
        let given: Vec<&str> =
            ["group_by", "evaluator_id", "session_id", "dataset_id"].into_iter().filter(|k| q.get(k).is_some()).collect();
        if given.len() != 1 {
            return Err(bad("exactly one of group_by, evaluator_id, session_id or dataset_id is required"));
        }
        let narrowing = ["resource_id", "type", "feedback_key", "tag_value_id", "agent_id"];
        if given[0] != "group_by" {
            if let Some(k) = narrowing.iter().find(|k| q.get(k).is_some()) {
                return Err(bad(format!("query parameter {k}: only valid with group_by")));
            }
        }
        let days: Vec<Value> = (0..7).map(|d| json!({"date": day_after(start, d), "spend_usd": 0.0, "trace_count": 0})).collect();
        let zero = |extra: Value| {
            let mut g = json!({
                "days": days, "total_spend_usd": 0.0, "total_trace_count": 0, "prev_total_spend_usd": 0.0, "prev_total_trace_count": 0,
                "spend_limit": Value::Null,
            });
            if let (Some(g), Some(extra)) = (g.as_object_mut(), extra.as_object()) {
                g.extend(extra.clone());
            }
            g
        };
        let groups: Vec<Value> = match given[0] {
            "group_by" => match q.get("group_by").unwrap_or_default() {
                "evaluator" => {
                    let mut lq = ListQuery::from_params(&QueryParams::default())?;
                    lq.kind = match q.get("type") {
                        None | Some("") => None,
                        Some(t) => Some(
                            OnlineEvaluatorKind::parse(t)
                                .ok_or_else(|| bad(format!("query parameter type: {t:?} is not llm, code or decision_model")))?,
                        ),
                    };
                    lq.attached_to_something = ["resource_id", "tag_value_id", "agent_id"].iter().any(|k| q.get(k).is_some());
                    lq.feedback_key = q.get("feedback_key").map(str::to_owned);
                    lq.limit = usize::MAX;
                    let listed = self.list(tenant, &lq).await?;
                    listed["evaluators"]
                        .as_array()
                        .map(|a| a.iter().map(|e| zero(json!({"evaluator_id": e["id"], "evaluator_name": e["name"]}))).collect())
                        .unwrap_or_default()
                }
                // Nothing is attached to a project, dataset or run rule.
                "resource" | "run_rule" => Vec::new(),
                g => return Err(bad(format!("query parameter group_by: {g:?} is not evaluator, resource or run_rule"))),
            },
            "evaluator_id" => {
                let id = sextant_proto::http::uuid_param("query parameter evaluator_id", q.get("evaluator_id").unwrap_or_default())?;
                let e = self.live(tenant, id).await?;
                vec![zero(json!({"evaluator_id": id, "evaluator_name": e.name}))]
            }
            k => {
                let id = sextant_proto::http::uuid_param(&format!("query parameter {k}"), q.get(k).unwrap_or_default())?;
                vec![zero(json!({ k: id }))]
            }
        };
        Ok(json!({"period_start": start_s, "period_end": day_after(start, 7), "groups": groups}))
    }
}

/// Applies `OnlineEvaluatorChangedV1` to the store (idempotent: the newest `updated_at` wins),
/// so a version published but not written through (a crash between the two) still lands.
pub async fn run_evaluator_projector(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, mut shutdown: watch::Receiver<bool>) {
    let spec = ConsumerSpec::new(EVALUATOR_PROJECTOR, Stream::Evaluations);
    let Some(mut sub) = sextant_bus::subscribe_until_ready(bus.as_ref(), spec, &mut shutdown).await else { return };
    info!(consumer = EVALUATOR_PROJECTOR, "evaluator projector started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let batch = tokio::select! {
            b = sub.next_batch(256, Duration::from_millis(200)) => b,
            _ = shutdown.changed() => break,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "evaluator projector could not fetch events");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for d in batch {
            let put = match &d.payload {
                Ok(env) => match &env.event {
                    Event::OnlineEvaluatorChangedV1(e) => Some(store.put_online_evaluator(env.tenant, &e.evaluator).await),
                    _ => None,
                },
                Err(_) => None, // not ours to judge: other consumers of the stream dead-letter it
            };
            match put {
                None | Some(Ok(())) => {
                    let _ = d.ack().await;
                }
                Some(Err(e)) if e.kind == StorageErrorKind::Invalid => {
                    error!(seq = d.sequence, error = %e, "online evaluator rejected by the store; dead-lettering");
                    let _ = d.term(&format!("rejected by the store: {e}")).await;
                }
                Some(Err(e)) => {
                    warn!(seq = d.sequence, error = %e, "online evaluator projection failed; will retry");
                    let backoff = Duration::from_millis(200 * u64::from(d.delivery_count.min(20)));
                    let _ = d.nak(backoff).await;
                }
            }
        }
    }
    info!("evaluator projector stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_validated_with_the_field_named() {
        let err = |r: Result<RawJson, ApiError>| r.unwrap_err().message;
        assert!(err(check_llm(&json!({}), None, false)).contains("llm_evaluator.prompt_repo_handle: required"));
        assert!(err(check_llm(&json!({"prompt_repo_handle": 3}), None, false)).contains("prompt_repo_handle: expected a string"));
        assert!(
            err(check_llm(&json!({"prompt_repo_handle": "j", "variable_mapping": {"x": 1}}), None, false)).contains("variable_mapping.x")
        );
        assert!(err(check_llm(&json!({"prompt_repo_handle": "j", "num_few_shot_examples": 2}), None, false)).contains("only an update"));
        let merged = check_llm(&json!({"commit_hash_or_tag": "v2"}), Some(&json!({"prompt_repo_handle": "j"})), true).unwrap();
        assert_eq!(merged.to_value_or_null(), json!({"prompt_repo_handle": "j", "commit_hash_or_tag": "v2"}));
        assert!(err(check_code(&json!({"language": "python"}), None, false)).contains("code_evaluator.code: required"));
        assert!(err(check_code(&json!({"code": "x", "language": "cobol"}), None, false)).contains("language"));
        assert!(err(check_code(&json!({"code": "x", "code_evaluator_input": "all"}), None, false)).contains("code_evaluator_input"));
        assert_eq!(check_code(&json!({"code": "x"}), None, false).unwrap().to_value_or_null()["language"], "python");
        assert!(check_name(Some(&json!("  "))).unwrap_err().message.contains("name: must not be empty"));
        assert!(check_metadata(&json!([1])).unwrap_err().message.contains("metadata"));
    }

    /// A version that was published but never written through (a crash between the two)
    /// reaches the store through the projector; an older redelivered one changes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_projector_applies_published_versions_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let bus: Arc<dyn EventBus> = Arc::new(sextant_bus::inprocess::InProcessBus::open(&dir.path().join("bus")).unwrap());
        let store: Arc<dyn Storage> = Arc::new(sextant_storage::embedded::EmbeddedStore::open(&dir.path().join("store")).unwrap());
        let tenant = TenantId(Uuid::now_v7());
        let svc = PlatformEvaluators::new(bus.clone(), store.clone());
        let made = svc.create(tenant, &json!({"name": "j", "type": "llm", "llm_evaluator": {"prompt_repo_handle": "h"}})).await.unwrap();
        let id = Uuid::parse_str(made["evaluator"]["id"].as_str().unwrap()).unwrap();
        let current = store.get_online_evaluator(tenant, id).await.unwrap().unwrap();
        let newer = OnlineEvaluatorDef { name: "renamed".into(), ..PlatformEvaluators::next_version(&current) };
        let stale = OnlineEvaluatorDef { name: "stale".into(), updated_at: Timestamp(current.updated_at.micros() - 1), ..current.clone() };
        let events = [&newer, &stale]
            .map(|e| Envelope::new(tenant, Event::OnlineEvaluatorChangedV1(OnlineEvaluatorChangedV1 { evaluator: e.clone() })));
        bus.publish(&events).await.unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let projector = tokio::spawn(run_evaluator_projector(bus.clone(), store.clone(), stop_rx));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.get_online_evaluator(tenant, id).await.unwrap().map(|e| e.name) != Some("renamed".into()) {
            assert!(std::time::Instant::now() < deadline, "the projector never applied the published version");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await; // the stale one, after it
        assert_eq!(svc.get(tenant, id).await.unwrap()["name"], "renamed");
        stop_tx.send(true).unwrap();
        projector.await.unwrap();
    }

    #[test]
    fn days_parse_strictly_and_step_across_months() {
        let t = parse_day("2026-02-26").unwrap();
        assert_eq!(day_after(t, 3), "2026-03-01");
        assert!(parse_day("2026-02-30").is_none() && parse_day("26-02-01").is_none() && parse_day("tomorrow").is_none());
    }
}
