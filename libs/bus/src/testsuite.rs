//! The bus conformance suite: every adapter runs these against a fresh bus per test.
//! Use [`bus_conformance!`] with an expression that yields a new `Arc<dyn EventBus>` (async).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use sextant_core::{ProjectId, TenantId};
use sextant_events::{Envelope, Event, ProjectDeletedV1, Stream};

use crate::{ConsumerSpec, EventBus};

/// Declares one `#[tokio::test]` per contract clause.
#[macro_export]
macro_rules! bus_conformance {
    ($new:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn delivers_in_order_once_acked() {
            $crate::testsuite::delivers_in_order_once_acked($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redelivers_after_nak() {
            $crate::testsuite::redelivers_after_nak($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redelivers_after_ack_wait() {
            $crate::testsuite::redelivers_after_ack_wait($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn term_stops_redelivery() {
            $crate::testsuite::term_stops_redelivery($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn shared_consumer_splits_work() {
            $crate::testsuite::shared_consumer_splits_work($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn independent_consumers_each_get_everything() {
            $crate::testsuite::independent_consumers_each_get_everything($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_publish_is_stored_once() {
            $crate::testsuite::duplicate_publish_is_stored_once($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn in_flight_is_bounded() {
            $crate::testsuite::in_flight_is_bounded($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stops_after_max_deliveries() {
            $crate::testsuite::stops_after_max_deliveries($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn pending_counts_unsettled_events() {
            $crate::testsuite::pending_counts_unsettled_events($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn progress_tracks_published_and_settled() {
            $crate::testsuite::progress_tracks_published_and_settled($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn term_records_a_dead_letter() {
            $crate::testsuite::term_records_a_dead_letter($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn dead_letters_can_be_replayed() {
            $crate::testsuite::dead_letters_can_be_replayed($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn streams_are_separate() {
            $crate::testsuite::streams_are_separate($new.await).await
        }
    };
}

const WAIT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);

fn event(n: u128) -> Envelope {
    let tenant = TenantId(Uuid::from_u128(0xfeed));
    Envelope::new(tenant, Event::ProjectDeletedV1(ProjectDeletedV1 { project_id: ProjectId(Uuid::from_u128(n)) }))
}

fn runs_event(n: u128) -> Envelope {
    let tenant = TenantId(Uuid::from_u128(0xfeed));
    Envelope::new(
        tenant,
        Event::RunsIngestedV1(sextant_events::RunsIngestedV1 { project_id: ProjectId(Uuid::from_u128(n)), fragments: vec![] }),
    )
}

fn marker(e: &Envelope) -> u128 {
    match &e.event {
        Event::ProjectDeletedV1(d) => d.project_id.0.as_u128(),
        Event::RunsIngestedV1(r) => r.project_id.0.as_u128(),
        _ => panic!("unexpected event"),
    }
}

fn spec(name: &str) -> ConsumerSpec {
    let mut s = ConsumerSpec::new(format!("{name}-{}", Uuid::new_v4().simple()), Stream::Projects);
    s.ack_wait = Duration::from_secs(30);
    s
}

/// Receives until `n` deliveries arrived or `WAIT` passed; acks each.
async fn take_acked(sub: &mut Box<dyn crate::Subscription>, n: usize) -> Vec<u128> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < n && tokio::time::Instant::now() < deadline {
        for d in sub.next_batch(n - got.len(), SHORT).await.unwrap() {
            got.push(marker(d.payload.as_ref().unwrap()));
            d.ack().await.unwrap();
        }
    }
    got
}

pub async fn delivers_in_order_once_acked(bus: Arc<dyn EventBus>) {
    let events: Vec<_> = (1..=50).map(event).collect();
    bus.publish(&events).await.unwrap();
    let s = spec("order");
    let mut sub = bus.subscribe(s.clone()).await.unwrap();
    assert_eq!(take_acked(&mut sub, 50).await, (1..=50).collect::<Vec<_>>());
    // Acked events are not delivered again, to this or a new subscription of the same name.
    assert!(sub.next_batch(10, SHORT).await.unwrap().is_empty());
    drop(sub);
    let mut again = bus.subscribe(s).await.unwrap();
    assert!(again.next_batch(10, SHORT).await.unwrap().is_empty());
    // Events published after subscribing arrive too.
    bus.publish(&[event(51)]).await.unwrap();
    assert_eq!(take_acked(&mut again, 1).await, vec![51]);
}

pub async fn redelivers_after_nak(bus: Arc<dyn EventBus>) {
    bus.publish(&[event(1)]).await.unwrap();
    let mut sub = bus.subscribe(spec("nak")).await.unwrap();
    let first = sub.next_batch(1, WAIT).await.unwrap().pop().expect("a delivery");
    assert_eq!(first.delivery_count, 1);
    first.nak(Duration::from_millis(50)).await.unwrap();
    let second = sub.next_batch(1, WAIT).await.unwrap().pop().expect("a redelivery");
    assert_eq!(marker(second.payload.as_ref().unwrap()), 1);
    assert_eq!(second.delivery_count, 2);
    second.ack().await.unwrap();
    assert!(sub.next_batch(1, SHORT).await.unwrap().is_empty());
}

pub async fn redelivers_after_ack_wait(bus: Arc<dyn EventBus>) {
    bus.publish(&[event(7)]).await.unwrap();
    let mut s = spec("ackwait");
    s.ack_wait = Duration::from_secs(1);
    let mut sub = bus.subscribe(s).await.unwrap();
    let first = sub.next_batch(1, WAIT).await.unwrap().pop().expect("a delivery");
    drop(first); // neither acked nor nak'ed: a crashed handler
    let again = sub.next_batch(1, WAIT).await.unwrap().pop().expect("redelivered after ack_wait");
    assert_eq!(marker(again.payload.as_ref().unwrap()), 7);
    assert!(again.delivery_count >= 2);
    again.ack().await.unwrap();
}

pub async fn term_stops_redelivery(bus: Arc<dyn EventBus>) {
    bus.publish(&[event(1), event(2)]).await.unwrap();
    let mut s = spec("term");
    s.ack_wait = Duration::from_secs(1);
    let mut sub = bus.subscribe(s).await.unwrap();
    let batch = sub.next_batch(2, WAIT).await.unwrap();
    assert_eq!(batch.len(), 2);
    let mut it = batch.into_iter();
    it.next().unwrap().term("poison").await.unwrap();
    it.next().unwrap().ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(sub.next_batch(2, SHORT).await.unwrap().is_empty(), "a terminated event came back");
}

pub async fn shared_consumer_splits_work(bus: Arc<dyn EventBus>) {
    let n = 200u128;
    bus.publish(&(1..=n).map(event).collect::<Vec<_>>()).await.unwrap();
    let s = spec("shared");
    let mut a = bus.subscribe(s.clone()).await.unwrap();
    let mut b = bus.subscribe(s).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < n as usize && tokio::time::Instant::now() < deadline {
        for sub in [&mut a, &mut b] {
            for d in sub.next_batch(16, Duration::from_millis(50)).await.unwrap() {
                seen.push(marker(d.payload.as_ref().unwrap()));
                d.ack().await.unwrap();
            }
        }
    }
    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(seen.len(), n as usize, "each event is delivered once across the subscribers");
    assert_eq!(unique.len(), n as usize);
}

pub async fn independent_consumers_each_get_everything(bus: Arc<dyn EventBus>) {
    bus.publish(&(1..=20).map(event).collect::<Vec<_>>()).await.unwrap();
    let mut a = bus.subscribe(spec("indep-a")).await.unwrap();
    let mut b = bus.subscribe(spec("indep-b")).await.unwrap();
    assert_eq!(take_acked(&mut a, 20).await.len(), 20);
    assert_eq!(take_acked(&mut b, 20).await.len(), 20);
}

pub async fn duplicate_publish_is_stored_once(bus: Arc<dyn EventBus>) {
    let e = event(9);
    bus.publish(std::slice::from_ref(&e)).await.unwrap();
    bus.publish(std::slice::from_ref(&e)).await.unwrap(); // a client retry
    bus.publish(&[e.clone(), e]).await.unwrap();
    let mut sub = bus.subscribe(spec("dedupe")).await.unwrap();
    assert_eq!(take_acked(&mut sub, 1).await, vec![9]);
    assert!(sub.next_batch(10, SHORT).await.unwrap().is_empty(), "duplicate was delivered");
}

pub async fn in_flight_is_bounded(bus: Arc<dyn EventBus>) {
    bus.publish(&(1..=10).map(event).collect::<Vec<_>>()).await.unwrap();
    let mut s = spec("inflight");
    s.max_in_flight = 3;
    let mut sub = bus.subscribe(s).await.unwrap();
    let first = sub.next_batch(10, WAIT).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(sub.next_batch(10, SHORT).await.unwrap().is_empty(), "more than max_in_flight outstanding");
    for d in first {
        d.ack().await.unwrap();
    }
    assert_eq!(sub.next_batch(10, WAIT).await.unwrap().len(), 3);
}

pub async fn stops_after_max_deliveries(bus: Arc<dyn EventBus>) {
    bus.publish(&[event(3)]).await.unwrap();
    let mut s = spec("maxdeliver");
    s.max_deliveries = 2;
    let mut sub = bus.subscribe(s).await.unwrap();
    let mut deliveries = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        for d in sub.next_batch(1, Duration::from_millis(200)).await.unwrap() {
            deliveries += 1;
            d.nak(Duration::from_millis(10)).await.unwrap();
        }
    }
    assert_eq!(deliveries, 2);
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "an event given up on is recorded: {dead:?}");
    assert!(dead[0].reason.contains("deliveries"), "{dead:?}");
}

pub async fn term_records_a_dead_letter(bus: Arc<dyn EventBus>) {
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
    bus.publish(&[event(1), event(2), event(3)]).await.unwrap();
    let s = spec("deadletter");
    let mut sub = bus.subscribe(s.clone()).await.unwrap();
    let mut batch = sub.next_batch(3, WAIT).await.unwrap().into_iter();
    let first = batch.next().expect("a delivery");
    let poisoned_seq = first.sequence;
    first.term("cannot be handled: bad input").await.unwrap();
    for d in batch {
        d.ack().await.unwrap();
    }
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].stream, Stream::Projects);
    assert_eq!(dead[0].sequence, poisoned_seq);
    assert_eq!(dead[0].consumer, s.durable);
    assert_eq!(dead[0].reason, "cannot be handled: bad input");
    // The stream keeps flowing past the dead letter.
    bus.publish(&[event(4)]).await.unwrap();
    assert_eq!(take_acked(&mut sub, 1).await, vec![4]);
}

pub async fn dead_letters_can_be_replayed(bus: Arc<dyn EventBus>) {
    bus.publish(&[event(7), event(8)]).await.unwrap();
    let s = spec("replay");
    let mut sub = bus.subscribe(s.clone()).await.unwrap();
    let mut batch = sub.next_batch(2, WAIT).await.unwrap().into_iter();
    let poisoned = batch.next().expect("a delivery");
    let seq = poisoned.sequence;
    poisoned.term("handler bug").await.unwrap();
    for d in batch {
        d.ack().await.unwrap();
    }
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].payload_bytes > 0, "the event is kept for replay: {dead:?}");
    assert_eq!(bus.replay_dead_letter(Stream::Projects, seq, "someone-else").await.unwrap(), crate::Replayed::NotFound);
    let replayed = bus.replay_dead_letter(Stream::Projects, seq, &s.durable).await.unwrap();
    assert!(matches!(replayed, crate::Replayed::Republished { .. }), "{replayed:?}");
    assert!(bus.dead_letters(10).await.unwrap().is_empty(), "a replayed dead letter is forgotten");
    // The same event comes back to the consumer that gave up on it.
    assert_eq!(take_acked(&mut sub, 1).await, vec![7]);
    assert_eq!(bus.replay_dead_letter(Stream::Projects, seq, &s.durable).await.unwrap(), crate::Replayed::NotFound);
}

pub async fn streams_are_separate(bus: Arc<dyn EventBus>) {
    bus.publish(&[event(1), runs_event(2)]).await.unwrap();
    let mut runs_spec = spec("runs-only");
    runs_spec.stream = Stream::Runs;
    let mut runs = bus.subscribe(runs_spec).await.unwrap();
    let mut projects = bus.subscribe(spec("projects-only")).await.unwrap();
    assert_eq!(take_acked(&mut runs, 1).await, vec![2]);
    assert_eq!(take_acked(&mut projects, 1).await, vec![1]);
    assert!(runs.next_batch(5, SHORT).await.unwrap().is_empty());
}

/// `progress` is what read-your-writes queries wait on: the newest published sequence, and
/// how far the consumer has settled (acked or terminated) without a gap.
pub async fn progress_tracks_published_and_settled(bus: Arc<dyn EventBus>) {
    let s = spec("progress");
    assert_eq!(bus.progress(&s.durable, Stream::Projects).await.unwrap(), None, "unknown consumer");
    let mut sub = bus.subscribe(s.clone()).await.unwrap();
    let p0 = bus.progress(&s.durable, Stream::Projects).await.unwrap().expect("a consumer");
    assert_eq!(p0.settled_through, p0.last_published, "nothing published yet, nothing pending");
    bus.publish(&(1..=5).map(event).collect::<Vec<_>>()).await.unwrap();
    let p = bus.progress(&s.durable, Stream::Projects).await.unwrap().expect("a consumer");
    assert_eq!(p.last_published, p0.last_published + 5);
    assert_eq!(p.settled_through, p0.settled_through);
    let batch = sub.next_batch(2, WAIT).await.unwrap();
    assert_eq!(
        bus.progress(&s.durable, Stream::Projects).await.unwrap().unwrap().settled_through,
        p0.settled_through,
        "delivered is not settled"
    );
    for d in batch {
        d.ack().await.unwrap();
    }
    assert_eq!(bus.progress(&s.durable, Stream::Projects).await.unwrap().unwrap().settled_through, p0.settled_through + 2);
    take_acked(&mut sub, 3).await;
    let done = bus.progress(&s.durable, Stream::Projects).await.unwrap().unwrap();
    assert_eq!(done, progress_at(p0.last_published + 5, p0.last_published + 5));
}

fn progress_at(last_published: u64, settled_through: u64) -> crate::ConsumerProgress {
    crate::ConsumerProgress { last_published, settled_through }
}

pub async fn pending_counts_unsettled_events(bus: Arc<dyn EventBus>) {
    let s = spec("pending");
    assert_eq!(bus.pending(&s.durable, Stream::Projects).await.unwrap(), None, "unknown consumer");
    let mut sub = bus.subscribe(s.clone()).await.unwrap();
    bus.publish(&(1..=5).map(event).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(bus.pending(&s.durable, Stream::Projects).await.unwrap(), Some(5));
    let batch = sub.next_batch(2, WAIT).await.unwrap();
    assert_eq!(bus.pending(&s.durable, Stream::Projects).await.unwrap(), Some(5), "delivered is not settled");
    for d in batch {
        d.ack().await.unwrap();
    }
    assert_eq!(bus.pending(&s.durable, Stream::Projects).await.unwrap(), Some(3));
    take_acked(&mut sub, 3).await;
    assert_eq!(bus.pending(&s.durable, Stream::Projects).await.unwrap(), Some(0));
}
