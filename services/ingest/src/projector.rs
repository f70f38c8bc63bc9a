//! The run projector: consumes run events and folds them into the store.
//!
//! It takes deliveries in batches, applies them, makes the store durable once per batch and
//! only then acks, so an acked event is never lost. A redelivered event is harmless: merging
//! fragments is idempotent. An event that cannot be decoded is terminated (dead-lettered);
//! a store outage naks with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, info_span, instrument, warn, Instrument};

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_events::{Event, Stream};
use sextant_storage::{Storage, StorageErrorKind};

pub const RUN_PROJECTOR: &str = "ingest-run-projector";
/// Events per projection batch: enough to amortise one store fsync, small enough to bound memory
/// (each event holds up to a request's runs).
const BATCH: usize = 64;

/// How long an event may stay unacknowledged before the bus hands it to another replica: long
/// enough for a slow batch, short enough that a crashed replica's work resumes soon.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// Runs until `shutdown` turns true. Any number of replicas may run this against one bus:
/// they share the durable consumer, so each event is projected by one of them.
pub async fn run_projector(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, shutdown: watch::Receiver<bool>) {
    run_projector_with(bus, store, shutdown, DEFAULT_ACK_WAIT).await
}

/// [`run_projector`] with a chosen ack wait (tests shorten it to see redelivery quickly).
pub async fn run_projector_with(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, mut shutdown: watch::Receiver<bool>, ack_wait: Duration) {
    let mut spec = ConsumerSpec::new(RUN_PROJECTOR, Stream::Runs);
    spec.ack_wait = ack_wait;
    let Some(mut sub) = sextant_bus::subscribe_until_ready(bus.as_ref(), spec, &mut shutdown).await else { return };
    info!(consumer = RUN_PROJECTOR, "run projector started");
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
                warn!(error = %e, "projector could not fetch events");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    info!("run projector stopped");
}

#[instrument(name = "ingest.project", skip_all, fields(events = batch.len()))]
async fn project_batch(store: &Arc<dyn Storage>, batch: Vec<Delivery>) {
    let started = Instant::now();
    let mut applied = Vec::with_capacity(batch.len());
    for mut d in batch {
        let outcome = match &mut d.payload {
            Err(e) => Err(format!("undecodable: {e}")),
            Ok(env) => match &mut env.event {
                Event::RunsIngestedV1(ev) => {
                    // Moved, not cloned: the delivery only needs its sequence from here on.
                    let fragments = std::mem::take(&mut ev.fragments);
                    let count = fragments.len() as u64;
                    // The request's trace id, so one request can be followed from ingest to here.
                    let trace_id = env.traceparent.as_deref().and_then(sextant_events::trace_id_of).unwrap_or_default();
                    let span =
                        info_span!("ingest.project_event", tenant = %env.tenant, project = %ev.project_id, seq = d.sequence, trace_id);
                    let r = store.apply_run_fragments(env.tenant, ev.project_id, fragments).instrument(span.clone()).await;
                    span.in_scope(|| debug!(runs = count, ok = r.is_ok(), "projected run event"));
                    if r.is_ok() {
                        metrics::counter!("sextant_projected_runs_total").increment(count);
                    }
                    match r {
                        Ok(()) => Ok(None),
                        Err(e) if e.kind == StorageErrorKind::Invalid => Err(format!("rejected by the store: {e}")),
                        Err(e) => Ok(Some(e)),
                    }
                }
                // Not for this projector; nothing to do.
                _ => Ok(None),
            },
        };
        match outcome {
            Ok(None) => applied.push(d),
            Ok(Some(transient)) => {
                let backoff = Duration::from_millis(200 * u64::from(d.delivery_count.min(20)));
                warn!(seq = d.sequence, error = %transient, "projection failed; will retry");
                let _ = d.nak(backoff).await;
            }
            Err(reason) => {
                error!(seq = d.sequence, %reason, "run event cannot be projected; dead-lettering");
                let _ = d.term(&reason).await;
            }
        }
    }
    if applied.is_empty() {
        return;
    }
    // Durable before acknowledging: after a crash, unacked events are replayed.
    if let Err(e) = store.sync().await {
        warn!(error = %e, "store sync failed; events will be redelivered");
        for d in applied {
            let _ = d.nak(Duration::from_millis(500)).await;
        }
        return;
    }
    // Concurrently: with a networked bus each ack is a confirmed round trip.
    // Lag from publish to queryable (applied and durable): the figure users feel.
    let now_ms = sextant_core::Timestamp::now().millis();
    for d in &applied {
        if let Ok(env) = &d.payload {
            metrics::histogram!("sextant_projection_lag_seconds").record((now_ms - env.at_ms).max(0) as f64 / 1000.0);
        }
    }
    for r in futures::future::join_all(applied.into_iter().map(Delivery::ack)).await {
        if let Err(e) = r {
            warn!(error = %e, "ack failed; the event will be redelivered (idempotent)");
        }
    }
    metrics::histogram!("sextant_projector_batch_seconds").record(started.elapsed().as_secs_f64());
}
