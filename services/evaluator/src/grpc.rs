//! The gRPC `EvaluationService` (`proto/sextant/v1/evaluation.proto`): the comparison, over
//! the same code as REST.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{field, instrument};

use sextant_auth::Authenticator;
use sextant_proto::grpc::authenticate;
use sextant_proto::pb;
use sextant_proto::pb::evaluation_service_server::{EvaluationService, EvaluationServiceServer};
use sextant_proto::ApiError;
use sextant_storage::Storage;

use crate::compare::{compare, render, CompareOptions};

pub struct EvaluationGrpc {
    store: Arc<dyn Storage>,
    auth: Arc<Authenticator>,
}

pub fn evaluation_service(store: Arc<dyn Storage>, auth: Arc<Authenticator>) -> EvaluationServiceServer<EvaluationGrpc> {
    EvaluationServiceServer::new(EvaluationGrpc { store, auth })
}

#[tonic::async_trait]
impl EvaluationService for EvaluationGrpc {
    #[instrument(name = "grpc.compare_experiments", skip_all, fields(tenant = field::Empty))]
    async fn compare_experiments(
        &self,
        req: Request<pb::CompareExperimentsRequest>,
    ) -> Result<Response<pb::CompareExperimentsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        for (k, v) in [("baseline", &r.baseline), ("candidate", &r.candidate)] {
            if v.is_empty() {
                return Err(ApiError::unprocessable(format!("{k} is required (an experiment id or name)")).into());
            }
        }
        let mut opts = CompareOptions::default();
        if let Some(c) = r.confidence {
            opts.confidence = c;
        }
        if let Some(n) = r.resamples {
            opts.resamples = n as usize;
        }
        opts.lower_is_better = r.lower_is_better.into_iter().collect();
        opts.gate_latency = r.gate_latency;
        for (k, v) in r.thresholds {
            if !v.is_finite() {
                return Err(ApiError::unprocessable(format!("thresholds.{k}: expected a finite number")).into());
            }
            opts.thresholds.insert(k, v);
        }
        let c = compare(self.store.as_ref(), p.tenant, &r.baseline, &r.candidate, &opts).await?;
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(Response::new(pb::CompareExperimentsResponse {
            baseline_id: c.baseline.id.to_string(),
            candidate_id: c.candidate.id.to_string(),
            shared_examples: n(c.shared_examples),
            metrics: c
                .metrics
                .iter()
                .map(|m| pb::MetricComparison {
                    metric: m.metric.clone(),
                    lower_is_better: m.lower_is_better,
                    baseline_mean: m.baseline_mean,
                    candidate_mean: m.candidate_mean,
                    baseline_n: n(m.baseline_n),
                    candidate_n: n(m.candidate_n),
                    shared_n: n(m.shared_n),
                    delta: m.delta,
                    delta_pct: m.delta_pct,
                    ci_low: m.ci_low,
                    ci_high: m.ci_high,
                    verdict: format!("{:?}", m.verdict).to_uppercase(),
                    threshold: m.threshold,
                    below_threshold: m.below_threshold,
                    gated: m.gated,
                })
                .collect(),
            passed: c.passed,
            failures: c.failures.clone(),
            report: render(&c),
        }))
    }
}
