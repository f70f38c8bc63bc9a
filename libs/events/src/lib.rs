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
}

impl Stream {
    pub const ALL: [Stream; 6] = [Stream::Runs, Stream::Projects, Stream::Feedback, Stream::Datasets, Stream::Prompts, Stream::Evaluations];

    pub fn name(self) -> &'static str {
        match self {
            Self::Runs => "runs",
            Self::Projects => "projects",
            Self::Feedback => "feedback",
            Self::Datasets => "datasets",
            Self::Prompts => "prompts",
            Self::Evaluations => "evaluations",
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
    FeedbackPartReceivedV1(FeedbackPartReceivedV1),
}

/// Run fragments (posts and patches) of one project, as acknowledged to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunsIngestedV1 {
    pub project_id: ProjectId,
    pub fragments: Vec<RunFragment>,
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

impl Envelope {
    pub fn new(tenant: TenantId, event: Event) -> Self {
        Self { id: Uuid::now_v7(), tenant, at_ms: Timestamp::now().millis(), traceparent: None, event }
    }

    pub fn stream(&self) -> Stream {
        match &self.event {
            Event::RunsIngestedV1(_) => Stream::Runs,
            Event::ProjectCreatedV1(_) | Event::ProjectUpdatedV1(_) | Event::ProjectDeletedV1(_) => Stream::Projects,
            Event::FeedbackPartReceivedV1(_) => Stream::Feedback,
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
            Event::FeedbackPartReceivedV1(_) => format!("{stream}.{}", self.tenant),
        }
    }

    pub fn kind(&self) -> &'static str {
        match &self.event {
            Event::RunsIngestedV1(_) => "RunsIngestedV1",
            Event::ProjectCreatedV1(_) => "ProjectCreatedV1",
            Event::ProjectUpdatedV1(_) => "ProjectUpdatedV1",
            Event::ProjectDeletedV1(_) => "ProjectDeletedV1",
            Event::FeedbackPartReceivedV1(_) => "FeedbackPartReceivedV1",
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
