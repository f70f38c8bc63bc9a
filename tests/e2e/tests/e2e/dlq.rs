//! Dead letters are an operator's business: `/admin/dead-letters` (and `sextant dlq`) answer
//! only an admin key, never a tenant's key, and name what they hold.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{binary, client, Sextant};

fn config() -> String {
    let hash = |k: &str| sextant_auth::hash_key(k);
    format!(
        "[[auth.api_keys]]\nname = \"tenant-a\"\nhash = \"{}\"\ntenant = \"00000000-0000-0000-0000-00000000000a\"\n\
         [[auth.admin_keys]]\nname = \"ops\"\nhash = \"{}\"\n",
        hash("tenant-key"),
        hash("ops-key")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_need_an_admin_key_and_the_cli_lists_them() {
    let s = Sextant::start(Some(&config())).await;
    let url = format!("{}/admin/dead-letters", s.url);
    assert_eq!(client(None).get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client(Some("tenant-key")).get(&url).send().await.unwrap().status(), 401, "a tenant key is no operator key");
    let ops = client(Some("ops-key"));
    let listed: Value = ops.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["dead_letters"], json!([]));
    // An operator key reads no tenant's data.
    assert_eq!(ops.get(format!("{}/sessions", s.url)).send().await.unwrap().status(), 401);
    // Replaying what is not there is a 404 that says so; a bad stream is a 422.
    let r = ops
        .post(format!("{url}/replay"))
        .json(&json!({"stream": "runs", "sequence": 7, "consumer": "ingest-run-projector"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no dead letter"));
    let r = ops.post(format!("{url}/replay")).json(&json!({"stream": "nope", "sequence": 1, "consumer": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 422);

    let out = Command::new(binary()).args(["dlq", "list", "--endpoint", &s.url, "--api-key", "ops-key"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 dead letter(s)"));
    let out = Command::new(binary()).args(["dlq", "list", "--endpoint", &s.url, "--api-key", "tenant-key"]).output().unwrap();
    assert!(!out.status.success(), "a tenant key cannot list dead letters");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
}
