//! The event-bus port: how services publish events and consume them durably.
//!
//! The contract, which every adapter meets and the conformance suite ([`testsuite`]) checks:
//!
//! * [`EventBus::publish`] returns `Ok` only once every envelope is durable (it survives a
//!   `kill -9` of the process). A batch is published in order within each stream.
//! * Publishing an envelope whose `id` was published recently is a no-op (deduplication
//!   window, as JetStream's `Nats-Msg-Id`), so a retried publish is stored once.
//! * A consumer is named (`durable`). All subscriptions with the same name share its work:
//!   each event goes to one of them. The consumer's position survives restarts.
//! * Delivery is at least once: an event that is not acked within `ack_wait`, or that is
//!   nak'ed, is delivered again (to any subscriber of that consumer), up to `max_deliveries`;
//!   handlers must be idempotent. `term` stops redelivery and records a dead letter.
//! * At most `max_in_flight` unacknowledged events are outstanding per consumer.
//!
//! * `term`, and a delivery past `max_deliveries`, record a [`DeadLetter`] that operators can
//!   list ([`EventBus::dead_letters`]).
//!
//! Adapters: [`inprocess::InProcessBus`] (embedded, durable, for `sextant serve`) and, behind
//! the `nats` feature, [`jetstream::JetStreamBus`] for distributed deployments.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use sextant_events::{CodecError, Envelope, Stream};

pub mod disk;
pub mod inprocess;
#[cfg(feature = "nats")]
pub mod jetstream;
#[cfg(feature = "testsuite")]
pub mod nats_server;
#[cfg(feature = "testsuite")]
pub mod testsuite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusErrorKind {
    /// The bus cannot be reached or cannot make the event durable now; retrying may help.
    Unavailable,
    /// The request itself is wrong (oversized event, unknown consumer, ...).
    Invalid,
    /// The disk is (nearly) full: nothing more can be made durable until space is freed.
    /// Writes resume by themselves once it is.
    StorageFull,
    /// A bug or corruption.
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind:?} bus error: {message}")]
pub struct BusError {
    pub kind: BusErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BusError {
    pub fn new(kind: BusErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }
    pub fn with_source(kind: BusErrorKind, message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { kind, message: message.into(), source: Some(Box::new(source)) }
    }
}

/// How a consumer is configured. The same spec must be given by every subscriber of a name.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub durable: String,
    pub stream: Stream,
    pub max_in_flight: usize,
    pub ack_wait: Duration,
    pub max_deliveries: u32,
}

impl ConsumerSpec {
    pub fn new(durable: impl Into<String>, stream: Stream) -> Self {
        Self { durable: durable.into(), stream, max_in_flight: 4096, ack_wait: Duration::from_secs(30), max_deliveries: 10 }
    }
}

/// A consumer's position in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerProgress {
    /// The sequence of the newest event in the stream (each was acknowledged to its publisher).
    pub last_published: u64,
    /// Every event at or below this sequence has been settled by the consumer.
    pub settled_through: u64,
}

/// An event that was given up on: terminated by its handler or delivered too often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub stream: Stream,
    /// The event's position in its stream.
    pub sequence: u64,
    pub consumer: String,
    pub reason: String,
    /// Size of the kept event, in bytes (replayable when non-zero).
    pub payload_bytes: usize,
}

/// What [`EventBus::replay_dead_letter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Published again to its stream (under a new envelope id) and removed from the dead letters.
    Republished { event_id: uuid::Uuid },
    /// No dead letter for that (stream, sequence, consumer).
    NotFound,
}

/// Settles one delivery. Exactly one of the three is called; dropping a delivery without
/// settling it leaves it to be redelivered after `ack_wait`.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError>;
    async fn term(self: Box<Self>, reason: &str) -> Result<(), BusError>;
}

/// One event handed to a consumer.
pub struct Delivery {
    /// The decoded envelope, or why it could not be decoded (a poison event: `term` it).
    pub payload: Result<Envelope, CodecError>,
    /// 1 on first delivery.
    pub delivery_count: u32,
    /// Position in the stream, for logs.
    pub sequence: u64,
    acker: Settlement,
}

/// A delivery's acker, shared with [`handle_guarded`] so that a delivery a panicking handler
/// dropped unsettled can still be settled.
#[derive(Clone)]
struct Settlement(Arc<std::sync::Mutex<Option<Box<dyn Acker>>>>);

impl Settlement {
    fn take(&self) -> Option<Box<dyn Acker>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl Delivery {
    pub fn new(payload: Result<Envelope, CodecError>, delivery_count: u32, sequence: u64, acker: Box<dyn Acker>) -> Self {
        Self { payload, delivery_count, sequence, acker: Settlement(Arc::new(std::sync::Mutex::new(Some(acker)))) }
    }
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) => a.nak(delay).await,
            None => Ok(()),
        }
    }
    pub async fn term(self, reason: &str) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) => a.term(reason).await,
            None => Ok(()),
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `handle` over a batch, containing a panic to that batch: every delivery the handler
/// left unsettled is then dead-lettered with the panic's message if it was alone in the batch,
/// or handed back for prompt redelivery if not. Returns the panic's message, so the caller can
/// fetch one event at a time for a while and the culprit is found alone while the others pass.
pub async fn handle_guarded<Fut>(consumer: &str, batch: Vec<Delivery>, handle: impl FnOnce(Vec<Delivery>) -> Fut) -> Result<(), String>
where
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let settlements: Vec<(u64, Settlement)> = batch.iter().map(|d| (d.sequence, d.acker.clone())).collect();
    let Err(panic) = std::panic::AssertUnwindSafe(handle(batch)).catch_unwind().await else { return Ok(()) };
    let message = panic_message(panic.as_ref());
    metrics::counter!("sextant_consumer_panics_total", "consumer" => consumer.to_string()).increment(1);
    let alone = settlements.len() == 1;
    for (seq, s) in settlements {
        let Some(acker) = s.take() else { continue };
        if alone {
            tracing::error!(consumer, seq, panic = %message, "handling this event panicked; dead-lettering it");
            let _ = acker.term(&format!("handler panicked: {message}")).await;
        } else {
            tracing::error!(consumer, seq, panic = %message, "handling a batch panicked; its events are retried one by one");
            let _ = acker.nak(Duration::ZERO).await;
        }
    }
    Err(message)
}

/// How long a consumer keeps fetching one event at a time after a handler panicked.
pub const ISOLATE_AFTER_PANIC: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("sequence", &self.sequence)
            .field("delivery_count", &self.delivery_count)
            .field("ok", &self.payload.is_ok())
            .finish()
    }
}

#[async_trait]
pub trait Subscription: Send {
    /// Waits until at least one delivery is available and returns up to `max` of them, or
    /// returns an empty batch once `wait` has passed.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError>;
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Makes every envelope durable, then returns. See the crate docs for the contract.
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), BusError>;

    /// Joins (creating if needed) the named durable consumer.
    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError>;

    /// Whether the bus can currently accept publishes (for `/readyz`).
    async fn ready(&self) -> bool {
        self.not_ready_reason().await.is_none()
    }

    /// Why the bus cannot accept publishes now (`None`: it can), for `/readyz` and operators.
    async fn not_ready_reason(&self) -> Option<String> {
        None
    }

    /// Events of `stream` that the named consumer has not settled yet (delivered or not), or
    /// `None` if the consumer does not exist. Used for backpressure and lag metrics.
    async fn pending(&self, durable: &str, stream: Stream) -> Result<Option<u64>, BusError>;

    /// How far the named consumer has got through `stream` (`None`: no such consumer, or the
    /// bus cannot say). Queries use it to wait for what was acknowledged before they arrived.
    async fn progress(&self, _durable: &str, _stream: Stream) -> Result<Option<ConsumerProgress>, BusError> {
        Ok(None)
    }

    /// The most recent dead letters, newest first, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError>;

    /// Publishes a dead-lettered event again, under a new envelope id (so deduplication does
    /// not drop it), to every consumer of its stream (handlers are idempotent), and forgets the
    /// dead letter. An event whose bytes do not decode cannot be replayed (`Invalid`).
    async fn replay_dead_letter(&self, stream: Stream, sequence: u64, consumer: &str) -> Result<Replayed, BusError> {
        let _ = (stream, sequence, consumer);
        Err(BusError::new(BusErrorKind::Invalid, "this bus cannot replay dead letters"))
    }
}

/// The envelope to publish when replaying a dead letter: the same event under a fresh id.
pub fn replay_envelope(payload: &[u8]) -> Result<Envelope, BusError> {
    let mut env = sextant_events::decode(payload).map_err(|e| {
        BusError::new(BusErrorKind::Invalid, format!("the dead-lettered event does not decode ({e}); it cannot be replayed"))
    })?;
    env.id = uuid::Uuid::now_v7();
    Ok(env)
}

/// Runs a consumer until `shutdown` turns true: subscribes (retrying while the bus refuses),
/// then hands each non-empty batch of at most `batch` deliveries to `handle`, which settles
/// every delivery (ack, nak or term). A failed fetch is logged and retried after 500 ms.
pub async fn consume_batches<F, Fut>(
    bus: &dyn EventBus,
    spec: ConsumerSpec,
    batch: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut handle: F,
) where
    F: FnMut(Vec<Delivery>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let name = spec.durable.clone();
    let Some(mut sub) = subscribe_until_ready(bus, spec, &mut shutdown).await else { return };
    tracing::info!(consumer = %name, "consumer started");
    let mut isolating_until: Option<tokio::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let size = match isolating_until {
            Some(t) if tokio::time::Instant::now() < t => 1,
            _ => batch,
        };
        let fetched = tokio::select! {
            b = sub.next_batch(size, Duration::from_millis(200)) => b,
            _ = shutdown.changed() => break,
        };
        match fetched {
            Ok(b) if b.is_empty() => {}
            Ok(b) => {
                if handle_guarded(&name, b, &mut handle).await.is_err() {
                    isolating_until = Some(tokio::time::Instant::now() + ISOLATE_AFTER_PANIC);
                }
            }
            Err(e) => {
                tracing::warn!(consumer = %name, error = %e, "could not fetch events; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::info!(consumer = %name, "consumer stopped");
}

/// What applying one event to a projection came to.
pub enum Applied {
    /// Applied (or not this projection's event): ack once the batch is durable.
    Done,
    /// A transient failure: redeliver after a backoff that grows with the delivery count.
    Retry(String),
    /// The event can never be applied: terminate it and record a dead letter.
    Reject(String),
}

/// A store fed by one stream: what [`run_projection`] applies events to.
#[async_trait]
pub trait Projection: Send + Sync {
    /// Applies one event idempotently (redelivery must change nothing).
    async fn apply(&self, env: &Envelope, sequence: u64) -> Applied;
    /// Makes what was applied durable; a batch is acked only after this succeeds.
    async fn sync(&self) -> Result<(), String>;
}

/// Runs a projector until `shutdown`: applies each batch, syncs, then acks; undecodable and
/// rejected events are dead-lettered, failed ones redelivered with backoff, and a failed sync
/// redelivers the whole batch (harmless: applying is idempotent). `projected_metric` counts
/// batches applied.
pub async fn run_projection(
    bus: &dyn EventBus,
    spec: ConsumerSpec,
    batch: usize,
    shutdown: tokio::sync::watch::Receiver<bool>,
    projection: &dyn Projection,
    projected_metric: &'static str,
) {
    consume_batches(bus, spec, batch, shutdown, move |batch| async move {
        let mut applied = Vec::with_capacity(batch.len());
        for d in batch {
            let outcome = match &d.payload {
                Ok(env) => projection.apply(env, d.sequence).await,
                Err(e) => Applied::Reject(format!("undecodable: {e}")),
            };
            match outcome {
                Applied::Done => applied.push(d),
                Applied::Reject(reason) => {
                    tracing::error!(seq = d.sequence, %reason, "event cannot be projected; dead-lettering");
                    let _ = d.term(&reason).await;
                }
                Applied::Retry(error) => {
                    tracing::warn!(seq = d.sequence, %error, "projection failed; will retry");
                    let backoff = Duration::from_millis(200 * u64::from(d.delivery_count.min(20)));
                    let _ = d.nak(backoff).await;
                }
            }
        }
        if applied.is_empty() {
            return;
        }
        if let Err(e) = projection.sync().await {
            tracing::warn!(error = %e, "store sync failed; the batch will be redelivered");
            for d in applied {
                let _ = d.nak(Duration::from_millis(500)).await;
            }
            return;
        }
        for d in applied {
            if let Err(e) = d.ack().await {
                tracing::warn!(error = %e, "ack failed; the event will be redelivered (harmless)");
            }
        }
        metrics::counter!(projected_metric).increment(1);
    })
    .await;
}

/// Subscribes, retrying every second while the bus refuses (NATS still starting, a stream not
/// created yet), until `shutdown` turns true (then `None`). Every long-running consumer starts
/// this way.
pub async fn subscribe_until_ready(
    bus: &dyn EventBus,
    spec: ConsumerSpec,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Box<dyn Subscription>> {
    loop {
        match bus.subscribe(spec.clone()).await {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::warn!(consumer = %spec.durable, error = %e, "cannot subscribe yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}
