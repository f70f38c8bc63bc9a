//! The dataset routes over the real core, embedded store and in-process bus, called in process
//! (`Router::oneshot`): a write is checked whole before anything is stored, so a request that
//! is refused leaves every example, version and attachment as it was.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use sextant_auth::Authenticator;
use sextant_bus::inprocess::InProcessBus;
use sextant_bus::EventBus;
use sextant_core::LOCAL_TENANT;
use sextant_dataset_curation::http::{router, DatasetState};
use sextant_dataset_curation::Datasets;
use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::Storage;

struct Fixture {
    app: Router,
    store: Arc<dyn Storage>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::open(&dir.path().join("bus")).unwrap());
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let state = DatasetState { datasets: Arc::new(Datasets::new(bus, store.clone())), url_key: Arc::new(vec![9; 32]) };
    let app = router(state, Arc::new(Authenticator::new(&[]).unwrap()));
    Fixture { app, store, _dir: dir }
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

impl Fixture {
    async fn send(&self, method: Method, path: &str, content_type: &str, body: impl Into<Body>) -> Reply {
        let req = Request::builder().method(method).uri(path).header("content-type", content_type).body(body.into()).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Reply {
        self.send(method, path, "application/json", body.to_string()).await
    }

    async fn dataset(&self, name: &str) -> String {
        let r = self.json(Method::POST, "/datasets", json!({"name": name})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    async fn example(&self, dataset: &str, q: &str) -> String {
        let r = self.json(Method::POST, "/examples", json!({"dataset_id": dataset, "inputs": {"q": q}})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    async fn inputs(&self, example: &str) -> Value {
        let r = self.send(Method::GET, &format!("/examples/{example}"), "application/json", Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["inputs"].clone()
    }

    async fn versions(&self, dataset: &str) -> usize {
        let r = self.send(Method::GET, &format!("/datasets/{dataset}/versions"), "application/json", Body::empty()).await;
        r.body.as_array().unwrap().len()
    }
}

const B: &str = "3f1c9a0e5b7d4e2a8c6b0d9f1e3a5c7b";

fn multipart(parts: &[(String, &str, &[u8])]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, ct, data) in parts {
        body.extend_from_slice(
            format!("--{B}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: {ct}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{B}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={B}"), body)
}

#[tokio::test]
async fn a_multipart_update_of_another_datasets_example_changes_nothing() {
    let f = fixture();
    let (x, y) = (f.dataset("x").await, f.dataset("y").await);
    let e = f.example(&y, "original").await;
    let versions = f.versions(&y).await;

    let (ct, body) = multipart(&[(format!("{e}.inputs"), "application/json", br#"{"q": "changed"}"#)]);
    let r = f.send(Method::PATCH, &format!("/api/v1/platform/datasets/{x}/examples"), &ct, body).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.detail().contains(&x) && r.detail().contains(&y), "the message names both datasets: {}", r.detail());
    assert_eq!(f.inputs(&e).await, json!({"q": "original"}), "the refused update changed the example");
    assert_eq!(f.versions(&y).await, versions, "the refused update made a version");

    // In its own dataset the same update goes through.
    let (ct, body) = multipart(&[(format!("{e}.inputs"), "application/json", br#"{"q": "changed"}"#)]);
    let r = f.send(Method::PATCH, &format!("/api/v1/platform/datasets/{y}/examples"), &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.inputs(&e).await, json!({"q": "changed"}));
}

#[tokio::test]
async fn an_update_spanning_two_datasets_is_a_conflict_naming_both() {
    let f = fixture();
    let (x, y) = (f.dataset("x").await, f.dataset("y").await);
    let (ex, ey) = (f.example(&x, "in x").await, f.example(&y, "in y").await);
    let r =
        f.json(Method::PATCH, "/examples/bulk", json!([{"id": ex, "inputs": {"q": "new x"}}, {"id": ey, "inputs": {"q": "new y"}}])).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.detail().contains(&x) && r.detail().contains(&y), "{}", r.detail());
    assert_eq!(f.inputs(&ex).await, json!({"q": "in x"}));
    assert_eq!(f.inputs(&ey).await, json!({"q": "in y"}));
}

#[tokio::test]
async fn attachments_of_a_refused_multipart_write_are_not_stored() {
    let f = fixture();
    let x = f.dataset("x").await;
    let (ok, bad) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let picture: &[u8] = b"\x89PNG only this request has these bytes";
    let (ct, body) = multipart(&[
        (format!("{ok}.inputs"), "application/json", br#"{"q": 1}"#),
        (format!("{ok}.attachment.picture"), "image/png", picture),
        (format!("{bad}.inputs"), "application/json", b"[1, 2]"),
    ]);
    let r = f.send(Method::POST, &format!("/v1/platform/datasets/{x}/examples"), &ct, body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let sha = sextant_dataset_curation::core::blob_key(picture);
    assert!(f.store.get_blob(LOCAL_TENANT, &sha).await.unwrap().is_none(), "a refused write stored an attachment");

    // Valid, the same write stores the attachment with the example.
    let (ct, body) = multipart(&[
        (format!("{ok}.inputs"), "application/json", br#"{"q": 1}"#),
        (format!("{ok}.attachment.picture"), "image/png", picture),
    ]);
    let r = f.send(Method::POST, &format!("/v1/platform/datasets/{x}/examples"), &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.store.get_blob(LOCAL_TENANT, &sha).await.unwrap().as_deref(), Some(picture));
}

#[tokio::test]
async fn trailing_content_after_a_json_body_is_refused() {
    let f = fixture();
    let r = f.send(Method::POST, "/datasets", "application/json", r#"{"name": "a"}{"name": "b"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.detail().contains("trailing"), "{}", r.detail());
    let x = f.dataset("x").await;
    let id = uuid::Uuid::now_v7();
    let (ct, body) = multipart(&[(format!("{id}.inputs"), "application/json", br#"{"q": 1}garbage"#)]);
    let r = f.send(Method::POST, &format!("/v1/platform/datasets/{x}/examples"), &ct, body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.detail().contains("trailing"), "{}", r.detail());
}

#[tokio::test]
async fn a_bulk_metadata_update_with_one_bad_operation_changes_nothing() {
    let f = fixture();
    let d = f.dataset("bulk-md").await;
    let e = f.example(&d, "a").await;
    let before = f.versions(&d).await;
    let path = format!("/v1/platform/datasets/{d}/examples/metadata");
    let ops = json!([{"key": "k", "operation": "SET", "value": 1}, {"key": "labels", "operation": "ARRAY_ADD", "values": [7]}]);
    let r = f.json(Method::PATCH, &path, json!({"example_ids": [e], "operations": ops})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.detail().starts_with("operations[1].values"), "{}", r.detail());
    assert_eq!(f.versions(&d).await, before, "no version written");
    let long = "s".repeat(200);
    let ops = json!([{"key": "dataset_split", "operation": "ARRAY_ADD", "values": [long]}]);
    let r = f.json(Method::PATCH, &path, json!({"example_ids": [e], "operations": ops})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.detail().contains("split: names are 1 to 128 bytes"), "{}", r.detail());
    assert_eq!(f.versions(&d).await, before, "no version written");
    let r = f
        .json(Method::PATCH, &path, json!({"example_ids": ["not-a-uuid"], "operations": [{"key": "k", "operation": "SET", "value": 1}]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.detail().contains("example_ids[0]"), "{}", r.detail());
}

#[tokio::test]
async fn an_upload_whose_csv_lacks_a_column_leaves_no_dataset() {
    let f = fixture();
    let (ct, body) = multipart(&[
        ("name".into(), "text/plain", b"up"),
        ("input_keys".into(), "text/plain", b"question"),
        ("output_keys".into(), "text/plain", b"answer"),
        ("file\"; filename=\"faq.csv".into(), "text/csv", b"question\nwhy?\n"),
    ]);
    let r = f.send(Method::POST, "/datasets/upload", &ct, body).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.body);
    assert!(r.detail().contains("answer"), "{}", r.detail());
    let list = f.send(Method::GET, "/datasets?name=up", "application/json", Body::empty()).await;
    assert_eq!(list.body, json!([]), "the dataset of a failed upload is removed");
}

#[tokio::test]
async fn experiment_runs_need_experiments_and_known_selects() {
    let f = fixture();
    let d = f.dataset("xr").await;
    let path = format!("/api/v2/datasets/{d}/experiment-runs");
    let r = f.json(Method::POST, &path, json!({})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.detail().starts_with("experiment_ids"), "{}", r.detail());
    let x = uuid::Uuid::new_v4();
    let r = f.json(Method::POST, &path, json!({"experiment_ids": [x], "selects": ["NAME", "BOGUS"]})).await;
    assert!(r.detail().contains("selects[1]"), "{}", r.detail());
    let r = f.json(Method::POST, &path, json!({"experiment_ids": [x]})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}
