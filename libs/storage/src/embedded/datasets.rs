//! Datasets in the embedded store.
//!
//! Keyspaces (T = tenant, D = dataset, E = example id, V = version time `as_of`, J = job):
//! * `datasets`          T D       → Dataset
//! * `dataset_names`     T name    → D
//! * `example_versions`  T D E V   → ExampleChange — an example's history, versions in order
//! * `example_loc`       T E       → D             — where an example is, by id
//! * `dataset_versions`  T D V     → ()            — the dataset's versions
//! * `dataset_tags`      T D tag   → (V, moved at)
//! * `blobs`             T sha256  → bytes         — attachments, stored once
//! * `curation_jobs`     T J       → CurationJob
//!
//! Reading "as of V" walks `example_versions` in key order and keeps, per example, the newest
//! version at or before V: one pass, in example-id order, nothing held but the current example.

use std::ops::Bound;

use serde_json::{Map, Value};
use uuid::Uuid;

use sextant_core::dataset::{CurationJob, ExampleChange};
use sextant_core::{Dataset, DatasetId, Example, ExampleId, TenantId, Timestamp};

use super::{backend, dec, enc, time_from, Inner, Key};
use crate::{DatasetCreate, DatasetQuery, ExampleQuery, Result, StorageError, StorageErrorKind};

fn dataset_key(t: TenantId, d: DatasetId) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(d.as_bytes()).0
}

fn name_key(t: TenantId, name: &str) -> Vec<u8> {
    Key::new().id(t.as_bytes()).bytes(name.as_bytes()).0
}

fn version_key(t: TenantId, d: DatasetId, e: ExampleId, as_of: Timestamp) -> Vec<u8> {
    Key::new().id(t.as_bytes()).id(d.as_bytes()).id(e.as_bytes()).time(as_of.micros()).0
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

fn metadata_matches(md: Option<&sextant_core::RawJson>, want: &Map<String, Value>) -> bool {
    let md = md.map(sextant_core::RawJson::to_value_or_null).unwrap_or(Value::Null);
    want.iter().all(|(k, v)| md.get(k) == Some(v))
}

/// Walks one dataset's example histories in key order and yields each example's state as of
/// a version. Ids come in byte order.
struct AsOfScan {
    iter: fjall::Iter,
    as_of: Option<Timestamp>,
    /// The example being assembled: its id and newest eligible version so far.
    current: Option<(ExampleId, Option<ExampleChange>)>,
    done: bool,
}

impl AsOfScan {
    fn new(inner: &Inner, t: TenantId, d: DatasetId, after: Option<ExampleId>, as_of: Option<Timestamp>) -> Self {
        let prefix = dataset_key(t, d);
        let end = prefix_end(&prefix);
        let start = match after {
            Some(a) => prefix_end(&Key::new().id(t.as_bytes()).id(d.as_bytes()).id(a.as_bytes()).0),
            None => prefix,
        };
        let iter = inner.example_versions.range::<Vec<u8>, _>((Bound::Included(start), Bound::Excluded(end)));
        Self { iter, as_of, current: None, done: false }
    }

    /// The next example present at the version (deleted ones are skipped).
    fn next_example(&mut self) -> Result<Option<Example>> {
        loop {
            if self.done {
                return Ok(match self.current.take() {
                    Some((_, Some(ExampleChange::Put(e)))) => Some(e),
                    _ => None,
                });
            }
            let Some(g) = self.iter.next() else {
                self.done = true;
                continue;
            };
            let (k, v) = g.into_inner().map_err(|e| backend("scan examples", e))?;
            let id = ExampleId::from_bytes(k[32..48].try_into().expect("example version keys are 56 bytes"));
            let version = time_from(&k[48..56]);
            let finished = match &self.current {
                Some((cur, _)) if *cur != id => self.current.take(),
                _ => None,
            };
            if self.current.is_none() {
                self.current = Some((id, None));
            }
            if self.as_of.is_none_or(|a| version <= a.micros()) {
                let change: ExampleChange = dec("example version", &v)?;
                self.current.as_mut().expect("set above").1 = Some(change);
            }
            if let Some((_, Some(ExampleChange::Put(e)))) = finished {
                return Ok(Some(e));
            }
        }
    }
}

fn example_matches(e: &Example, q: &ExampleQuery) -> bool {
    (q.splits.is_empty() || e.splits().iter().any(|s| q.splits.contains(s))) && q.metadata.as_ref().is_none_or(|m| e.metadata_matches(m))
}

impl Inner {
    pub(super) fn get_dataset(&self, t: TenantId, d: DatasetId) -> Result<Option<Dataset>> {
        match self.datasets.get(dataset_key(t, d)).map_err(|e| backend("read dataset", e))? {
            Some(v) => Ok(Some(dec("dataset", &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn dataset_by_name(&self, t: TenantId, name: &str) -> Result<Option<Dataset>> {
        match self.dataset_names.get(name_key(t, name)).map_err(|e| backend("read dataset name", e))? {
            Some(v) if v.len() == 16 => self.get_dataset(t, DatasetId::from_bytes(v[..].try_into().expect("16 bytes"))),
            _ => Ok(None),
        }
    }

    pub(super) fn create_dataset(&self, t: TenantId, d: &Dataset) -> Result<DatasetCreate> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = self.get_dataset(t, d.id)? {
            return Ok(DatasetCreate::AlreadyExists(existing));
        }
        if let Some(other) = self.dataset_by_name(t, &d.name)? {
            return Ok(DatasetCreate::NameTaken(other));
        }
        let mut batch = self.db.batch();
        batch.insert(&self.datasets, dataset_key(t, d.id), enc(d));
        batch.insert(&self.dataset_names, name_key(t, &d.name), d.id.as_bytes().to_vec());
        batch.commit().map_err(|e| backend("write dataset", e))?;
        Ok(DatasetCreate::Created(d.clone()))
    }

    pub(super) fn put_dataset(&self, t: TenantId, d: &Dataset) -> Result<bool> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(stored) = self.get_dataset(t, d.id)? else { return Ok(false) };
        if stored.modified_at > d.modified_at {
            return Ok(true);
        }
        let mut batch = self.db.batch();
        if stored.name != d.name {
            if let Some(other) = self.dataset_by_name(t, &d.name)? {
                if other.id != d.id {
                    return Err(StorageError::new(StorageErrorKind::Conflict, format!("a dataset named {:?} already exists", d.name)));
                }
            }
            batch.remove(&self.dataset_names, name_key(t, &stored.name));
            batch.insert(&self.dataset_names, name_key(t, &d.name), d.id.as_bytes().to_vec());
        }
        batch.insert(&self.datasets, dataset_key(t, d.id), enc(d));
        batch.commit().map_err(|e| backend("write dataset", e))?;
        Ok(true)
    }

    pub(super) fn list_datasets(&self, t: TenantId, q: &DatasetQuery) -> Result<Vec<Dataset>> {
        let mut all = Vec::new();
        for g in self.datasets.prefix(t.as_bytes()) {
            let (_, v) = g.into_inner().map_err(|e| backend("scan datasets", e))?;
            let d: Dataset = dec("dataset", &v)?;
            let keep = (q.ids.is_empty() || q.ids.contains(&d.id))
                && q.name.as_ref().is_none_or(|n| &d.name == n)
                && q.name_contains.as_ref().is_none_or(|n| d.name.to_lowercase().contains(&n.to_lowercase()))
                && q.data_type.is_none_or(|dt| d.data_type == dt)
                && q.metadata.as_ref().is_none_or(|m| metadata_matches(d.metadata.as_ref(), m));
            if keep {
                all.push(d);
            }
        }
        all.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id)));
        Ok(all.into_iter().skip(q.offset).take(q.limit.max(1)).collect())
    }

    pub(super) fn delete_dataset(&self, t: TenantId, d: DatasetId) -> Result<bool> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(stored) = self.get_dataset(t, d)? else { return Ok(false) };
        let prefix = dataset_key(t, d);
        let mut batch = self.db.batch();
        let mut last = None;
        for g in self.example_versions.prefix(&prefix) {
            let k = g.key().map_err(|e| backend("scan examples", e))?;
            let id = ExampleId::from_bytes(k[32..48].try_into().expect("56-byte keys"));
            if last != Some(id) {
                batch.remove(&self.example_loc, Key::new().id(t.as_bytes()).id(id.as_bytes()).0);
                last = Some(id);
            }
            batch.remove(&self.example_versions, k.to_vec());
        }
        for ks in [&self.dataset_versions, &self.dataset_tags] {
            for g in ks.prefix(&prefix) {
                batch.remove(ks, g.key().map_err(|e| backend("scan dataset", e))?.to_vec());
            }
        }
        batch.remove(&self.dataset_names, name_key(t, &stored.name));
        batch.remove(&self.datasets, prefix);
        batch.commit().map_err(|e| backend("delete dataset", e))?;
        Ok(true)
    }

    pub(super) fn datasets_with_rules(&self) -> Result<Vec<(TenantId, Dataset)>> {
        let mut out = Vec::new();
        for g in self.datasets.iter() {
            let (k, v) = g.into_inner().map_err(|e| backend("scan datasets", e))?;
            let d: Dataset = dec("dataset", &v)?;
            if !d.rules.is_empty() {
                out.push((TenantId::from_bytes(k[..16].try_into().expect("32-byte keys")), d));
            }
        }
        Ok(out)
    }

    pub(super) fn apply_example_changes(&self, t: TenantId, d: DatasetId, as_of: Timestamp, changes: &[ExampleChange]) -> Result<()> {
        let mut batch = self.db.batch();
        for c in changes {
            let id = c.id();
            batch.insert(&self.example_versions, version_key(t, d, id, as_of), enc(c));
            batch.insert(&self.example_loc, Key::new().id(t.as_bytes()).id(id.as_bytes()).0, d.as_bytes().to_vec());
        }
        batch.insert(&self.dataset_versions, Key::new().id(t.as_bytes()).id(d.as_bytes()).time(as_of.micros()).0, Vec::new());
        batch.commit().map_err(|e| backend("write examples", e))
    }

    pub(super) fn list_examples(&self, t: TenantId, d: DatasetId, q: &ExampleQuery) -> Result<Vec<Example>> {
        let limit = q.limit.max(1);
        let mut out = Vec::new();
        let mut skip = q.offset;
        if !q.ids.is_empty() {
            let mut ids = q.ids.clone();
            ids.sort();
            ids.dedup();
            for id in ids.into_iter().filter(|id| q.after.is_none_or(|a| *id > a)) {
                if let Some(e) = self.example_at(t, d, id, q.as_of)? {
                    if example_matches(&e, q) {
                        if skip > 0 {
                            skip -= 1;
                        } else if out.len() < limit {
                            out.push(e);
                        }
                    }
                }
            }
            return Ok(out);
        }
        let mut scan = AsOfScan::new(self, t, d, q.after, q.as_of);
        while let Some(e) = scan.next_example()? {
            if !example_matches(&e, q) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn count_examples(&self, t: TenantId, d: DatasetId, as_of: Option<Timestamp>) -> Result<u64> {
        let mut scan = AsOfScan::new(self, t, d, None, as_of);
        let mut n = 0;
        while scan.next_example()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// One example's state as of a version.
    fn example_at(&self, t: TenantId, d: DatasetId, id: ExampleId, as_of: Option<Timestamp>) -> Result<Option<Example>> {
        let prefix = Key::new().id(t.as_bytes()).id(d.as_bytes()).id(id.as_bytes()).0;
        let upper = match as_of {
            Some(a) => Bound::Included(version_key(t, d, id, a)),
            None => Bound::Excluded(prefix_end(&prefix)),
        };
        let newest = self.example_versions.range::<Vec<u8>, _>((Bound::Included(prefix), upper)).next_back();
        match newest {
            Some(g) => {
                let (_, v) = g.into_inner().map_err(|e| backend("read example", e))?;
                match dec::<ExampleChange>("example version", &v)? {
                    ExampleChange::Put(e) => Ok(Some(e)),
                    ExampleChange::Delete(_) => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    pub(super) fn get_example(&self, t: TenantId, id: ExampleId, as_of: Option<Timestamp>) -> Result<Option<Example>> {
        let loc = self.example_loc.get(Key::new().id(t.as_bytes()).id(id.as_bytes()).0).map_err(|e| backend("read example location", e))?;
        match loc {
            Some(v) if v.len() == 16 => self.example_at(t, DatasetId::from_bytes(v[..].try_into().expect("16 bytes")), id, as_of),
            _ => Ok(None),
        }
    }

    pub(super) fn list_versions(&self, t: TenantId, d: DatasetId) -> Result<Vec<Timestamp>> {
        let mut out = Vec::new();
        for g in self.dataset_versions.prefix(dataset_key(t, d)).rev() {
            let k = g.key().map_err(|e| backend("scan versions", e))?;
            out.push(Timestamp(time_from(&k[32..40])));
        }
        Ok(out)
    }

    pub(super) fn set_tag(&self, t: TenantId, d: DatasetId, tag: &str, as_of: Timestamp, at: Timestamp) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = Key::new().id(t.as_bytes()).id(d.as_bytes()).bytes(tag.as_bytes()).0;
        if let Some(v) = self.dataset_tags.get(&key).map_err(|e| backend("read tag", e))? {
            let (_, stored_at): (i64, i64) = dec("tag", &v)?;
            if stored_at > at.micros() {
                return Ok(());
            }
        }
        self.dataset_tags.insert(key, enc(&(as_of.micros(), at.micros()))).map_err(|e| backend("write tag", e))
    }

    pub(super) fn tags(&self, t: TenantId, d: DatasetId) -> Result<Vec<(String, Timestamp)>> {
        let mut out = Vec::new();
        for g in self.dataset_tags.prefix(dataset_key(t, d)) {
            let (k, v) = g.into_inner().map_err(|e| backend("scan tags", e))?;
            let (as_of, _): (i64, i64) = dec("tag", &v)?;
            out.push((String::from_utf8_lossy(&k[32..]).into_owned(), Timestamp(as_of)));
        }
        Ok(out)
    }

    pub(super) fn put_blob(&self, t: TenantId, sha256: &str, bytes: &[u8]) -> Result<()> {
        self.blobs.insert(Key::new().id(t.as_bytes()).bytes(sha256.as_bytes()).0, bytes).map_err(|e| backend("write blob", e))
    }

    pub(super) fn get_blob(&self, t: TenantId, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.blobs.get(Key::new().id(t.as_bytes()).bytes(sha256.as_bytes()).0).map_err(|e| backend("read blob", e))?.map(|v| v.to_vec()))
    }

    pub(super) fn put_curation_job(&self, t: TenantId, job: &CurationJob) -> Result<()> {
        self.curation_jobs.insert(Key::new().id(t.as_bytes()).id(job.id.as_bytes()).0, enc(job)).map_err(|e| backend("write job", e))
    }

    pub(super) fn get_curation_job(&self, t: TenantId, id: Uuid) -> Result<Option<CurationJob>> {
        match self.curation_jobs.get(Key::new().id(t.as_bytes()).id(id.as_bytes()).0).map_err(|e| backend("read job", e))? {
            Some(v) => Ok(Some(dec("curation job", &v)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(&[1, 2, 3]), vec![1, 2, 4]);
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
    }
}
