//! Overload becomes slower acknowledgements (and, past a wait, a 503 with Retry-After), never
//! unbounded read lag.

use std::sync::Arc;
use std::time::Duration;

use sextant_bus::inprocess::InProcessBus;
use sextant_bus::{ConsumerSpec, EventBus};
use sextant_core::{FragmentKind, RunFragment, RunId, LOCAL_TENANT};
use sextant_events::Stream;
use sextant_ingest::projector::RUN_PROJECTOR;
use sextant_ingest::wire::ProjectRef;
use sextant_ingest::{Ingest, IngestLimits};
use sextant_proto::ErrorKind;
use sextant_storage::embedded::EmbeddedStore;

fn one_run() -> Vec<(RunFragment, ProjectRef)> {
    vec![(RunFragment::new(FragmentKind::Post, RunId(uuid::Uuid::now_v7())), ProjectRef::Name("bp".into()))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_waits_for_a_lagging_projector_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let limits = IngestLimits { max_projection_backlog: 2, backpressure_wait: Duration::from_millis(300), ..Default::default() };
    let ingest = Arc::new(Ingest::new(bus.clone(), store, limits));
    // A projector that has subscribed but is stalled.
    let mut stalled = bus.subscribe(ConsumerSpec::new(RUN_PROJECTOR, Stream::Runs)).await.unwrap();

    for _ in 0..3 {
        ingest.ingest(LOCAL_TENANT, one_run()).await.unwrap();
    }
    // Three events pending > 2: the next request waits, then is refused as retryable.
    let started = std::time::Instant::now();
    let err = ingest.ingest(LOCAL_TENANT, one_run()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("ahead of projection"), "{}", err.message);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // While it waits, the projector catches up: the request then goes through.
    let waiting = tokio::spawn({
        let ingest = ingest.clone();
        async move { ingest.ingest(LOCAL_TENANT, one_run()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "it should be waiting for the backlog");
    for d in stalled.next_batch(10, Duration::from_secs(1)).await.unwrap() {
        d.ack().await.unwrap();
    }
    waiting.await.unwrap().expect("admitted once the projector caught up");
}
