//! Online evaluators in the embedded store.
//!
//! Keyspace `online_evaluators`: `T E` → OnlineEvaluatorDef (T = tenant, E = evaluator id).
//! A version replaces the stored one only if its `updated_at` is newer.

use uuid::Uuid;

use sextant_core::evaluator::OnlineEvaluatorDef;
use sextant_core::TenantId;

use super::{backend, dec, enc, Inner, Key};
use crate::Result;

impl Inner {
    pub(super) fn put_online_evaluator(&self, t: TenantId, e: &OnlineEvaluatorDef) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = Key::new().id(t.as_bytes()).id(e.id.as_bytes()).0;
        if let Some(v) = self.online_evaluators.get(&key).map_err(|err| backend("read online evaluator", err))? {
            let stored: OnlineEvaluatorDef = dec("online evaluator", &v)?;
            if stored.updated_at >= e.updated_at {
                return Ok(());
            }
        }
        self.online_evaluators.insert(key, enc(e)).map_err(|err| backend("write online evaluator", err))
    }

    pub(super) fn get_online_evaluator(&self, t: TenantId, id: Uuid) -> Result<Option<OnlineEvaluatorDef>> {
        let key = Key::new().id(t.as_bytes()).id(id.as_bytes()).0;
        match self.online_evaluators.get(&key).map_err(|err| backend("read online evaluator", err))? {
            Some(v) => Ok(Some(dec("online evaluator", &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn list_online_evaluators(&self, t: TenantId) -> Result<Vec<OnlineEvaluatorDef>> {
        let mut out = Vec::new();
        for g in self.online_evaluators.prefix(t.as_bytes()) {
            let (_, v) = g.into_inner().map_err(|err| backend("scan online evaluators", err))?;
            out.push(dec("online evaluator", &v)?);
        }
        Ok(out)
    }
}
