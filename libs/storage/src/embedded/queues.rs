//! Annotation queues in the embedded store.
//!
//! Keyspaces (T = tenant, Q = queue, I = item id (UUIDv7: added order), R = run):
//! * `queues`       T Q     → Queue
//! * `queue_items`  T Q I   → QueueItem
//! * `queue_runs`   T Q R   → I      — a run is in a queue at most once
//!
//! Item changes run under the store's write lock, which makes a lease exclusive.

use uuid::Uuid;

use sextant_core::annotation::{Queue, QueueItem};
use sextant_core::{QueueId, TenantId, Timestamp};

use super::{backend, dec, enc, Inner, Key};
use crate::{ItemUpdate, QueueQuery, Result};

fn queue_key(t: TenantId, q: QueueId) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(q.as_bytes()).0
}

fn item_key(t: TenantId, q: QueueId, item: Uuid) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(q.as_bytes()).id(item.as_bytes()).0
}

impl Inner {
    pub(super) fn get_queue(&self, t: TenantId, q: QueueId) -> Result<Option<Queue>> {
        match self.queues.get(queue_key(t, q)).map_err(|e| backend("read queue", e))? {
            Some(v) => Ok(Some(dec("queue", &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn create_queue(&self, t: TenantId, queue: &Queue) -> Result<Queue> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = self.get_queue(t, queue.id)? {
            return Ok(existing);
        }
        self.queues.insert(queue_key(t, queue.id), enc(queue)).map_err(|e| backend("write queue", e))?;
        Ok(queue.clone())
    }

    pub(super) fn put_queue(&self, t: TenantId, queue: &Queue) -> Result<Option<Queue>> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.get_queue(t, queue.id)?.is_none() {
            return Ok(None);
        }
        self.queues.insert(queue_key(t, queue.id), enc(queue)).map_err(|e| backend("write queue", e))?;
        Ok(Some(queue.clone()))
    }

    pub(super) fn list_queues(&self, t: TenantId, q: &QueueQuery) -> Result<Vec<Queue>> {
        let mut all = Vec::new();
        for g in self.queues.prefix(t.as_bytes()) {
            let (_, v) = g.into_inner().map_err(|e| backend("scan queues", e))?;
            let queue: Queue = dec("queue", &v)?;
            let keep = (q.ids.is_empty() || q.ids.contains(&queue.id))
                && q.name.as_ref().is_none_or(|n| &queue.name == n)
                && q.name_contains.as_ref().is_none_or(|n| queue.name.to_lowercase().contains(&n.to_lowercase()));
            if keep {
                all.push(queue);
            }
        }
        all.sort_by_key(|q| std::cmp::Reverse((q.created_at, q.id)));
        Ok(all.into_iter().skip(q.offset).take(q.limit.max(1)).collect())
    }

    pub(super) fn delete_queue(&self, t: TenantId, q: QueueId) -> Result<bool> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.get_queue(t, q)?.is_none() {
            return Ok(false);
        }
        let mut batch = self.db.batch();
        let prefix = queue_key(t, q);
        for g in self.queue_items.prefix(&prefix) {
            batch.remove(&self.queue_items, g.key().map_err(|e| backend("scan queue items", e))?.to_vec());
        }
        for g in self.queue_runs.prefix(&prefix) {
            batch.remove(&self.queue_runs, g.key().map_err(|e| backend("scan queue runs", e))?.to_vec());
        }
        batch.remove(&self.queues, prefix);
        batch.commit().map_err(|e| backend("delete queue", e))?;
        Ok(true)
    }

    pub(super) fn queues_with_rules(&self) -> Result<Vec<(TenantId, Queue)>> {
        let mut out = Vec::new();
        for g in self.queues.iter() {
            let (k, v) = g.into_inner().map_err(|e| backend("scan queues", e))?;
            let queue: Queue = dec("queue", &v)?;
            if !queue.rules.is_empty() {
                out.push((TenantId::from_bytes(k[..16].try_into().expect("queue keys are 32 bytes")), queue));
            }
        }
        Ok(out)
    }

    pub(super) fn add_queue_items(&self, t: TenantId, q: QueueId, items: Vec<QueueItem>) -> Result<Vec<QueueItem>> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = self.db.batch();
        let mut out = Vec::with_capacity(items.len());
        let mut added: std::collections::HashMap<sextant_core::RunId, QueueItem> = Default::default();
        for item in items {
            if let Some(same) = added.get(&item.run_id) {
                out.push(same.clone());
                continue;
            }
            let run_key = Key::new().id(t.as_bytes()).id(q.as_bytes()).id(item.run_id.as_bytes()).0;
            if let Some(existing) = self.queue_runs.get(&run_key).map_err(|e| backend("read queue run", e))? {
                let existing = Uuid::from_slice(&existing).map_err(|e| backend("decode queue run", e))?;
                if let Some(v) = self.queue_items.get(item_key(t, q, existing)).map_err(|e| backend("read queue item", e))? {
                    out.push(dec("queue item", &v)?);
                    continue;
                }
            }
            batch.insert(&self.queue_runs, run_key, item.id.as_bytes().to_vec());
            batch.insert(&self.queue_items, item_key(t, q, item.id), enc(&item));
            added.insert(item.run_id, item.clone());
            out.push(item);
        }
        batch.commit().map_err(|e| backend("write queue items", e))?;
        Ok(out)
    }

    pub(super) fn list_queue_items(&self, t: TenantId, q: QueueId) -> Result<Vec<QueueItem>> {
        let mut out = Vec::new();
        for g in self.queue_items.prefix(queue_key(t, q)) {
            let (_, v) = g.into_inner().map_err(|e| backend("scan queue items", e))?;
            out.push(dec("queue item", &v)?);
        }
        Ok(out)
    }

    pub(super) fn get_queue_item(&self, t: TenantId, q: QueueId, item: Uuid) -> Result<Option<QueueItem>> {
        match self.queue_items.get(item_key(t, q, item)).map_err(|e| backend("read queue item", e))? {
            Some(v) => Ok(Some(dec("queue item", &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn update_queue_item(&self, t: TenantId, q: QueueId, item: Uuid, mut update: ItemUpdate) -> Result<Option<QueueItem>> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut it) = self.get_queue_item(t, q, item)? else { return Ok(None) };
        if update(&mut it)? {
            self.queue_items.insert(item_key(t, q, item), enc(&it)).map_err(|e| backend("write queue item", e))?;
        }
        Ok(Some(it))
    }

    pub(super) fn delete_queue_items(&self, t: TenantId, q: QueueId, items: &[Uuid]) -> Result<usize> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = self.db.batch();
        let mut n = 0;
        for id in items {
            if let Some(it) = self.get_queue_item(t, q, *id)? {
                batch.remove(&self.queue_items, item_key(t, q, *id));
                batch.remove(&self.queue_runs, Key::new().id(t.as_bytes()).id(q.as_bytes()).id(it.run_id.as_bytes()).0);
                n += 1;
            }
        }
        batch.commit().map_err(|e| backend("delete queue items", e))?;
        Ok(n)
    }

    pub(super) fn take_next_item(
        &self,
        t: TenantId,
        q: QueueId,
        reviewer: &str,
        now: Timestamp,
        until: Timestamp,
        reviewers_needed: u32,
    ) -> Result<Option<QueueItem>> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for g in self.queue_items.prefix(queue_key(t, q)) {
            let (k, v) = g.into_inner().map_err(|e| backend("scan queue items", e))?;
            let mut it: QueueItem = dec("queue item", &v)?;
            if it.available_to(reviewer, now, reviewers_needed) {
                it.lease = Some(sextant_core::annotation::Lease { reviewer: reviewer.to_owned(), until });
                self.queue_items.insert(k.to_vec(), enc(&it)).map_err(|e| backend("write queue item", e))?;
                return Ok(Some(it));
            }
        }
        Ok(None)
    }
}
