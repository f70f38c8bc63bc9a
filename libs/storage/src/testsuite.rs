//! The storage conformance suite: every adapter runs these against a fresh store per test.
//! Use [`storage_conformance!`] with an expression that yields a new `Arc<dyn Storage>` (async),
//! optionally followed by attributes for every test (e.g. `#[ignore = "needs a cluster"]`).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use sextant_core::{FragmentKind, Project, ProjectId, ProjectPatch, RawJson, RunFragment, RunId, TenantId, Timestamp};

use sextant_core::annotation::{Queue, QueueItem, RoutingRule};
use sextant_core::feedback::{FeedbackField, Score};
use sextant_core::{Feedback, FeedbackChange, FeedbackId, QueueId};

use crate::{CreateOutcome, FeedbackQuery, ProjectQuery, QueueQuery, RunCursor, RunQuery, Storage, StorageErrorKind};

#[macro_export]
macro_rules! storage_conformance {
    ($new:expr $(, #[$attr:meta])* $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn feedback_stats_stay_exact_under_redelivery_updates_and_deletes() {
            $crate::testsuite::feedback_stats_stay_exact_under_redelivery_updates_and_deletes($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn feedback_before_its_run_counts_once_the_run_arrives() {
            $crate::testsuite::feedback_before_its_run_counts_once_the_run_arrives($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn feedback_lists_filter_and_page() {
            $crate::testsuite::feedback_lists_filter_and_page($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn filters_see_each_runs_feedback() {
            $crate::testsuite::filters_see_each_runs_feedback($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn queue_items_are_unique_per_run_and_leases_exclusive() {
            $crate::testsuite::queue_items_are_unique_per_run_and_leases_exclusive($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn queue_lifecycle() {
            $crate::testsuite::queue_lifecycle($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn feedback_tokens_are_found_by_id_and_listed_per_tenant_and_run() {
            $crate::testsuite::feedback_tokens_are_found_by_id_and_listed_per_tenant_and_run($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn feedback_configs_keep_the_newest_version_per_tenant() {
            $crate::testsuite::feedback_configs_keep_the_newest_version_per_tenant($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn online_evaluators_keep_the_newest_version_per_tenant() {
            $crate::testsuite::online_evaluators_keep_the_newest_version_per_tenant($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn merges_fragments_in_any_order_idempotently() {
            $crate::testsuite::merges_fragments_in_any_order_idempotently($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn tenants_are_isolated() {
            $crate::testsuite::tenants_are_isolated($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn pages_newest_first_without_gaps_or_duplicates() {
            $crate::testsuite::pages_newest_first_without_gaps_or_duplicates($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn structured_conditions_and_matchers_filter() {
            $crate::testsuite::structured_conditions_and_matchers_filter($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn traces_come_back_whole_and_ordered() {
            $crate::testsuite::traces_come_back_whole_and_ordered($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn project_lifecycle() {
            $crate::testsuite::project_lifecycle($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn project_stats_are_exact() {
            $crate::testsuite::project_stats_are_exact($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn attachments_round_trip() {
            $crate::testsuite::attachments_round_trip($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn run_shares_are_found_by_run_and_token_and_unshared() {
            $crate::testsuite::run_shares_are_found_by_run_and_token_and_unshared($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn children_without_dotted_order_join_their_parents_trace() {
            $crate::testsuite::children_without_dotted_order_join_their_parents_trace($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn metadata_pairs_find_runs_and_follow_updates() {
            $crate::testsuite::metadata_pairs_find_runs_and_follow_updates($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn late_start_time_moves_the_run() {
            $crate::testsuite::late_start_time_moves_the_run($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn datasets_versions_replay_in_any_order() {
            $crate::testsuite::datasets_versions_replay_in_any_order($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn datasets_lifecycle_names_tags_blobs_jobs() {
            $crate::testsuite::datasets_lifecycle_names_tags_blobs_jobs($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn datasets_list_examples_filters_and_pages() {
            $crate::testsuite::datasets_list_examples_filters_and_pages($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn prompt_commits_and_tag_moves_replay_in_any_order() {
            $crate::testsuite::prompt_commits_and_tag_moves_replay_in_any_order($new.await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn prompt_repos_handles_likes_and_deletes() {
            $crate::testsuite::prompt_repos_handles_likes_and_deletes($new.await).await
        }
    };
}

fn tenant() -> TenantId {
    TenantId(Uuid::new_v4())
}

fn project(t: TenantId, name: &str) -> Project {
    Project::new(t, ProjectId(Uuid::new_v4()), name.into())
}

const T0: i64 = 1_764_000_000_000_000;

fn root(n: u128, start_us: i64) -> RunFragment {
    let id = RunId(Uuid::from_u128(n));
    let mut f = RunFragment::new(FragmentKind::Post, id);
    f.trace_id = Some(id);
    f.dotted_order = Some(format!("{}{}", Timestamp(start_us).to_dotted_stamp(), id));
    f.name = Some(format!("root-{n}"));
    f.run_type = Some("chain".into());
    f.start_time = Some(Timestamp(start_us));
    f.end_time = Some(Timestamp(start_us + 1_000_000));
    f.inputs = Some(RawJson::parse(&format!(r#"{{"n":{n}}}"#)).unwrap());
    f.outputs = Some(RawJson::parse("{}").unwrap());
    f.tags = Some(vec!["t".into()]);
    f
}

fn child(parent: &RunFragment, n: u128, start_us: i64) -> RunFragment {
    let id = RunId(Uuid::from_u128(n));
    let mut f = RunFragment::new(FragmentKind::Post, id);
    f.trace_id = parent.trace_id;
    f.parent_run_id = Some(parent.id);
    f.dotted_order = Some(format!("{}.{}{}", parent.dotted_order.as_ref().unwrap(), Timestamp(start_us).to_dotted_stamp(), id));
    f.name = Some(format!("child-{n}"));
    f.run_type = Some("llm".into());
    f.start_time = Some(Timestamp(start_us));
    f
}

async fn new_project(s: &Arc<dyn Storage>, t: TenantId, name: &str) -> ProjectId {
    let p = project(t, name);
    match s.create_project(&p).await.unwrap() {
        CreateOutcome::Created(p) => p.id,
        other => panic!("unexpected {other:?}"),
    }
}

fn q(projects: Vec<ProjectId>, limit: usize) -> RunQuery {
    RunQuery { projects, limit, ..Default::default() }
}

pub async fn merges_fragments_in_any_order_idempotently(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "merge").await;
    let post = root(1, T0);
    let mut patch = RunFragment::new(FragmentKind::Patch, post.id);
    patch.end_time = Some(Timestamp(T0 + 5_000_000));
    patch.outputs = Some(RawJson::parse(r#"{"answer":42}"#).unwrap());
    patch.extra = Some(json!({"metadata": {"late": 1}}).as_object().unwrap().clone());
    // Patch first, then post, then both again (a redelivery).
    s.apply_run_fragments(t, p, vec![patch.clone()]).await.unwrap();
    s.apply_run_fragments(t, p, vec![post.clone()]).await.unwrap();
    let once = s.get_run(t, post.id).await.unwrap().unwrap();
    s.apply_run_fragments(t, p, vec![post.clone(), patch.clone()]).await.unwrap();
    let twice = s.get_run(t, post.id).await.unwrap().unwrap();
    assert_eq!(once, twice);
    assert_eq!(once.outputs.as_ref().unwrap().as_str(), r#"{"answer":42}"#);
    assert_eq!(once.end_time, Some(Timestamp(T0 + 5_000_000)));
    assert_eq!(once.name.as_deref(), Some("root-1"));
    assert_eq!(once.metadata().unwrap()["late"], 1);
    assert_eq!(s.query_runs(t, &q(vec![p], 10)).await.unwrap().runs.len(), 1, "stored once");
}

pub async fn tenants_are_isolated(s: Arc<dyn Storage>) {
    let (a, b) = (tenant(), tenant());
    let pa = new_project(&s, a, "shared-name").await;
    // The same project name in another tenant is a different project.
    let pb = new_project(&s, b, "shared-name").await;
    assert_ne!(pa, pb);
    let r = root(10, T0);
    s.apply_run_fragments(a, pa, vec![r.clone()]).await.unwrap();
    assert!(s.get_run(a, r.id).await.unwrap().is_some());
    assert!(s.get_run(b, r.id).await.unwrap().is_none());
    assert!(s.trace_runs(b, r.id).await.unwrap().is_empty());
    assert!(s.query_runs(b, &q(vec![], 10)).await.unwrap().runs.is_empty());
    assert!(s.query_runs(b, &q(vec![pa], 10)).await.unwrap().runs.is_empty(), "another tenant's project id leaks nothing");
    assert!(s.query_runs(b, &RunQuery { ids: Some(vec![r.id]), limit: 10, ..Default::default() }).await.unwrap().runs.is_empty());
    assert!(s.get_project(b, pa).await.unwrap().is_none());
    assert_eq!(s.project_by_name(b, "shared-name").await.unwrap().unwrap().id, pb);
    let listed: Vec<_> = s.list_projects(b, &ProjectQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), vec![pb]);
    assert!(!s.delete_project(b, pa).await.unwrap());
    assert!(s.get_project(a, pa).await.unwrap().is_some());
}

pub async fn pages_newest_first_without_gaps_or_duplicates(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "paging").await;
    // Two runs share a start time to exercise the id tie-break.
    let frags: Vec<_> = (1..=250u128).map(|n| root(n, T0 + (n as i64 / 2) * 1000)).collect();
    s.apply_run_fragments(t, p, frags.clone()).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<RunCursor> = None;
    let mut pages = 0;
    loop {
        let page = s.query_runs(t, &RunQuery { cursor, ..q(vec![p], 100) }).await.unwrap();
        pages += 1;
        seen.extend(page.runs.iter().map(|r| (r.start_time.unwrap(), r.id)));
        match page.next {
            Some(c) => cursor = Some(RunCursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    assert_eq!(RunCursor::decode("garbage").unwrap_err().kind, StorageErrorKind::Invalid);
}

pub async fn structured_conditions_and_matchers_filter(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "filters").await;
    let other = new_project(&s, t, "other").await;
    let r1 = root(1, T0);
    let c1 = child(&r1, 2, T0 + 10);
    let mut c2 = child(&r1, 3, T0 + 20);
    c2.error = Some("ValueError('boom')".into());
    c2.run_type = Some("tool".into());
    let mut r2 = root(4, T0 + 1_000_000);
    r2.name = Some("special".into());
    // An experiment run on an example (the dataset service's experiment-runs read).
    let example = Uuid::from_u128(0xe1);
    r2.reference_example_id = Some(example);
    let c3 = child(&r2, 5, T0 + 1_000_010);
    s.apply_run_fragments(t, p, vec![r1.clone(), c1.clone(), c2.clone(), r2.clone(), c3.clone()]).await.unwrap();
    s.apply_run_fragments(t, other, vec![root(6, T0)]).await.unwrap();

    let ids = |runs: Vec<sextant_core::Run>| -> HashSet<u128> { runs.iter().map(|r| r.id.0.as_u128()).collect() };
    let run = |q: RunQuery| {
        let s = s.clone();
        async move { ids(s.query_runs(t, &q).await.unwrap().runs) }
    };
    let base = || q(vec![p], 100);
    assert_eq!(run(base()).await, HashSet::from([1, 2, 3, 4, 5]));
    assert_eq!(run(q(vec![], 100)).await, HashSet::from([1, 2, 3, 4, 5, 6]), "no project = all the tenant's");
    assert_eq!(run(RunQuery { is_root: Some(true), ..base() }).await, HashSet::from([1, 4]));
    assert_eq!(run(RunQuery { is_root: Some(true), run_type: Some("chain".into()), limit: 1, ..base() }).await, HashSet::from([4]));
    assert_eq!(run(RunQuery { is_root: Some(false), ..base() }).await, HashSet::from([2, 3, 5]));
    assert_eq!(run(RunQuery { trace: Some(r1.id), ..base() }).await, HashSet::from([1, 2, 3]));
    assert_eq!(run(RunQuery { parent_run: Some(r2.id), ..base() }).await, HashSet::from([5]));
    assert_eq!(run(RunQuery { run_type: Some("llm".into()), ..base() }).await, HashSet::from([2, 5]));
    assert_eq!(run(RunQuery { error: Some(true), ..base() }).await, HashSet::from([3]));
    assert_eq!(run(RunQuery { ids: Some(vec![c1.id, r2.id]), ..base() }).await, HashSet::from([2, 4]));
    let on_example = RunQuery { reference_examples: vec![example, Uuid::from_u128(0xe2)], is_root: Some(true), ..base() };
    assert_eq!(run(on_example).await, HashSet::from([4]));
    assert_eq!(run(RunQuery { start_from: Some(Timestamp(T0 + 1_000_000)), ..base() }).await, HashSet::from([4, 5]));
    assert_eq!(run(RunQuery { start_before: Some(Timestamp(T0 + 15)), ..base() }).await, HashSet::from([1, 2]));
    let named_special: Arc<dyn crate::RunMatcher> = Arc::new(|r: &sextant_core::Run| r.name.as_deref() == Some("special"));
    let errored: Arc<dyn crate::RunMatcher> = Arc::new(|r: &sextant_core::Run| r.error.is_some());
    assert_eq!(run(RunQuery { filter: Some(named_special.clone()), ..base() }).await, HashSet::from([4]));
    assert_eq!(run(RunQuery { trace_filter: Some(named_special), ..base() }).await, HashSet::from([4, 5]));
    assert_eq!(run(RunQuery { tree_filter: Some(errored), ..base() }).await, HashSet::from([1, 2, 3]));
}

pub async fn traces_come_back_whole_and_ordered(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "trace").await;
    let r = root(1, T0);
    let mut frags = vec![r.clone()];
    let mut parent = r.clone();
    // A deep chain and a wide fan-out: no cap on runs per trace.
    for n in 2..=60u128 {
        let c = child(&parent, n, T0 + n as i64);
        if n % 3 == 0 {
            parent = c.clone();
        }
        frags.push(c);
    }
    frags.reverse(); // children before parents must not matter
    s.apply_run_fragments(t, p, frags.clone()).await.unwrap();
    let runs = s.trace_runs(t, r.id).await.unwrap();
    assert_eq!(runs.len(), 60);
    assert_eq!(runs[0].id, r.id);
    let orders: Vec<_> = runs.iter().map(|r| r.dotted_order.clone().unwrap()).collect();
    let mut sorted = orders.clone();
    sorted.sort();
    assert_eq!(orders, sorted);
    for run in &runs[1..] {
        let parent = run.parent_run_id.unwrap();
        assert!(runs.iter().any(|r| r.id == parent));
        assert_eq!(run.trace_id, Some(r.id));
    }
}

pub async fn project_lifecycle(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = project(t, "alpha");
    assert!(matches!(s.create_project(&p).await.unwrap(), CreateOutcome::Created(_)));
    assert!(matches!(s.create_project(&p).await.unwrap(), CreateOutcome::AlreadyExists(_)), "redelivered create");
    let dup = project(t, "alpha");
    assert!(matches!(s.create_project(&dup).await.unwrap(), CreateOutcome::NameTaken(e) if e.id == p.id));
    let beta = project(t, "beta-experiment");
    s.create_project(&beta).await.unwrap();
    let found =
        s.list_projects(t, &ProjectQuery { name_contains: Some("EXPERIMENT".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(found.iter().map(|p| p.id).collect::<Vec<_>>(), vec![beta.id]);
    let page2 = s.list_projects(t, &ProjectQuery { offset: 1, limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page2.len(), 1);

    let patch = ProjectPatch { name: Some("beta-experiment".into()), ..Default::default() };
    let err = s.update_project(t, p.id, &patch).await.unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::Conflict);
    let patch = ProjectPatch {
        name: Some("alpha-2".into()),
        description: Some("renamed".into()),
        extra: Some(json!({"metadata": {"k": "v"}}).as_object().unwrap().clone()),
        end_time: None,
    };
    let updated = s.update_project(t, p.id, &patch).await.unwrap().unwrap();
    assert_eq!(updated.name, "alpha-2");
    assert!(s.project_by_name(t, "alpha").await.unwrap().is_none());
    assert_eq!(s.project_by_name(t, "alpha-2").await.unwrap().unwrap().description.as_deref(), Some("renamed"));
    let md = ProjectQuery { metadata: json!({"k": "v"}).as_object().unwrap().clone(), limit: 10, ..Default::default() };
    assert_eq!(s.list_projects(t, &md).await.unwrap().len(), 1);

    let r = root(1, T0);
    s.apply_run_fragments(t, p.id, vec![r.clone(), child(&r, 2, T0 + 1)]).await.unwrap();
    assert!(s.delete_project(t, p.id).await.unwrap());
    assert!(s.get_project(t, p.id).await.unwrap().is_none());
    assert!(s.get_run(t, r.id).await.unwrap().is_none(), "runs go with their project");
    assert!(s.trace_runs(t, r.id).await.unwrap().is_empty());
    assert!(!s.delete_project(t, p.id).await.unwrap());
    assert!(s.update_project(t, p.id, &ProjectPatch::default()).await.unwrap().is_none());
    // The name is free again.
    assert!(matches!(s.create_project(&project(t, "alpha-2")).await.unwrap(), CreateOutcome::Created(_)));
}

pub async fn project_stats_are_exact(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "stats").await;
    let mut frags = Vec::new();
    for n in 1..=4u128 {
        let mut r = root(n, T0 + n as i64 * 10_000_000);
        r.end_time = Some(Timestamp(T0 + n as i64 * 10_000_000 + n as i64 * 1_000_000)); // n seconds
        if n == 4 {
            r.error = Some("boom".into());
        }
        let mut c = child(&r, 100 + n, T0 + n as i64 * 10_000_000 + 1);
        c.prompt_tokens = Some(10);
        c.completion_tokens = Some(5);
        c.total_tokens = Some(15);
        frags.push(r);
        frags.push(c);
    }
    s.apply_run_fragments(t, p, frags.clone()).await.unwrap();
    s.apply_run_fragments(t, p, frags.clone()).await.unwrap(); // redelivery changes nothing
    let st = s.project_stats(t, p).await.unwrap();
    assert_eq!(st.run_count, 8);
    assert_eq!(st.root_run_count, 4);
    assert_eq!(st.error_count, 1);
    assert_eq!(st.total_tokens, 60);
    assert_eq!(st.prompt_tokens, 40);
    assert_eq!(st.latency_p50, Some(3.0));
    assert_eq!(st.latency_p99, Some(4.0));
    assert_eq!(st.last_run_start_time, Some(Timestamp(T0 + 40_000_001)));
}

pub async fn attachments_round_trip(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "attach").await;
    let mut r = root(1, T0);
    r.attachments.push(sextant_core::run::Attachment { name: "image".into(), mime_type: "image/png".into(), data: vec![1, 0, 2, 3] });
    s.apply_run_fragments(t, p, vec![r.clone()]).await.unwrap();
    let (mime, bytes) = s.get_attachment(t, r.id, "image").await.unwrap().unwrap();
    assert_eq!((mime.as_str(), bytes.as_slice()), ("image/png", &[1u8, 0, 2, 3][..]));
    assert!(s.get_attachment(tenant(), r.id, "image").await.unwrap().is_none());
    assert_eq!(s.get_run(t, r.id).await.unwrap().unwrap().attachments[0].size, 4);
}

pub async fn run_shares_are_found_by_run_and_token_and_unshared(s: Arc<dyn Storage>) {
    let (t, other) = (tenant(), tenant());
    let run = RunId(Uuid::new_v4());
    let share =
        |n: u128| sextant_core::RunShare { run_id: run, token: Uuid::from_u128(n ^ run.0.as_u128()), created_at: Timestamp(T0 + n as i64) };
    assert_eq!(s.run_share(t, run).await.unwrap(), None);
    s.put_run_share(t, run, Some(&share(1)), Timestamp(T0 + 1)).await.unwrap();
    assert_eq!(s.run_share(t, run).await.unwrap(), Some(share(1)));
    assert_eq!(s.run_share(other, run).await.unwrap(), None, "tenant-scoped");
    assert_eq!(s.run_share_by_token(share(1).token).await.unwrap(), Some((t, share(1))));
    // Shared anew with another token: the old link stops working.
    s.put_run_share(t, run, Some(&share(2)), Timestamp(T0 + 2)).await.unwrap();
    assert_eq!(s.run_share_by_token(share(1).token).await.unwrap(), None);
    assert_eq!(s.run_share_by_token(share(2).token).await.unwrap(), Some((t, share(2))));
    s.put_run_share(t, run, None, Timestamp(T0 + 3)).await.unwrap();
    assert_eq!(s.run_share(t, run).await.unwrap(), None);
    assert_eq!(s.run_share_by_token(share(2).token).await.unwrap(), None);
}

pub async fn late_start_time_moves_the_run(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "late").await;
    let post = root(1, T0 + 123);
    let mut patch = RunFragment::new(FragmentKind::Patch, post.id);
    patch.end_time = Some(Timestamp(T0 + 999));
    s.apply_run_fragments(t, p, vec![patch]).await.unwrap();
    s.apply_run_fragments(t, p, vec![post.clone()]).await.unwrap();
    let page = s.query_runs(t, &q(vec![p], 10)).await.unwrap();
    assert_eq!(page.runs.len(), 1, "the patch-only placeholder was moved, not duplicated");
    let roots = s.query_runs(t, &RunQuery { is_root: Some(true), ..q(vec![p], 10) }).await.unwrap();
    assert_eq!(roots.runs.len(), 1, "the root index follows the move");
    assert_eq!(page.runs[0].start_time, Some(Timestamp(T0 + 123)));
    let from = s.query_runs(t, &RunQuery { start_from: Some(Timestamp(T0)), ..q(vec![p], 10) }).await.unwrap();
    assert_eq!(from.runs.len(), 1);
    // A run first seen as a root (a patch without parent) that turns out to be a child.
    let mut orphan_patch = RunFragment::new(FragmentKind::Patch, RunId(Uuid::from_u128(77)));
    orphan_patch.end_time = Some(Timestamp(T0 + 500));
    s.apply_run_fragments(t, p, vec![orphan_patch]).await.unwrap();
    let late_child = child(&post, 77, T0 + 200);
    s.apply_run_fragments(t, p, vec![late_child]).await.unwrap();
    let roots = s.query_runs(t, &RunQuery { is_root: Some(true), ..q(vec![p], 10) }).await.unwrap();
    assert_eq!(roots.runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![post.id]);
}

/// The SDK's `create_run` path sends neither `trace_id` nor `dotted_order`.
pub async fn children_without_dotted_order_join_their_parents_trace(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "direct").await;
    let bare = |n: u128, start: i64, parent: Option<RunId>| {
        let mut f = RunFragment::new(FragmentKind::Post, RunId(Uuid::from_u128(n)));
        f.start_time = Some(Timestamp(start));
        f.parent_run_id = parent;
        f
    };
    let root = bare(1, T0, None);
    let child = bare(2, T0 + 10, Some(root.id));
    let grandchild = bare(3, T0 + 20, Some(child.id));
    s.apply_run_fragments(t, p, vec![root.clone()]).await.unwrap();
    // The child arrives in a later batch; the grandchild in the same batch as the child.
    s.apply_run_fragments(t, p, vec![child.clone(), grandchild.clone()]).await.unwrap();
    let runs = s.trace_runs(t, root.id).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![root.id, child.id, grandchild.id]);
    let g = &runs[2];
    assert_eq!(g.trace_id, Some(root.id));
    assert_eq!(g.parent_run_ids(), vec![root.id, child.id]);
    assert!(g.dotted_order.as_ref().unwrap().starts_with(runs[1].dotted_order.as_ref().unwrap()));
}

/// `metadata_pair` finds exactly the runs whose metadata holds the pair now, newest first,
/// and pages like any other query.
pub async fn metadata_pairs_find_runs_and_follow_updates(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "meta").await;
    let with_user = |n: u128, user: &str| {
        let mut f = root(n, T0 + n as i64);
        f.extra = Some(json!({"metadata": {"user_id": user, "n": n as u64}}).as_object().unwrap().clone());
        f
    };
    let frags: Vec<_> = (1..=30u128).map(|n| with_user(n, if n % 3 == 0 { "alice" } else { "bob" })).collect();
    s.apply_run_fragments(t, p, frags).await.unwrap();
    let pair = |user: &str, limit: usize, cursor: Option<RunCursor>| RunQuery {
        metadata_pair: Some(("user_id".into(), user.into())),
        cursor,
        ..q(vec![p], limit)
    };
    let page = s.query_runs(t, &pair("alice", 100, None)).await.unwrap();
    let ids: Vec<u128> = page.runs.iter().map(|r| r.id.0.as_u128()).collect();
    assert_eq!(ids, (1..=30u128).rev().filter(|n| n % 3 == 0).collect::<Vec<_>>());
    // Paging through the index.
    let first = s.query_runs(t, &pair("alice", 4, None)).await.unwrap();
    let second = s.query_runs(t, &pair("alice", 4, first.next)).await.unwrap();
    assert_eq!(first.runs.len() + second.runs.len(), 8);
    assert!(second.runs.iter().all(|r| !first.runs.iter().any(|f| f.id == r.id)));
    // A patch that changes the user moves the run between pairs.
    let mut patch = RunFragment::new(FragmentKind::Patch, RunId(Uuid::from_u128(3)));
    patch.extra = Some(json!({"metadata": {"user_id": "carol"}}).as_object().unwrap().clone());
    s.apply_run_fragments(t, p, vec![patch]).await.unwrap();
    let alice = s.query_runs(t, &pair("alice", 100, None)).await.unwrap();
    assert_eq!(alice.runs.len(), 9);
    let carol = s.query_runs(t, &pair("carol", 100, None)).await.unwrap();
    assert_eq!(carol.runs.iter().map(|r| r.id.0.as_u128()).collect::<Vec<_>>(), vec![3]);
    // Other tenants see nothing; a deleted project leaves nothing behind.
    assert!(s.query_runs(tenant(), &RunQuery { projects: vec![], ..pair("bob", 100, None) }).await.unwrap().runs.is_empty());
    s.delete_project(t, p).await.unwrap();
    assert!(s.query_runs(t, &pair("bob", 100, None)).await.unwrap().runs.is_empty());
}

fn feedback(run: Option<RunId>, key: &str, score: Option<f64>, value: Option<&str>) -> Feedback {
    let mut body = json!({"key": key, "run_id": run.map(|r| r.to_string())});
    if let Some(sc) = score {
        body["score"] = json!(sc);
    }
    if let Some(v) = value {
        body["value"] = json!(v);
    }
    Feedback::from_wire(&body, FeedbackId(Uuid::now_v7()), Timestamp(T0)).unwrap()
}

fn stamp() -> Uuid {
    Uuid::now_v7()
}

pub async fn feedback_stats_stay_exact_under_redelivery_updates_and_deletes(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "fb-stats").await;
    let run = root(1, T0);
    s.apply_run_fragments(t, p, vec![run.clone()]).await.unwrap();
    let a = feedback(Some(run.id), "correctness", Some(0.1), None);
    let b = feedback(Some(run.id), "correctness", Some(0.7), Some("good"));
    let c = feedback(Some(run.id), "thumbs", None, Some("up"));
    let changes = vec![
        (stamp(), FeedbackChange::Upsert(a.clone())),
        (stamp(), FeedbackChange::Upsert(b.clone())),
        (stamp(), FeedbackChange::Upsert(c.clone())),
        (
            stamp(),
            FeedbackChange::Patch {
                id: b.id,
                fields: vec![FeedbackField::Score(Some(Score::Number(0.3)))],
                modified_at: Timestamp(T0 + 1),
            },
        ),
        (stamp(), FeedbackChange::Delete { id: a.id }),
    ];
    // Every change delivered one by one, then everything redelivered in reverse order as one
    // batch, then the first half again as a batch.
    for (st, ch) in &changes {
        s.apply_feedback(t, *st, ch).await.unwrap();
    }
    let batch: Vec<_> = changes.iter().rev().map(|(st, ch)| (t, *st, ch.clone())).collect();
    s.apply_feedback_batch(&batch).await.unwrap();
    s.apply_feedback_batch(&batch[..3]).await.unwrap();
    let stats = s.run_feedback_stats(t, &[run.id]).await.unwrap().remove(&run.id).expect("the run has stats");
    let corr = &stats.0["correctness"];
    assert_eq!((corr.n, corr.scored, corr.sum), (1, 1, 3000), "only b, with its patched score");
    assert_eq!(corr.values.get("good"), Some(&1));
    assert_eq!(stats.0["thumbs"].values.get("up"), Some(&1));
    assert_eq!(s.project_feedback_stats(t, p).await.unwrap(), stats, "the project sums its runs");
    assert_eq!(s.get_feedback(t, a.id).await.unwrap(), None, "deleted");
    assert_eq!(s.get_feedback(t, b.id).await.unwrap().unwrap().score, Some(Score::Number(0.3)));
    // Deleting everything leaves no residue.
    for id in [b.id, c.id] {
        s.apply_feedback(t, stamp(), &FeedbackChange::Delete { id }).await.unwrap();
    }
    assert!(s.run_feedback_stats(t, &[run.id]).await.unwrap().is_empty());
    assert!(s.project_feedback_stats(t, p).await.unwrap().is_empty());
}

pub async fn feedback_before_its_run_counts_once_the_run_arrives(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "fb-early").await;
    let run = root(7, T0);
    let f = feedback(Some(run.id), "user_rating", Some(1.0), None);
    s.apply_feedback(t, stamp(), &FeedbackChange::Upsert(f.clone())).await.unwrap();
    assert_eq!(s.run_feedback_stats(t, &[run.id]).await.unwrap()[&run.id].0["user_rating"].n, 1);
    assert!(s.project_feedback_stats(t, p).await.unwrap().is_empty(), "no project known yet");
    s.apply_run_fragments(t, p, vec![run.clone()]).await.unwrap();
    s.apply_run_fragments(t, p, vec![run.clone()]).await.unwrap();
    let ps = s.project_feedback_stats(t, p).await.unwrap();
    assert_eq!(ps.0["user_rating"].n, 1, "counted once, after the run arrived (and was redelivered)");
    let listed = s.list_feedback(t, &FeedbackQuery { projects: vec![p], limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listed.iter().map(|f| f.id).collect::<Vec<_>>(), vec![f.id]);
}

pub async fn feedback_lists_filter_and_page(s: Arc<dyn Storage>) {
    let (t, other) = (tenant(), tenant());
    let p = new_project(&s, t, "fb-list").await;
    let (r1, r2) = (root(11, T0), root(12, T0 + 1));
    s.apply_run_fragments(t, p, vec![r1.clone(), r2.clone()]).await.unwrap();
    let mut all = Vec::new();
    for i in 0..25 {
        let run = if i % 2 == 0 { r1.id } else { r2.id };
        let mut f = feedback(Some(run), if i % 3 == 0 { "a" } else { "b" }, Some(f64::from(i) / 100.0), None);
        if i % 5 == 0 {
            f.feedback_source = Some(RawJson::parse(r#"{"type":"model"}"#).unwrap());
        }
        s.apply_feedback(t, stamp(), &FeedbackChange::Upsert(f.clone())).await.unwrap();
        all.push(f);
    }
    let project_level = feedback(None, "a", None, None);
    let mut project_level = project_level;
    project_level.session_id = Some(p);
    s.apply_feedback(t, stamp(), &FeedbackChange::Upsert(project_level.clone())).await.unwrap();
    let list = |q: FeedbackQuery| {
        let s = s.clone();
        async move { s.list_feedback(t, &q).await.unwrap().into_iter().map(|f| f.id).collect::<Vec<_>>() }
    };
    // Offset paging over everything: no gaps, no duplicates, creation order.
    let mut paged = Vec::new();
    for page in 0.. {
        let got = list(FeedbackQuery { limit: 7, offset: page * 7, ..Default::default() }).await;
        let short = got.len() < 7;
        paged.extend(got);
        if short {
            break;
        }
    }
    let mut expected: Vec<FeedbackId> = all.iter().map(|f| f.id).collect();
    expected.push(project_level.id);
    assert_eq!(paged, expected);
    let want = |pred: &dyn Fn(usize, &Feedback) -> bool| {
        all.iter().enumerate().filter(|(i, f)| pred(*i, f)).map(|(_, f)| f.id).collect::<Vec<_>>()
    };
    assert_eq!(list(FeedbackQuery { runs: vec![r1.id], limit: 100, ..Default::default() }).await, want(&|i, _| i % 2 == 0));
    assert_eq!(
        list(FeedbackQuery { runs: vec![r1.id, r2.id], keys: vec!["a".into()], limit: 100, ..Default::default() }).await,
        want(&|_, f| f.key == "a")
    );
    assert_eq!(list(FeedbackQuery { sources: vec!["model".into()], limit: 100, ..Default::default() }).await, want(&|i, _| i % 5 == 0));
    let in_project = list(FeedbackQuery { projects: vec![p], limit: 100, ..Default::default() }).await;
    assert_eq!(in_project.len(), 26, "run feedback resolved to the project, plus project-level feedback");
    assert!(list(FeedbackQuery { limit: 100, ..Default::default() }).await.len() == 26);
    assert!(s.list_feedback(other, &FeedbackQuery { limit: 100, ..Default::default() }).await.unwrap().is_empty(), "tenant isolation");
    assert_eq!(s.get_feedback(other, all[0].id).await.unwrap(), None);
}

/// A matcher on feedback: "has a `key` feedback scored below `below`".
struct LowScore(&'static str, f64);

impl crate::RunMatcher for LowScore {
    fn matches(&self, _run: &sextant_core::Run, feedback: &[Feedback]) -> bool {
        feedback.iter().any(|f| f.key == self.0 && f.score.is_some_and(|s| s.as_f64() < self.1))
    }
    fn needs_feedback(&self) -> bool {
        true
    }
}

pub async fn filters_see_each_runs_feedback(s: Arc<dyn Storage>) {
    let t = tenant();
    let p = new_project(&s, t, "fb-filter").await;
    let runs: Vec<RunFragment> = (0..4).map(|i| root(20 + i, T0 + i as i64)).collect();
    s.apply_run_fragments(t, p, runs.clone()).await.unwrap();
    for (i, score) in [(0, 0.2), (1, 0.9), (2, 0.3)] {
        s.apply_feedback(t, stamp(), &FeedbackChange::Upsert(feedback(Some(runs[i].id), "user_rating", Some(score), None))).await.unwrap();
    }
    // Run 3 has a low score under another key only.
    s.apply_feedback(t, stamp(), &FeedbackChange::Upsert(feedback(Some(runs[3].id), "other", Some(0.0), None))).await.unwrap();
    let m: Arc<dyn crate::RunMatcher> = Arc::new(LowScore("user_rating", 0.4));
    let got: HashSet<u128> =
        s.query_runs(t, &RunQuery { filter: Some(m), ..q(vec![p], 100) }).await.unwrap().runs.iter().map(|r| r.id.0.as_u128()).collect();
    assert_eq!(got, HashSet::from([20, 22]));
}

fn queue(name: &str) -> Queue {
    Queue {
        id: QueueId(Uuid::now_v7()),
        name: name.into(),
        description: None,
        rubric_instructions: Some("be fair".into()),
        rubric_items: None,
        num_reviewers_per_item: 1,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        rules: Vec::new(),
    }
}

fn item(q: QueueId, run: RunId) -> QueueItem {
    QueueItem {
        id: Uuid::now_v7(),
        queue_id: q,
        run_id: run,
        project_id: None,
        start_time: None,
        added_at: Timestamp::now(),
        last_reviewed_time: None,
        lease: None,
        reviews: Vec::new(),
        done: false,
    }
}

pub async fn queue_items_are_unique_per_run_and_leases_exclusive(s: Arc<dyn Storage>) {
    let t = tenant();
    let qu = s.create_queue(t, &queue("review")).await.unwrap();
    let runs: Vec<RunId> = (0..10).map(|i| RunId(Uuid::from_u128(100 + i))).collect();
    let first = s.add_queue_items(t, qu.id, runs.iter().map(|r| item(qu.id, *r)).collect()).await.unwrap();
    // Re-adding (a redelivered routing decision, or a user adding twice) returns the same items.
    let again = s.add_queue_items(t, qu.id, runs.iter().map(|r| item(qu.id, *r)).collect()).await.unwrap();
    assert_eq!(first.iter().map(|i| i.id).collect::<Vec<_>>(), again.iter().map(|i| i.id).collect::<Vec<_>>());
    let listed = s.list_queue_items(t, qu.id).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.run_id).collect::<Vec<_>>(), runs, "added order, each run once");
    // 16 reviewers ask for the next item at once: each item is leased to exactly one.
    let now = Timestamp::now();
    let until = Timestamp(now.micros() + 60_000_000);
    let mut tasks = Vec::new();
    for r in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.take_next_item(t, qu.id, &format!("rev-{r}"), now, until, 1).await.unwrap() }));
    }
    let mut taken = Vec::new();
    for task in tasks {
        if let Some(it) = task.await.unwrap() {
            taken.push(it.id);
        }
    }
    assert_eq!(taken.len(), 10, "ten items for sixteen reviewers");
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 10, "no item leased twice");
    // After the leases expire, another reviewer may take one over.
    let later = Timestamp(until.micros() + 1);
    assert!(s.take_next_item(t, qu.id, "late", later, Timestamp(later.micros() + 1), 1).await.unwrap().is_some());
    assert_eq!(s.delete_queue_items(t, qu.id, &[first[0].id, Uuid::now_v7()]).await.unwrap(), 1);
    assert_eq!(s.list_queue_items(t, qu.id).await.unwrap().len(), 9);
}

pub async fn queue_lifecycle(s: Arc<dyn Storage>) {
    let (t, other) = (tenant(), tenant());
    let a = s.create_queue(t, &queue("Refunds")).await.unwrap();
    assert_eq!(s.create_queue(t, &a).await.unwrap(), a, "idempotent on the id");
    let mut b = queue("legal");
    b.rules.push(RoutingRule {
        id: Uuid::now_v7(),
        filter: "has(tags, \"x\")".into(),
        project_ids: vec![],
        sampling_rate: 1.0,
        created_at: Timestamp::now(),
    });
    let b = s.create_queue(t, &b).await.unwrap();
    let names = |q: QueueQuery| {
        let s = s.clone();
        async move { s.list_queues(t, &q).await.unwrap().into_iter().map(|q| q.name).collect::<Vec<_>>() }
    };
    assert_eq!(names(QueueQuery { limit: 10, ..Default::default() }).await, ["legal", "Refunds"], "newest first");
    assert_eq!(names(QueueQuery { name_contains: Some("refund".into()), limit: 10, ..Default::default() }).await, ["Refunds"]);
    assert_eq!(names(QueueQuery { ids: vec![b.id], limit: 10, ..Default::default() }).await, ["legal"]);
    assert!(s.list_queues(other, &QueueQuery { limit: 10, ..Default::default() }).await.unwrap().is_empty());
    let with_rules = s.queues_with_rules().await.unwrap();
    assert!(with_rules.iter().any(|(tt, q)| *tt == t && q.id == b.id) && !with_rules.iter().any(|(_, q)| q.id == a.id));
    let mut renamed = a.clone();
    renamed.name = "Refunds v2".into();
    assert_eq!(s.put_queue(t, &renamed).await.unwrap().unwrap().name, "Refunds v2");
    assert_eq!(s.put_queue(other, &renamed).await.unwrap(), None);
    s.add_queue_items(t, a.id, vec![item(a.id, RunId(Uuid::now_v7()))]).await.unwrap();
    let it = s.list_queue_items(t, a.id).await.unwrap().remove(0);
    let done = s
        .update_queue_item(
            t,
            a.id,
            it.id,
            Box::new(|i: &mut QueueItem| {
                i.done = true;
                Ok(true)
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(done.done && s.get_queue_item(t, a.id, it.id).await.unwrap().unwrap().done);
    assert!(s.delete_queue(t, a.id).await.unwrap());
    assert!(!s.delete_queue(t, a.id).await.unwrap());
    assert_eq!(s.get_queue(t, a.id).await.unwrap(), None);
    assert!(s.list_queue_items(t, a.id).await.unwrap().is_empty(), "items go with their queue");
}

fn dataset(name: &str) -> sextant_core::Dataset {
    let now = Timestamp::now();
    sextant_core::Dataset {
        id: sextant_core::DatasetId(Uuid::now_v7()),
        name: name.into(),
        description: None,
        data_type: sextant_core::dataset::DataType::Kv,
        inputs_schema: None,
        outputs_schema: None,
        transformations: None,
        metadata: Some(sextant_core::RawJson::parse(r#"{"team":"support"}"#).unwrap()),
        created_at: now,
        modified_at: now,
        rules: Vec::new(),
        evaluators: Vec::new(),
    }
}

fn example(d: sextant_core::DatasetId, n: u128, question: &str, split: &str, version: i64) -> sextant_core::Example {
    sextant_core::Example {
        id: sextant_core::ExampleId(Uuid::from_u128(n)),
        dataset_id: d,
        inputs: sextant_core::RawJson::from_value(&serde_json::json!({"question": question})),
        outputs: Some(sextant_core::RawJson::from_value(&serde_json::json!({"answer": format!("a{n}")}))),
        metadata: sextant_core::RawJson::from_value(&serde_json::json!({"dataset_split": [split], "n": n as u64})),
        source_run_id: None,
        attachments: Vec::new(),
        created_at: Timestamp(version),
        modified_at: Timestamp(version),
    }
}

fn ids_of(v: &[sextant_core::Example]) -> Vec<u128> {
    v.iter().map(|e| e.id.0.as_u128()).collect()
}

pub async fn datasets_versions_replay_in_any_order(s: Arc<dyn Storage>) {
    use sextant_core::dataset::ExampleChange::{Delete, Put};
    let t = tenant();
    let d = dataset("versions");
    let crate::DatasetCreate::Created(_) = s.create_dataset(t, &d).await.unwrap() else { panic!("a fresh dataset is created") };
    let (v1, v2, v3) = (1_000_000, 2_000_000, 3_000_000);
    let versions = [
        (
            Timestamp(v1),
            vec![Put(example(d.id, 1, "q1", "base", v1)), Put(example(d.id, 2, "q2", "base", v1)), Put(example(d.id, 3, "q3", "test", v1))],
        ),
        (Timestamp(v2), vec![Put(example(d.id, 2, "q2 edited", "base", v2)), Delete(sextant_core::ExampleId(Uuid::from_u128(3)))]),
        (Timestamp(v3), vec![Put(example(d.id, 4, "q4", "test", v3)), Delete(sextant_core::ExampleId(Uuid::from_u128(1)))]),
    ];
    // Newest first, then everything again: a redelivery in the wrong order.
    for (as_of, changes) in versions.iter().rev().chain(versions.iter()) {
        s.apply_example_changes(t, d.id, *as_of, changes).await.unwrap();
    }
    let at = |v: Option<i64>| crate::ExampleQuery { as_of: v.map(Timestamp), limit: 100, ..Default::default() };
    assert_eq!(ids_of(&s.list_examples(t, d.id, &at(Some(v1 - 1))).await.unwrap()), Vec::<u128>::new(), "nothing before the first version");
    assert_eq!(ids_of(&s.list_examples(t, d.id, &at(Some(v1))).await.unwrap()), [1, 2, 3]);
    assert_eq!(ids_of(&s.list_examples(t, d.id, &at(Some(v2 + 5))).await.unwrap()), [1, 2]);
    assert_eq!(ids_of(&s.list_examples(t, d.id, &at(None)).await.unwrap()), [2, 4]);
    assert_eq!(s.count_examples(t, d.id, Some(Timestamp(v1))).await.unwrap(), 3);
    assert_eq!(s.count_examples(t, d.id, None).await.unwrap(), 2);
    let q2 = sextant_core::ExampleId(Uuid::from_u128(2));
    let old = s.get_example(t, q2, Some(Timestamp(v1))).await.unwrap().unwrap();
    assert_eq!(old.inputs.to_value().unwrap()["question"], "q2");
    let new = s.get_example(t, q2, None).await.unwrap().unwrap();
    assert_eq!(new.inputs.to_value().unwrap()["question"], "q2 edited");
    assert!(s.get_example(t, sextant_core::ExampleId(Uuid::from_u128(1)), None).await.unwrap().is_none(), "deleted");
    assert!(s.get_example(t, sextant_core::ExampleId(Uuid::from_u128(1)), Some(Timestamp(v2))).await.unwrap().is_some(), "present then");
    assert_eq!(s.list_versions(t, d.id).await.unwrap(), [Timestamp(v3), Timestamp(v2), Timestamp(v1)]);
    // Another tenant sees none of it.
    let other = tenant();
    assert!(s.get_dataset(other, d.id).await.unwrap().is_none());
    assert!(s.get_example(other, q2, None).await.unwrap().is_none());
    assert!(s.list_examples(other, d.id, &at(None)).await.unwrap().is_empty());
}

pub async fn datasets_lifecycle_names_tags_blobs_jobs(s: Arc<dyn Storage>) {
    let t = tenant();
    let d = dataset("golden");
    assert!(matches!(s.create_dataset(t, &d).await.unwrap(), crate::DatasetCreate::Created(_)));
    assert!(matches!(s.create_dataset(t, &d).await.unwrap(), crate::DatasetCreate::AlreadyExists(_)), "a redelivered create");
    let same_name = dataset("golden");
    assert!(matches!(s.create_dataset(t, &same_name).await.unwrap(), crate::DatasetCreate::NameTaken(x) if x.id == d.id));
    assert_eq!(s.dataset_by_name(t, "golden").await.unwrap().unwrap().id, d.id);

    // Last writer wins on the definition; renames move the name.
    let mut renamed = d.clone();
    renamed.name = "golden-v2".into();
    renamed.modified_at = Timestamp(d.modified_at.micros() + 10);
    assert!(s.put_dataset(t, &renamed).await.unwrap());
    let mut stale = d.clone();
    stale.description = Some("stale".into());
    assert!(s.put_dataset(t, &stale).await.unwrap());
    let got = s.get_dataset(t, d.id).await.unwrap().unwrap();
    assert_eq!(got.name, "golden-v2");
    assert_eq!(got.description, None, "an older definition does not win");
    assert!(s.dataset_by_name(t, "golden").await.unwrap().is_none());
    let other = dataset("other");
    s.create_dataset(t, &other).await.unwrap();
    let mut clash = other.clone();
    clash.name = "golden-v2".into();
    clash.modified_at = Timestamp(other.modified_at.micros() + 10);
    assert_eq!(s.put_dataset(t, &clash).await.unwrap_err().kind, StorageErrorKind::Conflict);
    let q = crate::DatasetQuery { name_contains: Some("GOLD".into()), limit: 10, ..Default::default() };
    assert_eq!(s.list_datasets(t, &q).await.unwrap().iter().map(|d| d.id).collect::<Vec<_>>(), [d.id]);
    let md = serde_json::json!({"team": "support"}).as_object().unwrap().clone();
    let q = crate::DatasetQuery { metadata: Some(md), limit: 10, ..Default::default() };
    assert_eq!(s.list_datasets(t, &q).await.unwrap().len(), 2);

    // Tags: the newest move wins, whatever order moves arrive in.
    s.set_tag(t, d.id, "prod", Timestamp(2), Timestamp(200)).await.unwrap();
    s.set_tag(t, d.id, "prod", Timestamp(1), Timestamp(100)).await.unwrap();
    s.set_tag(t, d.id, "staging", Timestamp(1), Timestamp(100)).await.unwrap();
    let mut tags = s.tags(t, d.id).await.unwrap();
    tags.sort();
    assert_eq!(tags, [("prod".to_string(), Timestamp(2)), ("staging".to_string(), Timestamp(1))]);

    s.put_blob(t, "abc", b"bytes").await.unwrap();
    s.put_blob(t, "abc", b"bytes").await.unwrap();
    assert_eq!(s.get_blob(t, "abc").await.unwrap().as_deref(), Some(&b"bytes"[..]));
    assert!(s.get_blob(tenant(), "abc").await.unwrap().is_none());

    let job = sextant_core::dataset::CurationJob {
        id: Uuid::now_v7(),
        dataset_id: d.id,
        selection: sextant_core::dataset::RunSelection {
            filter: "eq(error, true)".into(),
            project_ids: Vec::new(),
            start_time: None,
            end_time: None,
            root_only: true,
        },
        state: sextant_core::dataset::JobState::Running,
        scanned: 5,
        matched: 2,
        added: 1,
        skipped_no_io: 1,
        skipped_duplicate: 0,
        error: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        finished_at: None,
        as_of: None,
        progress: Some(0.5),
    };
    s.put_curation_job(t, &job).await.unwrap();
    assert_eq!(s.get_curation_job(t, job.id).await.unwrap(), Some(job.clone()));

    let mut with_rule = s.get_dataset(t, d.id).await.unwrap().unwrap();
    with_rule.rules.push(sextant_core::dataset::CurationRule {
        id: Uuid::now_v7(),
        selection: job.selection.clone(),
        created_at: Timestamp::now(),
    });
    with_rule.modified_at = Timestamp(with_rule.modified_at.micros() + 10);
    s.put_dataset(t, &with_rule).await.unwrap();
    assert!(s.datasets_with_rules().await.unwrap().iter().any(|(tt, x)| *tt == t && x.id == d.id));

    s.apply_example_changes(t, d.id, Timestamp(5), &[sextant_core::dataset::ExampleChange::Put(example(d.id, 9, "q", "base", 5))])
        .await
        .unwrap();
    assert!(s.delete_dataset(t, d.id).await.unwrap());
    assert!(!s.delete_dataset(t, d.id).await.unwrap());
    assert!(s.get_dataset(t, d.id).await.unwrap().is_none());
    assert!(s.dataset_by_name(t, "golden-v2").await.unwrap().is_none(), "the name is free again");
    assert!(s.get_example(t, sextant_core::ExampleId(Uuid::from_u128(9)), None).await.unwrap().is_none(), "examples go with it");
    assert!(s.list_versions(t, d.id).await.unwrap().is_empty());
}

pub async fn datasets_list_examples_filters_and_pages(s: Arc<dyn Storage>) {
    let t = tenant();
    let d = dataset("pages");
    s.create_dataset(t, &d).await.unwrap();
    let changes: Vec<_> = (1..=25u128)
        .map(|n| {
            sextant_core::dataset::ExampleChange::Put(example(d.id, n, &format!("q{n}"), if n % 5 == 0 { "test" } else { "train" }, 10))
        })
        .collect();
    s.apply_example_changes(t, d.id, Timestamp(10), &changes).await.unwrap();
    // Offset pages of 7: every example once, in id order, no short page while more remain.
    let mut seen = Vec::new();
    loop {
        let q = crate::ExampleQuery { offset: seen.len(), limit: 7, ..Default::default() };
        let page = s.list_examples(t, d.id, &q).await.unwrap();
        seen.extend(ids_of(&page));
        if page.len() < 7 {
            break;
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    // Keyset pages.
    let q = crate::ExampleQuery { after: Some(sextant_core::ExampleId(Uuid::from_u128(22))), limit: 100, ..Default::default() };
    assert_eq!(ids_of(&s.list_examples(t, d.id, &q).await.unwrap()), [23, 24, 25]);
    let q = crate::ExampleQuery { splits: vec!["test".into()], limit: 100, ..Default::default() };
    assert_eq!(ids_of(&s.list_examples(t, d.id, &q).await.unwrap()), [5, 10, 15, 20, 25]);
    let q = crate::ExampleQuery { splits: vec!["test".into()], offset: 1, limit: 2, ..Default::default() };
    assert_eq!(ids_of(&s.list_examples(t, d.id, &q).await.unwrap()), [10, 15]);
    let md = serde_json::json!({"n": 7}).as_object().unwrap().clone();
    let q = crate::ExampleQuery { metadata: Some(md), limit: 100, ..Default::default() };
    assert_eq!(ids_of(&s.list_examples(t, d.id, &q).await.unwrap()), [7]);
    let ids = [3u128, 1, 99].iter().map(|n| sextant_core::ExampleId(Uuid::from_u128(*n))).collect();
    let q = crate::ExampleQuery { ids, limit: 100, ..Default::default() };
    assert_eq!(ids_of(&s.list_examples(t, d.id, &q).await.unwrap()), [1, 3], "by id, unknown ids ignored");
}

fn prompt_repo(handle: &str, updated_at: i64) -> sextant_core::prompt::PromptRepo {
    sextant_core::prompt::PromptRepo {
        id: sextant_core::RepoId(Uuid::now_v7()),
        handle: handle.into(),
        description: Some("answers questions".into()),
        readme: None,
        labels: vec!["english".into()],
        is_public: false,
        is_archived: false,
        variants: Vec::new(),
        repo_type: Default::default(),
        created_at: Timestamp(updated_at),
        updated_at: Timestamp(updated_at),
    }
}

/// A commit with a chosen hash: the store keys by it and never recomputes it.
fn prompt_commit(repo: sextant_core::RepoId, hash: &str, parent: Option<&str>, at: i64) -> sextant_core::prompt::PromptCommit {
    sextant_core::prompt::PromptCommit {
        repo_id: repo,
        hash: hash.into(),
        parent: parent.map(str::to_owned),
        manifest: RawJson::parse(&format!(
            r#"{{"id":["langchain","prompts","prompt","PromptTemplate"],"kwargs":{{"template":"{hash}"}},"lc":1,"type":"constructor"}}"#
        ))
        .unwrap(),
        description: None,
        created_at: Timestamp(at),
    }
}

fn hash_of(c: &[sextant_core::prompt::PromptCommit]) -> Vec<&str> {
    c.iter().map(|c| c.hash.as_str()).collect()
}

pub async fn prompt_commits_and_tag_moves_replay_in_any_order(s: Arc<dyn Storage>) {
    use sextant_core::prompt::TagMove;
    let t = tenant();
    let repo = prompt_repo("support-bot", 1);
    assert!(matches!(s.create_repo(t, &repo).await.unwrap(), crate::RepoCreate::Created(_)));
    let r = repo.id;
    // Five commits; two share the prefix "aaaa".
    let hashes = ["aaaa1111", "bbbb0000", "aaaa2222", "cccc0000", "dddd0000"];
    let commits: Vec<_> =
        hashes.iter().enumerate().map(|(i, h)| prompt_commit(r, h, i.checked_sub(1).map(|p| hashes[p]), 10 * (i as i64 + 1))).collect();
    // Newest first, then everything again: a redelivery in the wrong order.
    for c in commits.iter().rev().chain(commits.iter()) {
        s.put_commit(t, c).await.unwrap();
    }
    let page = s.list_commits(t, r, 0, 100).await.unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(hash_of(&page.commits), ["dddd0000", "cccc0000", "aaaa2222", "bbbb0000", "aaaa1111"], "newest first, each once");
    // Offset pages of 2: every commit once, no short page while more remain.
    let mut seen = Vec::new();
    loop {
        let p = s.list_commits(t, r, seen.len(), 2).await.unwrap();
        assert_eq!(p.total, 5);
        seen.extend(p.commits.iter().map(|c| c.hash.clone()));
        if p.commits.len() < 2 {
            break;
        }
    }
    assert_eq!(seen, ["dddd0000", "cccc0000", "aaaa2222", "bbbb0000", "aaaa1111"]);
    assert_eq!(s.get_commit(t, r, "aaaa2222").await.unwrap().as_ref(), Some(&commits[2]));
    assert_eq!(s.get_commit(t, r, "aaaa").await.unwrap(), None, "get_commit takes a full hash");
    assert_eq!(hash_of(&s.commits_by_prefix(t, r, "aaaa", 10).await.unwrap()), ["aaaa1111", "aaaa2222"], "in hash order");
    assert_eq!(hash_of(&s.commits_by_prefix(t, r, "aaaa2", 10).await.unwrap()), ["aaaa2222"]);
    assert_eq!(s.commits_by_prefix(t, r, "aaaa", 1).await.unwrap().len(), 1, "limited");
    assert!(s.commits_by_prefix(t, r, "ab", 10).await.unwrap().is_empty());
    // Tag moves, out of order and twice; "prod" must not pick up "production".
    let mv = |tag: &str, commit: Option<&str>, at: i64| TagMove {
        repo_id: r,
        tag: tag.into(),
        commit: commit.map(str::to_owned),
        at: Timestamp(at),
    };
    let moves = [
        mv("production", Some("aaaa1111"), 100),
        mv("production", Some("cccc0000"), 300),
        mv("prod", Some("bbbb0000"), 150),
        mv("production", None, 400),
        mv("production", Some("dddd0000"), 500),
    ];
    for m in moves.iter().rev().chain(moves.iter()) {
        s.put_tag_move(t, m).await.unwrap();
    }
    let history = s.tag_moves(t, r, Some("production")).await.unwrap();
    assert_eq!(
        history.iter().map(|m| (m.at.micros(), m.commit.as_deref())).collect::<Vec<_>>(),
        [(100, Some("aaaa1111")), (300, Some("cccc0000")), (400, None), (500, Some("dddd0000"))]
    );
    assert_eq!(s.tag_moves(t, r, Some("prod")).await.unwrap(), [moves[2].clone()]);
    let all = s.tag_moves(t, r, None).await.unwrap();
    assert_eq!(
        all.iter().map(|m| (m.tag.as_str(), m.at.micros())).collect::<Vec<_>>(),
        [("prod", 150), ("production", 100), ("production", 300), ("production", 400), ("production", 500)]
    );
    let at = |when: i64| sextant_core::prompt::tags_as_of(&all, Some(Timestamp(when)));
    assert_eq!(at(350)["production"].0, "cccc0000");
    assert!(!at(450).contains_key("production"), "deleted at 400");
    assert_eq!(at(600)["production"].0, "dddd0000");
    // Another tenant sees none of it.
    let other = tenant();
    assert!(s.get_commit(other, r, "aaaa2222").await.unwrap().is_none());
    assert_eq!(s.list_commits(other, r, 0, 10).await.unwrap(), crate::CommitPage::default());
    assert!(s.tag_moves(other, r, None).await.unwrap().is_empty());
    assert!(s.commits_by_prefix(other, r, "aaaa", 10).await.unwrap().is_empty());
}

pub async fn prompt_repos_handles_likes_and_deletes(s: Arc<dyn Storage>) {
    use crate::RepoCreate;
    let (t, other) = (tenant(), tenant());
    let repo = prompt_repo("joke-prompt", 10);
    assert!(matches!(s.create_repo(t, &repo).await.unwrap(), RepoCreate::Created(_)));
    assert!(matches!(s.create_repo(t, &repo).await.unwrap(), RepoCreate::AlreadyExists(x) if x == repo), "a redelivered create");
    let same_handle = prompt_repo("joke-prompt", 11);
    assert!(matches!(s.create_repo(t, &same_handle).await.unwrap(), RepoCreate::NameTaken(x) if x.id == repo.id));
    assert!(matches!(s.create_repo(other, &same_handle).await.unwrap(), RepoCreate::Created(_)), "handles are per tenant");
    assert_eq!(s.repo_by_handle(t, "joke-prompt").await.unwrap().unwrap().id, repo.id);
    assert_eq!(s.repo_by_handle(other, "joke-prompt").await.unwrap().unwrap().id, same_handle.id);
    assert!(s.repo_by_handle(t, "joke").await.unwrap().is_none());

    // The newest definition wins; a handle never changes.
    let newer = sextant_core::prompt::PromptRepo { description: Some("newer".into()), updated_at: Timestamp(20), ..repo.clone() };
    let older = sextant_core::prompt::PromptRepo { description: Some("older".into()), updated_at: Timestamp(15), ..repo.clone() };
    assert!(s.put_repo(t, &newer).await.unwrap());
    assert!(s.put_repo(t, &older).await.unwrap());
    assert_eq!(s.get_repo(t, repo.id).await.unwrap().unwrap().description.as_deref(), Some("newer"));
    let renamed = sextant_core::prompt::PromptRepo { handle: "renamed".into(), updated_at: Timestamp(30), ..repo.clone() };
    assert_eq!(s.put_repo(t, &renamed).await.unwrap_err().kind, StorageErrorKind::Invalid);
    assert!(!s.put_repo(t, &prompt_repo("never-created", 1)).await.unwrap());
    let second = prompt_repo("second", 5);
    s.create_repo(t, &second).await.unwrap();
    let mut ids: Vec<_> = s.list_repos(t).await.unwrap().into_iter().map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![repo.id, second.id];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(s.list_repos(other).await.unwrap().len(), 1);

    // Likes: per liking tenant, the newest change wins whatever the order.
    s.set_like(t, repo.id, other, true, Timestamp(100)).await.unwrap();
    s.set_like(t, repo.id, t, false, Timestamp(300)).await.unwrap();
    s.set_like(t, repo.id, t, true, Timestamp(200)).await.unwrap();
    s.set_like(t, repo.id, other, false, Timestamp(50)).await.unwrap();
    assert_eq!(s.likes(t, repo.id).await.unwrap(), [other]);
    assert!(s.likes(other, repo.id).await.unwrap().is_empty());

    // A delete takes everything with it and frees the handle; the id stays deleted.
    s.put_commit(t, &prompt_commit(repo.id, "eeee0000", None, 40)).await.unwrap();
    s.put_tag_move(
        t,
        &sextant_core::prompt::TagMove { repo_id: repo.id, tag: "production".into(), commit: Some("eeee0000".into()), at: Timestamp(41) },
    )
    .await
    .unwrap();
    assert!(s.delete_repo(t, repo.id, Timestamp(1000)).await.unwrap());
    assert!(!s.delete_repo(t, repo.id, Timestamp(1001)).await.unwrap());
    assert!(s.get_repo(t, repo.id).await.unwrap().is_none());
    assert!(s.repo_by_handle(t, "joke-prompt").await.unwrap().is_none());
    assert_eq!(s.list_commits(t, repo.id, 0, 10).await.unwrap().total, 0);
    assert!(s.tag_moves(t, repo.id, None).await.unwrap().is_empty());
    assert!(s.likes(t, repo.id).await.unwrap().is_empty());
    // Redelivered writes of the deleted repository stay deleted.
    assert_eq!(s.create_repo(t, &repo).await.unwrap(), RepoCreate::Deleted);
    s.put_commit(t, &prompt_commit(repo.id, "eeee0000", None, 40)).await.unwrap();
    assert!(s.get_commit(t, repo.id, "eeee0000").await.unwrap().is_none());
    assert!(s.repo_by_handle(t, "joke-prompt").await.unwrap().is_none());
    // The handle can be taken again, by a new id; the other tenant's repository is untouched.
    let again = prompt_repo("joke-prompt", 2000);
    assert!(matches!(s.create_repo(t, &again).await.unwrap(), RepoCreate::Created(_)));
    assert_eq!(s.repo_by_handle(t, "joke-prompt").await.unwrap().unwrap().id, again.id);
    assert_eq!(s.list_commits(t, again.id, 0, 10).await.unwrap().total, 0, "nothing of the old repository");
    assert_eq!(s.repo_by_handle(other, "joke-prompt").await.unwrap().unwrap().id, same_handle.id);
}

/// Implements every store but [`crate::ProjectStore`] and [`crate::RunStore`] (feedback,
/// queues, datasets, prompts) for a test wrapper by delegating to one of its fields (wrappers
/// usually intercept only runs and projects).
/// Tokens are found by id alone (with the tenant that issued them), stored idempotently,
/// and listed per run only within their tenant.
pub async fn feedback_tokens_are_found_by_id_and_listed_per_tenant_and_run(s: Arc<dyn Storage>) {
    use sextant_core::feedback::FeedbackToken;
    let (a, b) = (TenantId(Uuid::now_v7()), TenantId(Uuid::now_v7()));
    let (run, other_run) = (RunId(Uuid::now_v7()), RunId(Uuid::now_v7()));
    let token = |run: RunId, key: &str| FeedbackToken {
        id: Uuid::new_v4(),
        run_id: run,
        key: key.into(),
        feedback_id: FeedbackId(Uuid::now_v7()),
        expires_at: Timestamp(Timestamp::now().micros() + 3_600_000_000),
        created_at: Timestamp::now(),
        feedback_config: Some(RawJson::parse(r#"{"type":"continuous","min":0,"max":1}"#).unwrap()),
    };
    let (t1, t2, t3) = (token(run, "vote"), token(run, "stars"), token(other_run, "vote"));
    for t in [&t1, &t2, &t3, &t1] {
        s.put_feedback_token(a, t).await.unwrap();
    }
    let tb = token(run, "vote");
    s.put_feedback_token(b, &tb).await.unwrap();
    assert_eq!(s.feedback_token(t1.id).await.unwrap(), Some((a, t1.clone())));
    assert_eq!(s.feedback_token(tb.id).await.unwrap(), Some((b, tb.clone())), "found by id, with its own tenant");
    assert_eq!(s.feedback_token(Uuid::new_v4()).await.unwrap(), None);
    let mut want = vec![t1.clone(), t2.clone()];
    want.sort_by_key(|t| t.id);
    assert_eq!(s.list_feedback_tokens(a, run).await.unwrap(), want, "each once, in id order, only this run's");
    assert_eq!(s.list_feedback_tokens(a, other_run).await.unwrap(), vec![t3]);
    assert_eq!(s.list_feedback_tokens(b, run).await.unwrap(), vec![tb], "tenant B sees only its own");
    assert!(s.list_feedback_tokens(b, other_run).await.unwrap().is_empty());
}

/// A config keeps its newest version whatever order versions arrive in; tenants are apart.
pub async fn feedback_configs_keep_the_newest_version_per_tenant(s: Arc<dyn Storage>) {
    use sextant_core::feedback::FeedbackConfigDef;
    let (a, b) = (TenantId(Uuid::now_v7()), TenantId(Uuid::now_v7()));
    let v1 = FeedbackConfigDef {
        id: Uuid::now_v7(),
        key: "rating".into(),
        config: RawJson::parse(r#"{"type":"continuous","min":0,"max":5}"#).unwrap(),
        is_lower_score_better: None,
        is_enforced: false,
        deleted: false,
        created_at: Timestamp(1_000),
        modified_at: Timestamp(1_000),
    };
    let v2 = FeedbackConfigDef {
        config: RawJson::parse(r#"{"type":"continuous","min":0,"max":10}"#).unwrap(),
        modified_at: Timestamp(2_000),
        ..v1.clone()
    };
    let v3 = FeedbackConfigDef { deleted: true, modified_at: Timestamp(3_000), ..v2.clone() };
    let other = FeedbackConfigDef {
        id: Uuid::now_v7(),
        key: "topic".into(),
        config: RawJson::parse(r#"{"type":"freeform"}"#).unwrap(),
        ..v1.clone()
    };
    // Out of order and redelivered.
    for c in [&v2, &other, &v1, &v2] {
        s.put_feedback_config(a, c).await.unwrap();
    }
    let by_id = |mut v: Vec<FeedbackConfigDef>| {
        v.sort_by_key(|c| c.id);
        v
    };
    assert_eq!(
        s.list_feedback_configs(a).await.unwrap(),
        by_id(vec![v2.clone(), other.clone()]),
        "the newest version of each, in id order"
    );
    s.put_feedback_config(a, &v3).await.unwrap();
    s.put_feedback_config(a, &v1).await.unwrap();
    assert_eq!(s.list_feedback_configs(a).await.unwrap(), by_id(vec![v3, other]), "deleted versions are kept, marked");
    assert!(s.list_feedback_configs(b).await.unwrap().is_empty(), "tenant B sees none of A's");
}

/// An online evaluator keeps its newest version whatever order versions arrive in; a delete
/// is a kept version marked deleted; tenants are apart.
pub async fn online_evaluators_keep_the_newest_version_per_tenant(s: Arc<dyn Storage>) {
    use sextant_core::evaluator::{OnlineEvaluatorDef, OnlineEvaluatorKind};
    let (a, b) = (TenantId(Uuid::now_v7()), TenantId(Uuid::now_v7()));
    let v1 = OnlineEvaluatorDef {
        id: Uuid::now_v7(),
        name: "helpfulness".into(),
        kind: OnlineEvaluatorKind::Llm,
        llm: Some(RawJson::parse(r#"{"prompt_repo_handle":"judge"}"#).unwrap()),
        code: None,
        metadata: None,
        deleted: false,
        created_at: Timestamp(1_000),
        updated_at: Timestamp(1_000),
    };
    let v2 = OnlineEvaluatorDef {
        name: "helpfulness-v2".into(),
        metadata: Some(RawJson::parse(r#"{"team":"a"}"#).unwrap()),
        updated_at: Timestamp(2_000),
        ..v1.clone()
    };
    let v3 = OnlineEvaluatorDef { deleted: true, updated_at: Timestamp(3_000), ..v2.clone() };
    let other = OnlineEvaluatorDef {
        id: Uuid::now_v7(),
        name: "length".into(),
        kind: OnlineEvaluatorKind::Code,
        llm: None,
        code: Some(RawJson::parse(r#"{"code":"def perform_eval(run): return 1","language":"python"}"#).unwrap()),
        ..v1.clone()
    };
    // Out of order and redelivered.
    for e in [&v2, &other, &v1, &v2] {
        s.put_online_evaluator(a, e).await.unwrap();
    }
    let by_id = |mut v: Vec<OnlineEvaluatorDef>| {
        v.sort_by_key(|e| e.id);
        v
    };
    assert_eq!(
        s.list_online_evaluators(a).await.unwrap(),
        by_id(vec![v2.clone(), other.clone()]),
        "the newest version of each, in id order"
    );
    assert_eq!(s.get_online_evaluator(a, v1.id).await.unwrap(), Some(v2.clone()));
    s.put_online_evaluator(a, &v3).await.unwrap();
    s.put_online_evaluator(a, &v1).await.unwrap();
    assert_eq!(s.get_online_evaluator(a, v1.id).await.unwrap(), Some(v3.clone()), "deleted versions are kept, marked");
    assert_eq!(s.list_online_evaluators(a).await.unwrap(), by_id(vec![v3, other.clone()]));
    assert!(s.list_online_evaluators(b).await.unwrap().is_empty(), "tenant B sees none of A's");
    assert_eq!(s.get_online_evaluator(b, other.id).await.unwrap(), None);
}

#[macro_export]
macro_rules! delegate_non_run_stores {
    ($ty:ty, $field:ident) => {
        #[async_trait::async_trait]
        impl $crate::FeedbackStore for $ty {
            async fn apply_feedback(
                &self,
                t: sextant_core::TenantId,
                stamp: uuid::Uuid,
                c: &sextant_core::FeedbackChange,
            ) -> $crate::Result<()> {
                self.$field.apply_feedback(t, stamp, c).await
            }
            async fn apply_feedback_batch(
                &self,
                changes: &[(sextant_core::TenantId, uuid::Uuid, sextant_core::FeedbackChange)],
            ) -> $crate::Result<()> {
                self.$field.apply_feedback_batch(changes).await
            }
            async fn get_feedback(
                &self,
                t: sextant_core::TenantId,
                id: sextant_core::FeedbackId,
            ) -> $crate::Result<Option<sextant_core::Feedback>> {
                self.$field.get_feedback(t, id).await
            }
            async fn list_feedback(
                &self,
                t: sextant_core::TenantId,
                q: &$crate::FeedbackQuery,
            ) -> $crate::Result<Vec<sextant_core::Feedback>> {
                self.$field.list_feedback(t, q).await
            }
            async fn run_feedback_stats(
                &self,
                t: sextant_core::TenantId,
                runs: &[sextant_core::RunId],
            ) -> $crate::Result<std::collections::HashMap<sextant_core::RunId, sextant_core::FeedbackStats>> {
                self.$field.run_feedback_stats(t, runs).await
            }
            async fn project_feedback_stats(
                &self,
                t: sextant_core::TenantId,
                p: sextant_core::ProjectId,
            ) -> $crate::Result<sextant_core::FeedbackStats> {
                self.$field.project_feedback_stats(t, p).await
            }
            async fn put_feedback_token(
                &self,
                t: sextant_core::TenantId,
                token: &sextant_core::feedback::FeedbackToken,
            ) -> $crate::Result<()> {
                self.$field.put_feedback_token(t, token).await
            }
            async fn feedback_token(
                &self,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<(sextant_core::TenantId, sextant_core::feedback::FeedbackToken)>> {
                self.$field.feedback_token(id).await
            }
            async fn list_feedback_tokens(
                &self,
                t: sextant_core::TenantId,
                run: sextant_core::RunId,
            ) -> $crate::Result<Vec<sextant_core::feedback::FeedbackToken>> {
                self.$field.list_feedback_tokens(t, run).await
            }
            async fn put_feedback_config(
                &self,
                t: sextant_core::TenantId,
                config: &sextant_core::feedback::FeedbackConfigDef,
            ) -> $crate::Result<()> {
                self.$field.put_feedback_config(t, config).await
            }
            async fn list_feedback_configs(
                &self,
                t: sextant_core::TenantId,
            ) -> $crate::Result<Vec<sextant_core::feedback::FeedbackConfigDef>> {
                self.$field.list_feedback_configs(t).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::QueueStore for $ty {
            async fn create_queue(
                &self,
                t: sextant_core::TenantId,
                q: &sextant_core::annotation::Queue,
            ) -> $crate::Result<sextant_core::annotation::Queue> {
                self.$field.create_queue(t, q).await
            }
            async fn get_queue(
                &self,
                t: sextant_core::TenantId,
                id: sextant_core::QueueId,
            ) -> $crate::Result<Option<sextant_core::annotation::Queue>> {
                self.$field.get_queue(t, id).await
            }
            async fn list_queues(
                &self,
                t: sextant_core::TenantId,
                q: &$crate::QueueQuery,
            ) -> $crate::Result<Vec<sextant_core::annotation::Queue>> {
                self.$field.list_queues(t, q).await
            }
            async fn put_queue(
                &self,
                t: sextant_core::TenantId,
                q: &sextant_core::annotation::Queue,
            ) -> $crate::Result<Option<sextant_core::annotation::Queue>> {
                self.$field.put_queue(t, q).await
            }
            async fn delete_queue(&self, t: sextant_core::TenantId, id: sextant_core::QueueId) -> $crate::Result<bool> {
                self.$field.delete_queue(t, id).await
            }
            async fn queues_with_rules(&self) -> $crate::Result<Vec<(sextant_core::TenantId, sextant_core::annotation::Queue)>> {
                self.$field.queues_with_rules().await
            }
            async fn add_queue_items(
                &self,
                t: sextant_core::TenantId,
                q: sextant_core::QueueId,
                items: Vec<sextant_core::annotation::QueueItem>,
            ) -> $crate::Result<Vec<sextant_core::annotation::QueueItem>> {
                self.$field.add_queue_items(t, q, items).await
            }
            async fn list_queue_items(
                &self,
                t: sextant_core::TenantId,
                q: sextant_core::QueueId,
            ) -> $crate::Result<Vec<sextant_core::annotation::QueueItem>> {
                self.$field.list_queue_items(t, q).await
            }
            async fn get_queue_item(
                &self,
                t: sextant_core::TenantId,
                q: sextant_core::QueueId,
                item: uuid::Uuid,
            ) -> $crate::Result<Option<sextant_core::annotation::QueueItem>> {
                self.$field.get_queue_item(t, q, item).await
            }
            async fn update_queue_item(
                &self,
                t: sextant_core::TenantId,
                q: sextant_core::QueueId,
                item: uuid::Uuid,
                update: $crate::ItemUpdate,
            ) -> $crate::Result<Option<sextant_core::annotation::QueueItem>> {
                self.$field.update_queue_item(t, q, item, update).await
            }
            async fn delete_queue_items(
                &self,
                t: sextant_core::TenantId,
                q: sextant_core::QueueId,
                items: &[uuid::Uuid],
            ) -> $crate::Result<usize> {
                self.$field.delete_queue_items(t, q, items).await
            }
            async fn take_next_item(
                &self,
                t: sextant_core::TenantId,
                q: sextant_core::QueueId,
                reviewer: &str,
                now: sextant_core::Timestamp,
                until: sextant_core::Timestamp,
                needed: u32,
            ) -> $crate::Result<Option<sextant_core::annotation::QueueItem>> {
                self.$field.take_next_item(t, q, reviewer, now, until, needed).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::DatasetStore for $ty {
            async fn create_dataset(&self, t: sextant_core::TenantId, d: &sextant_core::Dataset) -> $crate::Result<$crate::DatasetCreate> {
                self.$field.create_dataset(t, d).await
            }
            async fn put_dataset(&self, t: sextant_core::TenantId, d: &sextant_core::Dataset) -> $crate::Result<bool> {
                self.$field.put_dataset(t, d).await
            }
            async fn get_dataset(
                &self,
                t: sextant_core::TenantId,
                id: sextant_core::DatasetId,
            ) -> $crate::Result<Option<sextant_core::Dataset>> {
                self.$field.get_dataset(t, id).await
            }
            async fn dataset_by_name(&self, t: sextant_core::TenantId, name: &str) -> $crate::Result<Option<sextant_core::Dataset>> {
                self.$field.dataset_by_name(t, name).await
            }
            async fn list_datasets(
                &self,
                t: sextant_core::TenantId,
                q: &$crate::DatasetQuery,
            ) -> $crate::Result<Vec<sextant_core::Dataset>> {
                self.$field.list_datasets(t, q).await
            }
            async fn delete_dataset(&self, t: sextant_core::TenantId, id: sextant_core::DatasetId) -> $crate::Result<bool> {
                self.$field.delete_dataset(t, id).await
            }
            async fn datasets_with_rules(&self) -> $crate::Result<Vec<(sextant_core::TenantId, sextant_core::Dataset)>> {
                self.$field.datasets_with_rules().await
            }
            async fn apply_example_changes(
                &self,
                t: sextant_core::TenantId,
                d: sextant_core::DatasetId,
                as_of: sextant_core::Timestamp,
                changes: &[sextant_core::dataset::ExampleChange],
            ) -> $crate::Result<()> {
                self.$field.apply_example_changes(t, d, as_of, changes).await
            }
            async fn list_examples(
                &self,
                t: sextant_core::TenantId,
                d: sextant_core::DatasetId,
                q: &$crate::ExampleQuery,
            ) -> $crate::Result<Vec<sextant_core::Example>> {
                self.$field.list_examples(t, d, q).await
            }
            async fn count_examples(
                &self,
                t: sextant_core::TenantId,
                d: sextant_core::DatasetId,
                as_of: Option<sextant_core::Timestamp>,
            ) -> $crate::Result<u64> {
                self.$field.count_examples(t, d, as_of).await
            }
            async fn get_example(
                &self,
                t: sextant_core::TenantId,
                id: sextant_core::ExampleId,
                as_of: Option<sextant_core::Timestamp>,
            ) -> $crate::Result<Option<sextant_core::Example>> {
                self.$field.get_example(t, id, as_of).await
            }
            async fn list_versions(
                &self,
                t: sextant_core::TenantId,
                d: sextant_core::DatasetId,
            ) -> $crate::Result<Vec<sextant_core::Timestamp>> {
                self.$field.list_versions(t, d).await
            }
            async fn set_tag(
                &self,
                t: sextant_core::TenantId,
                d: sextant_core::DatasetId,
                tag: &str,
                as_of: sextant_core::Timestamp,
                at: sextant_core::Timestamp,
            ) -> $crate::Result<()> {
                self.$field.set_tag(t, d, tag, as_of, at).await
            }
            async fn tags(
                &self,
                t: sextant_core::TenantId,
                d: sextant_core::DatasetId,
            ) -> $crate::Result<Vec<(String, sextant_core::Timestamp)>> {
                self.$field.tags(t, d).await
            }
            async fn put_blob(&self, t: sextant_core::TenantId, sha: &str, bytes: &[u8]) -> $crate::Result<()> {
                self.$field.put_blob(t, sha, bytes).await
            }
            async fn get_blob(&self, t: sextant_core::TenantId, sha: &str) -> $crate::Result<Option<Vec<u8>>> {
                self.$field.get_blob(t, sha).await
            }
            async fn put_curation_job(&self, t: sextant_core::TenantId, job: &sextant_core::dataset::CurationJob) -> $crate::Result<()> {
                self.$field.put_curation_job(t, job).await
            }
            async fn get_curation_job(
                &self,
                t: sextant_core::TenantId,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<sextant_core::dataset::CurationJob>> {
                self.$field.get_curation_job(t, id).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::PromptStore for $ty {
            async fn create_repo(
                &self,
                t: sextant_core::TenantId,
                r: &sextant_core::prompt::PromptRepo,
            ) -> $crate::Result<$crate::RepoCreate> {
                self.$field.create_repo(t, r).await
            }
            async fn put_repo(&self, t: sextant_core::TenantId, r: &sextant_core::prompt::PromptRepo) -> $crate::Result<bool> {
                self.$field.put_repo(t, r).await
            }
            async fn get_repo(
                &self,
                t: sextant_core::TenantId,
                id: sextant_core::RepoId,
            ) -> $crate::Result<Option<sextant_core::prompt::PromptRepo>> {
                self.$field.get_repo(t, id).await
            }
            async fn repo_by_handle(
                &self,
                t: sextant_core::TenantId,
                handle: &str,
            ) -> $crate::Result<Option<sextant_core::prompt::PromptRepo>> {
                self.$field.repo_by_handle(t, handle).await
            }
            async fn list_repos(&self, t: sextant_core::TenantId) -> $crate::Result<Vec<sextant_core::prompt::PromptRepo>> {
                self.$field.list_repos(t).await
            }
            async fn delete_repo(
                &self,
                t: sextant_core::TenantId,
                id: sextant_core::RepoId,
                at: sextant_core::Timestamp,
            ) -> $crate::Result<bool> {
                self.$field.delete_repo(t, id, at).await
            }
            async fn put_commit(&self, t: sextant_core::TenantId, c: &sextant_core::prompt::PromptCommit) -> $crate::Result<()> {
                self.$field.put_commit(t, c).await
            }
            async fn get_commit(
                &self,
                t: sextant_core::TenantId,
                r: sextant_core::RepoId,
                hash: &str,
            ) -> $crate::Result<Option<sextant_core::prompt::PromptCommit>> {
                self.$field.get_commit(t, r, hash).await
            }
            async fn commits_by_prefix(
                &self,
                t: sextant_core::TenantId,
                r: sextant_core::RepoId,
                prefix: &str,
                limit: usize,
            ) -> $crate::Result<Vec<sextant_core::prompt::PromptCommit>> {
                self.$field.commits_by_prefix(t, r, prefix, limit).await
            }
            async fn list_commits(
                &self,
                t: sextant_core::TenantId,
                r: sextant_core::RepoId,
                offset: usize,
                limit: usize,
            ) -> $crate::Result<$crate::CommitPage> {
                self.$field.list_commits(t, r, offset, limit).await
            }
            async fn put_tag_move(&self, t: sextant_core::TenantId, m: &sextant_core::prompt::TagMove) -> $crate::Result<()> {
                self.$field.put_tag_move(t, m).await
            }
            async fn tag_moves(
                &self,
                t: sextant_core::TenantId,
                r: sextant_core::RepoId,
                tag: Option<&str>,
            ) -> $crate::Result<Vec<sextant_core::prompt::TagMove>> {
                self.$field.tag_moves(t, r, tag).await
            }
            async fn set_like(
                &self,
                t: sextant_core::TenantId,
                r: sextant_core::RepoId,
                by: sextant_core::TenantId,
                liked: bool,
                at: sextant_core::Timestamp,
            ) -> $crate::Result<()> {
                self.$field.set_like(t, r, by, liked, at).await
            }
            async fn likes(&self, t: sextant_core::TenantId, r: sextant_core::RepoId) -> $crate::Result<Vec<sextant_core::TenantId>> {
                self.$field.likes(t, r).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::EvaluatorStore for $ty {
            async fn put_online_evaluator(
                &self,
                t: sextant_core::TenantId,
                e: &sextant_core::evaluator::OnlineEvaluatorDef,
            ) -> $crate::Result<()> {
                self.$field.put_online_evaluator(t, e).await
            }
            async fn get_online_evaluator(
                &self,
                t: sextant_core::TenantId,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<sextant_core::evaluator::OnlineEvaluatorDef>> {
                self.$field.get_online_evaluator(t, id).await
            }
            async fn list_online_evaluators(
                &self,
                t: sextant_core::TenantId,
            ) -> $crate::Result<Vec<sextant_core::evaluator::OnlineEvaluatorDef>> {
                self.$field.list_online_evaluators(t).await
            }
        }
    };
}
