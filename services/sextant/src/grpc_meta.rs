//! The standard services every gRPC port serves beside Sextant's own, so generic tooling works
//! without Sextant's `.proto` files: `grpc.health.v1.Health` (load balancers, Kubernetes `grpc`
//! probes, `grpc_health_probe`) and server reflection v1 and v1alpha (`grpcurl`, Postman,
//! `grpcui`). Neither needs an API key: health says only whether the process is ready, and
//! reflection only describes the API (docs/grpc.md).

use std::time::Duration;

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use sextant_proto::pb;

/// Every `sextant.v1` service, as the API role serves them.
pub const API_SERVICES: [&str; 6] = [
    pb::run_service_server::SERVICE_NAME,
    pb::feedback_service_server::SERVICE_NAME,
    pb::annotation_queue_service_server::SERVICE_NAME,
    pb::dataset_service_server::SERVICE_NAME,
    pb::evaluation_service_server::SERVICE_NAME,
    pb::prompt_service_server::SERVICE_NAME,
];

/// How often readiness is re-checked for the health service (it is cheap: in-memory state).
const READINESS_POLL: Duration = Duration::from_secs(1);

/// The names health reports on: the whole server (`""`, as the health protocol defines it) and
/// each service served.
fn health_names<'a>(served: &'a [&'static str]) -> impl Iterator<Item = &'static str> + 'a {
    std::iter::once("").chain(served.iter().copied())
}

/// Marks everything NOT_SERVING: before the first readiness check, so a probe never sees
/// SERVING from a process that has not been found ready, and while draining on shutdown.
pub async fn set_not_serving(reporter: &HealthReporter, served: &[&'static str]) {
    for name in health_names(served) {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
}

/// Keeps health in step with readiness (`/readyz`'s check, `not_ready` returns why not) until
/// `stop`: SERVING while ready, NOT_SERVING otherwise. Watchers (`Health/Watch`) are told of
/// each change. On stop everything becomes NOT_SERVING, so balancers move away while the
/// server drains.
pub async fn follow_readiness<F, Fut>(reporter: HealthReporter, served: Vec<&'static str>, not_ready: F, mut stop: watch::Receiver<bool>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let mut last = None;
    loop {
        let reason = not_ready().await;
        let status = if reason.is_none() { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last != Some(status) {
            match &reason {
                None => info!("gRPC health: SERVING"),
                Some(r) => warn!(reason = %r, "gRPC health: NOT_SERVING"),
            }
            for name in health_names(&served) {
                reporter.set_service_status(name, status).await;
            }
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(READINESS_POLL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    set_not_serving(&reporter, &served).await;
}

/// Server reflection, v1 and v1alpha (older clients only speak the latter), over the
/// descriptors of Sextant's protos, `google/protobuf/timestamp.proto` and the health and
/// reflection protos themselves. It lists the services this process serves: `served`, health
/// and reflection.
pub fn reflection(
    served: &[&'static str],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
)> {
    let listed = served.iter().copied().chain([
        tonic_health::pb::health_server::SERVICE_NAME,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    ]);
    let builder = || {
        listed.clone().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(sextant_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // Each version's builder adds its own descriptors; these add the other's.
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET),
            |b, name| b.with_service_name(name),
        )
    };
    let v1 = builder().build_v1().map_err(|e| anyhow::anyhow!("gRPC reflection (v1): {e}"))?;
    let v1alpha = builder().build_v1alpha().map_err(|e| anyhow::anyhow!("gRPC reflection (v1alpha): {e}"))?;
    Ok((v1, v1alpha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::HealthCheckRequest;

    async fn status(health: &impl Health, service: &str) -> Result<i32, tonic::Code> {
        health
            .check(tonic::Request::new(HealthCheckRequest { service: service.into() }))
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code())
    }

    #[tokio::test]
    async fn health_follows_readiness_and_ends_not_serving() {
        let (reporter, server) = tonic_health::server::health_reporter();
        let health = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        drop(server);
        let served = vec![API_SERVICES[0], API_SERVICES[4]];
        set_not_serving(&reporter, &served).await;
        let serving = ServingStatus::Serving as i32;
        let not_serving = ServingStatus::NotServing as i32;
        assert_eq!(status(&health, "").await, Ok(not_serving), "not SERVING before readiness is known");

        let ready = Arc::new(AtomicBool::new(true));
        let (stop_tx, stop_rx) = watch::channel(false);
        let r = ready.clone();
        let task = tokio::spawn(follow_readiness(
            reporter,
            served,
            move || {
                let r = r.clone();
                async move { (!r.load(Ordering::SeqCst)).then(|| "event bus not ready".to_string()) }
            },
            stop_rx,
        ));
        let wait_for = |service: &'static str, want: i32| {
            let health = &health;
            async move {
                for _ in 0..200 {
                    if status(health, service).await == Ok(want) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("{service:?} never became {want}");
            }
        };
        wait_for("", serving).await;
        assert_eq!(status(&health, "sextant.v1.RunService").await, Ok(serving));
        assert_eq!(status(&health, "sextant.v1.EvaluationService").await, Ok(serving));
        assert_eq!(status(&health, "sextant.v1.PromptService").await, Err(tonic::Code::NotFound), "a service not served is unknown");

        ready.store(false, Ordering::SeqCst);
        wait_for("sextant.v1.RunService", not_serving).await;
        assert_eq!(status(&health, "").await, Ok(not_serving));
        ready.store(true, Ordering::SeqCst);
        wait_for("", serving).await;

        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(status(&health, "").await, Ok(not_serving), "draining is NOT_SERVING");
    }

    #[test]
    fn reflection_builds_over_every_descriptor() {
        reflection(&API_SERVICES).expect("the descriptor sets are valid and complete");
        reflection(&[]).expect("a process without the API role serves reflection too");
    }
}
