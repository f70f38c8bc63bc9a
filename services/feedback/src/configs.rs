//! Feedback configs (`/feedback-configs`): how feedback under a key is interpreted
//! (continuous with bounds, categorical, freeform), as the SDK's `create_feedback_config`,
//! `list_feedback_configs`, `update_feedback_config` and `delete_feedback_config` use them.
//!
//! Every change is a whole new version of one config, published as `FeedbackConfigChangedV1`
//! (durable once acknowledged) and written through to the store at once, so the SDK's read
//! right after a write sees it; the feedback projector applies the same event again,
//! idempotently (stores keep the newest `modified_at`). A delete is a version marked deleted.
//!
//! A key has at most one live config here: creating an identical one returns it, a different
//! one is a 400 ("Feedback config already exists"), as LangSmith answers for workspaces
//! without enforced configs. Two concurrent creates of a new key can both succeed; the list
//! then shows the key's first.

use serde_json::{json, Map, Value};
use tracing::instrument;
use uuid::Uuid;

use sextant_core::feedback::{check_key, FeedbackConfigDef};
use sextant_core::{RawJson, TenantId, Timestamp};
use sextant_events::{Envelope, Event, FeedbackConfigChangedV1};
use sextant_proto::ApiError;

use crate::core::{bus_error, storage_error, FeedbackService};

/// Most categories one categorical config has.
pub const MAX_CATEGORIES: usize = 1000;
/// Longest category label, in bytes.
pub const MAX_LABEL_BYTES: usize = 1024;

/// What `GET /feedback-configs` asks for.
#[derive(Debug, Clone, Default)]
pub struct ConfigQuery {
    /// Any of these keys (empty: every key).
    pub keys: Vec<String>,
    pub name_contains: Option<String>,
    /// Every config of each key, deleted ones included, instead of one live config per key.
    pub include_all: bool,
    pub is_enforced: Option<bool>,
    pub offset: usize,
    pub limit: usize,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable(msg)
}

fn number(v: &Value, what: &str) -> Result<f64, ApiError> {
    v.as_f64().filter(|n| n.is_finite()).ok_or_else(|| bad(format!("{what}: expected a number")))
}

/// Validates a `feedback_config` object (the SDK's `FeedbackConfig`) and returns it as stored.
pub fn check_config(v: &Value) -> Result<Map<String, Value>, ApiError> {
    let obj = v.as_object().ok_or_else(|| bad("feedback_config: expected an object"))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("feedback_config.type: required (continuous, categorical or freeform)"))?;
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    match kind {
        "continuous" => {
            let bound = |k: &str| -> Result<Option<f64>, ApiError> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => number(v, &format!("feedback_config.{k}")).map(Some),
                }
            };
            let (min, max) = (bound("min")?, bound("max")?);
            if let (Some(lo), Some(hi)) = (min, max) {
                if lo >= hi {
                    return Err(bad(format!("feedback_config: min ({lo}) must be less than max ({hi})")));
                }
            }
            out.insert("min".into(), obj.get("min").cloned().unwrap_or(Value::Null));
            out.insert("max".into(), obj.get("max").cloned().unwrap_or(Value::Null));
        }
        "categorical" => {
            let cats = match obj.get("categories") {
                Some(Value::Array(c)) if !c.is_empty() => c,
                _ => {
                    return Err(bad("feedback_config.categories: required for categorical feedback (a non-empty array of {value, label})"))
                }
            };
            out.insert("categories".into(), Value::Array(check_categories(cats, "feedback_config.categories")?));
            let multiple = match obj.get("allows_multiple_categories") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("feedback_config.allows_multiple_categories: expected a boolean")),
            };
            out.insert("allows_multiple_categories".into(), Value::Bool(multiple));
        }
        "freeform" => {}
        other => return Err(bad(format!("feedback_config.type: {other:?} is not continuous, categorical or freeform"))),
    }
    Ok(out)
}

/// Validates categories: numeric values and labels, none repeated.
fn check_categories(cats: &[Value], what: &str) -> Result<Vec<Value>, ApiError> {
    if cats.len() > MAX_CATEGORIES {
        return Err(bad(format!("{what}: at most {MAX_CATEGORIES} categories")));
    }
    let mut out = Vec::with_capacity(cats.len());
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for (i, c) in cats.iter().enumerate() {
        let c = c.as_object().ok_or_else(|| bad(format!("{what}[{i}]: expected an object {{value, label}}")))?;
        let value = number(c.get("value").unwrap_or(&Value::Null), &format!("{what}[{i}].value"))?;
        let label = match c.get("label") {
            None | Some(Value::Null) => None,
            Some(Value::String(l)) if l.len() > MAX_LABEL_BYTES => {
                return Err(bad(format!("{what}[{i}].label: longer than {MAX_LABEL_BYTES} bytes")))
            }
            Some(Value::String(l)) => Some(l.clone()),
            Some(_) => return Err(bad(format!("{what}[{i}].label: expected a string"))),
        };
        if values.contains(&value) {
            return Err(bad(format!("{what}[{i}].value: {value} appears twice")));
        }
        if let Some(l) = &label {
            if labels.contains(l) {
                return Err(bad(format!("{what}[{i}].label: {l:?} appears twice")));
            }
            labels.push(l.clone());
        }
        values.push(value);
        out.push(json!({ "value": c.get("value"), "label": label }));
    }
    Ok(out)
}

fn key_of(obj: &Map<String, Value>) -> Result<String, ApiError> {
    let key = obj.get("feedback_key").and_then(Value::as_str).ok_or_else(|| bad("feedback_key: required (a string)"))?;
    check_key(key).map_err(|e| bad(format!("feedback_{}", e.0)))?;
    Ok(key.to_owned())
}

fn opt_bool(obj: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("{k}: expected a boolean"))),
    }
}

/// The FeedbackConfigSchema the SDK parses.
fn config_json(tenant: TenantId, c: &FeedbackConfigDef, is_first: bool) -> Value {
    json!({
        "id": c.id,
        "feedback_key": c.key,
        "feedback_config": c.config.to_value_or_null(),
        "tenant_id": tenant,
        "modified_at": c.modified_at.to_iso(),
        "is_lower_score_better": c.is_lower_score_better,
        "is_enforced": c.is_enforced,
        "is_first": is_first,
        "is_deleted": c.deleted,
    })
}

/// The live config a change without an id targets: the key's enforced one, else its first.
fn target(live: &[FeedbackConfigDef]) -> Option<&FeedbackConfigDef> {
    live.iter().find(|c| c.is_enforced).or_else(|| live.iter().min_by_key(|c| (c.created_at, c.id)))
}

impl FeedbackService {
    /// Every config of a key (or all), oldest first.
    async fn configs(&self, tenant: TenantId) -> Result<Vec<FeedbackConfigDef>, ApiError> {
        let mut all = self.store.list_feedback_configs(tenant).await.map_err(storage_error)?;
        all.sort_by(|a, b| (&a.key, a.created_at, a.id).cmp(&(&b.key, b.created_at, b.id)));
        Ok(all)
    }

    async fn live_configs(&self, tenant: TenantId, key: &str) -> Result<Vec<FeedbackConfigDef>, ApiError> {
        Ok(self.configs(tenant).await?.into_iter().filter(|c| c.key == key && !c.deleted).collect())
    }

    /// Publishes (durable) then writes through (visible).
    async fn commit_config(&self, tenant: TenantId, config: FeedbackConfigDef) -> Result<FeedbackConfigDef, ApiError> {
        let env = Envelope::new(tenant, Event::FeedbackConfigChangedV1(FeedbackConfigChangedV1 { config: config.clone() }));
        self.bus.publish(&[env]).await.map_err(bus_error)?;
        self.store.put_feedback_config(tenant, &config).await.map_err(storage_error)?;
        metrics::counter!("sextant_feedback_config_changes_total").increment(1);
        Ok(config)
    }

    /// A new version of `c`: later than the stored one, so it wins in every store.
    fn next_version(c: &FeedbackConfigDef) -> FeedbackConfigDef {
        let now = Timestamp::now();
        FeedbackConfigDef { modified_at: Timestamp(now.micros().max(c.modified_at.micros() + 1)), ..c.clone() }
    }

    /// `POST /feedback-configs`.
    #[instrument(name = "feedback_configs.create", skip_all, fields(tenant = %tenant))]
    pub async fn create_config(&self, tenant: TenantId, body: &Value) -> Result<Value, ApiError> {
        let obj = body.as_object().ok_or_else(|| bad("body: expected a JSON object"))?;
        let key = key_of(obj)?;
        let config = check_config(obj.get("feedback_config").ok_or_else(|| bad("feedback_config: required (an object)"))?)?;
        let lower_better = opt_bool(obj, "is_lower_score_better")?;
        let enforced = opt_bool(obj, "is_enforced")?.unwrap_or(false);
        let live = self.live_configs(tenant, &key).await?;
        if let Some(first) = target(&live) {
            let same = first.config.to_value_or_null() == Value::Object(config.clone())
                && lower_better.is_none_or(|b| first.is_lower_score_better == Some(b))
                && (!enforced || first.is_enforced);
            if same {
                return Ok(config_json(tenant, first, true));
            }
            return Err(ApiError::bad_request(format!(
                "Feedback config already exists for key {key:?} with other settings; update it (PATCH /feedback-configs) instead"
            )));
        }
        let now = Timestamp::now();
        let def = FeedbackConfigDef {
            id: Uuid::now_v7(),
            key,
            config: RawJson::from_value(&Value::Object(config)),
            is_lower_score_better: Some(lower_better.unwrap_or(false)),
            is_enforced: enforced,
            deleted: false,
            created_at: now,
            modified_at: now,
        };
        let stored = self.commit_config(tenant, def).await?;
        Ok(config_json(tenant, &stored, true))
    }

    /// `GET /feedback-configs`: one live config per key (its first), or every config with
    /// `include_all_configs`; ordered by key, then creation.
    pub async fn list_configs(&self, tenant: TenantId, q: &ConfigQuery) -> Result<Vec<Value>, ApiError> {
        let all = self.configs(tenant).await?;
        let needle = q.name_contains.as_ref().map(|n| n.to_lowercase());
        let mut out = Vec::new();
        let mut seen_first: Vec<&str> = Vec::new();
        let mut firsts = std::collections::HashSet::new();
        for c in all.iter().filter(|c| !c.deleted) {
            if !seen_first.contains(&c.key.as_str()) {
                seen_first.push(&c.key);
                firsts.insert(c.id);
            }
        }
        for c in &all {
            let is_first = firsts.contains(&c.id);
            let keep = (q.keys.is_empty() || q.keys.contains(&c.key))
                && needle.as_ref().is_none_or(|n| c.key.to_lowercase().contains(n))
                && q.is_enforced.is_none_or(|e| c.is_enforced == e)
                && (q.include_all || is_first);
            if keep {
                out.push(config_json(tenant, c, is_first));
            }
        }
        Ok(out.into_iter().skip(q.offset).take(q.limit.max(1)).collect())
    }

    /// `PATCH /feedback-configs`: `feedback_key` (and `id` for one config of several) with any
    /// of `feedback_config` (replaces it), `is_lower_score_better`, `add_categories`,
    /// `remove_categories`.
    #[instrument(name = "feedback_configs.update", skip_all, fields(tenant = %tenant))]
    pub async fn update_config(&self, tenant: TenantId, body: &Value) -> Result<Value, ApiError> {
        let obj = body.as_object().ok_or_else(|| bad("body: expected a JSON object"))?;
        let key = key_of(obj)?;
        let id = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Uuid::parse_str(s).map_err(|_| bad(format!("id: {s:?} is not a UUID")))?),
            Some(_) => return Err(bad("id: expected a UUID string")),
        };
        let live = self.live_configs(tenant, &key).await?;
        let current = match id {
            Some(id) => live.iter().find(|c| c.id == id),
            None => target(&live),
        }
        .ok_or_else(|| match id {
            Some(id) => ApiError::not_found(format!("feedback config {id} of key {key:?} not found")),
            None => ApiError::not_found(format!("no feedback config for key {key:?}")),
        })?;
        let mut next = Self::next_version(current);
        let mut config = match obj.get("feedback_config") {
            None | Some(Value::Null) => current.config.to_value_or_null().as_object().cloned().unwrap_or_default(),
            Some(v) => check_config(v)?,
        };
        let adds = obj.get("add_categories").filter(|v| !v.is_null());
        let removes = obj.get("remove_categories").filter(|v| !v.is_null());
        if adds.is_some() || removes.is_some() {
            if config.get("type").and_then(Value::as_str) != Some("categorical") {
                return Err(bad(format!("feedback config of key {key:?} is not categorical: it has no categories to change")));
            }
            let mut cats = config.get("categories").and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(add) = adds {
                let add = add.as_array().ok_or_else(|| bad("add_categories: expected an array of {value, label}"))?;
                cats.extend(add.iter().cloned());
            }
            if let Some(rm) = removes {
                let rm = rm.as_array().ok_or_else(|| bad("remove_categories: expected an array of values"))?;
                let rm =
                    rm.iter().enumerate().map(|(i, v)| number(v, &format!("remove_categories[{i}]"))).collect::<Result<Vec<_>, _>>()?;
                cats.retain(|c| !c.get("value").and_then(Value::as_f64).is_some_and(|v| rm.contains(&v)));
                if cats.len() < 2 {
                    return Err(bad("remove_categories: a categorical config keeps at least two categories"));
                }
            }
            config.insert("categories".into(), Value::Array(check_categories(&cats, "categories")?));
        }
        next.config = RawJson::from_value(&Value::Object(config));
        if let Some(b) = opt_bool(obj, "is_lower_score_better")? {
            next.is_lower_score_better = Some(b);
        }
        let is_first = target(&live).is_some_and(|t| t.id == next.id) || live.len() == 1;
        let stored = self.commit_config(tenant, next).await?;
        Ok(config_json(tenant, &stored, is_first))
    }

    /// `DELETE /feedback-configs?feedback_key=` (every config of the key) or `?id=` (one).
    #[instrument(name = "feedback_configs.delete", skip_all, fields(tenant = %tenant))]
    pub async fn delete_config(&self, tenant: TenantId, key: Option<&str>, id: Option<Uuid>) -> Result<(), ApiError> {
        let all = self.configs(tenant).await?;
        let doomed: Vec<&FeedbackConfigDef> = match (key, id) {
            (Some(k), None) => all.iter().filter(|c| c.key == k && !c.deleted).collect(),
            (None, Some(id)) => all.iter().filter(|c| c.id == id && !c.deleted).collect(),
            _ => return Err(bad("pass exactly one of feedback_key or id")),
        };
        if doomed.is_empty() {
            return Err(match (key, id) {
                (Some(k), _) => ApiError::not_found(format!("no feedback config for key {k:?}")),
                (_, Some(id)) => ApiError::not_found(format!("feedback config {id} not found")),
                _ => unreachable!("checked above"),
            });
        }
        for c in doomed {
            let mut next = Self::next_version(c);
            next.deleted = true;
            self.commit_config(tenant, next).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_validated_with_clear_messages() {
        let ok = check_config(&json!({"type": "continuous", "min": 0, "max": 5})).unwrap();
        assert_eq!(Value::Object(ok), json!({"type": "continuous", "min": 0, "max": 5}));
        let cats = check_config(&json!({"type": "categorical", "categories": [{"value": 0, "label": "no"}, {"value": 1}]})).unwrap();
        assert_eq!(cats["allows_multiple_categories"], json!(false));
        assert_eq!(cats["categories"][1], json!({"value": 1, "label": null}));
        for (bad_config, needle) in [
            (json!("x"), "expected an object"),
            (json!({}), "type: required"),
            (json!({"type": "stars"}), "is not continuous"),
            (json!({"type": "continuous", "min": 5, "max": 1}), "min (5) must be less than max (1)"),
            (json!({"type": "continuous", "min": "low"}), "min: expected a number"),
            (json!({"type": "categorical"}), "categories: required"),
            (json!({"type": "categorical", "categories": [{"value": 1}, {"value": 1}]}), "appears twice"),
            (json!({"type": "categorical", "categories": [{"value": 1, "label": "a"}, {"value": 2, "label": "a"}]}), "\"a\" appears twice"),
            (json!({"type": "categorical", "categories": [{"label": "a"}]}), "categories[0].value: expected a number"),
        ] {
            let e = check_config(&bad_config).unwrap_err();
            assert!(e.to_string().contains(needle), "{bad_config}: {e}");
        }
    }
}
