//! Logging and metrics set-up: `tracing` to stderr (text or JSON) and a Prometheus recorder
//! rendered at `/metrics`.

use std::sync::OnceLock;

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Upper bounds (seconds) of every `*_seconds` histogram. Bounds at 0.1 s and 2 s make the
/// ack and projection-lag targets exact reads (`le="0.1"`, `le="2"`).
const SECONDS_BUCKETS: [f64; 24] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0,
    60.0,
];
/// Upper bounds of `sextant_ingest_batch_runs` (runs per request).
const BATCH_BUCKETS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];
/// How often recorded samples are folded into the histograms between scrapes, so that an
/// unscraped server does not accumulate them.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global metrics recorder once per process.
///
/// Histograms are exported as Prometheus histograms (cumulative buckets), not summaries:
/// buckets add up across replicas and over any range, which a summary's quantiles do not,
/// and the exporter's rolling summaries lose samples (a first scrape keeps only the newest
/// few dozen), which made lag quantiles read from them wrong.
pub fn init_metrics() {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sextant_ingest_batch_runs".into()), &BATCH_BUCKETS))
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
        Some(handle)
    });
}

pub fn render_metrics() -> String {
    init_metrics();
    PROMETHEUS.get().and_then(|h| h.as_ref()).map(PrometheusHandle::render).unwrap_or_default()
}

pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_metrics_are_histograms_with_the_target_bounds() {
        init_metrics();
        for v in [0.05, 1.7, 2.5] {
            metrics::histogram!("sextant_telemetry_test_lag_seconds").record(v);
        }
        metrics::histogram!("sextant_ingest_batch_runs").record(100.0);
        let text = render_metrics();
        for line in [
            "sextant_telemetry_test_lag_seconds_bucket{le=\"0.1\"} 1",
            "sextant_telemetry_test_lag_seconds_bucket{le=\"1.5\"} 1",
            "sextant_telemetry_test_lag_seconds_bucket{le=\"2\"} 2",
            "sextant_telemetry_test_lag_seconds_bucket{le=\"+Inf\"} 3",
            "sextant_telemetry_test_lag_seconds_count 3",
            "sextant_ingest_batch_runs_bucket{le=\"100\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("quantile="), "no summaries: {text}");
    }
}
