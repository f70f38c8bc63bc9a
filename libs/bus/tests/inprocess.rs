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

/// Acknowledged events survive a restart after the log was trimmed empty: sequence numbers are
/// never reused, so consumers that resume at their saved positions see every new event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_are_not_reused_after_the_log_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ConsumerSpec::new("trimmed", Stream::Projects);
    let mut next = 1;
    for cycle in 0..3 {
        let bus = InProcessBus::open(dir.path()).unwrap();
        let mut sub = bus.subscribe(spec.clone()).await.unwrap();
        let published: Vec<u128> = (next..next + 5).collect();
        next += 5;
        bus.publish(&published.iter().map(|n| event(*n)).collect::<Vec<_>>()).await.unwrap();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.len() < published.len() && tokio::time::Instant::now() < deadline {
            for d in sub.next_batch(20, Duration::from_millis(300)).await.unwrap() {
                if let Event::ProjectDeletedV1(e) = &d.payload.as_ref().unwrap().event {
                    got.push(e.project_id.0.as_u128());
                }
                d.ack().await.unwrap();
            }
        }
        assert_eq!(got, published, "cycle {cycle}: every event published after the restart is delivered");
        bus.trim_now().unwrap();
        assert_eq!(bus.retained(Stream::Projects), 0, "cycle {cycle}: settled events are trimmed");
        drop(sub);
        drop(bus);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
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

/// A projection whose handler panics on one event: only that event is dead-lettered (with the
/// panic's message), every other event is applied, and the consumer keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_event_is_dead_lettered_alone() {
    use std::sync::Mutex;

    use sextant_bus::{Applied, Projection};

    struct PanicsOnThree(Mutex<Vec<u128>>);
    #[async_trait::async_trait]
    impl Projection for PanicsOnThree {
        async fn apply(&self, env: &Envelope, _sequence: u64) -> Applied {
            let Event::ProjectDeletedV1(e) = &env.event else { return Applied::Done };
            let n = e.project_id.0.as_u128();
            if n == 3 {
                panic!("poison event {n}");
            }
            self.0.lock().unwrap().push(n);
            Applied::Done
        }
        async fn sync(&self) -> Result<(), String> {
            Ok(())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(InProcessBus::open(dir.path()).unwrap());
    bus.publish(&(1..=6).map(event).collect::<Vec<_>>()).await.unwrap();
    let projection = Arc::new(PanicsOnThree(Mutex::new(Vec::new())));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (b, p) = (bus.clone(), projection.clone());
    let task = tokio::spawn(async move {
        let spec = ConsumerSpec::new("panics", Stream::Projects);
        sextant_bus::run_projection(b.as_ref(), spec, 16, stop_rx, p.as_ref(), "test_projected_total").await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dead = bus.dead_letters(10).await.unwrap();
        let mut applied = projection.0.lock().unwrap().clone();
        applied.sort();
        applied.dedup();
        if applied == vec![1, 2, 4, 5, 6] && dead.len() == 1 {
            assert!(dead[0].reason.contains("panicked: poison event 3"), "{dead:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "applied {applied:?}, dead letters {dead:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still consuming after the panic.
    bus.publish(&[event(7)]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !projection.0.lock().unwrap().contains(&7) {
        assert!(tokio::time::Instant::now() < deadline, "the consumer stopped after a panic");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}
