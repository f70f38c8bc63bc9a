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

use std::time::Duration;

use async_trait::async_trait;

use sextant_events::{CodecError, Envelope, Stream};

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

/// An event that was given up on: terminated by its handler or delivered too often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub stream: Stream,
    /// The event's position in its stream.
    pub sequence: u64,
    pub consumer: String,
    pub reason: String,
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
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(payload: Result<Envelope, CodecError>, delivery_count: u32, sequence: u64, acker: Box<dyn Acker>) -> Self {
        Self { payload, delivery_count, sequence, acker }
    }
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        self.acker.nak(delay).await
    }
    pub async fn term(self, reason: &str) -> Result<(), BusError> {
        self.acker.term(reason).await
    }
}

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
        true
    }

    /// Events of `stream` that the named consumer has not settled yet (delivered or not), or
    /// `None` if the consumer does not exist. Used for backpressure and lag metrics.
    async fn pending(&self, durable: &str, stream: Stream) -> Result<Option<u64>, BusError>;

    /// The most recent dead letters, newest first, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError>;
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
    loop {
        if *shutdown.borrow() {
            break;
        }
        let fetched = tokio::select! {
            b = sub.next_batch(batch, Duration::from_millis(200)) => b,
            _ = shutdown.changed() => break,
        };
        match fetched {
            Ok(b) if b.is_empty() => {}
            Ok(b) => handle(b).await,
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
