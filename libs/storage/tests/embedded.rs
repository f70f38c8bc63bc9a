//! The embedded adapter against the storage conformance suite.

use std::sync::Arc;

use sextant_storage::embedded::EmbeddedStore;
use sextant_storage::{storage_conformance, Storage};

async fn fresh() -> Arc<dyn Storage> {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    std::mem::forget(dir);
    Arc::new(store)
}

storage_conformance!(fresh());
