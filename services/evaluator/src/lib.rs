//! The evaluator service: deciding whether a new prompt or model may ship.
//!
//! * [`scorers`]: server-side evaluators, configured as JSON: rules (keywords, forbidden
//!   phrases, length, regex, JSON and JSON Schema, exact and fuzzy match against the
//!   reference, numeric claims) and LLM-as-judge through any OpenAI-compatible endpoint.
//! * [`run`]: evaluators run on the server over an experiment's runs, results stored as
//!   feedback; resumable (result ids derive from run, evaluator and config).
//! * [`dataset_evaluators`]: evaluators configured on a dataset, versioned, scoring every
//!   experiment run against it as it finishes.
//! * [`online`]: rules from the configuration score sampled production runs as they
//!   finish; watch windows publish an alert event and call a webhook when a score drops.
//! * [`compare`]: two experiments compared per metric over their shared examples (mean,
//!   delta, paired bootstrap confidence interval), classified improved / regressed / neutral;
//!   the deploy gate's verdict.
//! * [`platform`]: LangSmith's online-evaluators API (`/platform/evaluators`): evaluator
//!   definitions stored event-sourced; they score nothing by themselves (see its docs).
//! * [`http`], [`grpc`]: the comparison over REST (`POST /experiments/compare`) and gRPC
//!   (`EvaluationService`).

pub mod compare;
pub mod dataset_evaluators;
mod finished;
pub mod grpc;
pub mod http;
pub mod online;
pub mod platform;
pub mod run;
pub mod scorers;

/// Installs rustls' ring crypto provider for the process, if none is installed yet. reqwest is
/// built without its default (aws-lc-rs) provider, so every process that builds an HTTP
/// client calls this first (the server and CLI in `main`, the judge and webhook clients, the
/// test harnesses).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
