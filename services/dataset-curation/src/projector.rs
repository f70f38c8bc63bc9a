//! The dataset projector: consumes the dataset stream and applies every change to the store.
//!
//! The API applied each change already (read-your-writes); this consumer makes the store
//! right after a crash between publish and apply, and feeds other processes' stores in a
//! split deployment. Applying a change twice changes nothing (versions are keyed by example
//! and `as_of`; definitions and tags are last-writer-wins), so redelivery is harmless.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::{info_span, Instrument};

use sextant_bus::{Applied, ConsumerSpec, EventBus, Projection};
use sextant_events::{Envelope, Event, Stream};
use sextant_storage::{Storage, StorageErrorKind};

use crate::core::apply_change;

pub const DATASET_PROJECTOR: &str = "dataset-projector";
const BATCH: usize = 128;

struct DatasetProjection(Arc<dyn Storage>);

#[async_trait]
impl Projection for DatasetProjection {
    async fn apply(&self, env: &Envelope, sequence: u64) -> Applied {
        let Event::DatasetChangedV1(ev) = &env.event else { return Applied::Done };
        let span = info_span!("dataset.project_event", tenant = %env.tenant, dataset = %ev.change.dataset_id(), seq = sequence);
        match apply_change(self.0.as_ref(), env.tenant, &ev.change).instrument(span).await {
            Ok(()) => Applied::Done,
            Err(e) if matches!(e.kind, StorageErrorKind::Invalid | StorageErrorKind::Conflict) => {
                Applied::Reject(format!("rejected by the store: {e}"))
            }
            Err(e) => Applied::Retry(e.to_string()),
        }
    }

    async fn sync(&self) -> Result<(), String> {
        self.0.sync().await.map_err(|e| e.to_string())
    }
}

pub async fn run_dataset_projector(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, shutdown: watch::Receiver<bool>) {
    let spec = ConsumerSpec::new(DATASET_PROJECTOR, Stream::Datasets);
    let projection = DatasetProjection(store);
    sextant_bus::run_projection(bus.as_ref(), spec, BATCH, shutdown, &projection, "sextant_dataset_events_projected_total").await;
}
