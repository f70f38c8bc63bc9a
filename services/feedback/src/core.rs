//! Feedback's core logic, shared by REST and (later) gRPC: validation, events, reads.
//!
//! Writes are events: a create, update or delete is acknowledged once the bus has it
//! durably, and becomes visible when the projector has applied it (milliseconds behind).

use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::instrument;
use uuid::Uuid;

use sextant_bus::EventBus;
use sextant_core::feedback::{parse_comment, parse_correction, parse_score, parse_value, FeedbackField, FeedbackToken};
use sextant_core::{Feedback, FeedbackChange, FeedbackId, RawJson, RunId, TenantId, Timestamp};
use sextant_events::{Envelope, Event, FeedbackChangedV1, FeedbackTokenIssuedV1};
use sextant_proto::{ApiError, ErrorKind};
use sextant_storage::{FeedbackQuery, Storage};

use crate::tokens::{Grant, TokenError, TokenSigner};
pub use sextant_proto::error::{bus_error, storage_error};

/// Most entries one list call returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Longest a presigned token may live.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 90 * 24 * 3600;

pub struct FeedbackService {
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) store: Arc<dyn Storage>,
    tokens: TokenSigner,
}

fn invalid(e: sextant_core::feedback::InvalidFeedback) -> ApiError {
    ApiError::unprocessable(e.0)
}

/// A user-visible entry is the same submission if everything but timestamps matches (an SDK
/// retry after a lost response).
fn same_submission(a: &Feedback, b: &Feedback) -> bool {
    let strip = |f: &Feedback| Feedback { created_at: Timestamp(0), modified_at: Timestamp(0), ..f.clone() };
    strip(a) == strip(b)
}

impl FeedbackService {
    pub fn new(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, signing_key: &[u8]) -> Self {
        Self { bus, store, tokens: TokenSigner::new(signing_key) }
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    async fn publish(&self, tenant: TenantId, changes: Vec<FeedbackChange>) -> Result<(), ApiError> {
        let envs: Vec<Envelope> =
            changes.into_iter().map(|change| Envelope::new(tenant, Event::FeedbackChangedV1(FeedbackChangedV1 { change }))).collect();
        self.bus.publish(&envs).await.map_err(bus_error)?;
        metrics::counter!("sextant_feedback_changes_total").increment(envs.len() as u64);
        Ok(())
    }

    /// `POST /feedback`. Feedback for a run not ingested yet is accepted (it counts once the
    /// run arrives). Re-sending the same entry is harmless; reusing an id for different
    /// feedback is a conflict.
    #[instrument(name = "feedback.create", skip_all, fields(tenant = %tenant))]
    pub async fn create(&self, tenant: TenantId, body: &Value) -> Result<Feedback, ApiError> {
        let mut f = Feedback::from_wire(body, FeedbackId(Uuid::nil()), Timestamp::now()).map_err(invalid)?;
        if f.feedback_source.is_none() {
            f.feedback_source = Some(RawJson::parse(r#"{"type":"api","metadata":{}}"#).expect("valid JSON"));
        }
        if let Some(existing) = self.store.get_feedback(tenant, f.id).await.map_err(storage_error)? {
            if same_submission(&existing, &f) {
                return Ok(existing);
            }
            return Err(ApiError::conflict(format!("feedback {} already exists with other content; use PATCH to change it", f.id)));
        }
        self.publish(tenant, vec![FeedbackChange::Upsert(f.clone())]).await?;
        Ok(f)
    }

    /// Entries captured from `/runs/multipart` parts are validated by ingest with the same
    /// rules ([`Feedback::from_wire`]); this publishes already-validated entries.
    pub async fn create_validated(&self, tenant: TenantId, entries: Vec<Feedback>) -> Result<(), ApiError> {
        self.publish(tenant, entries.into_iter().map(FeedbackChange::Upsert).collect()).await
    }

    pub async fn get(&self, tenant: TenantId, id: FeedbackId) -> Result<Feedback, ApiError> {
        self.store
            .get_feedback(tenant, id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("feedback {id} not found")))
    }

    pub async fn list(&self, tenant: TenantId, mut q: FeedbackQuery) -> Result<Vec<Feedback>, ApiError> {
        if q.limit == 0 || q.limit > MAX_LIST_LIMIT {
            return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        q.keys.retain(|k| !k.is_empty());
        self.store.list_feedback(tenant, &q).await.map_err(storage_error)
    }

    /// `PATCH /feedback/{id}` with any of `score`, `value`, `comment`, `correction`.
    #[instrument(name = "feedback.update", skip_all, fields(tenant = %tenant, feedback = %id))]
    pub async fn update(&self, tenant: TenantId, id: FeedbackId, body: &Value) -> Result<Feedback, ApiError> {
        let obj = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let fields = patch_fields(obj)?;
        let mut current = self.get(tenant, id).await?;
        if fields.is_empty() {
            return Ok(current);
        }
        let now = Timestamp::now();
        for f in &fields {
            f.apply(&mut current);
        }
        current.modified_at = now;
        self.publish(tenant, vec![FeedbackChange::Patch { id, fields, modified_at: now }]).await?;
        Ok(current)
    }

    #[instrument(name = "feedback.delete", skip_all, fields(tenant = %tenant, feedback = %id))]
    pub async fn delete(&self, tenant: TenantId, id: FeedbackId) -> Result<(), ApiError> {
        self.get(tenant, id).await?;
        self.publish(tenant, vec![FeedbackChange::Delete { id }]).await
    }

    /// `POST /feedback/tokens` (one request object). `base_url` is where the token is redeemed.
    ///
    /// The token is a random UUID stored with its grant (the SDK takes the URL's last path
    /// segment as a UUID and redeems `POST /feedback/tokens/{uuid}`). It is published as an
    /// event and written through, so the URL works as soon as it is handed out.
    pub async fn create_token(&self, tenant: TenantId, body: &Value, base_url: &str) -> Result<Value, ApiError> {
        let obj = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let run_id = match obj.get("run_id") {
            Some(Value::String(s)) => {
                RunId(Uuid::parse_str(s).map_err(|_| ApiError::unprocessable(format!("run_id: {s:?} is not a UUID")))?)
            }
            _ => return Err(ApiError::unprocessable("run_id: required (a UUID string)")),
        };
        let key = match obj.get("feedback_key") {
            Some(Value::String(k)) => k.clone(),
            _ => return Err(ApiError::unprocessable("feedback_key: required (a string)")),
        };
        sextant_core::feedback::check_key(&key).map_err(|e| ApiError::unprocessable(format!("feedback_{}", e.0)))?;
        let now = Timestamp::now();
        let expires = match (obj.get("expires_at"), obj.get("expires_in")) {
            (Some(at), _) if !at.is_null() => {
                Timestamp::from_json(at).map_err(|e| ApiError::unprocessable(format!("expires_at: {e}")))?.unwrap_or(now)
            }
            (_, Some(Value::Object(d))) => {
                let part = |k: &str| -> Result<i64, ApiError> {
                    match d.get(k) {
                        None | Some(Value::Null) => Ok(0),
                        Some(v) => v
                            .as_i64()
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| ApiError::unprocessable(format!("expires_in.{k}: expected a non-negative integer"))),
                    }
                };
                let secs = part("days")?
                    .saturating_mul(86_400)
                    .saturating_add(part("hours")?.saturating_mul(3600))
                    .saturating_add(part("minutes")?.saturating_mul(60));
                Timestamp(now.micros().saturating_add(secs.min(MAX_TOKEN_LIFETIME_SECS + 1).saturating_mul(1_000_000)))
            }
            (None | Some(Value::Null), None | Some(Value::Null)) => Timestamp(now.micros() + 3 * 3_600_000_000),
            _ => {
                return Err(ApiError::unprocessable("expires_at must be an ISO-8601 string; expires_in an object of days, hours, minutes"))
            }
        };
        if expires <= now {
            return Err(ApiError::unprocessable("the token would already be expired"));
        }
        if expires.micros() - now.micros() > MAX_TOKEN_LIFETIME_SECS * 1_000_000 {
            return Err(ApiError::unprocessable(format!("tokens live at most {} days", MAX_TOKEN_LIFETIME_SECS / 86_400)));
        }
        // `id` is the feedback the token writes (the SDK's `feedback_id`), not the token's.
        let feedback_id = match obj.get("id") {
            Some(Value::String(s)) => Uuid::parse_str(s).map_err(|_| ApiError::unprocessable(format!("id: {s:?} is not a UUID")))?,
            None | Some(Value::Null) => Uuid::now_v7(),
            Some(_) => return Err(ApiError::unprocessable("id: expected a UUID string")),
        };
        let feedback_config = match obj.get("feedback_config") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(RawJson::from_value(v)),
            Some(_) => return Err(ApiError::unprocessable("feedback_config: expected an object")),
        };
        let token = FeedbackToken {
            id: Uuid::new_v4(),
            run_id,
            key,
            feedback_id: FeedbackId(feedback_id),
            expires_at: expires,
            created_at: now,
            feedback_config,
        };
        let env = Envelope::new(tenant, Event::FeedbackTokenIssuedV1(FeedbackTokenIssuedV1 { token: token.clone() }));
        self.bus.publish(&[env]).await.map_err(bus_error)?;
        self.store.put_feedback_token(tenant, &token).await.map_err(storage_error)?;
        Ok(token_json(&token, base_url))
    }

    /// `GET /feedback/tokens?run_id=`: the tokens issued for a run, expired ones included.
    pub async fn list_tokens(
        &self,
        tenant: TenantId,
        run: RunId,
        base_url: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Value>, ApiError> {
        let tokens = self.store.list_feedback_tokens(tenant, run).await.map_err(storage_error)?;
        Ok(tokens.iter().skip(offset).take(limit).map(|t| token_json(t, base_url)).collect())
    }

    /// Feedback posted with a presigned token (`GET` query or `POST` body fields `score`,
    /// `value`, `comment`, `correction`, `metadata`).
    #[instrument(name = "feedback.with_token", skip_all)]
    pub async fn create_with_token(&self, token: &str, fields: &Map<String, Value>) -> Result<Feedback, ApiError> {
        let grant = match Uuid::parse_str(token) {
            Ok(id) => self.stored_grant(id).await?,
            // The signed form handed out before tokens were stored, valid until it expires.
            Err(_) => self.tokens.verify(token, Timestamp::now()).map_err(|e| match e {
                TokenError::Expired(_) | TokenError::BadSignature => ApiError::new(ErrorKind::Forbidden, e.to_string()),
                TokenError::Malformed => ApiError::bad_request(e.to_string()),
            })?,
        };
        let mut source = serde_json::json!({"type": "app", "metadata": {}});
        if let Some(md) = fields.get("metadata").filter(|v| !v.is_null()) {
            if !md.is_object() {
                return Err(ApiError::unprocessable("metadata: expected an object"));
            }
            source["metadata"] = md.clone();
        }
        let mut body = serde_json::json!({
            "id": grant.id,
            "run_id": grant.run_id,
            "key": grant.key,
            "feedback_source": source,
            "feedback_config": grant.feedback_config,
        });
        for k in ["score", "value", "comment", "correction"] {
            if let Some(v) = fields.get(k) {
                body[k] = v.clone();
            }
        }
        let now = Timestamp::now();
        let f = Feedback::from_wire(&body, FeedbackId(grant.id), now).map_err(invalid)?;
        // One entry per token: a second submission replaces the first (a changed vote).
        self.publish(grant.tenant, vec![FeedbackChange::Upsert(f.clone())]).await?;
        Ok(f)
    }
}

impl FeedbackService {
    /// The grant of a stored token, if it exists and has not expired.
    async fn stored_grant(&self, id: Uuid) -> Result<Grant, ApiError> {
        let (tenant, t) = self
            .store
            .feedback_token(id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::new(ErrorKind::Forbidden, "feedback token is unknown"))?;
        if t.expires_at <= Timestamp::now() {
            return Err(ApiError::new(ErrorKind::Forbidden, TokenError::Expired(t.expires_at).to_string()));
        }
        Ok(Grant {
            id: t.feedback_id.0,
            tenant,
            run_id: t.run_id,
            key: t.key,
            expires_us: t.expires_at.micros(),
            feedback_config: t.feedback_config.as_ref().map(RawJson::to_value_or_null),
        })
    }
}

/// The FeedbackIngestToken the SDK parses: the URL ends in the token's UUID.
pub fn token_json(t: &FeedbackToken, base_url: &str) -> Value {
    serde_json::json!({
        "id": t.id,
        "url": format!("{}/feedback/tokens/{}", base_url.trim_end_matches('/'), t.id),
        "expires_at": t.expires_at.to_iso(),
    })
}

/// The fields of a PATCH body, validated.
pub fn patch_fields(obj: &Map<String, Value>) -> Result<Vec<FeedbackField>, ApiError> {
    let mut fields = Vec::new();
    for (k, v) in obj {
        let f = match k.as_str() {
            "score" => FeedbackField::Score(parse_score(Some(v)).map_err(invalid)?),
            "value" => FeedbackField::Value(parse_value(Some(v)).map_err(invalid)?),
            "comment" => FeedbackField::Comment(parse_comment(Some(v)).map_err(invalid)?),
            "correction" => FeedbackField::Correction(parse_correction(Some(v)).map_err(invalid)?),
            "feedback_config" | "id" | "modified_at" => continue,
            other => {
                return Err(ApiError::unprocessable(format!("{other}: not a field PATCH can change (score, value, comment, correction)")))
            }
        };
        fields.push(f);
    }
    Ok(fields)
}
