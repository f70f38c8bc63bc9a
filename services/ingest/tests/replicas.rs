//! Distributed mode's faults, on a real `nats-server` (private, free port): several ingest and
//! projector replicas, a projector killed mid-batch, and a poison event.
//!
//! Each replica has its own NATS connection, as separate processes would. They share one
//! embedded store, which stands in for the shared ScyllaDB cluster that cannot run on these
//! machines; the store's merge is idempotent either way, so what is checked here is the bus's
//! part: every acknowledged event reaches exactly one projector and is applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use sextant_bus::jetstream::{JetStreamBus, JetStreamConfig};
use sextant_bus::nats_server::NatsServer;
use sextant_bus::EventBus;
use sextant_core::{FragmentKind, Project, ProjectId, ProjectPatch, RawJson, Run, RunFragment, RunId, TenantId, Timestamp, LOCAL_TENANT};
use sextant_ingest::projector::run_projector_with;
use sextant_ingest::wire::ProjectRef;
use sextant_ingest::{Ingest, IngestLimits};
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::{CreateOutcome, ProjectQuery, ProjectStats, ProjectStore, RunPage, RunQuery, RunStore, Storage};

/// Delegates to a store, counting applied run fragments and optionally stalling each apply (to
/// catch a projector mid-batch). The projector applies a batch's events for one project in one
/// call, so fragments, not calls, tell whether each event was applied once.
struct CountingStore {
    inner: Arc<EmbeddedStore>,
    applied_fragments: AtomicU64,
    stall: Duration,
}

impl CountingStore {
    fn new(inner: Arc<EmbeddedStore>, stall: Duration) -> Arc<Self> {
        Arc::new(Self { inner, applied_fragments: AtomicU64::new(0), stall })
    }
    fn applied(&self) -> u64 {
        self.applied_fragments.load(Ordering::SeqCst)
    }
}

sextant_storage::delegate_non_run_stores!(CountingStore, inner);

#[async_trait]
impl RunStore for CountingStore {
    async fn apply_run_fragments(&self, tenant: TenantId, project: ProjectId, fragments: Vec<RunFragment>) -> sextant_storage::Result<()> {
        tokio::time::sleep(self.stall).await;
        let count = fragments.len() as u64;
        self.inner.apply_run_fragments(tenant, project, fragments).await?;
        self.applied_fragments.fetch_add(count, Ordering::SeqCst);
        Ok(())
    }
    async fn get_run(&self, tenant: TenantId, id: RunId) -> sextant_storage::Result<Option<Run>> {
        self.inner.get_run(tenant, id).await
    }
    async fn query_runs(&self, tenant: TenantId, q: &RunQuery) -> sextant_storage::Result<RunPage> {
        self.inner.query_runs(tenant, q).await
    }
    async fn trace_runs(&self, tenant: TenantId, trace: RunId) -> sextant_storage::Result<Vec<Run>> {
        self.inner.trace_runs(tenant, trace).await
    }
    async fn get_attachment(&self, tenant: TenantId, run: RunId, name: &str) -> sextant_storage::Result<Option<(String, Vec<u8>)>> {
        self.inner.get_attachment(tenant, run, name).await
    }
    async fn put_run_share(
        &self,
        t: TenantId,
        r: RunId,
        share: Option<&sextant_core::RunShare>,
        at: sextant_core::Timestamp,
    ) -> sextant_storage::Result<()> {
        self.inner.put_run_share(t, r, share, at).await
    }
    async fn run_share(&self, t: TenantId, r: RunId) -> sextant_storage::Result<Option<sextant_core::RunShare>> {
        self.inner.run_share(t, r).await
    }
    async fn run_share_by_token(&self, token: uuid::Uuid) -> sextant_storage::Result<Option<(TenantId, sextant_core::RunShare)>> {
        self.inner.run_share_by_token(token).await
    }
    async fn sync(&self) -> sextant_storage::Result<()> {
        self.inner.sync().await
    }
}

#[async_trait]
impl ProjectStore for CountingStore {
    async fn create_project(&self, project: &Project) -> sextant_storage::Result<CreateOutcome> {
        self.inner.create_project(project).await
    }
    async fn get_project(&self, tenant: TenantId, id: ProjectId) -> sextant_storage::Result<Option<Project>> {
        self.inner.get_project(tenant, id).await
    }
    async fn project_by_name(&self, tenant: TenantId, name: &str) -> sextant_storage::Result<Option<Project>> {
        self.inner.project_by_name(tenant, name).await
    }
    async fn list_projects(&self, tenant: TenantId, q: &ProjectQuery) -> sextant_storage::Result<Vec<Project>> {
        self.inner.list_projects(tenant, q).await
    }
    async fn update_project(&self, tenant: TenantId, id: ProjectId, patch: &ProjectPatch) -> sextant_storage::Result<Option<Project>> {
        self.inner.update_project(tenant, id, patch).await
    }
    async fn delete_project(&self, tenant: TenantId, id: ProjectId) -> sextant_storage::Result<bool> {
        self.inner.delete_project(tenant, id).await
    }
    async fn project_stats(&self, tenant: TenantId, id: ProjectId) -> sextant_storage::Result<ProjectStats> {
        self.inner.project_stats(tenant, id).await
    }
}

async fn replica_bus(server: &NatsServer) -> Arc<dyn EventBus> {
    Arc::new(JetStreamBus::connect(JetStreamConfig { servers: vec![server.url()], ..Default::default() }).await.expect("connect"))
}

fn post(id: RunId, n: usize) -> RunFragment {
    let mut f = RunFragment::new(FragmentKind::Post, id);
    f.name = Some(format!("run-{n}"));
    f.run_type = Some("chain".into());
    f.start_time = Some(Timestamp::from_micros(1_790_000_000_000_000 + n as i64));
    f.inputs = Some(RawJson::parse(&format!("{{\"n\":{n}}}")).unwrap());
    f
}

fn patch(id: RunId, n: usize) -> RunFragment {
    let mut f = RunFragment::new(FragmentKind::Patch, id);
    f.end_time = Some(Timestamp::from_micros(1_790_000_000_000_000 + n as i64 + 1000));
    f.outputs = Some(RawJson::parse(&format!("{{\"answer\":{n}}}")).unwrap());
    f
}

/// Every run of the project, paging through the store.
async fn stored_runs(store: &EmbeddedStore, project: ProjectId) -> Vec<Run> {
    let mut all = Vec::new();
    let mut q = RunQuery { projects: vec![project], limit: 1000, ..Default::default() };
    loop {
        let page = store.query_runs(LOCAL_TENANT, &q).await.unwrap();
        all.extend(page.runs);
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => return all,
        }
    }
}

async fn wait_for_complete_runs(store: &EmbeddedStore, project: ProjectId, expected: usize, within: Duration) -> Vec<Run> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let runs = stored_runs(store, project).await;
        let complete = runs.iter().filter(|r| r.inputs.is_some() && r.outputs.is_some()).count();
        if complete >= expected || tokio::time::Instant::now() > deadline {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ingest_and_two_projector_replicas_store_every_acked_run_exactly_once() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let (stop_tx, stop_rx) = watch::channel(false);

    let projector_stores = [CountingStore::new(store.clone(), Duration::ZERO), CountingStore::new(store.clone(), Duration::ZERO)];
    let mut projectors = Vec::new();
    for s in &projector_stores {
        let storage: Arc<dyn Storage> = s.clone();
        projectors.push(tokio::spawn(run_projector_with(replica_bus(&server).await, storage, stop_rx.clone(), Duration::from_secs(30))));
    }
    let ingests = [
        Arc::new(Ingest::new(replica_bus(&server).await, store.clone(), IngestLimits::default())),
        Arc::new(Ingest::new(replica_bus(&server).await, store.clone(), IngestLimits::default())),
    ];

    // 200 requests of 10 runs, spread over both replicas; each run's patch goes through the
    // other replica than its post, so two projectors may merge fragments of one run.
    let runs_per_request = 10;
    let requests = 200;
    let ids: Vec<RunId> = (0..requests * runs_per_request).map(|_| RunId(uuid::Uuid::now_v7())).collect();
    let mut events_published = 0;
    for round in 0..2 {
        let mut tasks = Vec::new();
        for r in 0..requests {
            let ingest = ingests[(r + round) % 2].clone();
            let batch: Vec<(RunFragment, ProjectRef)> = (r * runs_per_request..(r + 1) * runs_per_request)
                .map(|n| (if round == 0 { post(ids[n], n) } else { patch(ids[n], n) }, ProjectRef::Name("replicas".into())))
                .collect();
            tasks.push(tokio::spawn(async move { ingest.ingest(LOCAL_TENANT, batch).await }));
        }
        for t in tasks {
            events_published += t.await.unwrap().expect("acknowledged").events as u64;
        }
    }

    let project =
        store.project_by_name(LOCAL_TENANT, "replicas").await.unwrap().expect("one project, though both replicas raced to create it");
    let runs = wait_for_complete_runs(&store, project.id, ids.len(), Duration::from_secs(60)).await;
    let _ = stop_tx.send(true);
    for p in projectors {
        p.await.unwrap();
    }

    let stored: std::collections::HashSet<RunId> = runs.iter().map(|r| r.id).collect();
    assert_eq!(runs.len(), ids.len(), "each acknowledged run is stored once: none lost, none doubled");
    assert_eq!(stored, ids.iter().copied().collect(), "exactly the acknowledged runs");
    for r in &runs {
        assert!(r.inputs.is_some() && r.outputs.is_some() && r.end_time.is_some(), "post and patch both merged into {}", r.id);
    }
    let applied: Vec<u64> = projector_stores.iter().map(|s| s.applied()).collect();
    assert!(events_published >= 2 * requests as u64, "{events_published} events");
    // One post and one patch per run: a second application of any event would add fragments.
    assert_eq!(applied.iter().sum::<u64>(), 2 * ids.len() as u64, "each event applied once across the replicas: {applied:?}");
    assert!(applied.iter().all(|&a| a > 0), "both projector replicas took a share of the work: {applied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_of_a_projector_killed_mid_batch_is_finished_by_another() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ack_wait = Duration::from_secs(2);
    let ingest = Ingest::new(replica_bus(&server).await, store.clone(), IngestLimits::default());
    let ids: Vec<RunId> = (0..300).map(|_| RunId(uuid::Uuid::now_v7())).collect();
    for chunk in ids.chunks(10).enumerate() {
        let batch = chunk.1.iter().enumerate().map(|(i, id)| (post(*id, chunk.0 * 10 + i), ProjectRef::Name("killed".into()))).collect();
        ingest.ingest(LOCAL_TENANT, batch).await.unwrap();
        let batch = chunk.1.iter().enumerate().map(|(i, id)| (patch(*id, chunk.0 * 10 + i), ProjectRef::Name("killed".into()))).collect();
        ingest.ingest(LOCAL_TENANT, batch).await.unwrap();
    }

    // The first projector stalls inside its first batch and is killed there: nothing acked.
    let (stop_tx, stop_rx) = watch::channel(false);
    let doomed_store = CountingStore::new(store.clone(), Duration::from_secs(3600));
    let doomed =
        tokio::spawn(run_projector_with(replica_bus(&server).await, doomed_store.clone() as Arc<dyn Storage>, stop_rx.clone(), ack_wait));
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.abort();
    assert_eq!(doomed_store.applied(), 0);

    let survivor_store = CountingStore::new(store.clone(), Duration::ZERO);
    let survivor =
        tokio::spawn(run_projector_with(replica_bus(&server).await, survivor_store.clone() as Arc<dyn Storage>, stop_rx, ack_wait));
    let project = store.project_by_name(LOCAL_TENANT, "killed").await.unwrap().unwrap();
    let runs = wait_for_complete_runs(&store, project.id, ids.len(), Duration::from_secs(30)).await;
    let _ = stop_tx.send(true);
    survivor.await.unwrap();
    assert_eq!(runs.len(), ids.len());
    assert!(runs.iter().all(|r| r.outputs.is_some()), "every run's post and patch were projected by the survivor");
    assert_eq!(
        survivor_store.applied(),
        600,
        "all 60 events (600 fragments), including the killed replica's batch, applied once by the survivor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_and_the_stream_keeps_flowing() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let bus = replica_bus(&server).await;
    let ingest = Ingest::new(bus.clone(), store.clone(), IngestLimits::default());
    let before = RunId(uuid::Uuid::now_v7());
    ingest.ingest(LOCAL_TENANT, vec![(post(before, 1), ProjectRef::Name("poison".into()))]).await.unwrap();
    // Bytes that are no event at all, on the runs stream's subjects (a buggy or hostile publisher).
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    raw.publish(format!("sextant.runs.{LOCAL_TENANT}.x"), "\u{1}not msgpack".into()).await.unwrap().await.unwrap();
    let after = RunId(uuid::Uuid::now_v7());
    ingest.ingest(LOCAL_TENANT, vec![(post(after, 2), ProjectRef::Name("poison".into()))]).await.unwrap();

    let (stop_tx, stop_rx) = watch::channel(false);
    let projector = tokio::spawn(run_projector_with(bus.clone(), store.clone() as Arc<dyn Storage>, stop_rx, Duration::from_secs(30)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.get_run(LOCAL_TENANT, after).await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the stream stopped at the poison event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    projector.await.unwrap();
    assert!(store.get_run(LOCAL_TENANT, before).await.unwrap().is_some());
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].sequence, 2, "the poison event's position is recorded");
    assert!(dead[0].reason.contains("undecodable"), "{dead:?}");
    assert_eq!(bus.pending(sextant_ingest::projector::RUN_PROJECTOR, sextant_events::Stream::Runs).await.unwrap(), Some(0));
}
