//! Annotation queues: definitions, items, leases, reviews and agreement.
//!
//! A review is recorded on the item first (compare-and-set: a reviewer reviews an item once,
//! and only while no one else holds its lease), then its scores are published as feedback
//! with ids derived from (item, reviewer, key), so retrying a review is idempotent. If the
//! publish fails the review is taken back, so nothing is stored half-way.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tracing::instrument;
use uuid::Uuid;

use sextant_core::annotation::{
    agreement, ItemStatus, KeyAgreement, Queue, QueueItem, Review, RoutingRule, MAX_QUEUE_NAME_BYTES, MAX_REVIEWER_BYTES,
};
use sextant_core::feedback::{check_key, parse_comment, parse_correction, parse_score, parse_value};
use sextant_core::{Feedback, FeedbackId, ProjectId, QueueId, RawJson, Run, RunId, TenantId, Timestamp};
use sextant_proto::ApiError;
use sextant_storage::{QueueQuery, Storage, StorageError, StorageErrorKind};

use crate::core::{storage_error, FeedbackService};

/// Default and longest lease on an item a reviewer took.
pub const DEFAULT_LEASE_SECS: u64 = 600;
pub const MAX_LEASE_SECS: u64 = 24 * 3600;
/// Most runs one add request carries.
pub const MAX_ITEMS_PER_ADD: usize = 1000;
pub const MAX_REVIEWERS_PER_ITEM: u32 = 20;
pub const MAX_RULES_PER_QUEUE: usize = 50;

/// Derives the id of a reviewer's feedback on one key of one item.
const REVIEW_NAMESPACE: Uuid = Uuid::from_u128(0x2c1e_7d0a_51f3_4b8e_9a64_0f2d_83c5_e117);

pub struct Queues {
    store: Arc<dyn Storage>,
    feedback: Arc<FeedbackService>,
}

fn opt_string(obj: &Map<String, Value>, k: &str, max: usize) -> Result<Option<Option<String>>, ApiError> {
    match obj.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.len() > max => Err(ApiError::unprocessable(format!("{k}: longer than {max} bytes"))),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::unprocessable(format!("{k}: expected a string"))),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::unprocessable("name: must not be empty"));
    }
    if name.len() > MAX_QUEUE_NAME_BYTES {
        return Err(ApiError::unprocessable(format!("name: longer than {MAX_QUEUE_NAME_BYTES} bytes")));
    }
    Ok(())
}

pub fn check_reviewer(r: &str) -> Result<(), ApiError> {
    if r.trim().is_empty() || r.len() > MAX_REVIEWER_BYTES || r.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(format!("reviewer: 1 to {MAX_REVIEWER_BYTES} bytes without control characters")));
    }
    Ok(())
}

fn rubric(obj: &Map<String, Value>) -> Result<Option<Option<RawJson>>, ApiError> {
    match obj.get("rubric_items") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v @ Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let key = it
                    .get("feedback_key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::unprocessable(format!("rubric_items[{i}].feedback_key: required (a string)")))?;
                check_key(key).map_err(|e| ApiError::unprocessable(format!("rubric_items[{i}].feedback_{}", e.0)))?;
            }
            Ok(Some(Some(RawJson::from_value(v))))
        }
        Some(_) => Err(ApiError::unprocessable("rubric_items: expected an array")),
    }
}

fn reviewers_needed(obj: &Map<String, Value>) -> Result<Option<u32>, ApiError> {
    match obj.get("num_reviewers_per_item") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_REVIEWERS_PER_ITEM)).contains(n))
            .map(|n| Some(n as u32))
            .ok_or_else(|| ApiError::unprocessable(format!("num_reviewers_per_item: an integer from 1 to {MAX_REVIEWERS_PER_ITEM}"))),
    }
}

/// The AnnotationQueueWithDetails object the SDK parses.
pub fn queue_json(tenant: TenantId, q: &Queue) -> Value {
    json!({
        "id": q.id,
        "name": q.name,
        "tenant_id": tenant,
        "description": q.description,
        "rubric_instructions": q.rubric_instructions,
        "rubric_items": q.rubric_items.as_ref().map_or(json!([]), RawJson::to_value_or_null),
        "num_reviewers_per_item": q.num_reviewers_per_item,
        "created_at": q.created_at.to_iso(),
        "updated_at": q.updated_at.to_iso(),
        "routing_rules": q.rules.iter().map(rule_json).collect::<Vec<_>>(),
    })
}

pub fn rule_json(r: &RoutingRule) -> Value {
    json!({"id": r.id, "filter": r.filter, "project_ids": r.project_ids, "sampling_rate": r.sampling_rate, "created_at": r.created_at.to_iso()})
}

/// A platform-API item (metadata only).
pub fn item_json(it: &QueueItem, reviewers_needed: u32) -> Value {
    json!({
        "id": it.id,
        "queue_id": it.queue_id,
        "run_id": it.run_id,
        "item_type": "RUN",
        "project_id": it.project_id,
        "start_time": it.start_time.map(Timestamp::to_iso),
        "thread_id": null,
        "added_at": it.added_at.to_iso(),
        "last_reviewed_time": it.last_reviewed_time.map(Timestamp::to_iso),
        "completed_by": it.reviews.iter().map(|r| r.reviewer.clone()).collect::<Vec<_>>(),
        "reserved_by": it.lease.iter().filter(|l| l.until > Timestamp::now()).map(|l| l.reviewer.clone()).collect::<Vec<_>>(),
        "status": if it.completed(reviewers_needed) { "completed" } else { "needs_review" },
    })
}

impl Queues {
    pub fn new(store: Arc<dyn Storage>, feedback: Arc<FeedbackService>) -> Self {
        Self { store, feedback }
    }

    pub async fn get(&self, tenant: TenantId, id: QueueId) -> Result<Queue, ApiError> {
        self.store
            .get_queue(tenant, id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("annotation queue {id} not found")))
    }

    #[instrument(name = "queues.create", skip_all, fields(tenant = %tenant))]
    pub async fn create(&self, tenant: TenantId, body: &Value) -> Result<Queue, ApiError> {
        let obj = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let name = match obj.get("name") {
            Some(Value::String(n)) => n.clone(),
            _ => return Err(ApiError::unprocessable("name: required (a string)")),
        };
        check_name(&name)?;
        let id = match obj.get("id") {
            None | Some(Value::Null) => QueueId(Uuid::now_v7()),
            Some(Value::String(s)) => QueueId(Uuid::parse_str(s).map_err(|_| ApiError::unprocessable(format!("id: {s:?} is not a UUID")))?),
            Some(_) => return Err(ApiError::unprocessable("id: expected a UUID string")),
        };
        let now = Timestamp::now();
        let queue = Queue {
            id,
            name,
            description: opt_string(obj, "description", 64 * 1024)?.flatten(),
            rubric_instructions: opt_string(obj, "rubric_instructions", 64 * 1024)?.flatten(),
            rubric_items: rubric(obj)?.flatten(),
            num_reviewers_per_item: reviewers_needed(obj)?.unwrap_or(1),
            created_at: now,
            updated_at: now,
            rules: Vec::new(),
        };
        let stored = self.store.create_queue(tenant, &queue).await.map_err(storage_error)?;
        if stored.name != queue.name {
            return Err(ApiError::conflict(format!("annotation queue {id} already exists with another name")));
        }
        Ok(stored)
    }

    pub async fn list(&self, tenant: TenantId, q: QueueQuery) -> Result<Vec<Queue>, ApiError> {
        self.store.list_queues(tenant, &q).await.map_err(storage_error)
    }

    pub async fn update(&self, tenant: TenantId, id: QueueId, body: &Value) -> Result<Queue, ApiError> {
        let obj = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let mut q = self.get(tenant, id).await?;
        if let Some(Some(name)) = opt_string(obj, "name", MAX_QUEUE_NAME_BYTES)? {
            check_name(&name)?;
            q.name = name;
        }
        if let Some(d) = opt_string(obj, "description", 64 * 1024)? {
            q.description = d;
        }
        if let Some(d) = opt_string(obj, "rubric_instructions", 64 * 1024)? {
            q.rubric_instructions = d;
        }
        if let Some(r) = rubric(obj)? {
            q.rubric_items = r;
        }
        if let Some(n) = reviewers_needed(obj)? {
            q.num_reviewers_per_item = n;
        }
        q.updated_at = Timestamp::now();
        self.store
            .put_queue(tenant, &q)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("annotation queue {id} not found")))
    }

    pub async fn delete(&self, tenant: TenantId, id: QueueId) -> Result<(), ApiError> {
        if self.store.delete_queue(tenant, id).await.map_err(storage_error)? {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("annotation queue {id} not found")))
        }
    }

    /// Adds a routing rule: every finished run matching `filter` (optionally only in some
    /// projects, optionally sampled) is added to the queue from the run stream.
    pub async fn add_rule(&self, tenant: TenantId, id: QueueId, body: &Value) -> Result<RoutingRule, ApiError> {
        let obj = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let filter = match obj.get("filter") {
            Some(Value::String(f)) if !f.trim().is_empty() => f.clone(),
            _ => return Err(ApiError::unprocessable("filter: required (a run filter, e.g. eq(error, true))")),
        };
        sextant_filter::parse(&filter).map_err(|e| ApiError::unprocessable(format!("filter: {e}")))?;
        let project_ids = match obj.get("project_ids") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .map(ProjectId)
                        .ok_or_else(|| ApiError::unprocessable("project_ids: expected UUID strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ApiError::unprocessable("project_ids: expected an array of UUID strings")),
        };
        let sampling_rate = match obj.get("sampling_rate") {
            None | Some(Value::Null) => 1.0,
            Some(v) => v
                .as_f64()
                .filter(|r| (0.0..=1.0).contains(r) && *r > 0.0)
                .ok_or_else(|| ApiError::unprocessable("sampling_rate: a number in (0, 1]"))?,
        };
        let mut q = self.get(tenant, id).await?;
        if q.rules.len() >= MAX_RULES_PER_QUEUE {
            return Err(ApiError::unprocessable(format!("a queue has at most {MAX_RULES_PER_QUEUE} routing rules")));
        }
        let rule = RoutingRule { id: Uuid::now_v7(), filter, project_ids, sampling_rate, created_at: Timestamp::now() };
        q.rules.push(rule.clone());
        q.updated_at = Timestamp::now();
        self.store
            .put_queue(tenant, &q)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("annotation queue {id} not found")))?;
        Ok(rule)
    }

    pub async fn delete_rule(&self, tenant: TenantId, id: QueueId, rule: Uuid) -> Result<(), ApiError> {
        let mut q = self.get(tenant, id).await?;
        let before = q.rules.len();
        q.rules.retain(|r| r.id != rule);
        if q.rules.len() == before {
            return Err(ApiError::not_found(format!("routing rule {rule} not found in queue {id}")));
        }
        self.store.put_queue(tenant, &q).await.map_err(storage_error)?;
        Ok(())
    }

    /// Adds runs by id. A run not stored yet is accepted, as feedback for it is (the SDK adds
    /// a run from inside the `@traceable` function that produces it, before the run is sent):
    /// its item waits, and is resolved (project, start time) once the run arrives.
    pub async fn add_runs(&self, tenant: TenantId, id: QueueId, runs: &[RunId]) -> Result<Vec<QueueItem>, ApiError> {
        if runs.len() > MAX_ITEMS_PER_ADD {
            return Err(ApiError::unprocessable(format!("at most {MAX_ITEMS_PER_ADD} runs per request")));
        }
        self.get(tenant, id).await?;
        let mut items = Vec::with_capacity(runs.len());
        for r in runs {
            items.push(match self.store.get_run(tenant, *r).await.map_err(storage_error)? {
                Some(run) => new_item(id, &run),
                None => pending_item(id, *r),
            });
        }
        self.store.add_queue_items(tenant, id, items).await.map_err(storage_error)
    }

    /// Fills in the project and start time of items added before their run was stored, for
    /// the runs that have arrived since (and records them, so this is done once per item).
    async fn resolve_pending(&self, tenant: TenantId, id: QueueId, items: &mut [QueueItem]) -> Result<(), ApiError> {
        for it in items.iter_mut().filter(|it| it.project_id.is_none()) {
            let Some(run) = self.store.get_run(tenant, it.run_id).await.map_err(storage_error)? else { continue };
            let (project, start) = (run.project_id, run.start_time);
            it.project_id = Some(project);
            it.start_time = start;
            let resolved = self
                .store
                .update_queue_item(
                    tenant,
                    id,
                    it.id,
                    Box::new(move |stored: &mut QueueItem| {
                        if stored.project_id.is_some() {
                            return Ok(false);
                        }
                        stored.project_id = Some(project);
                        stored.start_time = start;
                        Ok(true)
                    }),
                )
                .await;
            if let Err(e) = resolved {
                // Shown resolved anyway; the next read records it.
                tracing::warn!(error = %e, queue = %id, item = %it.id, "cannot record a resolved queue item");
            }
        }
        Ok(())
    }

    /// Adds items the router found (runs known to exist). Idempotent per run.
    pub async fn add_routed(&self, tenant: TenantId, id: QueueId, run: &Run) -> Result<(), StorageError> {
        self.store.add_queue_items(tenant, id, vec![new_item(id, run)]).await.map(|_| ())
    }

    pub async fn items(&self, tenant: TenantId, id: QueueId) -> Result<(Queue, Vec<QueueItem>), ApiError> {
        let q = self.get(tenant, id).await?;
        let mut items = self.store.list_queue_items(tenant, id).await.map_err(storage_error)?;
        self.resolve_pending(tenant, id, &mut items).await?;
        Ok((q, items))
    }

    /// Items in a status bucket, as the asking reviewer sees them.
    pub async fn items_with_status(
        &self,
        tenant: TenantId,
        id: QueueId,
        status: Option<ItemStatus>,
        reviewer: Option<&str>,
    ) -> Result<(Queue, Vec<QueueItem>), ApiError> {
        let (q, mut items) = self.items(tenant, id).await?;
        if let Some(st) = status {
            items.retain(|it| it.has_status(st, reviewer, q.num_reviewers_per_item));
        }
        Ok((q, items))
    }

    pub async fn delete_items(&self, tenant: TenantId, id: QueueId, items: &[Uuid]) -> Result<usize, ApiError> {
        self.get(tenant, id).await?;
        self.store.delete_queue_items(tenant, id, items).await.map_err(storage_error)
    }

    pub async fn delete_run(&self, tenant: TenantId, id: QueueId, run: RunId) -> Result<(), ApiError> {
        let (_, items) = self.items(tenant, id).await?;
        let ids: Vec<Uuid> = items.iter().filter(|i| i.run_id == run).map(|i| i.id).collect();
        if ids.is_empty() {
            return Err(ApiError::not_found(format!("run {run} is not in annotation queue {id}")));
        }
        self.store.delete_queue_items(tenant, id, &ids).await.map_err(storage_error)?;
        Ok(())
    }

    pub async fn set_done(&self, tenant: TenantId, id: QueueId, item: Uuid, done: bool) -> Result<QueueItem, ApiError> {
        self.get(tenant, id).await?;
        self.store
            .update_queue_item(
                tenant,
                id,
                item,
                Box::new(move |it: &mut QueueItem| {
                    let changed = it.done != done;
                    it.done = done;
                    Ok(changed)
                }),
            )
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("item {item} not found in annotation queue {id}")))
    }

    /// Leases the next item `reviewer` may review, with its run and the queue's rubric.
    #[instrument(name = "queues.next", skip_all, fields(tenant = %tenant, queue = %id))]
    pub async fn next(
        &self,
        tenant: TenantId,
        id: QueueId,
        reviewer: &str,
        lease_secs: u64,
    ) -> Result<Option<(Queue, QueueItem, Option<Run>)>, ApiError> {
        check_reviewer(reviewer)?;
        if lease_secs == 0 || lease_secs > MAX_LEASE_SECS {
            return Err(ApiError::unprocessable(format!("lease_seconds: from 1 to {MAX_LEASE_SECS}")));
        }
        let q = self.get(tenant, id).await?;
        let now = Timestamp::now();
        let until = Timestamp(now.micros() + lease_secs as i64 * 1_000_000);
        let Some(item) =
            self.store.take_next_item(tenant, id, reviewer, now, until, q.num_reviewers_per_item).await.map_err(storage_error)?
        else {
            return Ok(None);
        };
        let run = self.store.get_run(tenant, item.run_id).await.map_err(storage_error)?;
        Ok(Some((q, item, run)))
    }

    /// A reviewer's scores for an item: recorded on the item, stored as feedback (source: the
    /// reviewer), the lease released.
    #[instrument(name = "queues.review", skip_all, fields(tenant = %tenant, queue = %id, item = %item_id))]
    pub async fn review(&self, tenant: TenantId, id: QueueId, item_id: Uuid, body: &Value) -> Result<QueueItem, ApiError> {
        let obj = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let reviewer =
            obj.get("reviewer").and_then(Value::as_str).ok_or_else(|| ApiError::unprocessable("reviewer: required (a string)"))?.to_owned();
        check_reviewer(&reviewer)?;
        let scores = match obj.get("scores") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            _ => return Err(ApiError::unprocessable("scores: required, a non-empty array of {key, score?, value?, comment?}")),
        };
        let correction = parse_correction(obj.get("correction")).map_err(|e| ApiError::unprocessable(e.0))?;
        let done = obj.get("done").and_then(Value::as_bool).unwrap_or(false);
        let q = self.get(tenant, id).await?;
        let item = self
            .store
            .get_queue_item(tenant, id, item_id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("item {item_id} not found in annotation queue {id}")))?;
        // Validate everything before anything is stored.
        let now = Timestamp::now();
        let mut entries = Vec::new();
        let mut labels = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, s) in scores.iter().enumerate() {
            let so = s.as_object().ok_or_else(|| ApiError::unprocessable(format!("scores[{i}]: expected an object")))?;
            let key = so
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::unprocessable(format!("scores[{i}].key: required (a string)")))?;
            check_key(key).map_err(|e| ApiError::unprocessable(format!("scores[{i}].{}", e.0)))?;
            if !seen.insert(key.to_owned()) {
                return Err(ApiError::unprocessable(format!("scores[{i}].key: {key:?} appears twice")));
            }
            let score = parse_score(so.get("score")).map_err(|e| ApiError::unprocessable(format!("scores[{i}].{}", e.0)))?;
            let value = parse_value(so.get("value")).map_err(|e| ApiError::unprocessable(format!("scores[{i}].{}", e.0)))?;
            let comment = parse_comment(so.get("comment")).map_err(|e| ApiError::unprocessable(format!("scores[{i}].{}", e.0)))?;
            if score.is_none() && value.is_none() {
                return Err(ApiError::unprocessable(format!("scores[{i}]: needs a score or a value")));
            }
            let fid = FeedbackId(Uuid::new_v5(&REVIEW_NAMESPACE, format!("{item_id}/{reviewer}/{key}").as_bytes()));
            let source = json!({"type": "app", "user_name": reviewer, "metadata": {"annotation_queue_id": id, "queue_item_id": item_id, "reviewer": reviewer}});
            let f = Feedback {
                id: fid,
                run_id: Some(item.run_id),
                trace_id: None,
                session_id: item.project_id,
                key: key.to_owned(),
                score,
                value,
                comment,
                correction: correction.clone(),
                feedback_source: Some(RawJson::from_value(&source)),
                feedback_config: None,
                created_at: now,
                modified_at: now,
                start_time: None,
                comparative_experiment_id: None,
                feedback_group_id: None,
                extra: None,
            };
            let label = match (&f.score, f.value_label()) {
                (Some(sc), _) => sc.label(),
                (None, Some(v)) => v,
                (None, None) => unreachable!("checked above"),
            };
            labels.push((key.to_owned(), label));
            entries.push(f);
        }
        let review = Review { reviewer: reviewer.clone(), at: now, labels, feedback_ids: entries.iter().map(|f| f.id).collect() };
        let needed = q.num_reviewers_per_item;
        let rec = review.clone();
        let recorded = self
            .store
            .update_queue_item(
                tenant,
                id,
                item_id,
                Box::new(move |it: &mut QueueItem| {
                    if it.reviewed_by(&rec.reviewer) {
                        return Err(StorageError::new(StorageErrorKind::Conflict, format!("{} already reviewed this item", rec.reviewer)));
                    }
                    if it.leased_to_other(&rec.reviewer, rec.at) {
                        return Err(StorageError::new(StorageErrorKind::Conflict, "another reviewer holds this item's lease"));
                    }
                    if it.completed(needed) {
                        return Err(StorageError::new(StorageErrorKind::Conflict, "this item already has all the reviews it needs"));
                    }
                    it.reviews.push(rec.clone());
                    it.last_reviewed_time = Some(rec.at);
                    it.lease = None;
                    it.done |= done;
                    Ok(true)
                }),
            )
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("item {item_id} not found in annotation queue {id}")))?;
        if let Err(e) = self.feedback.create_validated(tenant, entries).await {
            // Take the review back: a retry then starts from scratch.
            let who = reviewer.clone();
            let _ = self
                .store
                .update_queue_item(
                    tenant,
                    id,
                    item_id,
                    Box::new(move |it: &mut QueueItem| {
                        let before = it.reviews.len();
                        it.reviews.retain(|r| r.reviewer != who);
                        Ok(it.reviews.len() != before)
                    }),
                )
                .await;
            return Err(e);
        }
        metrics::counter!("sextant_queue_reviews_total").increment(1);
        Ok(recorded)
    }

    pub async fn agreement(&self, tenant: TenantId, id: QueueId) -> Result<Vec<KeyAgreement>, ApiError> {
        let (_, items) = self.items(tenant, id).await?;
        Ok(agreement(&items))
    }
}

/// An item whose run is not stored yet: project and start time come when it arrives.
fn pending_item(queue: QueueId, run: RunId) -> QueueItem {
    QueueItem {
        id: Uuid::now_v7(),
        queue_id: queue,
        run_id: run,
        project_id: None,
        start_time: None,
        added_at: Timestamp::now(),
        last_reviewed_time: None,
        lease: None,
        reviews: Vec::new(),
        done: false,
    }
}

fn new_item(queue: QueueId, run: &Run) -> QueueItem {
    QueueItem {
        id: Uuid::now_v7(),
        queue_id: queue,
        run_id: run.id,
        project_id: Some(run.project_id),
        start_time: run.start_time,
        added_at: Timestamp::now(),
        last_reviewed_time: None,
        lease: None,
        reviews: Vec::new(),
        done: false,
    }
}
