//! Feedback and annotation queues on ScyllaDB: NOT YET IMPLEMENTED. Every call answers
//! `Unavailable` with a message saying so; the embedded store implements both ports.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use sextant_core::annotation::{Queue, QueueItem};
use sextant_core::{Feedback, FeedbackChange, FeedbackId, FeedbackStats, ProjectId, QueueId, RunId, TenantId, Timestamp};

use super::ScyllaStore;
use crate::{FeedbackQuery, FeedbackStore, ItemUpdate, QueueQuery, QueueStore, Result, StorageError, StorageErrorKind};

fn missing() -> StorageError {
    StorageError::new(StorageErrorKind::Unavailable, "feedback and annotation queues are not implemented on ScyllaDB yet")
}

impl ScyllaStore {
    pub(super) async fn run_feedback(&self, _tenant: TenantId, _run: RunId) -> Result<Vec<Feedback>> {
        Err(missing())
    }
}

#[async_trait]
impl FeedbackStore for ScyllaStore {
    async fn apply_feedback(&self, _: TenantId, _: Uuid, _: &FeedbackChange) -> Result<()> {
        Err(missing())
    }
    async fn get_feedback(&self, _: TenantId, _: FeedbackId) -> Result<Option<Feedback>> {
        Err(missing())
    }
    async fn list_feedback(&self, _: TenantId, _: &FeedbackQuery) -> Result<Vec<Feedback>> {
        Err(missing())
    }
    async fn run_feedback_stats(&self, _: TenantId, _: &[RunId]) -> Result<HashMap<RunId, FeedbackStats>> {
        Err(missing())
    }
    async fn project_feedback_stats(&self, _: TenantId, _: ProjectId) -> Result<FeedbackStats> {
        Err(missing())
    }
}

#[async_trait]
impl QueueStore for ScyllaStore {
    async fn create_queue(&self, _: TenantId, _: &Queue) -> Result<Queue> {
        Err(missing())
    }
    async fn get_queue(&self, _: TenantId, _: QueueId) -> Result<Option<Queue>> {
        Err(missing())
    }
    async fn list_queues(&self, _: TenantId, _: &QueueQuery) -> Result<Vec<Queue>> {
        Err(missing())
    }
    async fn put_queue(&self, _: TenantId, _: &Queue) -> Result<Option<Queue>> {
        Err(missing())
    }
    async fn delete_queue(&self, _: TenantId, _: QueueId) -> Result<bool> {
        Err(missing())
    }
    async fn queues_with_rules(&self) -> Result<Vec<(TenantId, Queue)>> {
        Err(missing())
    }
    async fn add_queue_items(&self, _: TenantId, _: QueueId, _: Vec<QueueItem>) -> Result<Vec<QueueItem>> {
        Err(missing())
    }
    async fn list_queue_items(&self, _: TenantId, _: QueueId) -> Result<Vec<QueueItem>> {
        Err(missing())
    }
    async fn get_queue_item(&self, _: TenantId, _: QueueId, _: Uuid) -> Result<Option<QueueItem>> {
        Err(missing())
    }
    async fn update_queue_item(&self, _: TenantId, _: QueueId, _: Uuid, _: ItemUpdate) -> Result<Option<QueueItem>> {
        Err(missing())
    }
    async fn delete_queue_items(&self, _: TenantId, _: QueueId, _: &[Uuid]) -> Result<usize> {
        Err(missing())
    }
    async fn take_next_item(&self, _: TenantId, _: QueueId, _: &str, _: Timestamp, _: Timestamp, _: u32) -> Result<Option<QueueItem>> {
        Err(missing())
    }
}
