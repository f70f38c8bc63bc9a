//! Online evaluators in ScyllaDB.
//!
//! Table (see `cql/0008_online_evaluators.cql`):
//! * `online_evaluators` ((T), E) → body — written `USING TIMESTAMP` its `updated_at`, so the
//!   newest version wins whatever order versions arrive in.

use async_trait::async_trait;
use scylla::response::PagingState;
use tracing::instrument;
use uuid::Uuid;

use sextant_core::evaluator::OnlineEvaluatorDef;
use sextant_core::TenantId;

use super::statements::*;
use super::{dec, enc, internal, rows, ScyllaStore};
use crate::{EvaluatorStore, Result};

#[async_trait]
impl EvaluatorStore for ScyllaStore {
    #[instrument(name = "storage.scylla.put_online_evaluator", skip_all, fields(tenant = %tenant))]
    async fn put_online_evaluator(&self, tenant: TenantId, e: &OnlineEvaluatorDef) -> Result<()> {
        let row =
            OnlineEvaluatorRow { tenant: tenant.0, evaluator_id: e.id.as_bytes().to_vec(), body: enc(e), write_ts: e.updated_at.micros() };
        self.exec(&PUT_ONLINE_EVALUATOR, &row).await.map(|_| ())
    }

    #[instrument(name = "storage.scylla.get_online_evaluator", skip_all, fields(tenant = %tenant))]
    async fn get_online_evaluator(&self, tenant: TenantId, id: Uuid) -> Result<Option<OnlineEvaluatorDef>> {
        let key = OnlineEvaluatorKey { tenant: tenant.0, evaluator_id: id.as_bytes().to_vec() };
        let res = self.exec(&GET_ONLINE_EVALUATOR, &key).await?;
        match rows(res, "read online evaluator")?.maybe_first_row::<(Vec<u8>,)>().map_err(|e| internal("read online evaluator", e))? {
            Some((body,)) => Ok(Some(dec("online evaluator", &body)?)),
            None => Ok(None),
        }
    }

    #[instrument(name = "storage.scylla.list_online_evaluators", skip_all, fields(tenant = %tenant))]
    async fn list_online_evaluators(&self, tenant: TenantId) -> Result<Vec<OnlineEvaluatorDef>> {
        let mut out = Vec::new();
        let mut page = PagingState::start();
        loop {
            let (res, next) = self.exec_page(&LIST_ONLINE_EVALUATORS, &TenantKey { tenant: tenant.0 }, Some(page)).await?;
            for r in rows(res, "list online evaluators")?.rows::<(Vec<u8>,)>().map_err(|e| internal("list online evaluators", e))? {
                out.push(dec("online evaluator", &r.map_err(|e| internal("list online evaluators", e))?.0)?);
            }
            match next {
                Some(s) => page = s,
                None => return Ok(out),
            }
        }
    }
}
