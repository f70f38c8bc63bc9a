//! The run projector: consumes run events and folds them into the store.
//!
//! It takes deliveries in batches, applies them, makes the store durable once per batch and
//! only then acks, so an acked event is never lost. A redelivered event is harmless: merging
//! fragments is idempotent. An event that cannot be decoded is terminated (dead-lettered);
//! a store outage naks with backoff.
//!
//! Once a batch is durable it publishes, before acking, a [`RunsCompletedV1`] for each event
//! that finished runs: the consumers that act on finished runs read that stream, small and
//! already stored, instead of every run event. A redelivered event republishes the same
//! completion id, which the bus drops.
//!
//! [`RunsCompletedV1`]: sextant_events::RunsCompletedV1

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, info_span, instrument, warn, Instrument};

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_core::{ProjectId, RunFragment, TenantId};
use sextant_events::{Envelope, Event, Stream};
use sextant_storage::{Storage, StorageErrorKind};

pub const RUN_PROJECTOR: &str = "ingest-run-projector";
/// Events per projection batch: enough to amortise one store fsync, small enough to bound memory
/// (each event holds up to a request's runs).
const BATCH: usize = 128;

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
    let mut prefetched = None;
    // After a batch panicked: one event per batch for a while, so the culprit is found alone.
    let mut isolating_until: Option<tokio::time::Instant> = None;
    loop {
        let size = match isolating_until {
            Some(t) if tokio::time::Instant::now() < t => 1,
            _ => BATCH,
        };
        if *shutdown.borrow() {
            // Handed back at once, so another replica need not wait out the ack wait.
            for d in prefetched.and_then(Result::ok).unwrap_or_default() {
                let _ = Delivery::nak(d, Duration::ZERO).await;
            }
            break;
        }
        let batch = match prefetched.take() {
            Some(b) => b,
            None => tokio::select! {
                b = sub.next_batch(size, Duration::from_millis(200)) => b,
                _ = shutdown.changed() => break,
            },
        };
        match batch {
            Ok(b) if b.is_empty() => {}
            Ok(b) => {
                // The next batch is fetched and decoded while this one is applied.
                let guarded = sextant_bus::handle_guarded(RUN_PROJECTOR, b, |b| project_batch(bus.as_ref(), &store, b));
                let (next, outcome) = tokio::join!(sub.next_batch(size, Duration::from_millis(200)), guarded);
                if outcome.is_err() {
                    isolating_until = Some(tokio::time::Instant::now() + sextant_bus::ISOLATE_AFTER_PANIC);
                }
                prefetched = Some(next);
            }
            Err(e) => {
                warn!(error = %e, "projector could not fetch events");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    info!("run projector stopped");
}

/// A batch's run events for one (tenant, project), applied with one store call: one write and
/// one hand-off to the store instead of one per event. Merging is per run and independent of
/// order, so events applied together give what they give applied one by one.
struct Group {
    tenant: TenantId,
    project: ProjectId,
    deliveries: Vec<Delivery>,
    fragments: Vec<RunFragment>,
    completions: Vec<Envelope>,
}

impl Group {
    fn new(tenant: TenantId, project: ProjectId) -> Self {
        Self { tenant, project, deliveries: Vec::new(), fragments: Vec::new(), completions: Vec::new() }
    }
}

#[instrument(name = "ingest.project", skip_all, fields(events = batch.len()))]
async fn project_batch(bus: &dyn EventBus, store: &Arc<dyn Storage>, batch: Vec<Delivery>) {
    let started = Instant::now();
    let mut applied = Vec::with_capacity(batch.len());
    let mut completions = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    // Events applied one by one: redeliveries, so one the store rejects is found alone.
    let mut singles: Vec<Group> = Vec::new();
    for mut d in batch {
        let env = match &mut d.payload {
            Err(e) => {
                let reason = format!("undecodable: {e}");
                error!(seq = d.sequence, %reason, "run event cannot be projected; dead-lettering");
                let _ = d.term(&reason).await;
                continue;
            }
            Ok(env) => env,
        };
        let completed = match &env.event {
            Event::RunsIngestedV1(ev) => Envelope::completions_of(env, ev),
            _ => {
                applied.push(d); // not for this projector; nothing to do
                continue;
            }
        };
        let Event::RunsIngestedV1(ev) = &mut env.event else { unreachable!("matched above") };
        // Moved, not cloned: the delivery only needs its sequence from here on.
        let fragments = std::mem::take(&mut ev.fragments);
        let (tenant, project) = (env.tenant, ev.project_id);
        // The request's trace id, so one request can be followed from ingest to here.
        let trace_id = env.traceparent.as_deref().and_then(sextant_events::trace_id_of).unwrap_or_default();
        info_span!("ingest.project_event", tenant = %tenant, project = %project, seq = d.sequence, trace_id)
            .in_scope(|| debug!(runs = fragments.len(), "projecting run event"));
        let group = if d.delivery_count > 1 {
            singles.push(Group::new(tenant, project));
            singles.last_mut().expect("pushed")
        } else {
            match groups.iter().position(|g| g.tenant == tenant && g.project == project) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Group::new(tenant, project));
                    groups.last_mut().expect("pushed")
                }
            }
        };
        group.fragments.extend(fragments);
        group.completions.extend(completed);
        group.deliveries.push(d);
    }
    for g in groups.into_iter().chain(singles) {
        let count = g.fragments.len() as u64;
        let span = info_span!("ingest.project_group", tenant = %g.tenant, project = %g.project, events = g.deliveries.len());
        let applying = Instant::now();
        let r = store.apply_run_fragments(g.tenant, g.project, g.fragments).instrument(span.clone()).await;
        metrics::histogram!("sextant_projector_apply_seconds").record(applying.elapsed().as_secs_f64());
        span.in_scope(|| debug!(runs = count, ok = r.is_ok(), "projected run events"));
        match r {
            Ok(()) => {
                metrics::counter!("sextant_projected_runs_total").increment(count);
                applied.extend(g.deliveries);
                completions.extend(g.completions);
            }
            // Rejected together: redelivered, each is applied alone and only the culprit fails.
            Err(e) if e.kind == StorageErrorKind::Invalid && g.deliveries.len() > 1 => {
                warn!(error = %e, events = g.deliveries.len(), "the store rejected a group of run events; retrying them one by one");
                for d in g.deliveries {
                    let _ = d.nak(Duration::ZERO).await;
                }
            }
            Err(e) if e.kind == StorageErrorKind::Invalid => {
                let reason = format!("rejected by the store: {e}");
                for d in g.deliveries {
                    error!(seq = d.sequence, %reason, "run event cannot be projected; dead-lettering");
                    let _ = d.term(&reason).await;
                }
            }
            Err(e) => {
                for d in g.deliveries {
                    let backoff = Duration::from_millis(200 * u64::from(d.delivery_count.min(20)));
                    warn!(seq = d.sequence, error = %e, "projection failed; will retry");
                    let _ = d.nak(backoff).await;
                }
            }
        }
    }
    if applied.is_empty() {
        return;
    }
    // Durable before acknowledging: after a crash, unacked events are replayed.
    let syncing = Instant::now();
    let synced = store.sync().await;
    metrics::histogram!("sextant_projector_sync_seconds").record(syncing.elapsed().as_secs_f64());
    if let Err(e) = synced {
        warn!(error = %e, "store sync failed; events will be redelivered");
        for d in applied {
            let _ = d.nak(Duration::from_millis(500)).await;
        }
        return;
    }
    // Announced before the acks: a crash in between replays the events, and the republished
    // completions (same ids) are dropped as duplicates.
    if let Err(e) = bus.publish(&completions).await {
        warn!(error = %e, "cannot announce completed runs; events will be redelivered");
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
