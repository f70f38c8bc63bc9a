//! The ScyllaDB adapter against the storage conformance suite, on a real cluster.
//!
//! Ignored unless asked for: no ScyllaDB runs on the development machines. Run with
//! `SEXTANT_SCYLLA_CONTACT_POINTS=host1:9042,host2:9042 cargo test -p sextant-storage
//! --features scylla --test scylla_conformance -- --ignored`. Each test migrates a fresh
//! keyspace (`sextant_test_<random>`, SimpleStrategy, one replica) and leaves it behind.
#![cfg(feature = "scylla")]

use std::sync::Arc;

use sextant_storage::scylla::{migrate, ScyllaConfig, ScyllaStore};
use sextant_storage::{storage_conformance, Storage};

async fn fresh() -> Arc<dyn Storage> {
    let points = std::env::var("SEXTANT_SCYLLA_CONTACT_POINTS").expect("set SEXTANT_SCYLLA_CONTACT_POINTS=host:port[,host:port...]");
    let cfg = ScyllaConfig {
        contact_points: points.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect(),
        keyspace: format!("sextant_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        ..Default::default()
    };
    let applied = migrate(&cfg).await.expect("migrate a fresh keyspace");
    assert_eq!(
        applied,
        [
            "0001_keyspace.cql",
            "0002_tables.cql",
            "0003_feedback_queues.cql",
            "0004_datasets.cql",
            "0005_prompts.cql",
            "0006_feedback_tokens_configs.cql"
        ]
    );
    assert!(migrate(&cfg).await.unwrap().is_empty(), "migrating again applies nothing");
    Arc::new(ScyllaStore::connect(&cfg).await.expect("connect"))
}

storage_conformance!(fresh(), #[ignore = "needs SEXTANT_SCYLLA_CONTACT_POINTS"]);
