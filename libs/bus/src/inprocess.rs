//! The in-process bus: a durable, embedded event log for `sextant serve`.
//!
//! Events are appended to a fjall keyspace (`[stream tag][seq]` keys). One writer thread
//! batches concurrent publishes into a single write and a single `fsync` (group commit), which
//! is what makes "acknowledged only when durable" affordable under load. Consumers keep their
//! position (the lowest unsettled sequence) in a second keyspace; settled events below every
//! consumer's position are trimmed in the background.
//!
//! Sequence numbers are never reused. Each group commit also writes every touched stream's
//! high-water mark (the last sequence assigned) in the same atomic batch, so once the log is
//! trimmed empty a restart still numbers new events above every consumer's saved position;
//! otherwise consumers would skip them as already settled.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};
use uuid::Uuid;

use sextant_events::{decode, encode, Envelope, Stream};

use crate::disk::DiskGuard;
use crate::{Acker, BusError, BusErrorKind, ConsumerProgress, ConsumerSpec, DeadLetter, Delivery, EventBus, Replayed, Subscription};

/// How long a published envelope id is remembered for deduplication.
const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
const DEDUPE_MAX_IDS: usize = 1_000_000;
/// Upper bound of one group commit, so one huge burst cannot starve latency.
const MAX_GROUP_BYTES: usize = 64 << 20;
const FLOOR_PERSIST_EVERY: Duration = Duration::from_millis(200);
const TRIM_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    log: Keyspace,
    positions: Keyspace,
    dead: Keyspace,
    writer: mpsc::Sender<PublishRequest>,
    heads: HashMap<Stream, watch::Sender<u64>>,
    consumers: Mutex<HashMap<String, Arc<Consumer>>>,
    /// Refuses publishes while the disk is nearly full, before a write can fail.
    disk: Arc<DiskGuard>,
    /// Set when a write failed: fjall then refuses every write until the log is reopened.
    failed: Mutex<Option<String>>,
}

struct PublishRequest {
    items: Vec<(Stream, Uuid, Vec<u8>)>,
    done: oneshot::Sender<Result<(), BusError>>,
}

fn io_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::with_source(BusErrorKind::Unavailable, format!("event log {what} failed"), e)
}

fn log_key(stream: Stream, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = stream.tag();
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn stream_from_tag(tag: u8) -> Option<Stream> {
    Stream::ALL.into_iter().find(|s| s.tag() == tag)
}

/// The sequence in a log or dead-letter key (`[tag][seq]`).
fn seq_of(key: &[u8]) -> Option<u64> {
    key.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes)
}

/// A big-endian `u64` value (a high-water mark).
fn seq_of_value(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

/// Positions of every consumer ever created, including ones not subscribed right now.
fn saved_positions_in(positions: &Keyspace) -> HashMap<String, (Stream, u64)> {
    let mut out = HashMap::new();
    for g in positions.iter() {
        let Ok((k, v)) = g.into_inner() else { continue };
        let (Some(stream), Some(floor)) = (v.first().and_then(|t| stream_from_tag(*t)), v.get(1..).and_then(seq_of_value)) else {
            continue;
        };
        out.insert(String::from_utf8_lossy(&k).into_owned(), (stream, floor));
    }
    out
}

impl InProcessBus {
    /// Opens (or creates) the event log in `dir`, without a free-space reserve. Must be called
    /// inside a tokio runtime.
    pub fn open(dir: &Path) -> Result<Self, BusError> {
        Self::open_with_reserve(dir, 0)
    }

    /// Opens the log; publishes are refused (`StorageFull`) while the filesystem holding `dir`
    /// has less than `min_free_disk_bytes` free (0: no reserve).
    pub fn open_with_reserve(dir: &Path, min_free_disk_bytes: u64) -> Result<Self, BusError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create directory", e))?;
        #[allow(deprecated)] // the setter works; fjall marks it for a future rename
        let db = Database::builder(dir).cache_size(16 << 20).max_write_buffer_size(Some(64 << 20)).open().map_err(|e| io_err("open", e))?;
        // Events are written once, read about once and trimmed: compressing them is wasted CPU.
        let log = db
            .keyspace("log", || {
                // Events are large (a whole request's runs): keep them in blob files so
                // compaction never rewrites them.
                KeyspaceCreateOptions::default()
                    .max_memtable_size(32 << 20)
                    .data_block_compression_policy(CompressionPolicy::all(CompressionType::None))
                    .with_kv_separation(Some(KvSeparationOptions { compression: CompressionType::None, ..Default::default() }))
            })
            .map_err(|e| io_err("open keyspace", e))?;
        let positions = db.keyspace("positions", KeyspaceCreateOptions::default).map_err(|e| io_err("open keyspace", e))?;
        let dead = db.keyspace("dead_letters", KeyspaceCreateOptions::default).map_err(|e| io_err("open keyspace", e))?;
        let high_water = db.keyspace("high_water", KeyspaceCreateOptions::default).map_err(|e| io_err("open keyspace", e))?;

        // The last sequence of each stream: the highest of the durable high-water mark, the
        // newest event still in the log and every saved consumer position (a data directory
        // written before the mark existed has only the last two).
        let mut last_assigned: HashMap<Stream, u64> = Stream::ALL.into_iter().map(|s| (s, 0)).collect();
        for s in Stream::ALL {
            let mut last = 0;
            if let Some(g) = log.prefix([s.tag()]).next_back() {
                let k = g.key().map_err(|e| io_err("read", e))?;
                last = seq_of(&k).unwrap_or(0);
            }
            if let Some(v) = high_water.get([s.tag()]).map_err(|e| io_err("read", e))? {
                last = last.max(seq_of_value(&v).unwrap_or(0));
            }
            last_assigned.insert(s, last);
        }
        for (_, (stream, floor)) in saved_positions_in(&positions) {
            // A consumer at `floor` has settled everything below it.
            let e = last_assigned.entry(stream).or_default();
            *e = (*e).max(floor.saturating_sub(1));
        }
        let mut heads = HashMap::new();
        let mut next_seq = HashMap::new();
        for (s, last) in last_assigned {
            heads.insert(s, watch::channel(last).0);
            next_seq.insert(s, last + 1);
        }

        let (tx, rx) = mpsc::channel::<PublishRequest>(4096);
        let disk = DiskGuard::start(dir, min_free_disk_bytes);
        let inner = Arc::new(Inner {
            db: db.clone(),
            log: log.clone(),
            positions,
            dead,
            writer: tx,
            heads,
            consumers: Mutex::new(HashMap::new()),
            disk,
            failed: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("bus-writer".into())
            .spawn(move || writer_loop(rx, db, log, high_water, next_seq, weak))
            .map_err(|e| io_err("start writer thread", e))?;
        tokio::spawn(housekeeping(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    fn read_dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        for g in self.inner.dead.iter() {
            let Ok((k, v)) = g.into_inner() else { continue };
            if let Some(d) = DeadRecord::decode(&k, &v) {
                out.push(d.letter());
            }
        }
        // Keyed by (stream, sequence): newest first within the limit, across streams by position.
        out.sort_by_key(|d| std::cmp::Reverse(d.sequence));
        out.truncate(limit);
        out
    }

    /// Trims settled events now (housekeeping does it every few seconds).
    pub fn trim_now(&self) -> Result<(), BusError> {
        self.inner.persist_positions()?;
        self.inner.trim()
    }

    /// Number of events retained in the log for a stream (for tests and metrics).
    pub fn retained(&self, stream: Stream) -> usize {
        self.inner.log.prefix([stream.tag()]).count()
    }
}

/// The single writer: batches whatever is queued into one write and one fsync.
fn writer_loop(
    mut rx: mpsc::Receiver<PublishRequest>,
    db: Database,
    log: Keyspace,
    high_water: Keyspace,
    mut next_seq: HashMap<Stream, u64>,
    inner: Weak<Inner>,
) {
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut seen_order: VecDeque<(Instant, Uuid)> = VecDeque::new();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        let mut bytes: usize = group[0].items.iter().map(|i| i.2.len()).sum();
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.items.iter().map(|i| i.2.len()).sum::<usize>();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let now = Instant::now();
        while let Some(&(t, id)) = seen_order.front() {
            if now.duration_since(t) > DEDUPE_WINDOW || seen_order.len() > DEDUPE_MAX_IDS {
                seen_order.pop_front();
                seen.remove(&id);
            } else {
                break;
            }
        }
        let seq_before = next_seq.clone();
        let mut batch = db.batch();
        let mut new_ids = Vec::new();
        let mut heads_touched: HashMap<Stream, u64> = HashMap::new();
        let mut count = 0usize;
        for req in &group {
            for (stream, id, payload) in &req.items {
                if seen.contains(id) || new_ids.contains(id) {
                    continue;
                }
                let seq = next_seq.entry(*stream).or_insert(1);
                batch.insert(&log, log_key(*stream, *seq), payload.as_slice());
                heads_touched.insert(*stream, *seq);
                *seq += 1;
                new_ids.push(*id);
                count += 1;
            }
        }
        // In the same atomic batch as the events: the mark is durable exactly when they are.
        for (stream, last) in &heads_touched {
            batch.insert(&high_water, [stream.tag()], last.to_be_bytes());
        }
        let result = batch.commit().and_then(|()| db.persist(PersistMode::SyncData)).map_err(|e| io_err("write", e));
        if result.is_ok() {
            for id in new_ids {
                seen.insert(id);
                seen_order.push_back((now, id));
            }
            if let Some(inner) = inner.upgrade() {
                for (s, head) in heads_touched {
                    inner.heads[&s].send_replace(head);
                }
            }
            metrics::counter!("sextant_bus_events_published_total").increment(count as u64);
            metrics::histogram!("sextant_bus_group_commit_seconds").record(started.elapsed().as_secs_f64());
        } else {
            // The sequences were not used; rewind so the log stays gap-free.
            next_seq = seq_before;
            error!(error = ?result.as_ref().err(), "event log write failed");
            if let Some(inner) = inner.upgrade() {
                inner.disk.refresh();
                // fjall treats a failed write as fatal (it may have been torn): it refuses
                // every later write until the log is reopened, so say so instead of failing
                // each publish with a vague error.
                let cause = result.as_ref().err().and_then(|e| e.source.as_ref()).map(|s| s.to_string()).unwrap_or_default();
                *inner.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!(
                    "the event log could not write ({cause}); it accepts no more writes until the server restarts: \
                     free disk space (or fix the I/O error) and restart. Everything acknowledged before is kept"
                ));
            }
        }
        for req in group {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(BusError::new(e.kind, e.message.clone())),
            };
            let _ = req.done.send(r);
        }
    }
    debug!("bus writer stopped");
}

/// Persists consumer positions and trims the log below every consumer's position.
async fn housekeeping(inner: Weak<Inner>) {
    let mut last_trim = Instant::now();
    loop {
        tokio::time::sleep(FLOOR_PERSIST_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let inner2 = inner.clone();
        let trim = last_trim.elapsed() > TRIM_EVERY;
        if trim {
            last_trim = Instant::now();
        }
        let res = tokio::task::spawn_blocking(move || {
            inner2.persist_positions()?;
            if trim {
                inner2.trim()?;
            }
            Ok::<_, BusError>(())
        })
        .await;
        if let Ok(Err(e)) = res {
            warn!(error = %e, "bus housekeeping failed");
        }
    }
}

impl Inner {
    fn persist_positions(&self) -> Result<(), BusError> {
        let consumers: Vec<Arc<Consumer>> = self.consumers.lock().expect("poisoned").values().cloned().collect();
        for c in consumers {
            let floor = {
                let mut st = c.state.lock().expect("poisoned");
                if !st.floor_dirty {
                    continue;
                }
                st.floor_dirty = false;
                st.floor()
            };
            let mut v = Vec::with_capacity(9);
            v.push(c.spec.stream.tag());
            v.extend_from_slice(&floor.to_be_bytes());
            self.positions.insert(c.spec.durable.as_bytes(), v).map_err(|e| io_err("save position", e))?;
        }
        Ok(())
    }

    fn saved_positions(&self) -> HashMap<String, (Stream, u64)> {
        saved_positions_in(&self.positions)
    }

    fn trim(&self) -> Result<(), BusError> {
        let mut min_floor: HashMap<Stream, u64> = HashMap::new();
        for (_, (stream, floor)) in self.saved_positions() {
            let e = min_floor.entry(stream).or_insert(floor);
            *e = (*e).min(floor);
        }
        for c in self.consumers.lock().expect("poisoned").values() {
            let f = c.state.lock().expect("poisoned").floor();
            let e = min_floor.entry(c.spec.stream).or_insert(f);
            *e = (*e).min(f);
        }
        for (stream, floor) in min_floor {
            let keys: Vec<_> =
                self.log.range(log_key(stream, 0)..log_key(stream, floor)).filter_map(|g| g.key().ok()).take(100_000).collect();
            if keys.is_empty() {
                continue;
            }
            let mut b = self.db.batch();
            for k in &keys {
                b.remove(&self.log, k.clone());
            }
            b.commit().map_err(|e| io_err("trim", e))?;
            debug!(stream = stream.name(), trimmed = keys.len(), "trimmed event log");
        }
        Ok(())
    }

    fn read(&self, stream: Stream, seq: u64) -> Result<Option<Vec<u8>>, BusError> {
        Ok(self.log.get(log_key(stream, seq)).map_err(|e| io_err("read", e))?.map(|v| v.to_vec()))
    }
}

struct Consumer {
    spec: ConsumerSpec,
    state: Mutex<ConsumerState>,
}

struct Pending {
    deadline: Instant,
    count: u32,
}

struct ConsumerState {
    /// The next sequence never delivered.
    next_seq: u64,
    /// Delivered and not yet settled.
    pending: BTreeMap<u64, Pending>,
    floor_dirty: bool,
}

impl ConsumerState {
    /// Every sequence below this is settled.
    fn floor(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_seq)
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), BusError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        if let Some(reason) = self.inner.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Err(BusError::new(BusErrorKind::Unavailable, reason));
        }
        self.inner.disk.check()?;
        let mut items = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            let bytes = encode(e).map_err(|err| BusError::with_source(BusErrorKind::Invalid, "cannot encode event", err))?;
            items.push((e.stream(), e.id, bytes));
        }
        let (done, wait) = oneshot::channel();
        self.inner
            .writer
            .send(PublishRequest { items, done })
            .await
            .map_err(|_| BusError::new(BusErrorKind::Unavailable, "event log writer has stopped"))?;
        wait.await.map_err(|_| BusError::new(BusErrorKind::Unavailable, "event log writer has stopped"))?
    }

    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        if spec.durable.is_empty() || spec.max_in_flight == 0 || spec.max_deliveries == 0 {
            return Err(BusError::new(BusErrorKind::Invalid, "consumer needs a name, max_in_flight > 0 and max_deliveries > 0"));
        }
        let saved = {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.saved_positions())
                .await
                .map_err(|e| BusError::with_source(BusErrorKind::Internal, "position load panicked", e))?
        };
        let consumer = {
            let mut map = self.inner.consumers.lock().expect("poisoned");
            map.entry(spec.durable.clone())
                .or_insert_with(|| {
                    let start = match saved.get(&spec.durable) {
                        Some((s, floor)) if *s == spec.stream => *floor,
                        _ => 1,
                    };
                    Arc::new(Consumer {
                        spec: spec.clone(),
                        state: Mutex::new(ConsumerState { next_seq: start.max(1), pending: BTreeMap::new(), floor_dirty: false }),
                    })
                })
                .clone()
        };
        if consumer.spec.stream != spec.stream {
            return Err(BusError::new(
                BusErrorKind::Invalid,
                format!("consumer {} already exists on stream {}", spec.durable, consumer.spec.stream.name()),
            ));
        }
        let head = self.inner.heads[&spec.stream].subscribe();
        Ok(Box::new(InProcessSubscription { inner: self.inner.clone(), consumer, head }))
    }

    async fn not_ready_reason(&self) -> Option<String> {
        if self.inner.writer.is_closed() {
            return Some("the event log writer has stopped".into());
        }
        if let Some(reason) = self.inner.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Some(reason);
        }
        self.inner.disk.low_reason()
    }

    async fn pending(&self, durable: &str, stream: Stream) -> Result<Option<u64>, BusError> {
        let head = *self.inner.heads[&stream].borrow();
        let floor = self.inner.consumers.lock().expect("poisoned").get(durable).map(|c| c.state.lock().expect("poisoned").floor());
        Ok(floor.map(|f| (head + 1).saturating_sub(f)))
    }

    async fn progress(&self, durable: &str, stream: Stream) -> Result<Option<ConsumerProgress>, BusError> {
        let last_published = *self.inner.heads[&stream].borrow();
        let floor = self.inner.consumers.lock().expect("poisoned").get(durable).map(|c| c.state.lock().expect("poisoned").floor());
        Ok(floor.map(|f| ConsumerProgress { last_published, settled_through: f.saturating_sub(1) }))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_dead_letters(limit))
            .await
            .map_err(|e| BusError::with_source(BusErrorKind::Internal, "dead-letter read panicked", e))
    }

    async fn replay_dead_letter(&self, stream: Stream, sequence: u64, consumer: &str) -> Result<Replayed, BusError> {
        let probe = DeadRecord { stream, sequence, consumer: consumer.to_string(), reason: String::new(), payload: Vec::new() };
        let mut key = probe.key();
        let mut found = self.inner.dead.get(&key).map_err(|e| io_err("read dead letter", e))?;
        if found.is_none() {
            // A record from before dead letters were keyed by consumer.
            let legacy = log_key(stream, sequence).to_vec();
            found = self.inner.dead.get(&legacy).map_err(|e| io_err("read dead letter", e))?;
            key = legacy;
        }
        let Some(value) = found else { return Ok(Replayed::NotFound) };
        let Some(record) = DeadRecord::decode(&key, &value).filter(|r| r.consumer == consumer) else { return Ok(Replayed::NotFound) };
        if record.payload.is_empty() {
            return Err(BusError::new(BusErrorKind::Invalid, "this dead letter was recorded without its event; it cannot be replayed"));
        }
        let env = crate::replay_envelope(&record.payload)?;
        self.publish(std::slice::from_ref(&env)).await?;
        self.inner.dead.remove(key).map_err(|e| io_err("remove dead letter", e))?;
        Ok(Replayed::Republished { event_id: env.id })
    }
}

struct InProcessSubscription {
    inner: Arc<Inner>,
    consumer: Arc<Consumer>,
    head: watch::Receiver<u64>,
}

enum Claim {
    Deliver(u64, u32),
    Dead(u64, u32),
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let give_up = tokio::time::Instant::now() + wait;
        let spec = &self.consumer.spec;
        loop {
            let head = *self.head.borrow_and_update();
            let (claims, next_deadline) = {
                let mut st = self.consumer.state.lock().expect("poisoned");
                let now = Instant::now();
                let mut claims = Vec::new();
                let expired: Vec<u64> = st.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(s, _)| *s).take(max).collect();
                for seq in expired {
                    let p = st.pending.get_mut(&seq).expect("just listed");
                    if p.count >= spec.max_deliveries {
                        // Settled once its dead letter (with the event) is recorded, so the log
                        // cannot be trimmed past it before then.
                        let count = p.count;
                        p.deadline = now + Duration::from_secs(24 * 3600);
                        claims.push(Claim::Dead(seq, count));
                    } else {
                        p.count += 1;
                        p.deadline = now + spec.ack_wait;
                        claims.push(Claim::Deliver(seq, p.count));
                    }
                }
                while claims.len() < max && st.next_seq <= head && st.pending.len() < spec.max_in_flight {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    st.pending.insert(seq, Pending { deadline: now + spec.ack_wait, count: 1 });
                    claims.push(Claim::Deliver(seq, 1));
                }
                (claims, st.pending.values().map(|p| p.deadline).min())
            };
            if !claims.is_empty() {
                let inner = self.inner.clone();
                let consumer = self.consumer.clone();
                let out = tokio::task::spawn_blocking(move || materialize(&inner, &consumer, claims))
                    .await
                    .map_err(|e| BusError::with_source(BusErrorKind::Internal, "delivery read panicked", e))??;
                if !out.is_empty() {
                    return Ok(out);
                }
                continue;
            }
            let mut until = give_up;
            if let Some(d) = next_deadline {
                until = until.min(tokio::time::Instant::from_std(d));
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout_at(until, self.head.changed()).await;
        }
    }
}

/// Reads the claimed events from the log and wraps them as deliveries; records dead letters.
fn materialize(inner: &Arc<Inner>, consumer: &Arc<Consumer>, claims: Vec<Claim>) -> Result<Vec<Delivery>, BusError> {
    let stream = consumer.spec.stream;
    let mut out = Vec::with_capacity(claims.len());
    for claim in claims {
        match claim {
            Claim::Deliver(seq, count) => match inner.read(stream, seq)? {
                Some(bytes) => {
                    let acker = InProcessAcker { inner: inner.clone(), consumer: consumer.clone(), seq };
                    out.push(Delivery::new(decode(&bytes), count, seq, Box::new(acker)));
                }
                None => {
                    // Trimmed or never written (a failed group commit): nothing to deliver.
                    settle(consumer, seq);
                }
            },
            Claim::Dead(seq, count) => {
                warn!(consumer = %consumer.spec.durable, seq, deliveries = count, "event exceeded max deliveries; dead-lettered");
                record_dead(inner, consumer, seq, &format!("exceeded {count} deliveries"))?;
                settle(consumer, seq);
            }
        }
    }
    Ok(out)
}

fn settle(consumer: &Consumer, seq: u64) {
    let mut st = consumer.state.lock().expect("poisoned");
    if st.pending.remove(&seq).is_some() {
        st.floor_dirty = true;
    }
}

fn record_dead(inner: &Inner, consumer: &Consumer, seq: u64, reason: &str) -> Result<(), BusError> {
    let stream = consumer.spec.stream;
    // Not trimmed yet: the event is below no floor until it is settled, which follows this.
    let payload = inner.read(stream, seq)?.unwrap_or_default();
    let record = DeadRecord { stream, sequence: seq, consumer: consumer.spec.durable.clone(), reason: reason.to_string(), payload };
    inner.dead.insert(record.key(), record.value()).map_err(|e| io_err("record dead letter", e))?;
    metrics::counter!("sextant_bus_dead_letters_total", "stream" => stream.name(), "consumer" => consumer.spec.durable.clone())
        .increment(1);
    Ok(())
}

/// A dead letter as kept: keyed by (stream, sequence, consumer), with the event's bytes so it
/// can be replayed after the log has been trimmed past it.
struct DeadRecord {
    stream: Stream,
    sequence: u64,
    consumer: String,
    reason: String,
    payload: Vec<u8>,
}

/// First byte of a record that carries its event (earlier records were `consumer\nreason`).
const DEAD_RECORD_V2: u8 = 0xFF;

impl DeadRecord {
    fn key(&self) -> Vec<u8> {
        let mut k = log_key(self.stream, self.sequence).to_vec();
        k.extend_from_slice(self.consumer.as_bytes());
        k
    }

    fn value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 8 + self.consumer.len() + self.reason.len() + self.payload.len());
        v.push(DEAD_RECORD_V2);
        for field in [self.consumer.as_bytes(), self.reason.as_bytes()] {
            v.extend_from_slice(&(field.len() as u32).to_be_bytes());
            v.extend_from_slice(field);
        }
        v.extend_from_slice(&self.payload);
        v
    }

    fn decode(key: &[u8], value: &[u8]) -> Option<Self> {
        let stream = stream_from_tag(*key.first()?)?;
        let sequence = seq_of(key)?;
        if value.first() != Some(&DEAD_RECORD_V2) {
            let text = String::from_utf8_lossy(value);
            let (consumer, reason) = text.split_once('\n').unwrap_or((&text, ""));
            return Some(Self { stream, sequence, consumer: consumer.into(), reason: reason.into(), payload: Vec::new() });
        }
        let mut rest = &value[1..];
        let mut field = || -> Option<String> {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let text = String::from_utf8_lossy(rest.get(4..4 + len)?).into_owned();
            rest = &rest[4 + len..];
            Some(text)
        };
        let consumer = field()?;
        let reason = field()?;
        Some(Self { stream, sequence, consumer, reason, payload: rest.to_vec() })
    }

    fn letter(&self) -> DeadLetter {
        DeadLetter {
            stream: self.stream,
            sequence: self.sequence,
            consumer: self.consumer.clone(),
            reason: self.reason.clone(),
            payload_bytes: self.payload.len(),
        }
    }
}

struct InProcessAcker {
    inner: Arc<Inner>,
    consumer: Arc<Consumer>,
    seq: u64,
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        settle(&self.consumer, self.seq);
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        let mut st = self.consumer.state.lock().expect("poisoned");
        if let Some(p) = st.pending.get_mut(&self.seq) {
            p.deadline = Instant::now() + delay;
        }
        drop(st);
        // Wake waiting subscribers so a zero-delay nak is redelivered promptly.
        self.inner.heads[&self.consumer.spec.stream].send_modify(|_| {});
        Ok(())
    }

    async fn term(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        let reason = reason.to_string();
        let this = *self;
        tokio::task::spawn_blocking(move || {
            record_dead(&this.inner, &this.consumer, this.seq, &reason)?;
            settle(&this.consumer, this.seq);
            Ok(())
        })
        .await
        .map_err(|e| BusError::with_source(BusErrorKind::Internal, "term panicked", e))?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.persist_positions() {
            warn!(error = %e, "could not save consumer positions at shutdown");
        }
    }
}
