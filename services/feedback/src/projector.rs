//! The feedback projector: consumes the feedback stream and folds it into the store:
//! feedback entries, presigned tokens and feedback configs.
//!
//! Each change is applied with its event id as the last-writer-wins stamp, so a redelivered
//! or reordered event leaves entries and `feedback_stats` exactly as they were. The store is
//! made durable before the batch is acked. A part that fails validation (only possible for
//! events written before validation moved into ingest) is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_core::{Feedback, FeedbackChange, FeedbackId, Timestamp};
use sextant_events::{Event, Stream};
use sextant_storage::{Storage, StorageErrorKind};

pub const FEEDBACK_PROJECTOR: &str = "feedback-projector";
const BATCH: usize = 256;

pub async fn run_feedback_projector(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, shutdown: watch::Receiver<bool>) {
    run_feedback_projector_with(bus, store, shutdown, Duration::from_secs(30)).await
}

/// With a chosen ack wait (tests shorten it to see redelivery quickly).
pub async fn run_feedback_projector_with(
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Storage>,
    mut shutdown: watch::Receiver<bool>,
    ack_wait: Duration,
) {
    let mut spec = ConsumerSpec::new(FEEDBACK_PROJECTOR, Stream::Feedback);
    spec.ack_wait = ack_wait;
    let Some(mut sub) = sextant_bus::subscribe_until_ready(bus.as_ref(), spec, &mut shutdown).await else { return };
    info!(consumer = FEEDBACK_PROJECTOR, "feedback projector started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let batch = tokio::select! {
            b = sub.next_batch(BATCH, Duration::from_millis(200)) => b,
            _ = shutdown.changed() => break,
        };
        match batch {
            Ok(b) if b.is_empty() => {}
            Ok(b) => project_batch(&store, b).await,
            Err(e) => {
                warn!(error = %e, "feedback projector could not fetch events");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    info!("feedback projector stopped");
}

/// The change an event asks for, or why it can never be applied.
fn change_of(event: &Event, at_ms: i64) -> Result<Option<FeedbackChange>, String> {
    match event {
        Event::FeedbackChangedV1(e) => Ok(Some(e.change.clone())),
        Event::FeedbackPartReceivedV1(p) => {
            let v = p.json.to_value().map_err(|e| format!("invalid feedback part {}: {e}", p.feedback_id))?;
            let f = Feedback::from_wire(&v, FeedbackId(p.feedback_id), Timestamp(at_ms.saturating_mul(1000)))
                .map_err(|e| format!("invalid feedback part {}: {}", p.feedback_id, e.0))?;
            Ok(Some(FeedbackChange::Upsert(f)))
        }
        _ => Ok(None),
    }
}

async fn project_batch(store: &Arc<dyn Storage>, batch: Vec<Delivery>) {
    let mut applied = Vec::with_capacity(batch.len());
    // Each delivery with the change it asks for (tenant, event id, change), if any.
    type Asked = Option<(sextant_core::TenantId, uuid::Uuid, FeedbackChange)>;
    let mut pending: Vec<(Delivery, Asked)> = Vec::with_capacity(batch.len());
    for d in batch {
        // Tokens and configs are whole values, stored idempotently: applied here, one by one.
        let put = match &d.payload {
            Ok(env) => match &env.event {
                Event::FeedbackTokenIssuedV1(e) => Some(store.put_feedback_token(env.tenant, &e.token).await),
                Event::FeedbackConfigChangedV1(e) => Some(store.put_feedback_config(env.tenant, &e.config).await),
                _ => None,
            },
            Err(_) => None,
        };
        match put {
            Some(Ok(())) => {
                pending.push((d, None));
                continue;
            }
            Some(Err(e)) if e.kind == StorageErrorKind::Invalid => {
                error!(seq = d.sequence, error = %e, "feedback event rejected by the store; dead-lettering");
                let _ = d.term(&format!("rejected by the store: {e}")).await;
                continue;
            }
            Some(Err(e)) => {
                warn!(seq = d.sequence, error = %e, "feedback projection failed; will retry");
                let backoff = Duration::from_millis(200 * u64::from(d.delivery_count.min(20)));
                let _ = d.nak(backoff).await;
                continue;
            }
            None => {}
        }
        let decoded = match &d.payload {
            Err(e) => Err(format!("undecodable: {e}")),
            Ok(env) => change_of(&env.event, env.at_ms).map(|c| c.map(|c| (env.tenant, env.id, c))),
        };
        match decoded {
            Ok(c) => pending.push((d, c)),
            Err(reason) => {
                error!(seq = d.sequence, %reason, "feedback event cannot be projected; dead-lettering");
                let _ = d.term(&reason).await;
            }
        }
    }
    // The whole batch in one atomic write; on failure, one by one to find the culprit.
    let changes: Vec<_> = pending.iter().filter_map(|(_, c)| c.clone()).collect();
    let batch_ok = changes.is_empty() || store.apply_feedback_batch(&changes).await.is_ok();
    for (d, change) in pending {
        let outcome = match change {
            None => Ok(None),
            Some(_) if batch_ok => Ok(None),
            Some((tenant, stamp, change)) => {
                let trace_id = d
                    .payload
                    .as_ref()
                    .ok()
                    .and_then(|e| e.traceparent.as_deref())
                    .and_then(sextant_events::trace_id_of)
                    .unwrap_or_default();
                let span = info_span!("feedback.project_event", tenant = %tenant, feedback = %change.id(), seq = d.sequence, trace_id);
                match store.apply_feedback(tenant, stamp, &change).instrument(span).await {
                    Ok(()) => Ok(None),
                    Err(e) if e.kind == StorageErrorKind::Invalid => Err(format!("rejected by the store: {e}")),
                    Err(e) => Ok(Some(e)),
                }
            }
        };
        match outcome {
            Ok(None) => applied.push(d),
            Ok(Some(transient)) => {
                warn!(seq = d.sequence, error = %transient, "feedback projection failed; will retry");
                let backoff = Duration::from_millis(200 * u64::from(d.delivery_count.min(20)));
                let _ = d.nak(backoff).await;
            }
            Err(reason) => {
                error!(seq = d.sequence, %reason, "feedback event cannot be projected; dead-lettering");
                let _ = d.term(&reason).await;
            }
        }
    }
    if applied.is_empty() {
        return;
    }
    if let Err(e) = store.sync().await {
        warn!(error = %e, "store sync failed; feedback events will be redelivered");
        for d in applied {
            let _ = d.nak(Duration::from_millis(500)).await;
        }
        return;
    }
    let now_ms = Timestamp::now().millis();
    for d in &applied {
        if let Ok(env) = &d.payload {
            metrics::histogram!("sextant_feedback_projection_lag_seconds").record((now_ms - env.at_ms).max(0) as f64 / 1000.0);
        }
    }
    metrics::counter!("sextant_feedback_projected_total").increment(applied.len() as u64);
    for r in futures::future::join_all(applied.into_iter().map(Delivery::ack)).await {
        if let Err(e) = r {
            warn!(error = %e, "ack failed; the event will be redelivered (idempotent)");
        }
    }
}
