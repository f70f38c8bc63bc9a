//! The events Sextant services exchange: a versioned [`Envelope`] around a typed [`Event`],
//! encoded as MessagePack with named fields. Variants are never renamed or reused; a change of
//! meaning gets a new `…V2` variant. The committed fixtures in `fixtures/` are the contract:
//! a test decodes every one of them, so an event written today stays readable.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sextant_core::{Project, ProjectId, ProjectPatch, RunFragment, TenantId, Timestamp};

/// The streams events are published on. Each maps to one JetStream stream in distributed mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stream {
    Runs,
    Projects,
    Feedback,
    /// Dataset and example changes (dataset-curation service).
    Datasets,
    /// Prompt commits (prompt-hub service).
    Prompts,
    /// Experiments and evaluator results (evaluator service).
    Evaluations,
    /// Runs that finished and are stored ([`RunsCompletedV1`], from the run projector): what
    /// the consumers that act on finished runs read, instead of every run event's payload.
    RunCompletions,
}

impl Stream {
    pub const ALL: [Stream; 7] =
        [Stream::Runs, Stream::Projects, Stream::Feedback, Stream::Datasets, Stream::Prompts, Stream::Evaluations, Stream::RunCompletions];

    pub fn name(self) -> &'static str {
        match self {
            Self::Runs => "runs",
            Self::Projects => "projects",
            Self::Feedback => "feedback",
            Self::Datasets => "datasets",
            Self::Prompts => "prompts",
            Self::Evaluations => "evaluations",
            Self::RunCompletions => "run_completions",
        }
    }

    /// A stable one-byte tag used in storage keys.
    pub fn tag(self) -> u8 {
        match self {
            Self::Runs => 1,
            Self::Projects => 2,
            Self::Feedback => 3,
            Self::Datasets => 4,
            Self::Prompts => 5,
            Self::Evaluations => 6,
            Self::RunCompletions => 7,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event; used to drop duplicate publishes (JetStream `Nats-Msg-Id`).
    pub id: Uuid,
    pub tenant: TenantId,
    pub at_ms: i64,
    /// W3C trace context of the request that caused the event, to follow it across services.
    #[serde(default)]
    pub traceparent: Option<String>,
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    RunsIngestedV1(RunsIngestedV1),
    ProjectCreatedV1(ProjectCreatedV1),
    ProjectUpdatedV1(ProjectUpdatedV1),
    ProjectDeletedV1(ProjectDeletedV1),
    RunShareChangedV1(RunShareChangedV1),
    FeedbackPartReceivedV1(FeedbackPartReceivedV1),
    FeedbackChangedV1(FeedbackChangedV1),
    FeedbackTokenIssuedV1(FeedbackTokenIssuedV1),
    FeedbackConfigChangedV1(FeedbackConfigChangedV1),
    DatasetChangedV1(DatasetChangedV1),
    EvaluationAlertV1(EvaluationAlertV1),
    OnlineEvaluatorChangedV1(OnlineEvaluatorChangedV1),
    PromptChangedV1(PromptChangedV1),
    RunsCompletedV1(RunsCompletedV1),
}

/// Run fragments (posts and patches) of one project, as acknowledged to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunsIngestedV1 {
    pub project_id: ProjectId,
    pub fragments: Vec<RunFragment>,
}

/// Runs of one project that finished (an end time or an error arrived) and are stored, published
/// by the run projector once the [`RunsIngestedV1`] that finished them is applied and durable.
/// Annotation routing, curation rules and evaluators act on finished runs: they read these few
/// bytes per run and then the stored run, rather than each taking every run event's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunsCompletedV1 {
    pub project_id: ProjectId,
    pub runs: Vec<CompletedRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletedRun {
    pub id: sextant_core::RunId,
    /// The dataset example the run was evaluated on, if the event that finished it said so:
    /// evaluators pick experiment runs by it without a store read.
    #[serde(default)]
    pub reference_example_id: Option<Uuid>,
}

impl RunsCompletedV1 {
    /// The runs that `ingested` finished, or `None` when it finished none.
    pub fn of(ingested: &RunsIngestedV1) -> Option<Self> {
        // A post may carry the example while the patch that finishes the run does not.
        let example = |id| ingested.fragments.iter().filter(|f| f.id == id).find_map(|f| f.reference_example_id);
        let mut runs: Vec<CompletedRun> = Vec::new();
        for f in ingested.fragments.iter().filter(|f| f.end_time.is_some() || f.error.is_some()) {
            if !runs.iter().any(|r| r.id == f.id) {
                runs.push(CompletedRun { id: f.id, reference_example_id: example(f.id) });
            }
        }
        (!runs.is_empty()).then_some(Self { project_id: ingested.project_id, runs })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectCreatedV1 {
    pub project: Project,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectUpdatedV1 {
    pub project_id: ProjectId,
    pub patch: ProjectPatch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectDeletedV1 {
    pub project_id: ProjectId,
}

/// A `feedback.<id>` part that arrived inside `/runs/multipart`, kept verbatim (JSON text)
/// for the feedback service to validate and project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackPartReceivedV1 {
    pub feedback_id: Uuid,
    pub json: sextant_core::RawJson,
}

/// A feedback entry created, patched or deleted (`POST`/`PATCH`/`DELETE /feedback`, reviews
/// from annotation queues). Projected with per-field last-writer-wins on the event id, so
/// redelivered and reordered changes converge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackChangedV1 {
    pub change: sextant_core::FeedbackChange,
}

/// A run shared by public link or unshared (`share: None`). Shares are written through to the
/// store by the ingest service that publishes this, as projects are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunShareChangedV1 {
    pub run_id: sextant_core::RunId,
    pub share: Option<sextant_core::RunShare>,
}

/// A presigned feedback token issued (`POST /feedback/tokens`). Tokens never change, so
/// projecting one again is a no-op.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackTokenIssuedV1 {
    pub token: sextant_core::feedback::FeedbackToken,
}

/// A feedback config created, changed or deleted (`/feedback-configs`), as its whole new
/// version: stores keep the version with the newest `modified_at`, so redelivered and
/// reordered changes converge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackConfigChangedV1 {
    pub config: sextant_core::feedback::FeedbackConfigDef,
}

/// An online-evaluation watch window fired: a score's mean over the latest window dropped
/// beyond its threshold against the baseline. Carries the runs of the window, lowest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluationAlertV1 {
    pub rule: String,
    pub key: String,
    pub window_mean: f64,
    pub baseline: f64,
    pub window_size: u32,
    pub run_ids: Vec<sextant_core::RunId>,
    pub at: sextant_core::Timestamp,
}

/// An online evaluator created, changed or deleted (`/platform/evaluators`), as its whole new
/// version: stores keep the version with the newest `updated_at`, so redelivered and reordered
/// changes converge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineEvaluatorChangedV1 {
    pub evaluator: sextant_core::evaluator::OnlineEvaluatorDef,
}

/// A dataset created, redefined or deleted, a new version of its examples, or a tag moved.
/// Projected idempotently: an example version is keyed by (example, `as_of`), definitions and
/// tags are last-writer-wins by their time, so redelivered and reordered changes converge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetChangedV1 {
    pub change: sextant_core::dataset::DatasetChange,
}

/// A prompt repository created, redefined or deleted, a commit pushed, a tag moved or a like.
/// Projected idempotently: commits are keyed by hash, tag moves by (tag, time), definitions
/// and likes are last-writer-wins by their time, so redelivered and reordered changes converge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptChangedV1 {
    pub change: sextant_core::prompt::PromptChange,
}

tokio::task_local! {
    static TRACEPARENT: String;
}

/// Runs `f` with `traceparent` (W3C trace context) as the cause of every envelope it creates,
/// so the events of one request can be followed across services.
pub async fn with_traceparent<F: std::future::Future>(traceparent: String, f: F) -> F::Output {
    TRACEPARENT.scope(traceparent, f).await
}

/// The trace context set by [`with_traceparent`] for the current task, if any.
pub fn current_traceparent() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok()
}

/// The trace id (second field) of a W3C `traceparent`, if it is well-formed.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (parts.next().is_none()
        && hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0'))
    .then_some(trace)
}

/// The trace context for a request that arrived with `incoming` (its `traceparent` header):
/// the caller's trace continued with a new span id, or a new trace if it sent none (or garbage).
pub fn continue_or_start_trace(incoming: Option<&str>) -> String {
    let span_id = &Uuid::new_v4().simple().to_string()[..16];
    match incoming.and_then(|tp| trace_id_of(tp).map(|trace| (trace, &tp[tp.len() - 2..]))) {
        Some((trace, flags)) => format!("00-{trace}-{span_id}-{flags}"),
        None => format!("00-{}-{span_id}-01", Uuid::new_v4().simple()),
    }
}

impl Envelope {
    /// A new event, caused by the current task's trace context (see [`with_traceparent`]).
    pub fn new(tenant: TenantId, event: Event) -> Self {
        Self { id: Uuid::now_v7(), tenant, at_ms: Timestamp::now().millis(), traceparent: current_traceparent(), event }
    }

    /// The [`RunsCompletedV1`] announcing the runs `ingested` (the event of `source`) finished,
    /// if any. Its id derives from the source's, so projecting a redelivered source publishes
    /// the same event again, which the bus drops as a duplicate. It keeps the source's trace.
    pub fn completions_of(source: &Envelope, ingested: &RunsIngestedV1) -> Option<Envelope> {
        const NAMESPACE: Uuid = Uuid::from_u128(0x5e7a_47c0_c0e1_7000_8000_0000_0000_0007);
        let event = RunsCompletedV1::of(ingested)?;
        Some(Envelope {
            id: Uuid::new_v5(&NAMESPACE, source.id.as_bytes()),
            tenant: source.tenant,
            at_ms: Timestamp::now().millis(),
            traceparent: source.traceparent.clone(),
            event: Event::RunsCompletedV1(event),
        })
    }

    pub fn stream(&self) -> Stream {
        match &self.event {
            Event::RunsIngestedV1(_) => Stream::Runs,
            Event::ProjectCreatedV1(_) | Event::ProjectUpdatedV1(_) | Event::ProjectDeletedV1(_) | Event::RunShareChangedV1(_) => {
                Stream::Projects
            }
            Event::FeedbackPartReceivedV1(_)
            | Event::FeedbackChangedV1(_)
            | Event::FeedbackTokenIssuedV1(_)
            | Event::FeedbackConfigChangedV1(_) => Stream::Feedback,
            Event::DatasetChangedV1(_) => Stream::Datasets,
            Event::EvaluationAlertV1(_) | Event::OnlineEvaluatorChangedV1(_) => Stream::Evaluations,
            Event::PromptChangedV1(_) => Stream::Prompts,
            Event::RunsCompletedV1(_) => Stream::RunCompletions,
        }
    }

    /// The subject within the stream: `<stream>.<tenant>[.<project>]`, so consumers and
    /// operators can select one tenant's (or one project's) events.
    pub fn subject(&self) -> String {
        let stream = self.stream().name();
        match &self.event {
            Event::RunsIngestedV1(e) => format!("{stream}.{}.{}", self.tenant, e.project_id),
            Event::ProjectCreatedV1(e) => format!("{stream}.{}.{}", self.tenant, e.project.id),
            Event::ProjectUpdatedV1(e) => format!("{stream}.{}.{}", self.tenant, e.project_id),
            Event::ProjectDeletedV1(e) => format!("{stream}.{}.{}", self.tenant, e.project_id),
            Event::RunShareChangedV1(_) => format!("{stream}.{}", self.tenant),
            Event::FeedbackPartReceivedV1(_)
            | Event::FeedbackChangedV1(_)
            | Event::FeedbackTokenIssuedV1(_)
            | Event::FeedbackConfigChangedV1(_) => format!("{stream}.{}", self.tenant),
            Event::DatasetChangedV1(e) => format!("{stream}.{}.{}", self.tenant, e.change.dataset_id()),
            Event::EvaluationAlertV1(_) | Event::OnlineEvaluatorChangedV1(_) => format!("{stream}.{}", self.tenant),
            Event::PromptChangedV1(e) => format!("{stream}.{}.{}", self.tenant, e.change.repo_id()),
            Event::RunsCompletedV1(e) => format!("{stream}.{}.{}", self.tenant, e.project_id),
        }
    }

    pub fn kind(&self) -> &'static str {
        match &self.event {
            Event::RunsIngestedV1(_) => "RunsIngestedV1",
            Event::ProjectCreatedV1(_) => "ProjectCreatedV1",
            Event::ProjectUpdatedV1(_) => "ProjectUpdatedV1",
            Event::ProjectDeletedV1(_) => "ProjectDeletedV1",
            Event::RunShareChangedV1(_) => "RunShareChangedV1",
            Event::FeedbackPartReceivedV1(_) => "FeedbackPartReceivedV1",
            Event::FeedbackChangedV1(_) => "FeedbackChangedV1",
            Event::FeedbackTokenIssuedV1(_) => "FeedbackTokenIssuedV1",
            Event::FeedbackConfigChangedV1(_) => "FeedbackConfigChangedV1",
            Event::DatasetChangedV1(_) => "DatasetChangedV1",
            Event::EvaluationAlertV1(_) => "EvaluationAlertV1",
            Event::OnlineEvaluatorChangedV1(_) => "OnlineEvaluatorChangedV1",
            Event::PromptChangedV1(_) => "PromptChangedV1",
            Event::RunsCompletedV1(_) => "RunsCompletedV1",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode event: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode event: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// MessagePack with named fields, so adding a (defaulted) field never breaks old readers.
pub fn encode(e: &Envelope) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(e)?)
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod trace_context_tests {
    use super::*;

    #[test]
    fn trace_ids_are_read_only_from_well_formed_traceparents() {
        assert_eq!(trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_trace_is_continued_with_a_new_span_or_started() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let next = continue_or_start_trace(Some(incoming));
        assert_eq!(trace_id_of(&next), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!next.contains("00f067aa0ba902b7") && next.ends_with("-00"), "{next}");
        for none in [None, Some("garbage")] {
            let fresh = continue_or_start_trace(none);
            assert!(trace_id_of(&fresh).is_some() && !fresh.contains("4bf92f35"), "{fresh}");
        }
    }

    #[tokio::test]
    async fn envelopes_carry_the_task_trace_context() {
        let tenant = TenantId(Uuid::nil());
        let event = || Event::ProjectDeletedV1(ProjectDeletedV1 { project_id: ProjectId(Uuid::nil()) });
        assert_eq!(Envelope::new(tenant, event()).traceparent, None);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string();
        let inside = with_traceparent(tp.clone(), async { Envelope::new(tenant, event()) }).await;
        assert_eq!(inside.traceparent, Some(tp));
    }
}

#[cfg(test)]
mod completion_tests {
    use super::*;
    use sextant_core::{FragmentKind, RunId};

    fn ingested() -> Envelope {
        let run = |n: u128| RunId(Uuid::from_u128(n));
        let mut post = RunFragment::new(FragmentKind::Post, run(1));
        post.reference_example_id = Some(Uuid::from_u128(0xe));
        let mut patch = RunFragment::new(FragmentKind::Patch, run(1));
        patch.end_time = Some(Timestamp(2));
        let open = RunFragment::new(FragmentKind::Post, run(2));
        let mut failed = RunFragment::new(FragmentKind::Post, run(3));
        failed.error = Some("boom".into());
        let mut again = RunFragment::new(FragmentKind::Patch, run(3));
        again.end_time = Some(Timestamp(3));
        let event = RunsIngestedV1 { project_id: ProjectId(Uuid::from_u128(9)), fragments: vec![post, patch, open, failed, again] };
        Envelope::new(TenantId(Uuid::from_u128(7)), Event::RunsIngestedV1(event))
    }

    #[test]
    fn completions_name_each_finished_run_once_with_the_example_from_any_fragment() {
        let source = ingested();
        let Event::RunsIngestedV1(ev) = &source.event else { unreachable!() };
        let done = Envelope::completions_of(&source, ev).expect("two runs finished");
        let Event::RunsCompletedV1(c) = &done.event else { panic!("{:?}", done.event) };
        assert_eq!(c.project_id, ev.project_id);
        let ids: Vec<u128> = c.runs.iter().map(|r| r.id.0.as_u128()).collect();
        assert_eq!(ids, vec![1, 3], "run 2 is still open; run 3 appears once");
        assert_eq!(c.runs[0].reference_example_id, Some(Uuid::from_u128(0xe)), "taken from the post");
        assert_eq!(c.runs[1].reference_example_id, None);
        assert_eq!((done.tenant, done.stream()), (source.tenant, Stream::RunCompletions));
        assert_eq!(done.subject(), format!("run_completions.{}.{}", source.tenant, ev.project_id));
        // Redelivery of the source yields the same id, so the bus drops the republish.
        assert_eq!(Envelope::completions_of(&source, ev).unwrap().id, done.id);
        assert_ne!(done.id, source.id);
    }

    #[test]
    fn an_event_that_finishes_nothing_announces_nothing() {
        let source = ingested();
        let Event::RunsIngestedV1(mut ev) = source.event.clone() else { unreachable!() };
        ev.fragments.retain(|f| f.end_time.is_none() && f.error.is_none());
        assert!(Envelope::completions_of(&source, &ev).is_none());
    }
}
