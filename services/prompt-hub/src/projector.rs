//! The prompt projector: consumes the prompt stream and applies every change to the store.
//!
//! The API applied each change already (read-your-writes); this consumer makes the store
//! right after a crash between publish and apply, and feeds other processes' stores in a
//! split deployment. Applying a change twice changes nothing (commits are keyed by hash, tag
//! moves by (tag, time); definitions and likes are last-writer-wins), so redelivery is harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument};

use sextant_bus::{ConsumerSpec, EventBus};
use sextant_events::{Event, Stream};
use sextant_storage::{Storage, StorageErrorKind};

use crate::core::apply_change;

pub const PROMPT_PROJECTOR: &str = "prompt-projector";
const BATCH: usize = 128;

pub async fn run_prompt_projector(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, mut shutdown: watch::Receiver<bool>) {
    let spec = ConsumerSpec::new(PROMPT_PROJECTOR, Stream::Prompts);
    let Some(mut sub) = sextant_bus::subscribe_until_ready(bus.as_ref(), spec, &mut shutdown).await else { return };
    info!(consumer = PROMPT_PROJECTOR, "prompt projector started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let batch = tokio::select! {
            b = sub.next_batch(BATCH, Duration::from_millis(200)) => b,
            _ = shutdown.changed() => break,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "prompt projector could not fetch events");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut applied = Vec::with_capacity(batch.len());
        for d in batch {
            let env = match &d.payload {
                Ok(env) => env,
                Err(e) => {
                    let reason = format!("undecodable: {e}");
                    error!(seq = d.sequence, %reason, "prompt event cannot be projected; dead-lettering");
                    let _ = d.term(&reason).await;
                    continue;
                }
            };
            let Event::PromptChangedV1(ev) = &env.event else {
                applied.push(d);
                continue;
            };
            let span = info_span!("prompt.project_event", tenant = %env.tenant, repo = %ev.change.repo_id(), seq = d.sequence);
            match apply_change(store.as_ref(), env.tenant, &ev.change).instrument(span).await {
                Ok(()) => applied.push(d),
                Err(e) if e.kind == StorageErrorKind::Invalid || e.kind == StorageErrorKind::Conflict => {
                    let reason = format!("rejected by the store: {e}");
                    error!(seq = d.sequence, %reason, "prompt event cannot be projected; dead-lettering");
                    let _ = d.term(&reason).await;
                }
                Err(e) => {
                    warn!(seq = d.sequence, error = %e, "prompt projection failed; will retry");
                    let backoff = Duration::from_millis(200 * u64::from(d.delivery_count.min(20)));
                    let _ = d.nak(backoff).await;
                }
            }
        }
        if applied.is_empty() {
            continue;
        }
        if let Err(e) = store.sync().await {
            warn!(error = %e, "store sync failed; the batch will be redelivered");
            for d in applied {
                let _ = d.nak(Duration::from_millis(500)).await;
            }
            continue;
        }
        for d in applied {
            if let Err(e) = d.ack().await {
                warn!(error = %e, "ack failed; the event will be redelivered (harmless)");
            }
        }
        metrics::counter!("sextant_prompt_events_projected_total").increment(1);
    }
    info!("prompt projector stopped");
}
