//! The gRPC `FeedbackService` and `AnnotationQueueService` (`proto/sextant/v1/feedback.proto`):
//! a thin transport over [`FeedbackService`](crate::FeedbackService) and [`Queues`], like
//! `http.rs`. Requests become the JSON bodies REST receives, so both transports share one
//! validation; failures become statuses through [`ApiError`], the one mapping.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use tracing::{field, instrument};

use sextant_auth::Authenticator;
use sextant_core::annotation::{ItemStatus, KeyAgreement, Queue, QueueItem, RoutingRule};
use sextant_core::feedback::Score;
use sextant_core::{Feedback, FeedbackId, ProjectId, QueueId, RawJson, RunId, TenantId, Timestamp};
use sextant_proto::error::storage_error;
use sextant_proto::grpc::{authenticate, json_text, non_empty, required_uuid, run_to_pb, timestamp_to_pb, uuids, ClientErrors};
use sextant_proto::pb;
use sextant_proto::pb::annotation_queue_service_server::{AnnotationQueueService, AnnotationQueueServiceServer};
use sextant_proto::pb::feedback_service_server::{FeedbackService as FeedbackRpc, FeedbackServiceServer};
use sextant_proto::ApiError;
use sextant_storage::{FeedbackQuery, QueueQuery};

use crate::core::FeedbackService;
use crate::queues::{Queues, DEFAULT_LEASE_SECS};

/// A feedback entry holds at most a few documents of 1 MiB; a review at most a few dozen.
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// An item listing or a page of feedback may be large; past this, page.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

pub struct FeedbackGrpc {
    feedback: Arc<FeedbackService>,
    auth: Arc<Authenticator>,
}

pub struct QueueGrpc {
    queues: Arc<Queues>,
    auth: Arc<Authenticator>,
}

/// The gRPC `FeedbackService` over `feedback`, authenticating with `auth`.
pub fn feedback_service(feedback: Arc<FeedbackService>, auth: Arc<Authenticator>) -> ClientErrors<FeedbackServiceServer<FeedbackGrpc>> {
    sextant_proto::tuned_server!(FeedbackServiceServer::new(FeedbackGrpc { feedback, auth }), MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES)
}

/// The gRPC `AnnotationQueueService` over `queues`, authenticating with `auth`.
pub fn queue_service(queues: Arc<Queues>, auth: Arc<Authenticator>) -> ClientErrors<AnnotationQueueServiceServer<QueueGrpc>> {
    sextant_proto::tuned_server!(AnnotationQueueServiceServer::new(QueueGrpc { queues, auth }), MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES)
}

impl FeedbackGrpc {
    /// Entries as the proto promises them: an entry that names no project gets its run's
    /// (`session_id`, as the store counts it). While its run has not arrived (feedback may come
    /// first) it has none; a later read has it. Each run is looked up once per call.
    async fn with_sessions(&self, tenant: TenantId, entries: Vec<Feedback>) -> Result<Vec<pb::Feedback>, ApiError> {
        let mut projects = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for f in entries {
            out.push(self.resolve(tenant, f, &mut projects).await?);
        }
        Ok(out)
    }

    async fn with_session(&self, tenant: TenantId, f: Feedback) -> Result<pb::Feedback, ApiError> {
        self.resolve(tenant, f, &mut HashMap::new()).await
    }

    async fn resolve(
        &self,
        tenant: TenantId,
        mut f: Feedback,
        projects: &mut HashMap<RunId, Option<ProjectId>>,
    ) -> Result<pb::Feedback, ApiError> {
        if let (None, Some(run)) = (f.session_id, f.run_id) {
            f.session_id = match projects.get(&run) {
                Some(p) => *p,
                None => {
                    let p = self.feedback.store().get_run(tenant, run).await.map_err(storage_error)?.map(|r| r.project_id);
                    projects.insert(run, p);
                    p
                }
            };
        }
        Ok(feedback_to_pb(f))
    }
}

#[tonic::async_trait]
impl FeedbackRpc for FeedbackGrpc {
    #[instrument(name = "grpc.create_feedback", skip_all, fields(tenant = field::Empty))]
    async fn create_feedback(&self, req: Request<pb::CreateFeedbackRequest>) -> Result<Response<pb::Feedback>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let f = req.into_inner().feedback.ok_or_else(|| ApiError::unprocessable("feedback is required"))?;
        let body = feedback_body(f)?;
        let stored = self.feedback.create(p.tenant, &body).await?;
        // The entry is durable: a failed project lookup must not turn its creation into an
        // error (a retry would succeed), so the response then just lacks `session_id`.
        let entry = match self.with_session(p.tenant, stored.clone()).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %e, "could not resolve the project of new feedback");
                feedback_to_pb(stored)
            }
        };
        Ok(Response::new(entry))
    }

    #[instrument(name = "grpc.get_feedback", skip_all, fields(tenant = field::Empty))]
    async fn get_feedback(&self, req: Request<pb::GetFeedbackRequest>) -> Result<Response<pb::Feedback>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let id = FeedbackId(required_uuid("id", &req.get_ref().id)?);
        let entry = self.feedback.get(p.tenant, id).await?;
        Ok(Response::new(self.with_session(p.tenant, entry).await?))
    }

    #[instrument(name = "grpc.list_feedback", skip_all, fields(tenant = field::Empty))]
    async fn list_feedback(&self, req: Request<pb::ListFeedbackRequest>) -> Result<Response<pb::ListFeedbackResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let q = req.into_inner();
        let query = FeedbackQuery {
            runs: uuids("run_ids", &q.run_ids)?.into_iter().map(RunId).collect(),
            keys: q.keys,
            sources: q.sources,
            projects: uuids("session_ids", &q.session_ids)?.into_iter().map(ProjectId).collect(),
            offset: q.offset as usize,
            limit: if q.limit == 0 { 100 } else { q.limit as usize },
        };
        let list = self.feedback.list(p.tenant, query).await?;
        Ok(Response::new(pb::ListFeedbackResponse { feedback: self.with_sessions(p.tenant, list).await? }))
    }

    #[instrument(name = "grpc.update_feedback", skip_all, fields(tenant = field::Empty))]
    async fn update_feedback(&self, req: Request<pb::UpdateFeedbackRequest>) -> Result<Response<pb::Feedback>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let u = req.into_inner();
        let id = FeedbackId(required_uuid("id", &u.id)?);
        let mut body = Map::new();
        for (i, name) in u.clear.iter().enumerate() {
            if !["score", "value", "comment", "correction"].contains(&name.as_str()) {
                return Err(ApiError::unprocessable(format!("clear[{i}]: {name:?} is not score, value, comment or correction")).into());
            }
            body.insert(name.clone(), Value::Null);
        }
        let mut set = |name: &str, v: Option<Value>| -> Result<(), ApiError> {
            if let Some(v) = v {
                if body.insert(name.to_owned(), v).is_some() {
                    return Err(ApiError::unprocessable(format!("{name}: both set and cleared")));
                }
            }
            Ok(())
        };
        set("score", u.score.map(|s| score_json("score", s)).transpose()?)?;
        set("value", u.value_json.map(|v| json_text("value_json", &v)).transpose()?)?;
        set("comment", u.comment.map(Value::String))?;
        set("correction", u.correction_json.map(|v| json_text("correction_json", &v)).transpose()?)?;
        let f = self.feedback.update(p.tenant, id, &Value::Object(body)).await?;
        Ok(Response::new(self.with_session(p.tenant, f).await?))
    }

    #[instrument(name = "grpc.delete_feedback", skip_all, fields(tenant = field::Empty))]
    async fn delete_feedback(&self, req: Request<pb::DeleteFeedbackRequest>) -> Result<Response<pb::DeleteFeedbackResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let id = FeedbackId(required_uuid("id", &req.get_ref().id)?);
        self.feedback.delete(p.tenant, id).await?;
        Ok(Response::new(pb::DeleteFeedbackResponse {}))
    }
}

#[tonic::async_trait]
impl AnnotationQueueService for QueueGrpc {
    #[instrument(name = "grpc.create_queue", skip_all, fields(tenant = field::Empty))]
    async fn create_queue(&self, req: Request<pb::CreateQueueRequest>) -> Result<Response<pb::AnnotationQueue>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let c = req.into_inner();
        let mut body = Map::new();
        if !c.id.is_empty() {
            body.insert("id".into(), Value::String(c.id));
        }
        body.insert("name".into(), Value::String(c.name));
        queue_fields(&mut body, c.description, c.rubric_instructions, c.rubric_items_json)?;
        if c.num_reviewers_per_item != 0 {
            body.insert("num_reviewers_per_item".into(), c.num_reviewers_per_item.into());
        }
        let q = self.queues.create(p.tenant, &Value::Object(body)).await?;
        Ok(Response::new(queue_to_pb(q)))
    }

    #[instrument(name = "grpc.get_queue", skip_all, fields(tenant = field::Empty))]
    async fn get_queue(&self, req: Request<pb::GetQueueRequest>) -> Result<Response<pb::AnnotationQueue>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let id = queue_id("id", &req.get_ref().id)?;
        Ok(Response::new(queue_to_pb(self.queues.get(p.tenant, id).await?)))
    }

    #[instrument(name = "grpc.list_queues", skip_all, fields(tenant = field::Empty))]
    async fn list_queues(&self, req: Request<pb::ListQueuesRequest>) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let q = req.into_inner();
        if q.limit > 1000 {
            return Err(ApiError::unprocessable("limit: at most 1000").into());
        }
        let query = QueueQuery {
            ids: uuids("ids", &q.ids)?.into_iter().map(QueueId).collect(),
            name: q.name,
            name_contains: q.name_contains,
            offset: q.offset as usize,
            limit: if q.limit == 0 { 100 } else { q.limit as usize },
        };
        let list = self.queues.list(p.tenant, query).await?;
        Ok(Response::new(pb::ListQueuesResponse { queues: list.into_iter().map(queue_to_pb).collect() }))
    }

    #[instrument(name = "grpc.update_queue", skip_all, fields(tenant = field::Empty))]
    async fn update_queue(&self, req: Request<pb::UpdateQueueRequest>) -> Result<Response<pb::AnnotationQueue>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let u = req.into_inner();
        let id = queue_id("id", &u.id)?;
        let mut body = Map::new();
        if let Some(n) = u.name {
            body.insert("name".into(), Value::String(n));
        }
        queue_fields(&mut body, u.description, u.rubric_instructions, u.rubric_items_json)?;
        if let Some(n) = u.num_reviewers_per_item {
            body.insert("num_reviewers_per_item".into(), n.into());
        }
        Ok(Response::new(queue_to_pb(self.queues.update(p.tenant, id, &Value::Object(body)).await?)))
    }

    #[instrument(name = "grpc.delete_queue", skip_all, fields(tenant = field::Empty))]
    async fn delete_queue(&self, req: Request<pb::DeleteQueueRequest>) -> Result<Response<pb::DeleteQueueResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        self.queues.delete(p.tenant, queue_id("id", &req.get_ref().id)?).await?;
        Ok(Response::new(pb::DeleteQueueResponse {}))
    }

    #[instrument(name = "grpc.add_runs", skip_all, fields(tenant = field::Empty))]
    async fn add_runs(&self, req: Request<pb::AddRunsRequest>) -> Result<Response<pb::AddRunsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let a = req.into_inner();
        let id = queue_id("queue_id", &a.queue_id)?;
        let runs: Vec<RunId> = uuids("run_ids", &a.run_ids)?.into_iter().map(RunId).collect();
        let items = self.queues.add_runs(p.tenant, id, &runs).await?;
        let needed = self.queues.get(p.tenant, id).await?.num_reviewers_per_item;
        Ok(Response::new(pb::AddRunsResponse { items: items.into_iter().map(|it| item_to_pb(it, needed)).collect() }))
    }

    #[instrument(name = "grpc.list_items", skip_all, fields(tenant = field::Empty))]
    async fn list_items(&self, req: Request<pb::ListItemsRequest>) -> Result<Response<pb::ListItemsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let l = req.into_inner();
        let id = queue_id("queue_id", &l.queue_id)?;
        let status = match l.status.as_str() {
            "" => None,
            s => Some(ItemStatus::parse(s).ok_or_else(|| {
                ApiError::unprocessable(format!("status: {s:?} is not needs_my_review, needs_others_review or completed"))
            })?),
        };
        let reviewer = non_empty(l.reviewer);
        if matches!(status, Some(ItemStatus::NeedsMyReview | ItemStatus::NeedsOthersReview)) && reviewer.is_none() {
            return Err(ApiError::unprocessable(format!("reviewer: required with status {:?}", l.status)).into());
        }
        let (q, items) = self.queues.items_with_status(p.tenant, id, status, reviewer.as_deref()).await?;
        let needed = q.num_reviewers_per_item;
        Ok(Response::new(pb::ListItemsResponse { items: items.into_iter().map(|it| item_to_pb(it, needed)).collect() }))
    }

    #[instrument(name = "grpc.next_item", skip_all, fields(tenant = field::Empty))]
    async fn next_item(&self, req: Request<pb::NextItemRequest>) -> Result<Response<pb::NextItemResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let n = req.into_inner();
        let id = queue_id("queue_id", &n.queue_id)?;
        let lease = if n.lease_seconds == 0 { DEFAULT_LEASE_SECS } else { n.lease_seconds };
        let resp = match self.queues.next(p.tenant, id, &n.reviewer, lease).await? {
            None => pb::NextItemResponse::default(),
            Some((q, item, run)) => pb::NextItemResponse {
                item: Some(item_to_pb(item, q.num_reviewers_per_item)),
                run: run.map(run_to_pb),
                rubric_instructions: q.rubric_instructions,
                rubric_items_json: q.rubric_items.map(|r| r.as_str().to_owned()),
            },
        };
        Ok(Response::new(resp))
    }

    #[instrument(name = "grpc.review_item", skip_all, fields(tenant = field::Empty))]
    async fn review_item(&self, req: Request<pb::ReviewItemRequest>) -> Result<Response<pb::QueueItem>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = queue_id("queue_id", &r.queue_id)?;
        let item = required_uuid("item_id", &r.item_id)?;
        let mut scores = Vec::with_capacity(r.scores.len());
        for (i, s) in r.scores.into_iter().enumerate() {
            let mut o = Map::new();
            o.insert("key".into(), Value::String(s.key));
            if let Some(sc) = s.score {
                o.insert("score".into(), score_json(&format!("scores[{i}].score"), sc)?);
            }
            if let Some(v) = s.value_json {
                o.insert("value".into(), json_text(&format!("scores[{i}].value_json"), &v)?);
            }
            if let Some(c) = s.comment {
                o.insert("comment".into(), Value::String(c));
            }
            scores.push(Value::Object(o));
        }
        let mut body = Map::new();
        body.insert("reviewer".into(), Value::String(r.reviewer));
        body.insert("scores".into(), Value::Array(scores));
        body.insert("done".into(), Value::Bool(r.done));
        if let Some(c) = r.correction_json {
            body.insert("correction".into(), json_text("correction_json", &c)?);
        }
        let it = self.queues.review(p.tenant, id, item, &Value::Object(body)).await?;
        let needed = self.queues.get(p.tenant, id).await?.num_reviewers_per_item;
        Ok(Response::new(item_to_pb(it, needed)))
    }

    #[instrument(name = "grpc.get_agreement", skip_all, fields(tenant = field::Empty))]
    async fn get_agreement(&self, req: Request<pb::GetAgreementRequest>) -> Result<Response<pb::GetAgreementResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let id = queue_id("queue_id", &req.get_ref().queue_id)?;
        let keys = self.queues.agreement(p.tenant, id).await?;
        Ok(Response::new(pb::GetAgreementResponse { keys: keys.into_iter().map(agreement_to_pb).collect() }))
    }

    #[instrument(name = "grpc.add_routing_rule", skip_all, fields(tenant = field::Empty))]
    async fn add_routing_rule(&self, req: Request<pb::AddRoutingRuleRequest>) -> Result<Response<pb::RoutingRule>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let a = req.into_inner();
        let id = queue_id("queue_id", &a.queue_id)?;
        let mut body = Map::new();
        body.insert("filter".into(), Value::String(a.filter));
        body.insert("project_ids".into(), a.project_ids.into());
        if a.sampling_rate != 0.0 {
            let rate = serde_json::Number::from_f64(a.sampling_rate)
                .ok_or_else(|| ApiError::unprocessable("sampling_rate: a number in (0, 1]"))?;
            body.insert("sampling_rate".into(), Value::Number(rate));
        }
        let rule = self.queues.add_rule(p.tenant, id, &Value::Object(body)).await?;
        Ok(Response::new(rule_to_pb(rule)))
    }

    #[instrument(name = "grpc.delete_routing_rule", skip_all, fields(tenant = field::Empty))]
    async fn delete_routing_rule(
        &self,
        req: Request<pb::DeleteRoutingRuleRequest>,
    ) -> Result<Response<pb::DeleteRoutingRuleResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let d = req.into_inner();
        self.queues.delete_rule(p.tenant, queue_id("queue_id", &d.queue_id)?, required_uuid("rule_id", &d.rule_id)?).await?;
        Ok(Response::new(pb::DeleteRoutingRuleResponse {}))
    }
}

// ---- requests into REST bodies (validated by the core) ----

fn queue_id(field: &str, v: &str) -> Result<QueueId, ApiError> {
    required_uuid(field, v).map(QueueId)
}

fn score_json(field: &str, s: pb::Score) -> Result<Value, ApiError> {
    match s.kind {
        Some(pb::score::Kind::Boolean(b)) => Ok(Value::Bool(b)),
        Some(pb::score::Kind::Number(n)) => serde_json::Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| ApiError::unprocessable(format!("{field}: must be a finite number"))),
        None => Err(ApiError::unprocessable(format!("{field}: set number or boolean (or leave the score out)"))),
    }
}

/// A proto feedback entry as the `POST /feedback` body it stands for. Output-only fields
/// (`created_at`, `modified_at`) are ignored.
fn feedback_body(f: pb::Feedback) -> Result<Value, ApiError> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.to_owned(), v);
        }
    };
    let text = |k: &str, v: Option<String>| v.map(|s| json_text(&format!("feedback.{k}"), &s)).transpose();
    put("id", non_empty(f.id).map(Value::String));
    put("run_id", f.run_id.map(Value::String));
    put("trace_id", f.trace_id.map(Value::String));
    put("session_id", f.session_id.map(Value::String));
    put("key", Some(Value::String(f.key)));
    put("score", f.score.map(|s| score_json("feedback.score", s)).transpose()?);
    put("value", text("value_json", f.value_json)?);
    put("comment", f.comment.map(Value::String));
    put("correction", text("correction_json", f.correction_json)?);
    put("feedback_source", text("feedback_source_json", f.feedback_source_json)?);
    put("feedback_config", text("feedback_config_json", f.feedback_config_json)?);
    put("comparative_experiment_id", f.comparative_experiment_id.map(Value::String));
    put("feedback_group_id", f.feedback_group_id.map(Value::String));
    put("extra", text("extra_json", f.extra_json)?);
    Ok(Value::Object(o))
}

fn queue_fields(
    body: &mut Map<String, Value>,
    description: Option<String>,
    rubric_instructions: Option<String>,
    rubric_items_json: Option<String>,
) -> Result<(), ApiError> {
    if let Some(d) = description {
        body.insert("description".into(), Value::String(d));
    }
    if let Some(r) = rubric_instructions {
        body.insert("rubric_instructions".into(), Value::String(r));
    }
    if let Some(r) = rubric_items_json {
        body.insert("rubric_items".into(), json_text("rubric_items_json", &r)?);
    }
    Ok(())
}

// ---- the domain into responses ----

fn json_text_of(j: Option<RawJson>) -> Option<String> {
    j.map(|j| j.as_str().to_owned())
}

fn score_to_pb(s: Score) -> pb::Score {
    pb::Score {
        kind: Some(match s {
            Score::Bool(b) => pb::score::Kind::Boolean(b),
            Score::Number(n) => pb::score::Kind::Number(n),
        }),
    }
}

pub fn feedback_to_pb(f: Feedback) -> pb::Feedback {
    pb::Feedback {
        id: f.id.to_string(),
        run_id: f.run_id.map(|r| r.to_string()),
        trace_id: f.trace_id.map(|r| r.to_string()),
        session_id: f.session_id.map(|p| p.to_string()),
        key: f.key,
        score: f.score.map(score_to_pb),
        value_json: json_text_of(f.value),
        comment: f.comment,
        correction_json: json_text_of(f.correction),
        feedback_source_json: json_text_of(f.feedback_source),
        feedback_config_json: json_text_of(f.feedback_config),
        created_at: Some(timestamp_to_pb(f.created_at)),
        modified_at: Some(timestamp_to_pb(f.modified_at)),
        comparative_experiment_id: f.comparative_experiment_id.map(|u| u.to_string()),
        feedback_group_id: f.feedback_group_id.map(|u| u.to_string()),
        extra_json: json_text_of(f.extra),
    }
}

fn rule_to_pb(r: RoutingRule) -> pb::RoutingRule {
    pb::RoutingRule {
        id: r.id.to_string(),
        filter: r.filter,
        project_ids: r.project_ids.iter().map(ToString::to_string).collect(),
        sampling_rate: r.sampling_rate,
        created_at: Some(timestamp_to_pb(r.created_at)),
    }
}

fn queue_to_pb(q: Queue) -> pb::AnnotationQueue {
    pb::AnnotationQueue {
        id: q.id.to_string(),
        name: q.name,
        description: q.description,
        rubric_instructions: q.rubric_instructions,
        rubric_items_json: json_text_of(q.rubric_items),
        num_reviewers_per_item: q.num_reviewers_per_item,
        created_at: Some(timestamp_to_pb(q.created_at)),
        updated_at: Some(timestamp_to_pb(q.updated_at)),
        routing_rules: q.rules.into_iter().map(rule_to_pb).collect(),
    }
}

fn item_to_pb(it: QueueItem, reviewers_needed: u32) -> pb::QueueItem {
    let status = if it.completed(reviewers_needed) { "completed" } else { "needs_review" };
    let lease = it.lease.as_ref().filter(|l| l.until > Timestamp::now());
    pb::QueueItem {
        id: it.id.to_string(),
        queue_id: it.queue_id.to_string(),
        run_id: it.run_id.to_string(),
        project_id: it.project_id.map(|p| p.to_string()),
        added_at: Some(timestamp_to_pb(it.added_at)),
        last_reviewed_time: it.last_reviewed_time.map(timestamp_to_pb),
        leased_to: lease.map(|l| l.reviewer.clone()),
        lease_expires_at: lease.map(|l| timestamp_to_pb(l.until)),
        status: status.to_owned(),
        reviews: it
            .reviews
            .into_iter()
            .map(|r| pb::Review {
                reviewer: r.reviewer,
                at: Some(timestamp_to_pb(r.at)),
                labels: r.labels.into_iter().map(|(key, label)| pb::Label { key, label }).collect(),
                feedback_ids: r.feedback_ids.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

fn agreement_to_pb(k: KeyAgreement) -> pb::KeyAgreement {
    pb::KeyAgreement {
        feedback_key: k.feedback_key,
        items: k.items as u64,
        pairs: k.pairs as u64,
        raw_agreement: k.raw_agreement,
        cohen_kappa: k.cohen_kappa,
        reviewer_pairs: k
            .reviewer_pairs
            .into_iter()
            .map(|p| pb::PairAgreement {
                reviewers: p.reviewers.to_vec(),
                items: p.items as u64,
                raw_agreement: p.raw_agreement,
                cohen_kappa: p.cohen_kappa,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proto_entry_becomes_the_rest_body() {
        let f = pb::Feedback {
            run_id: Some("01a21085-dddd-7ab9-9494-115de01cbb17".into()),
            key: "correctness".into(),
            score: Some(pb::Score { kind: Some(pb::score::Kind::Number(0.25)) }),
            value_json: Some(r#"{"label":"meh"}"#.into()),
            ..Default::default()
        };
        let body = feedback_body(f).unwrap();
        let parsed = Feedback::from_wire(&body, FeedbackId(uuid::Uuid::nil()), Timestamp::now()).unwrap();
        assert_eq!(parsed.key, "correctness");
        assert_eq!(parsed.score, Some(Score::Number(0.25)));
        assert_eq!(parsed.value.unwrap().as_str(), r#"{"label":"meh"}"#);
        assert!(!parsed.id.0.is_nil(), "an empty id is generated");
    }

    #[test]
    fn bad_fields_are_named() {
        let bad_json = pb::Feedback { key: "k".into(), extra_json: Some("{nope".into()), ..Default::default() };
        assert!(feedback_body(bad_json).unwrap_err().message.contains("feedback.extra_json: invalid JSON"));
        let nan = pb::Feedback {
            key: "k".into(),
            score: Some(pb::Score { kind: Some(pb::score::Kind::Number(f64::NAN)) }),
            ..Default::default()
        };
        assert!(feedback_body(nan).unwrap_err().message.contains("feedback.score: must be a finite number"));
        let empty = pb::Feedback { key: "k".into(), score: Some(pb::Score { kind: None }), ..Default::default() };
        assert!(feedback_body(empty).unwrap_err().message.contains("feedback.score"));
    }
}
