//! The NATS JetStream adapter, for distributed deployments: the same contract as the
//! in-process bus (see the crate docs), met by JetStream itself.
//!
//! * One JetStream stream per [`Stream`] (`<PREFIX>_RUNS`, ...) on subjects
//!   `<prefix>.<stream>.<tenant>[.<project>]`, created or updated idempotently at start with
//!   the configured limits, plus `<PREFIX>_DEAD_LETTERS` for events no handler can process.
//! * Publishing is pipelined: every message of a batch is written before any PubAck is awaited,
//!   and `publish` returns once all are acked (file storage: durable). `Nats-Msg-Id` is the
//!   envelope id, so JetStream drops a retried publish within its duplicate window.
//! * Publishes have a connection of their own. A NATS connection is one socket read in order:
//!   on a shared one, PubAcks (which an HTTP request waits for) queue behind every consumer's
//!   deliveries of large run events, and the ack tail grows with the number of consumers.
//! * Consumers are durable pull consumers with explicit acks, shared by every replica that
//!   subscribes under the same name; `max_ack_pending` bounds the work in flight.
//! * The server redelivers up to `max_deliveries + 1` times; the adapter terminates and
//!   dead-letters a delivery past `max_deliveries` itself, so both adapters record it alike.
//! * `traceparent` travels as a message header.
//!
//! Acks, naks and terms wait for the server's confirmation ("double ack"): an ack the caller
//! saw succeed is settled, and `pending` (backpressure) reflects it at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer::pull, stream as js_stream, AckKind};
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use sextant_events::{CodecError, Envelope, Stream};

use crate::{Acker, BusError, BusErrorKind, ConsumerProgress, ConsumerSpec, DeadLetter, Delivery, EventBus, Replayed, Subscription};

/// Where the bus finds NATS and how it sizes its streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JetStreamConfig {
    /// NATS server URLs; the client reconnects to any of them.
    pub servers: Vec<String>,
    /// Prefix of stream names and subjects, so several installations can share one NATS.
    pub prefix: String,
    /// Replicas of each stream in a clustered NATS (1 for a single server).
    pub stream_replicas: usize,
    /// Events older than this are dropped from the streams (0: kept until `max_bytes`).
    pub max_age_secs: u64,
    /// Size limit of each stream in bytes (-1: unlimited).
    pub max_bytes: i64,
    /// A NATS `.creds` file (JWT + NKey), if the server requires one.
    pub credentials_file: Option<PathBuf>,
    /// How long a publish may wait for its PubAcks before the request fails with 503.
    pub publish_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// JetStream's deduplication window for `Nats-Msg-Id`.
    pub duplicate_window_secs: u64,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            prefix: "sextant".into(),
            stream_replicas: 1,
            max_age_secs: 0,
            max_bytes: -1,
            credentials_file: None,
            publish_timeout_ms: 5000,
            connect_timeout_ms: 5000,
            duplicate_window_secs: 120,
        }
    }
}

impl JetStreamConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("bus.servers: at least one NATS server URL is required".into());
        }
        if self.prefix.is_empty() || !self.prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("bus.prefix: {:?} must be non-empty letters, digits, '_' or '-'", self.prefix));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return Err("bus.stream_replicas: must be between 1 and 5".into());
        }
        if self.max_bytes == 0 || self.max_bytes < -1 {
            return Err("bus.max_bytes: must be positive, or -1 for unlimited".into());
        }
        if self.publish_timeout_ms == 0 || self.duplicate_window_secs == 0 {
            return Err("bus.publish_timeout_ms and bus.duplicate_window_secs must be > 0".into());
        }
        Ok(())
    }

    fn stream_name(&self, stream: Stream) -> String {
        format!("{}_{}", self.prefix.to_ascii_uppercase().replace('-', "_"), stream.name().to_ascii_uppercase())
    }

    fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD_LETTERS", self.prefix.to_ascii_uppercase().replace('-', "_"))
    }
}

pub struct JetStreamBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Consumers, acks, stream and consumer management.
    client: async_nats::Client,
    js: jetstream::Context,
    /// Publishing only (see the module docs).
    publish_client: async_nats::Client,
    publish_js: jetstream::Context,
    config: JetStreamConfig,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::new(BusErrorKind::Unavailable, format!("NATS: {what}: {e}"))
}

/// How long a batch keeps taking messages after its first arrived.
const BATCH_LINGER: Duration = Duration::from_millis(10);

const HEADER_TRACEPARENT: &str = "traceparent";
const HEADER_EVENT: &str = "Sextant-Event";
const HEADER_DL_STREAM: &str = "Sextant-Dead-Stream";
const HEADER_DL_SEQUENCE: &str = "Sextant-Dead-Sequence";
const HEADER_DL_CONSUMER: &str = "Sextant-Dead-Consumer";
const HEADER_DL_REASON: &str = "Sextant-Dead-Reason";

impl JetStreamBus {
    /// Connects and creates (or updates) every stream. Fails if NATS cannot be reached within
    /// `connect_timeout_ms`; once connected, the client reconnects by itself forever.
    pub async fn connect(config: JetStreamConfig) -> Result<Self, BusError> {
        config.validate().map_err(|e| BusError::new(BusErrorKind::Invalid, e))?;
        let client = Self::connect_client(&config, "sextant").await?;
        let publish_client = Self::connect_client(&config, "sextant-publish").await?;
        let js_context = |c: &async_nats::Client| {
            jetstream::ContextBuilder::new().timeout(Duration::from_millis(config.publish_timeout_ms)).build(c.clone())
        };
        let (js, publish_js) = (js_context(&client), js_context(&publish_client));
        let inner = Arc::new(Inner { client, js, publish_client, publish_js, config });
        inner.ensure_streams().await?;
        Ok(Self { inner })
    }

    async fn connect_client(config: &JetStreamConfig, name: &str) -> Result<async_nats::Client, BusError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(2000)))
            .event_callback({
                let connection: Arc<str> = name.into();
                move |event| {
                    let connection = connection.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => info!(%connection, "NATS connected"),
                            async_nats::Event::Disconnected => {
                                warn!(%connection, "NATS disconnected; publishing answers 503 until it is back")
                            }
                            other => debug!(%connection, event = %other, "NATS event"),
                        }
                    }
                }
            });
        if let Some(creds) = &config.credentials_file {
            opts =
                opts.credentials_file(creds).await.map_err(|e| unavailable(&format!("cannot read credentials {}", creds.display()), e))?;
        }
        opts.connect(config.servers.clone()).await.map_err(|e| unavailable("cannot connect", e))
    }

    /// The stream and subject names in use, for operators (`sextant serve` logs them).
    pub fn stream_name(&self, stream: Stream) -> String {
        self.inner.config.stream_name(stream)
    }
}

impl Inner {
    async fn ensure_streams(&self) -> Result<(), BusError> {
        let c = &self.config;
        let mut configs: Vec<js_stream::Config> = Stream::ALL
            .iter()
            .map(|s| js_stream::Config {
                name: c.stream_name(*s),
                subjects: vec![format!("{}.{}.>", c.prefix, s.name())],
                description: Some(format!("Sextant {} events", s.name())),
                ..Default::default()
            })
            .collect();
        configs.push(js_stream::Config {
            name: c.dead_letter_stream(),
            subjects: vec![format!("{}.dead_letters.>", c.prefix)],
            description: Some("Sextant events that no handler could process".into()),
            ..Default::default()
        });
        for mut sc in configs {
            sc.storage = js_stream::StorageType::File;
            sc.retention = js_stream::RetentionPolicy::Limits;
            sc.num_replicas = c.stream_replicas;
            sc.max_age = Duration::from_secs(c.max_age_secs);
            sc.max_bytes = c.max_bytes;
            sc.duplicate_window = Duration::from_secs(c.duplicate_window_secs);
            sc.discard = js_stream::DiscardPolicy::Old;
            let name = sc.name.clone();
            self.js.create_or_update_stream(sc).await.map_err(|e| unavailable(&format!("cannot create or update stream {name}"), e))?;
        }
        info!(prefix = %c.prefix, replicas = c.stream_replicas, "JetStream streams ready");
        Ok(())
    }

    fn subject(&self, env: &Envelope) -> String {
        format!("{}.{}", self.config.prefix, env.subject())
    }

    async fn consumer(&self, spec: &ConsumerSpec) -> Result<jetstream::consumer::PullConsumer, BusError> {
        let stream_name = self.config.stream_name(spec.stream);
        let stream = self.js.get_stream(&stream_name).await.map_err(|e| unavailable(&format!("stream {stream_name}"), e))?;
        let config = pull::Config {
            durable_name: Some(spec.durable.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            // One more than the contract's limit: the adapter dead-letters that last delivery.
            max_deliver: i64::from(spec.max_deliveries) + 1,
            max_ack_pending: spec.max_in_flight as i64,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        };
        stream.get_or_create_consumer(&spec.durable, config).await.map_err(|e| unavailable(&format!("consumer {}", spec.durable), e))
    }

    /// Records an event no handler can process in the dead-letter stream. The message id makes
    /// a repeated record (a crash between recording and terminating) land once.
    async fn record_dead_letter(
        &self,
        stream: Stream,
        sequence: u64,
        consumer: &str,
        reason: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_DL_STREAM, stream.name());
        headers.insert(HEADER_DL_SEQUENCE, sequence.to_string().as_str());
        headers.insert(HEADER_DL_CONSUMER, consumer);
        // Header values cannot carry newlines.
        headers.insert(HEADER_DL_REASON, reason.replace(['\r', '\n'], " ").as_str());
        let subject = format!("{}.dead_letters.{}.{}", self.config.prefix, stream.name(), consumer);
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(format!("{consumer}.{}.{sequence}", stream.name()));
        let ack = self.js.send_publish(subject, publish).await.map_err(|e| unavailable("record dead letter", e))?;
        ack.await.map_err(|e| unavailable("record dead letter", e))?;
        metrics::counter!("sextant_bus_dead_letters_total").increment(1);
        Ok(())
    }
}

#[async_trait]
impl EventBus for JetStreamBus {
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), BusError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        // While disconnected the client would only buffer: answer at once so the caller can
        // tell its client to retry.
        if self.inner.publish_client.connection_state() != State::Connected {
            return Err(BusError::new(BusErrorKind::Unavailable, "NATS is not connected"));
        }
        let started = std::time::Instant::now();
        let inner = &self.inner;
        let work = async {
            let mut acks = Vec::with_capacity(envelopes.len());
            for env in envelopes {
                let payload =
                    sextant_events::encode(env).map_err(|e| BusError::with_source(BusErrorKind::Internal, "cannot encode event", e))?;
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_EVENT, env.kind());
                if let Some(tp) = &env.traceparent {
                    headers.insert(HEADER_TRACEPARENT, tp.as_str());
                }
                let publish =
                    jetstream::message::PublishMessage::build().payload(payload.into()).headers(headers).message_id(env.id.to_string());
                let ack = inner.publish_js.send_publish(inner.subject(env), publish).await.map_err(|e| {
                    let kind = match e.kind() {
                        jetstream::context::PublishErrorKind::MaxPayloadExceeded => BusErrorKind::Invalid,
                        _ => BusErrorKind::Unavailable,
                    };
                    BusError::new(kind, format!("NATS: publish: {e}"))
                })?;
                acks.push(ack);
            }
            // Every message is on the wire before the first ack is awaited (pipelining).
            for ack in futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await {
                ack.map_err(|e| unavailable("no PubAck", e))?;
            }
            Ok::<_, BusError>(())
        };
        let result = match tokio::time::timeout(Duration::from_millis(inner.config.publish_timeout_ms), work).await {
            Ok(r) => r,
            Err(_) => Err(BusError::new(BusErrorKind::Unavailable, "NATS: publish timed out waiting for PubAcks")),
        };
        metrics::histogram!("sextant_bus_publish_seconds").record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("sextant_bus_publish_failures_total").increment(1);
        }
        result
    }

    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        if spec.durable.is_empty() || spec.durable.contains(['.', '*', '>', ' ', '\t']) {
            return Err(BusError::new(BusErrorKind::Invalid, format!("consumer name {:?} is not a valid JetStream name", spec.durable)));
        }
        if spec.max_in_flight == 0 || spec.max_deliveries == 0 {
            return Err(BusError::new(BusErrorKind::Invalid, "max_in_flight and max_deliveries must be > 0"));
        }
        let mut sub = JsSubscription { inner: self.inner.clone(), spec, messages: None };
        sub.open().await?;
        Ok(Box::new(sub))
    }

    async fn ready(&self) -> bool {
        self.inner.client.connection_state() == State::Connected && self.inner.publish_client.connection_state() == State::Connected
    }

    async fn pending(&self, durable: &str, stream: Stream) -> Result<Option<u64>, BusError> {
        if self.inner.client.connection_state() != State::Connected {
            return Err(BusError::new(BusErrorKind::Unavailable, "NATS is not connected"));
        }
        let stream_name = self.inner.config.stream_name(stream);
        match self.inner.js.get_consumer_from_stream::<pull::Config, _, _>(durable, &stream_name).await {
            Ok(c) => {
                let info = c.cached_info();
                Ok(Some(info.num_pending + info.num_ack_pending as u64))
            }
            Err(e) => match e.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND => {
                    Ok(None)
                }
                _ => Err(unavailable(&format!("consumer info {durable}"), e)),
            },
        }
    }

    async fn progress(&self, durable: &str, stream: Stream) -> Result<Option<ConsumerProgress>, BusError> {
        if self.inner.client.connection_state() != State::Connected {
            return Err(BusError::new(BusErrorKind::Unavailable, "NATS is not connected"));
        }
        let stream_name = self.inner.config.stream_name(stream);
        let consumer = match self.inner.js.get_consumer_from_stream::<pull::Config, _, _>(durable, &stream_name).await {
            Ok(c) => c,
            Err(e) => match e.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND => {
                    return Ok(None)
                }
                _ => return Err(unavailable(&format!("consumer info {durable}"), e)),
            },
        };
        // Fetching the consumer fetched its info: one round trip.
        let info = consumer.cached_info();
        // The consumer reads the whole stream: what it has not been delivered yet follows its
        // delivered position.
        Ok(Some(ConsumerProgress {
            last_published: info.delivered.stream_sequence + info.num_pending,
            settled_through: info.ack_floor.stream_sequence,
        }))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let name = self.inner.config.dead_letter_stream();
        let mut stream = self.inner.js.get_stream(&name).await.map_err(|e| unavailable(&format!("stream {name}"), e))?;
        let state = stream.info().await.map_err(|e| unavailable(&format!("stream {name}"), e))?.state.clone();
        let mut out = Vec::new();
        let mut seq = state.last_sequence;
        while out.len() < limit && seq >= state.first_sequence && seq > 0 {
            match stream.get_raw_message(seq).await {
                Ok(m) => {
                    let h = |k: &str| m.headers.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
                    if let Some(s) = Stream::ALL.into_iter().find(|s| s.name() == h(HEADER_DL_STREAM)) {
                        out.push(DeadLetter {
                            stream: s,
                            sequence: h(HEADER_DL_SEQUENCE).parse().unwrap_or(0),
                            consumer: h(HEADER_DL_CONSUMER),
                            reason: h(HEADER_DL_REASON),
                            payload_bytes: m.payload.len(),
                        });
                    }
                }
                Err(e) => debug!(seq, error = %e, "dead letter no longer retained"),
            }
            seq -= 1;
        }
        Ok(out)
    }

    async fn replay_dead_letter(&self, stream_of: Stream, sequence: u64, consumer: &str) -> Result<Replayed, BusError> {
        let name = self.inner.config.dead_letter_stream();
        let mut stream = self.inner.js.get_stream(&name).await.map_err(|e| unavailable(&format!("stream {name}"), e))?;
        let state = stream.info().await.map_err(|e| unavailable(&format!("stream {name}"), e))?.state.clone();
        let mut seq = state.last_sequence;
        while seq >= state.first_sequence && seq > 0 {
            if let Ok(m) = stream.get_raw_message(seq).await {
                let h = |k: &str| m.headers.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
                if h(HEADER_DL_STREAM) == stream_of.name()
                    && h(HEADER_DL_SEQUENCE) == sequence.to_string()
                    && h(HEADER_DL_CONSUMER) == consumer
                {
                    let env = crate::replay_envelope(&m.payload)?;
                    self.publish(std::slice::from_ref(&env)).await?;
                    stream.delete_message(seq).await.map_err(|e| unavailable("remove dead letter", e))?;
                    return Ok(Replayed::Republished { event_id: env.id });
                }
            }
            seq -= 1;
        }
        Ok(Replayed::NotFound)
    }
}

struct JsSubscription {
    inner: Arc<Inner>,
    spec: ConsumerSpec,
    messages: Option<pull::Stream>,
}

impl JsSubscription {
    async fn open(&mut self) -> Result<(), BusError> {
        let consumer = self.inner.consumer(&self.spec).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.spec.max_in_flight.min(256))
            // Short expiry and heartbeats: after a NATS restart the pull resumes within seconds.
            .expires(Duration::from_secs(10))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| unavailable(&format!("pull from {}", self.spec.durable), e))?;
        self.messages = Some(messages);
        Ok(())
    }

    /// Turns a JetStream message into a delivery, or dead-letters it when it has been
    /// delivered more often than the consumer allows. `decoded` is its payload, decoded.
    async fn deliver(&self, msg: jetstream::Message, decoded: Result<Envelope, CodecError>) -> Result<Option<Delivery>, BusError> {
        let (sequence, delivered) = match msg.info() {
            Ok(i) => (i.stream_sequence, u32::try_from(i.delivered).unwrap_or(u32::MAX)),
            Err(e) => return Err(BusError::new(BusErrorKind::Internal, format!("NATS: delivery without JetStream metadata: {e}"))),
        };
        let (message, acker) = msg.split();
        let acker = JsAcker {
            acker,
            inner: self.inner.clone(),
            stream: self.spec.stream,
            consumer: self.spec.durable.clone(),
            sequence,
            payload: message.payload.clone(),
        };
        if delivered > self.spec.max_deliveries {
            warn!(consumer = %self.spec.durable, seq = sequence, deliveries = delivered - 1, "event exceeded max deliveries; dead-lettered");
            Box::new(acker).term(&format!("exceeded {} deliveries", self.spec.max_deliveries)).await?;
            return Ok(None);
        }
        let traceparent = message.headers.as_ref().and_then(|h| h.get(HEADER_TRACEPARENT)).map(|v| v.as_str().to_string());
        let payload = decoded.map(|mut env| {
            if env.traceparent.is_none() {
                env.traceparent = traceparent;
            }
            env
        });
        Ok(Some(Delivery::new(payload, delivered, sequence, Box::new(acker))))
    }
}

#[async_trait]
impl Subscription for JsSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if self.messages.is_none() {
            self.open().await?;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.is_empty() {
            let messages = self.messages.as_mut().expect("opened above");
            let first = match tokio::time::timeout_at(deadline, messages.next()).await {
                Err(_) => return Ok(out),
                Ok(item) => item,
            };
            let linger_until = tokio::time::Instant::now() + BATCH_LINGER;
            let mut raw = Vec::new();
            let mut failure = None;
            let mut next = first;
            loop {
                match next {
                    Some(Ok(m)) => raw.push(m),
                    Some(Err(e)) => {
                        failure = Some(e.to_string());
                        break;
                    }
                    None => {
                        failure = Some("the pull subscription ended".into());
                        break;
                    }
                }
                if raw.len() >= max {
                    break;
                }
                // Messages of one pull arrive back to back: keep taking them for a short while
                // after the first, so a batch holds what is ready rather than just the first,
                // without holding a batch back for long under a steady trickle.
                match tokio::time::timeout_at(linger_until, messages.next()).await {
                    Ok(item) => next = item,
                    Err(_) => break,
                }
            }
            // A batch can be megabytes of events: decoded off the async workers, which must
            // stay free for requests (a long poll there is an acknowledgement's tail latency).
            let payloads: Vec<Bytes> = raw.iter().map(|m| m.payload.clone()).collect();
            let decoded = tokio::task::spawn_blocking(move || payloads.iter().map(|p| sextant_events::decode(p)).collect::<Vec<_>>())
                .await
                .map_err(|e| BusError::new(BusErrorKind::Internal, format!("decoding a batch failed: {e}")))?;
            for (m, payload) in raw.into_iter().zip(decoded) {
                if let Some(d) = self.deliver(m, payload).await? {
                    out.push(d);
                }
            }
            if let Some(reason) = failure {
                // Reopen on the next call: the consumer may have been recreated after a NATS restart.
                self.messages = None;
                if out.is_empty() {
                    return Err(unavailable(&format!("pull from {}", self.spec.durable), reason));
                }
                break;
            }
        }
        Ok(out)
    }
}

struct JsAcker {
    acker: jetstream::message::Acker,
    inner: Arc<Inner>,
    stream: Stream,
    consumer: String,
    sequence: u64,
    /// Kept for the dead-letter record (a reference-counted view, not a copy).
    payload: Bytes,
}

#[async_trait]
impl Acker for JsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.acker.double_ack().await.map_err(|e| unavailable("ack", e))
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.acker.double_ack_with(AckKind::Nak(Some(delay))).await.map_err(|e| unavailable("nak", e))
    }

    async fn term(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        // Recorded first: if the process dies in between, the event is redelivered and the
        // record (deduplicated by message id) is written once.
        self.inner.record_dead_letter(self.stream, self.sequence, &self.consumer, reason, self.payload.clone()).await?;
        self.acker.double_ack_with(AckKind::Term).await.map_err(|e| unavailable("term", e))
    }
}
