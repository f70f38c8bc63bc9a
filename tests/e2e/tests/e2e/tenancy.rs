//! A key of tenant A can never read or write tenant B's data.

use serde_json::{json, Value};

use crate::harness::{client, project_id, trace, wait_until, Sextant};

const TENANT_A: &str = "00000000-0000-4000-8000-00000000000a";
const TENANT_B: &str = "00000000-0000-4000-8000-00000000000b";

fn config() -> String {
    format!(
        "[[auth.api_keys]]\nname = \"a\"\nhash = \"{}\"\ntenant = \"{TENANT_A}\"\n\n[[auth.api_keys]]\nname = \"b\"\nhash = \"{}\"\ntenant = \"{TENANT_B}\"\n",
        sextant_auth::hash_key("key-a"),
        sextant_auth::hash_key("key-b")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_see_or_touch_each_other() {
    let s = Sextant::start(Some(&config())).await;
    let (a, b) = (client(Some("key-a")), client(Some("key-b")));
    let url = &s.url;

    let (runs, root) = trace("secret-project", 2);
    assert_eq!(a.post(format!("{url}/runs/batch")).json(&json!({"post": runs})).send().await.unwrap().status(), 202);
    let pid = wait_until(10, || async { project_id(&a, url, "secret-project").await }).await.unwrap();
    wait_until(10, || async { a.get(format!("{url}/runs/{root}")).send().await.unwrap().status().is_success().then_some(()) })
        .await
        .expect("A reads its own run");

    // Reads.
    assert_eq!(b.get(format!("{url}/runs/{root}")).send().await.unwrap().status(), 404);
    assert_eq!(b.get(format!("{url}/sessions/{pid}")).send().await.unwrap().status(), 404);
    assert_eq!(project_id(&b, url, "secret-project").await, None);
    for body in [json!({"session": [pid]}), json!({"id": [root]}), json!({"trace": root}), json!({})] {
        let r: Value = b.post(format!("{url}/runs/query")).json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(r["runs"], json!([]), "B saw A's runs with {body}");
    }
    let listed: Value = b.get(format!("{url}/sessions")).send().await.unwrap().json().await.unwrap();
    assert!(listed.as_array().unwrap().iter().all(|p| p["tenant_id"] == TENANT_B), "{listed}");

    // Writes: B cannot post into A's project by id, patch A's run, rename or delete A's project.
    let (mut runs_b, _) = trace("ignored", 0);
    runs_b[0]["session_id"] = json!(pid);
    let r = b.post(format!("{url}/runs/batch")).json(&json!({"post": runs_b})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(b.patch(format!("{url}/sessions/{pid}")).json(&json!({"name": "pwned"})).send().await.unwrap().status(), 404);
    assert_eq!(b.delete(format!("{url}/sessions/{pid}")).send().await.unwrap().status(), 404);
    // A patch from B with A's run id lands in B's own tenant, never in A's run.
    let r = b
        .patch(format!("{url}/runs/{root}"))
        .json(&json!({"outputs": {"pwned": true}, "end_time": "2026-11-25T03:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mine: Value = a.get(format!("{url}/runs/{root}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine["outputs"], json!({"a": "world"}));
    assert_eq!(a.get(format!("{url}/sessions/{pid}")).send().await.unwrap().status(), 200);

    // Authentication itself.
    let anon = client(None);
    assert_eq!(anon.get(format!("{url}/sessions")).send().await.unwrap().status(), 401);
    assert_eq!(client(Some("wrong")).get(format!("{url}/sessions")).send().await.unwrap().status(), 401);
    let r = a.get(format!("{url}/sessions")).header("X-Tenant-Id", TENANT_B).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = a.get(format!("{url}/sessions")).header("X-Tenant-Id", TENANT_A).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The same paths under /api/v1 are protected the same way.
    assert_eq!(anon.get(format!("{url}/api/v1/sessions")).send().await.unwrap().status(), 401);
    // B's earlier patch created a run of B's own under that id; it holds none of A's data.
    let theirs: Value = b.get(format!("{url}/api/v1/runs/{root}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["outputs"], json!({"pwned": true}));
    assert_eq!(theirs["inputs"], json!({}));
    assert_ne!(theirs["session_id"], json!(pid));
    // /info is public, as the SDK reads it before authenticating.
    assert_eq!(anon.get(format!("{url}/info")).send().await.unwrap().status(), 200);
}
