//! Feedback stats stay exact when the bus redelivers: the projector applies every change,
//! then the store refuses to sync (as after a crash before the ack), so every event comes
//! back and is applied again, over the real in-process bus and embedded store.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use uuid::Uuid;

use sextant_bus::inprocess::InProcessBus;
use sextant_bus::EventBus;
use sextant_core::{FragmentKind, Project, ProjectId, ProjectPatch, Run, RunFragment, RunId, TenantId, Timestamp};
use sextant_feedback::projector::run_feedback_projector_with;
use sextant_feedback::FeedbackService;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::{
    CreateOutcome, ProjectQuery, ProjectStats, ProjectStore, RunPage, RunQuery, RunStore, Storage, StorageError, StorageErrorKind,
};

/// Delegates to the embedded store; the first `failing_syncs` syncs fail after the changes
/// were applied, so the projector naks and the bus redelivers them.
struct FlakySync {
    inner: Arc<EmbeddedStore>,
    failing_syncs: AtomicU32,
    syncs: AtomicU32,
}

sextant_storage::delegate_non_run_stores!(FlakySync, inner);

#[async_trait]
impl RunStore for FlakySync {
    async fn apply_run_fragments(&self, t: TenantId, p: ProjectId, f: Vec<RunFragment>) -> sextant_storage::Result<()> {
        self.inner.apply_run_fragments(t, p, f).await
    }
    async fn get_run(&self, t: TenantId, id: RunId) -> sextant_storage::Result<Option<Run>> {
        self.inner.get_run(t, id).await
    }
    async fn query_runs(&self, t: TenantId, q: &RunQuery) -> sextant_storage::Result<RunPage> {
        self.inner.query_runs(t, q).await
    }
    async fn trace_runs(&self, t: TenantId, trace: RunId) -> sextant_storage::Result<Vec<Run>> {
        self.inner.trace_runs(t, trace).await
    }
    async fn get_attachment(&self, t: TenantId, r: RunId, name: &str) -> sextant_storage::Result<Option<(String, Vec<u8>)>> {
        self.inner.get_attachment(t, r, name).await
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
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.failing_syncs.load(Ordering::SeqCst) > 0 {
            self.failing_syncs.fetch_sub(1, Ordering::SeqCst);
            return Err(StorageError::new(StorageErrorKind::Unavailable, "injected sync failure"));
        }
        self.inner.sync().await
    }
}

#[async_trait]
impl ProjectStore for FlakySync {
    async fn create_project(&self, p: &Project) -> sextant_storage::Result<CreateOutcome> {
        self.inner.create_project(p).await
    }
    async fn get_project(&self, t: TenantId, id: ProjectId) -> sextant_storage::Result<Option<Project>> {
        self.inner.get_project(t, id).await
    }
    async fn project_by_name(&self, t: TenantId, name: &str) -> sextant_storage::Result<Option<Project>> {
        self.inner.project_by_name(t, name).await
    }
    async fn list_projects(&self, t: TenantId, q: &ProjectQuery) -> sextant_storage::Result<Vec<Project>> {
        self.inner.list_projects(t, q).await
    }
    async fn update_project(&self, t: TenantId, id: ProjectId, p: &ProjectPatch) -> sextant_storage::Result<Option<Project>> {
        self.inner.update_project(t, id, p).await
    }
    async fn delete_project(&self, t: TenantId, id: ProjectId) -> sextant_storage::Result<bool> {
        self.inner.delete_project(t, id).await
    }
    async fn project_stats(&self, t: TenantId, id: ProjectId) -> sextant_storage::Result<ProjectStats> {
        self.inner.project_stats(t, id).await
    }
}

async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_stay_exact_when_every_event_is_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let embedded = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let store = Arc::new(FlakySync { inner: embedded.clone(), failing_syncs: AtomicU32::new(3), syncs: AtomicU32::new(0) });
    let storage: Arc<dyn Storage> = store.clone();
    let tenant = TenantId(Uuid::now_v7());
    let project = ProjectId(Uuid::now_v7());
    let now = Timestamp::now();
    storage
        .create_project(&Project {
            id: project,
            tenant_id: tenant,
            name: "redelivery".into(),
            description: None,
            extra: Default::default(),
            reference_dataset_id: None,
            start_time: now,
            end_time: None,
            experiment: Default::default(),
        })
        .await
        .unwrap();
    let run = RunId(Uuid::now_v7());
    let mut post = RunFragment::new(FragmentKind::Post, run);
    post.name = Some("answer".into());
    post.start_time = Some(now);
    storage.apply_run_fragments(tenant, project, vec![post]).await.unwrap();

    let svc = FeedbackService::new(bus.clone(), storage.clone(), b"test key");
    // 20 ratings 0.00..0.19, then 5 updated to 0.9 and 5 deleted.
    let mut ids = Vec::new();
    for i in 0..20 {
        let f = svc.create(tenant, &json!({"run_id": run, "key": "user_rating", "score": f64::from(i) / 100.0, "value": if i % 2 == 0 { "even" } else { "odd" }})).await.unwrap();
        ids.push(f.id);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let projector = tokio::spawn(run_feedback_projector_with(bus.clone(), storage.clone(), stop_rx, Duration::from_millis(300)));
    eventually(|| {
        let s = storage.clone();
        async move { s.run_feedback_stats(tenant, &[run]).await.unwrap().get(&run).is_some_and(|st| st.0["user_rating"].n == 20) }
    })
    .await;
    for id in &ids[..5] {
        svc.update(tenant, *id, &json!({"score": 0.9})).await.unwrap();
    }
    for id in &ids[5..10] {
        svc.delete(tenant, *id).await.unwrap();
    }
    // Expected: 0.9 x 5 + 0.10..0.19 (10 entries) = 4.5 + 1.45 = 5.95 over 15 entries.
    eventually(|| {
        let s = storage.clone();
        async move {
            let st = s.run_feedback_stats(tenant, &[run]).await.unwrap();
            st.get(&run).is_some_and(|st| st.0["user_rating"].n == 15 && st.0["user_rating"].sum == 59_500)
        }
    })
    .await;
    // Let any outstanding redelivery land, then check nothing drifted.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.failing_syncs.load(Ordering::SeqCst), 0, "the injected failures happened");
    let st = storage.run_feedback_stats(tenant, &[run]).await.unwrap().remove(&run).unwrap();
    let k = &st.0["user_rating"];
    assert_eq!((k.n, k.scored, k.sum), (15, 15, 59_500));
    assert!((k.mean().unwrap() - 5.95 / 15.0).abs() < 1e-12);
    // Even ids 0,2,4 were updated (value unchanged), 6,8 deleted: evens left 0,2,4,10..18 = 8.
    assert_eq!(k.values.get("even"), Some(&8));
    assert_eq!(k.values.get("odd"), Some(&7));
    assert_eq!(storage.project_feedback_stats(tenant, project).await.unwrap(), st, "project stats agree");
    let listed = svc.list(tenant, sextant_storage::FeedbackQuery { runs: vec![run], limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 15);
    let _ = stop_tx.send(true);
    projector.await.unwrap();
}
