//! The in-process bus against the conformance suite, plus what only it must show:
//! positions and events survive reopening the log.

use std::sync::Arc;
use std::time::Duration;

use sextant_bus::inprocess::InProcessBus;
use sextant_bus::{bus_conformance, ConsumerSpec, EventBus};
use sextant_core::{ProjectId, TenantId};
use sextant_events::{Envelope, Event, ProjectDeletedV1, Stream};

async fn fresh() -> Arc<dyn EventBus> {
    let dir = tempfile::tempdir().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    std::mem::forget(dir); // kept for the test's lifetime; the OS temp cleaner removes it
    Arc::new(bus)
}

bus_conformance!(fresh());

fn event(n: u128) -> Envelope {
    Envelope::new(
        TenantId(uuid::Uuid::from_u128(1)),
        Event::ProjectDeletedV1(ProjectDeletedV1 { project_id: ProjectId(uuid::Uuid::from_u128(n)) }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_positions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ConsumerSpec::new("reopen", Stream::Projects);
    {
        let bus = InProcessBus::open(dir.path()).unwrap();
        bus.publish(&(1..=10).map(event).collect::<Vec<_>>()).await.unwrap();
        let mut sub = bus.subscribe(spec.clone()).await.unwrap();
        let batch = sub.next_batch(4, Duration::from_secs(2)).await.unwrap();
        assert_eq!(batch.len(), 4);
        for d in batch {
            d.ack().await.unwrap();
        }
        // Let housekeeping save the position, then drop everything.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The writer thread and housekeeping task release the database asynchronously.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut sub = bus.subscribe(spec).await.unwrap();
    let mut got = Vec::new();
    loop {
        let batch = sub.next_batch(20, Duration::from_millis(500)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for d in batch {
            if let Event::ProjectDeletedV1(e) = &d.payload.as_ref().unwrap().event {
                got.push(e.project_id.0.as_u128());
            }
            d.ack().await.unwrap();
        }
    }
    assert_eq!(got, (5..=10).collect::<Vec<_>>(), "acked events must not come back; unacked ones must");
    bus.publish(&[event(11)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_events_are_delivered_as_errors() {
    // A poison payload must reach the consumer as a decode error (to be terminated), not
    // stall the stream. Write one directly through the log format.
    let dir = tempfile::tempdir().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    bus.publish(&[event(1)]).await.unwrap();
    let mut sub = bus.subscribe(ConsumerSpec::new("poison", Stream::Projects)).await.unwrap();
    let d = sub.next_batch(1, Duration::from_secs(2)).await.unwrap().pop().unwrap();
    assert!(d.payload.is_ok());
    d.term("test").await.unwrap();
    assert_eq!(bus.dead_letters(10).await.unwrap().len(), 1);
}
