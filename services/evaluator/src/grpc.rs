//! The gRPC `EvaluationService` (`proto/sextant/v1/evaluation.proto`): the comparison,
//! evaluation runs and dataset evaluators, over the same code as REST.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{field, instrument};

use sextant_auth::Authenticator;
use sextant_proto::grpc::{authenticate, ClientErrors};
use sextant_proto::pb;
use sextant_proto::pb::evaluation_service_server::{EvaluationService, EvaluationServiceServer};
use sextant_proto::ApiError;
use sextant_storage::Storage;

use crate::compare::{compare, render, CompareOptions};
use crate::dataset_evaluators::DatasetEvaluators;
use crate::run::{EvalProgress, EvalRunner};

type ProgressStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::EvaluationProgress, Status>> + Send>>;

pub struct EvaluationGrpc {
    store: Arc<dyn Storage>,
    runner: Arc<EvalRunner>,
    dataset_evaluators: Arc<DatasetEvaluators>,
    auth: Arc<Authenticator>,
}

/// A request carries evaluator configs (REST takes at most 1 MiB of them) or experiment names.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// A comparison or a dataset's evaluators; progress messages are tiny.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The gRPC `EvaluationService`, authenticating with `auth`; limits and compression (gzip and
/// zstd) as every Sextant service has them (`tuned_server!`).
pub fn evaluation_service(
    store: Arc<dyn Storage>,
    runner: Arc<EvalRunner>,
    dataset_evaluators: Arc<DatasetEvaluators>,
    auth: Arc<Authenticator>,
) -> ClientErrors<EvaluationServiceServer<EvaluationGrpc>> {
    sextant_proto::tuned_server!(
        EvaluationServiceServer::new(EvaluationGrpc { store, runner, dataset_evaluators, auth }),
        MAX_REQUEST_BYTES,
        MAX_RESPONSE_BYTES
    )
}

fn dataset_id(v: &str) -> Result<sextant_core::DatasetId, ApiError> {
    sextant_proto::grpc::required_uuid("dataset_id", v).map(sextant_core::DatasetId)
}

fn evaluator_to_pb(dataset: sextant_core::DatasetId, e: &sextant_core::dataset::DatasetEvaluator) -> pb::DatasetEvaluator {
    pb::DatasetEvaluator {
        dataset_id: dataset.to_string(),
        key: e.key.clone(),
        version: e.version,
        config_json: e.config.as_str().to_owned(),
        active: e.active,
        created_at: Some(sextant_proto::grpc::timestamp_to_pb(e.created_at)),
    }
}

fn progress_to_pb(p: &EvalProgress) -> pb::EvaluationProgress {
    pb::EvaluationProgress {
        total: p.total,
        scored: p.scored,
        skipped: p.skipped,
        errors: p.errors,
        unscorable: p.unscorable,
        cost_usd: p.cost_usd,
        done: p.done,
    }
}

#[tonic::async_trait]
impl EvaluationService for EvaluationGrpc {
    type RunEvaluationStream = ProgressStream;

    #[instrument(name = "grpc.run_evaluation", skip_all, fields(tenant = field::Empty))]
    async fn run_evaluation(&self, req: Request<pb::RunEvaluationRequest>) -> Result<Response<Self::RunEvaluationStream>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        if r.experiment.is_empty() {
            return Err(ApiError::unprocessable("experiment is required (an id or name)").into());
        }
        let configs = sextant_proto::grpc::json_text("evaluators_json", &r.evaluators_json)?;
        let evaluators = self.runner.parse(&configs)?;
        crate::compare::find_experiment(self.store.as_ref(), p.tenant, &r.experiment).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<pb::EvaluationProgress, Status>>(64);
        let runner = self.runner.clone();
        tokio::spawn(async move {
            let forward = {
                let out_tx = out_tx.clone();
                async move {
                    let mut rx: tokio::sync::mpsc::Receiver<EvalProgress> = rx;
                    while let Some(p) = rx.recv().await {
                        let _ = out_tx.send(Ok(progress_to_pb(&p))).await;
                    }
                }
            };
            let run = runner.run(p.tenant, &r.experiment, evaluators, tx);
            let (outcome, ()) = tokio::join!(run, forward);
            if let Err(e) = outcome {
                let _ = out_tx.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))))
    }

    #[instrument(name = "grpc.set_dataset_evaluator", skip_all, fields(tenant = field::Empty))]
    async fn set_dataset_evaluator(&self, req: Request<pb::SetDatasetEvaluatorRequest>) -> Result<Response<pb::DatasetEvaluator>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.into_inner();
        let id = dataset_id(&r.dataset_id)?;
        let config = sextant_proto::grpc::json_text("config_json", &r.config_json)?;
        let e = self.dataset_evaluators.set(p.tenant, id, &config).await?;
        Ok(Response::new(evaluator_to_pb(id, &e)))
    }

    #[instrument(name = "grpc.list_dataset_evaluators", skip_all, fields(tenant = field::Empty))]
    async fn list_dataset_evaluators(
        &self,
        req: Request<pb::ListDatasetEvaluatorsRequest>,
    ) -> Result<Response<pb::ListDatasetEvaluatorsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let id = dataset_id(&req.get_ref().dataset_id)?;
        let list = self.dataset_evaluators.list(p.tenant, id).await?;
        Ok(Response::new(pb::ListDatasetEvaluatorsResponse { evaluators: list.iter().map(|e| evaluator_to_pb(id, e)).collect() }))
    }

    #[instrument(name = "grpc.retire_dataset_evaluator", skip_all, fields(tenant = field::Empty))]
    async fn retire_dataset_evaluator(
        &self,
        req: Request<pb::RetireDatasetEvaluatorRequest>,
    ) -> Result<Response<pb::RetireDatasetEvaluatorResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let r = req.get_ref();
        self.dataset_evaluators.retire(p.tenant, dataset_id(&r.dataset_id)?, &r.key).await?;
        Ok(Response::new(pb::RetireDatasetEvaluatorResponse {}))
    }

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
