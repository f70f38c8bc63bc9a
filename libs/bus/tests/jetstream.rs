//! The JetStream adapter against the conformance suite, each test on its own real
//! `nats-server` (started on a free port), plus what only a real server can show: surviving a
//! NATS restart, and several stream sets sharing one server under different prefixes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use sextant_bus::jetstream::{JetStreamBus, JetStreamConfig};
use sextant_bus::nats_server::NatsServer;
use sextant_bus::{bus_conformance, BusError, BusErrorKind, ConsumerSpec, DeadLetter, EventBus, Replayed, Subscription};
use sextant_core::{ProjectId, TenantId};
use sextant_events::{Envelope, Event, ProjectDeletedV1, Stream};

/// A bus that owns its private server, so the server lives exactly as long as the test's bus.
struct BusWithServer {
    bus: JetStreamBus,
    _server: NatsServer,
}

#[async_trait]
impl EventBus for BusWithServer {
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), BusError> {
        self.bus.publish(envelopes).await
    }
    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        self.bus.subscribe(spec).await
    }
    async fn ready(&self) -> bool {
        self.bus.ready().await
    }
    async fn pending(&self, durable: &str, stream: Stream) -> Result<Option<u64>, BusError> {
        self.bus.pending(durable, stream).await
    }
    async fn progress(&self, durable: &str, stream: Stream) -> Result<Option<sextant_bus::ConsumerProgress>, BusError> {
        self.bus.progress(durable, stream).await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.bus.dead_letters(limit).await
    }
    async fn replay_dead_letter(&self, stream: Stream, sequence: u64, consumer: &str) -> Result<Replayed, BusError> {
        self.bus.replay_dead_letter(stream, sequence, consumer).await
    }
}

fn config(server: &NatsServer) -> JetStreamConfig {
    JetStreamConfig { servers: vec![server.url()], publish_timeout_ms: 2000, ..Default::default() }
}

async fn fresh() -> Arc<dyn EventBus> {
    let server = NatsServer::start();
    let bus = JetStreamBus::connect(config(&server)).await.expect("connect to the private nats-server");
    Arc::new(BusWithServer { bus, _server: server })
}

bus_conformance!(fresh());

fn event(n: u128) -> Envelope {
    Envelope::new(
        TenantId(uuid::Uuid::from_u128(1)),
        Event::ProjectDeletedV1(ProjectDeletedV1 { project_id: ProjectId(uuid::Uuid::from_u128(n)) }),
    )
}

fn marker(e: &Envelope) -> u128 {
    match &e.event {
        Event::ProjectDeletedV1(d) => d.project_id.0.as_u128(),
        _ => panic!("unexpected event"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_created_idempotently_with_configured_limits() {
    let server = NatsServer::start();
    // JetStream reserves max_bytes per stream against the server's store (a share of the free
    // disk), so a large limit fails on a small CI disk; 64 MiB per stream fits anywhere.
    let cfg = JetStreamConfig { max_age_secs: 3600, max_bytes: 64 << 20, ..config(&server) };
    let bus = JetStreamBus::connect(cfg.clone()).await.unwrap();
    bus.publish(&[event(1)]).await.unwrap();
    // A second replica starting (or a restart) finds the streams and keeps their events.
    let again = JetStreamBus::connect(cfg).await.unwrap();
    let mut sub = again.subscribe(ConsumerSpec::new("idem", Stream::Projects)).await.unwrap();
    let got = sub.next_batch(5, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(again.stream_name(Stream::Runs)).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.config.max_bytes, 64 << 20);
    assert_eq!(info.config.subjects, vec!["sextant.runs.>".to_string()]);
    assert_eq!(info.config.storage, async_nats::jetstream::stream::StorageType::File);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_installations_apart_on_one_server() {
    let server = NatsServer::start();
    let a = JetStreamBus::connect(JetStreamConfig { prefix: "alpha".into(), ..config(&server) }).await.unwrap();
    let b = JetStreamBus::connect(JetStreamConfig { prefix: "beta".into(), ..config(&server) }).await.unwrap();
    a.publish(&[event(1)]).await.unwrap();
    let mut sub = b.subscribe(ConsumerSpec::new("apart", Stream::Projects)).await.unwrap();
    assert!(sub.next_batch(5, Duration::from_millis(500)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_travels_in_headers() {
    let server = NatsServer::start();
    let bus = JetStreamBus::connect(config(&server)).await.unwrap();
    let mut e = event(5);
    e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    bus.publish(&[e]).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(bus.stream_name(Stream::Projects)).await.unwrap();
    let raw = stream.get_raw_message(1).await.unwrap();
    assert_eq!(raw.headers.get("traceparent").map(|v| v.as_str()), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    let mut sub = bus.subscribe(ConsumerSpec::new("trace", Stream::Projects)).await.unwrap();
    let d = sub.next_batch(1, Duration::from_secs(5)).await.unwrap().pop().unwrap();
    assert_eq!(d.payload.as_ref().unwrap().traceparent.as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_fails_fast_then_recovers_without_reconnecting_by_hand() {
    let mut server = NatsServer::start();
    let bus = JetStreamBus::connect(config(&server)).await.unwrap();
    bus.publish(&[event(1)]).await.unwrap();
    let mut spec = ConsumerSpec::new("outage", Stream::Projects);
    spec.ack_wait = Duration::from_secs(2);
    let mut sub = bus.subscribe(spec).await.unwrap();
    let first = sub.next_batch(1, Duration::from_secs(5)).await.unwrap().pop().unwrap();
    first.ack().await.unwrap();

    server.kill();
    // Publishing while NATS is down is refused (the API turns this into 503 + Retry-After),
    // promptly rather than after the client's buffers fill.
    let mut refused = false;
    for _ in 0..50 {
        match bus.publish(&[event(2)]).await {
            Err(e) => {
                assert_eq!(e.kind, BusErrorKind::Unavailable, "{e}");
                refused = true;
                break;
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(refused, "publishing kept succeeding with NATS down");
    assert!(!bus.ready().await);

    server.restart();
    // The client reconnects by itself; publishing and consuming resume.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while bus.publish(&[event(3)]).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "publishing did not recover after NATS came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(bus.ready().await);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(&3) && tokio::time::Instant::now() < deadline {
        match sub.next_batch(10, Duration::from_secs(1)).await {
            Ok(batch) => {
                for d in batch {
                    seen.push(marker(d.payload.as_ref().unwrap()));
                    d.ack().await.unwrap();
                }
            }
            Err(e) => assert_eq!(e.kind, BusErrorKind::Unavailable, "{e}"),
        }
    }
    assert!(seen.contains(&3), "consumption did not resume after NATS came back: {seen:?}");
    assert!(!seen.contains(&1), "an acked event came back after the restart");
}
