//! Annotation queues on ScyllaDB: queue definitions, their items, and the leases that keep two
//! reviewers off one item. Semantics are the embedded adapter's (`embedded/queues.rs`).
//!
//! Tables (T = tenant, Q = queue, I = item id (UUIDv7: added order), R = run):
//! * `queues`        ((T), Q)          → body
//! * `routed_queues` ((scope), T, Q)    — queues with routing rules, of every tenant
//! * `queue_items`   ((T, Q), I)       → body, version
//! * `queue_runs`    ((T, Q, R))       → I, the item as first added
//!
//! Queue and item rows are written only through lightweight transactions. The embedded adapter
//! makes a lease exclusive with its write lock; here every item change is `UPDATE ... IF version
//! = ?` of the version it read, so of two reviewers leasing the same item one wins and the other
//! re-reads (through Paxos) and moves on. ScyllaDB runs Paxos per partition, so all item writes
//! of one queue are serialized: the price of reading a queue's items in order from one
//! partition, and the writes would contend for the head of the queue anyway.
//!
//! A run is added to a queue at most once: `INSERT INTO queue_runs ... IF NOT EXISTS` claims the
//! run before the item is inserted. The claim carries the item as first added, so whoever finds
//! a claim without its item (an add interrupted between the two writes, or still in progress)
//! inserts that item itself (`IF NOT EXISTS`: exactly one copy) rather than a second one.
//! Deleting an item deletes the item first and its claim after; a claim left by an interrupted
//! delete brings the item back, fresh, if the run is added again.
//!
//! `routed_queues` is the router's working set across tenants: one small partition. A queue is
//! entered before a definition with rules is written and leaves only with the queue, so the
//! router never misses a queue; readers skip entries whose queue has no rules (any more).
//!
//! A lightweight transaction that fails without an answer (a timeout) may have applied. Leasing
//! re-reads the item and recognises its own lease; the other writes return the error, and their
//! callers may retry them: queue creation and item adds are idempotent, and an item update's
//! closure cannot be assumed to be.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::response::query_result::QueryRowsResult;
use scylla::response::PagingState;
use scylla::value::{CqlValue, Row};
use tracing::{debug, instrument};
use uuid::Uuid;

use sextant_core::annotation::{Lease, Queue, QueueItem};
use sextant_core::{QueueId, RunId, TenantId, Timestamp};

use super::statements::*;
use super::{dec, enc, internal, lwt_outcome, rows, ScyllaStore, FANOUT, MAX_MERGE_ATTEMPTS};
use crate::{ItemUpdate, QueueQuery, QueueStore, Result, StorageError, StorageErrorKind};

/// The partition of `routed_queues`.
const ROUTED: &str = "rules";
/// Attempts at leasing one item, each after losing its compare-and-set, before moving on.
const LEASE_ATTEMPTS: u32 = 3;

/// A blob column of an LWT's not-applied row (the current value).
fn lwt_blob(rows: &QueryRowsResult, column: &str, what: &str) -> Result<Option<Vec<u8>>> {
    let Some((idx, _)) = rows.column_specs().get_by_name(column) else { return Ok(None) };
    let row: Row = rows.first_row().map_err(|e| internal(what, e))?;
    Ok(match row.columns.into_iter().nth(idx) {
        Some(Some(CqlValue::Blob(b))) => Some(b),
        _ => None,
    })
}

fn item_key(t: TenantId, q: QueueId, item: Uuid) -> ItemKey {
    ItemKey { tenant: t.0, queue_id: q.0, item_id: item.as_bytes().to_vec() }
}

impl ScyllaStore {
    async fn queue_item_versioned(&self, t: TenantId, q: QueueId, item: Uuid, serial: bool) -> Result<Option<(QueueItem, i64)>> {
        let stmt = if serial { &GET_ITEM_SERIAL } else { &GET_ITEM };
        let res = self.exec(stmt, &item_key(t, q, item)).await?;
        match rows(res, "read queue item")?.maybe_first_row::<(Vec<u8>, i64)>().map_err(|e| internal("read queue item", e))? {
            Some((body, version)) => Ok(Some((dec("queue item", &body)?, version))),
            None => Ok(None),
        }
    }

    /// One page of a queue's items, in the order added.
    async fn queue_item_page(&self, t: TenantId, q: QueueId, page: PagingState) -> Result<(Vec<(QueueItem, i64)>, Option<PagingState>)> {
        let (res, next) = self.exec_page(&LIST_ITEMS, &QueueKey { tenant: t.0, queue_id: q.0 }, Some(page)).await?;
        let items = rows(res, "list queue items")?
            .rows::<(Vec<u8>, i64)>()
            .map_err(|e| internal("list queue items", e))?
            .map(|r| {
                let (body, version) = r.map_err(|e| internal("list queue items", e))?;
                Ok((dec("queue item", &body)?, version))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((items, next))
    }

    async fn all_queue_items(&self, t: TenantId, q: QueueId) -> Result<Vec<(QueueItem, i64)>> {
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (items, next) = self.queue_item_page(t, q, page).await?;
            out.extend(items);
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }

    /// Adds one item, or returns the item the run already has in the queue.
    async fn add_queue_item(&self, t: TenantId, q: QueueId, item: &QueueItem) -> Result<QueueItem> {
        let claim = RunClaim { tenant: t.0, queue_id: q.0, run_id: item.run_id.0, item_id: item.id, item: enc(item) };
        let (claimed, rows) = lwt_outcome(self.exec(&CLAIM_RUN, &claim).await?, "claim queue run")?;
        let item = if claimed {
            item.clone()
        } else {
            let body = lwt_blob(&rows, "item", "claim queue run")?
                .ok_or_else(|| StorageError::new(StorageErrorKind::Internal, "scylla: a queue run claim has no item"))?;
            dec("queue item", &body)?
        };
        // Inserted here even when the claim was someone else's: they may have died before.
        let values = InsertItem { tenant: t.0, queue_id: q.0, item_id: item.id.as_bytes().to_vec(), body: enc(&item), version: 1 };
        let (inserted, rows) = lwt_outcome(self.exec(&INSERT_ITEM, &values).await?, "add queue item")?;
        if inserted {
            return Ok(item);
        }
        match lwt_blob(&rows, "body", "add queue item")? {
            Some(body) => dec("queue item", &body),
            None => Ok(self.queue_item_versioned(t, q, item.id, true).await?.map_or(item, |(it, _)| it)),
        }
    }

    /// Deletes one item and then its claim; `Ok(false)` when it did not exist.
    async fn delete_queue_item(&self, t: TenantId, q: QueueId, item: Uuid, run: RunId) -> Result<bool> {
        let (deleted, _) = lwt_outcome(self.exec(&DELETE_ITEM, &item_key(t, q, item)).await?, "delete queue item")?;
        // Not applied means the claim is someone else's now: nothing of ours to release.
        self.exec(&RELEASE_RUN, &RunRelease { tenant: t.0, queue_id: q.0, run_id: run.0, item_id: item }).await?;
        Ok(deleted)
    }

    /// Tries to lease one item, re-reading it after each lost attempt; `None` when it is not
    /// (or no longer) available to `reviewer`.
    async fn lease_item(
        &self,
        t: TenantId,
        q: QueueId,
        mut item: QueueItem,
        mut version: i64,
        lease: &Lease,
        now: Timestamp,
        reviewers_needed: u32,
    ) -> Result<Option<QueueItem>> {
        // The failure of the last attempt, if its outcome is unknown: reported rather than
        // taken for "not available", which would move a reviewer on for the wrong reason.
        let mut unknown = None;
        for attempt in 0..LEASE_ATTEMPTS {
            if !item.available_to(&lease.reviewer, now, reviewers_needed) {
                return Ok(None);
            }
            let mut leased = item.clone();
            leased.lease = Some(lease.clone());
            let values = UpdateItem {
                tenant: t.0,
                queue_id: q.0,
                item_id: item.id.as_bytes().to_vec(),
                body: enc(&leased),
                version: version + 1,
                expected_version: version,
            };
            match self.exec(&UPDATE_ITEM, &values).await.and_then(|r| lwt_outcome(r, "lease queue item")) {
                Ok((true, _)) => return Ok(Some(leased)),
                Ok((false, _)) => {
                    debug!(item = %item.id, attempt, "lost a lease compare-and-set");
                    unknown = None;
                }
                // The outcome is unknown: the serial read below shows our lease if it applied.
                Err(e) if e.kind == StorageErrorKind::Unavailable => {
                    debug!(item = %item.id, attempt, error = %e, "lease outcome unknown");
                    unknown = Some(e);
                }
                Err(e) => return Err(e),
            }
            let Some((cur, v)) = self.queue_item_versioned(t, q, item.id, true).await? else { return Ok(None) };
            if cur.lease.as_ref() == Some(lease) {
                return Ok(Some(cur));
            }
            (item, version) = (cur, v);
        }
        match unknown {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl QueueStore for ScyllaStore {
    #[instrument(name = "storage.scylla.create_queue", skip_all, fields(tenant = %tenant, queue = %queue.id))]
    async fn create_queue(&self, tenant: TenantId, queue: &Queue) -> Result<Queue> {
        if !queue.rules.is_empty() {
            self.exec(&INSERT_ROUTED, &RoutedRow { scope: ROUTED.into(), tenant: tenant.0, queue_id: queue.id.0 }).await?;
        }
        let values = QueueRow { tenant: tenant.0, queue_id: queue.id.0, body: enc(queue) };
        let (created, rows) = lwt_outcome(self.exec(&INSERT_QUEUE, &values).await?, "create queue")?;
        if created {
            return Ok(queue.clone());
        }
        match lwt_blob(&rows, "body", "create queue")? {
            Some(body) => dec("queue", &body),
            None => self
                .get_queue(tenant, queue.id)
                .await?
                .ok_or_else(|| StorageError::new(StorageErrorKind::Unavailable, "scylla: the queue was deleted while being created")),
        }
    }

    #[instrument(name = "storage.scylla.get_queue", skip_all, fields(tenant = %tenant, queue = %id))]
    async fn get_queue(&self, tenant: TenantId, id: QueueId) -> Result<Option<Queue>> {
        let res = self.exec(&GET_QUEUE, &QueueKey { tenant: tenant.0, queue_id: id.0 }).await?;
        match rows(res, "read queue")?.maybe_first_row::<(Vec<u8>,)>().map_err(|e| internal("read queue", e))? {
            Some((body,)) => Ok(Some(dec("queue", &body)?)),
            None => Ok(None),
        }
    }

    #[instrument(name = "storage.scylla.list_queues", skip_all, fields(tenant = %tenant))]
    async fn list_queues(&self, tenant: TenantId, q: &QueueQuery) -> Result<Vec<Queue>> {
        let mut all: Vec<Queue> = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_QUEUES, &TenantKey { tenant: tenant.0 }, Some(page)).await?;
            for r in rows(res, "list queues")?.rows::<(Vec<u8>,)>().map_err(|e| internal("list queues", e))? {
                let queue: Queue = dec("queue", &r.map_err(|e| internal("list queues", e))?.0)?;
                let keep = (q.ids.is_empty() || q.ids.contains(&queue.id))
                    && q.name.as_ref().is_none_or(|n| &queue.name == n)
                    && q.name_contains.as_ref().is_none_or(|n| queue.name.to_lowercase().contains(&n.to_lowercase()));
                if keep {
                    all.push(queue);
                }
            }
            match next {
                Some(s) => page = s,
                None => break,
            }
        }
        all.sort_by_key(|q| std::cmp::Reverse((q.created_at, q.id)));
        Ok(all.into_iter().skip(q.offset).take(q.limit.max(1)).collect())
    }

    #[instrument(name = "storage.scylla.put_queue", skip_all, fields(tenant = %tenant, queue = %queue.id))]
    async fn put_queue(&self, tenant: TenantId, queue: &Queue) -> Result<Option<Queue>> {
        if !queue.rules.is_empty() {
            self.exec(&INSERT_ROUTED, &RoutedRow { scope: ROUTED.into(), tenant: tenant.0, queue_id: queue.id.0 }).await?;
        }
        let values = QueueRow { tenant: tenant.0, queue_id: queue.id.0, body: enc(queue) };
        let (replaced, _) = lwt_outcome(self.exec(&UPDATE_QUEUE, &values).await?, "replace queue")?;
        Ok(replaced.then(|| queue.clone()))
    }

    #[instrument(name = "storage.scylla.delete_queue", skip_all, fields(tenant = %tenant, queue = %id))]
    async fn delete_queue(&self, tenant: TenantId, id: QueueId) -> Result<bool> {
        if self.get_queue(tenant, id).await?.is_none() {
            return Ok(false);
        }
        // Items first, the queue last: an interrupted delete is finished by calling it again.
        // One at a time: they share a partition, so Paxos would serialize them anyway.
        for (item, _) in self.all_queue_items(tenant, id).await? {
            self.delete_queue_item(tenant, id, item.id, item.run_id).await?;
        }
        let (deleted, _) = lwt_outcome(self.exec(&DELETE_QUEUE, &QueueKey { tenant: tenant.0, queue_id: id.0 }).await?, "delete queue")?;
        self.exec(&DELETE_ROUTED, &RoutedRow { scope: ROUTED.into(), tenant: tenant.0, queue_id: id.0 }).await?;
        Ok(deleted)
    }

    #[instrument(name = "storage.scylla.queues_with_rules", skip_all)]
    async fn queues_with_rules(&self) -> Result<Vec<(TenantId, Queue)>> {
        let mut keys = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_ROUTED, &ScopeKey { scope: ROUTED.into() }, Some(page)).await?;
            for r in rows(res, "list routed queues")?.rows::<(Uuid, Uuid)>().map_err(|e| internal("list routed queues", e))? {
                let (t, q) = r.map_err(|e| internal("list routed queues", e))?;
                keys.push((TenantId(t), QueueId(q)));
            }
            match next {
                Some(s) => page = s,
                None => break,
            }
        }
        let queues: Vec<_> = futures::stream::iter(keys)
            .map(|(t, q)| async move { self.get_queue(t, q).await.map(|queue| queue.map(|queue| (t, queue))) })
            .buffered(FANOUT)
            .try_collect()
            .await?;
        Ok(queues.into_iter().flatten().filter(|(_, q)| !q.rules.is_empty()).collect())
    }

    #[instrument(name = "storage.scylla.add_queue_items", skip_all, fields(tenant = %tenant, queue = %queue, items = items.len()))]
    async fn add_queue_items(&self, tenant: TenantId, queue: QueueId, items: Vec<QueueItem>) -> Result<Vec<QueueItem>> {
        let mut out: Vec<QueueItem> = Vec::with_capacity(items.len());
        // Where each run's item is in `out`: a run listed twice gets one item.
        let mut added: HashMap<RunId, usize> = HashMap::new();
        for item in items {
            let it = match added.get(&item.run_id) {
                Some(i) => out[*i].clone(),
                None => self.add_queue_item(tenant, queue, &item).await?,
            };
            added.insert(it.run_id, out.len());
            out.push(it);
        }
        Ok(out)
    }

    #[instrument(name = "storage.scylla.list_queue_items", skip_all, fields(tenant = %tenant, queue = %queue))]
    async fn list_queue_items(&self, tenant: TenantId, queue: QueueId) -> Result<Vec<QueueItem>> {
        Ok(self.all_queue_items(tenant, queue).await?.into_iter().map(|(it, _)| it).collect())
    }

    #[instrument(name = "storage.scylla.get_queue_item", skip_all, fields(tenant = %tenant, queue = %queue, item = %item))]
    async fn get_queue_item(&self, tenant: TenantId, queue: QueueId, item: Uuid) -> Result<Option<QueueItem>> {
        Ok(self.queue_item_versioned(tenant, queue, item, false).await?.map(|(it, _)| it))
    }

    #[instrument(name = "storage.scylla.update_queue_item", skip_all, fields(tenant = %tenant, queue = %queue, item = %item))]
    async fn update_queue_item(&self, tenant: TenantId, queue: QueueId, item: Uuid, mut update: ItemUpdate) -> Result<Option<QueueItem>> {
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            let Some((mut it, version)) = self.queue_item_versioned(tenant, queue, item, attempt > 0).await? else { return Ok(None) };
            if !update(&mut it)? {
                return Ok(Some(it));
            }
            let values = UpdateItem {
                tenant: tenant.0,
                queue_id: queue.0,
                item_id: item.as_bytes().to_vec(),
                body: enc(&it),
                version: version + 1,
                expected_version: version,
            };
            // A timeout is returned, not retried: the update may have applied, and running the
            // closure on its own result could apply it twice.
            let (applied, _) = lwt_outcome(self.exec(&UPDATE_ITEM, &values).await?, "update queue item")?;
            if applied {
                return Ok(Some(it));
            }
            debug!(item = %item, attempt, "lost an item compare-and-set, updating again");
        }
        Err(StorageError::new(StorageErrorKind::Unavailable, format!("scylla: queue item {item} is contended")))
    }

    #[instrument(name = "storage.scylla.delete_queue_items", skip_all, fields(tenant = %tenant, queue = %queue, items = items.len()))]
    async fn delete_queue_items(&self, tenant: TenantId, queue: QueueId, items: &[Uuid]) -> Result<usize> {
        let mut n = 0;
        for id in items {
            let Some((it, _)) = self.queue_item_versioned(tenant, queue, *id, false).await? else { continue };
            n += usize::from(self.delete_queue_item(tenant, queue, it.id, it.run_id).await?);
        }
        Ok(n)
    }

    #[instrument(name = "storage.scylla.take_next_item", skip_all, fields(tenant = %tenant, queue = %queue))]
    async fn take_next_item(
        &self,
        tenant: TenantId,
        queue: QueueId,
        reviewer: &str,
        now: Timestamp,
        until: Timestamp,
        reviewers_needed: u32,
    ) -> Result<Option<QueueItem>> {
        let lease = Lease { reviewer: reviewer.to_owned(), until };
        let mut page = PagingState::start();
        loop {
            let (items, next) = self.queue_item_page(tenant, queue, page).await?;
            for (item, version) in items {
                if !item.available_to(reviewer, now, reviewers_needed) {
                    continue;
                }
                if let Some(leased) = self.lease_item(tenant, queue, item, version, &lease, now, reviewers_needed).await? {
                    return Ok(Some(leased));
                }
            }
            match next {
                Some(s) => page = s,
                None => return Ok(None),
            }
        }
    }
}
