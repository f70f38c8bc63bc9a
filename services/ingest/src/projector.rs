//! The run projector: consumes run events and folds them into the store.
//!
//! It takes deliveries in batches, applies them, makes the store durable once per batch and
//! only then acks, so an acked event is never lost. A redelivered event is harmless: merging
//! fragments is idempotent. An event that cannot be decoded is terminated (dead-lettered);
//! a store outage naks with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, instrument, warn};

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_events::{Event, Stream};
use sextant_storage::{Storage, StorageErrorKind};

pub const RUN_PROJECTOR: &str = "ingest-run-projector";
/// Events per projection batch: enough to amortise one store fsync, small enough to bound memory
/// (each event holds up to a request's runs).
const BATCH: usize = 64;

/// Runs until `shutdown` turns true.
pub async fn run_projector(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, mut shutdown: watch::Receiver<bool>) {
    let mut spec = ConsumerSpec::new(RUN_PROJECTOR, Stream::Runs);
    spec.ack_wait = Duration::from_secs(60);
    let mut sub = loop {
        match bus.subscribe(spec.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                warn!(error = %e, "projector cannot subscribe yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
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
                    let r = store.apply_run_fragments(env.tenant, ev.project_id, fragments).await;
                    if r.is_ok() {
                        metrics::counter!("sextant_projected_runs_total").increment(count);
                        metrics::histogram!("sextant_projection_lag_seconds")
                            .record((sextant_core::Timestamp::now().millis() - env.at_ms).max(0) as f64 / 1000.0);
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
    for d in applied {
        if let Err(e) = d.ack().await {
            warn!(error = %e, "ack failed; the event will be redelivered (idempotent)");
        }
    }
    metrics::histogram!("sextant_projector_batch_seconds").record(started.elapsed().as_secs_f64());
}
