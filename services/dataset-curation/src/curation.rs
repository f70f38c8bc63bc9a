//! Curation from production runs: a server-side job turns every run matching a filter in a
//! time window into an example, so real failures become regression tests.
//!
//! Runs without inputs or outputs are skipped; runs whose inputs hash like an example already
//! in the dataset (or one added earlier by the job) are skipped as duplicates. Each example
//! keeps its source run id and the run's feedback in its metadata. The job writes one dataset
//! version per page of runs and records its progress after each, so it can be polled.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use sextant_core::dataset::{content_hash, CurationJob, JobState, RunSelection};
use sextant_core::{DatasetId, ExampleId, Feedback, Run, TenantId, Timestamp};
use sextant_proto::ApiError;
use sextant_storage::{FeedbackQuery, RunMatcher, RunQuery};

use crate::core::{storage_error, Datasets, ExampleInput};

/// Runs read (and examples written, as one version) per step.
const PAGE: usize = 500;

/// A parsed run filter as a storage predicate.
struct Matcher(sextant_filter::Filter);

impl RunMatcher for Matcher {
    fn matches(&self, run: &Run, feedback: &[Feedback]) -> bool {
        self.0.matches_run(run, feedback)
    }

    fn needs_feedback(&self) -> bool {
        self.0.needs().feedback
    }
}

/// Parses a selection from a JSON body: `{filter, project_ids?, start_time?, end_time?,
/// root_only? (default true)}`.
pub fn selection_from_json(body: &Value) -> Result<RunSelection, ApiError> {
    let o = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
    let filter = match o.get("filter") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(f)) => f.trim().to_owned(),
        Some(_) => return Err(ApiError::unprocessable("filter: expected a run filter string")),
    };
    if !filter.is_empty() {
        sextant_filter::parse(&filter).map_err(|e| ApiError::unprocessable(format!("filter: {e}")))?;
    }
    let time = |k: &str| -> Result<Option<Timestamp>, ApiError> {
        match o.get(k) {
            None => Ok(None),
            Some(v) => Timestamp::from_json(v).map_err(|e| ApiError::unprocessable(format!("{k}: {e}"))),
        }
    };
    let project_ids = match o.get("project_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .map(sextant_core::ProjectId)
                    .ok_or_else(|| ApiError::unprocessable(format!("project_ids[{i}]: expected a project id (UUID)")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::unprocessable("project_ids: expected a list of project ids")),
    };
    let (start_time, end_time) = (time("start_time")?, time("end_time")?);
    if let (Some(s), Some(e)) = (start_time, end_time) {
        if s >= e {
            return Err(ApiError::unprocessable("start_time: must be before end_time"));
        }
    }
    let root_only = match o.get("root_only") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::unprocessable("root_only: expected true or false")),
    };
    Ok(RunSelection { filter, project_ids, start_time, end_time, root_only })
}

impl Datasets {
    /// Starts a curation job; it runs in this process and its progress is stored.
    pub async fn start_curation(
        self: &Arc<Self>,
        tenant: TenantId,
        dataset: DatasetId,
        selection: RunSelection,
    ) -> Result<CurationJob, ApiError> {
        self.get_dataset(tenant, dataset).await?;
        let now = Timestamp::now();
        let job = CurationJob {
            id: Uuid::now_v7(),
            dataset_id: dataset,
            selection,
            state: JobState::Running,
            scanned: 0,
            matched: 0,
            added: 0,
            skipped_no_io: 0,
            skipped_duplicate: 0,
            error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            as_of: None,
            progress: None,
        };
        self.store().put_curation_job(tenant, &job).await.map_err(storage_error)?;
        let this = self.clone();
        let span = tracing::info_span!("datasets.curation_job", tenant = %tenant, dataset = %dataset, job = %job.id);
        let mut running = job.clone();
        tokio::spawn(
            async move {
                let outcome = this.run_curation(tenant, &mut running).await;
                running.finished_at = Some(Timestamp::now());
                running.updated_at = Timestamp::now();
                match outcome {
                    Ok(()) => running.state = JobState::Succeeded,
                    Err(e) => {
                        warn!(error = %e.message, "curation job failed");
                        running.state = JobState::Failed;
                        running.error = Some(e.message);
                    }
                }
                info!(added = running.added, matched = running.matched, "curation job finished");
                if let Err(e) = this.store().put_curation_job(tenant, &running).await {
                    warn!(error = %e, "could not record the curation job's end");
                }
            }
            .instrument(span),
        );
        Ok(job)
    }

    pub async fn curation_job(&self, tenant: TenantId, dataset: DatasetId, id: Uuid) -> Result<CurationJob, ApiError> {
        self.store()
            .get_curation_job(tenant, id)
            .await
            .map_err(storage_error)?
            .filter(|j| j.dataset_id == dataset)
            .ok_or_else(|| ApiError::not_found(format!("curation job {id} not found for dataset {dataset}")))
    }

    async fn run_curation(&self, tenant: TenantId, job: &mut CurationJob) -> Result<(), ApiError> {
        let dataset = job.dataset_id;
        let mut seen: HashSet<String> = HashSet::new();
        self.scan(tenant, dataset, None, |e| {
            seen.insert(content_hash(&e.inputs));
        })
        .await?;
        let filter = match job.selection.filter.as_str() {
            "" => None,
            f => Some(Arc::new(Matcher(sextant_filter::parse(f).map_err(|e| ApiError::unprocessable(format!("filter: {e}")))?))
                as Arc<dyn RunMatcher>),
        };
        let mut cursor = None;
        loop {
            let q = RunQuery {
                projects: job.selection.project_ids.clone(),
                is_root: job.selection.root_only.then_some(true),
                start_from: job.selection.start_time,
                start_before: job.selection.end_time,
                filter: filter.clone(),
                limit: PAGE,
                cursor,
                ..Default::default()
            };
            let page = self.store().query_runs(tenant, &q).await.map_err(storage_error)?;
            let mut inputs = Vec::new();
            for run in &page.runs {
                job.scanned += 1;
                job.matched += 1;
                let Some((hash, _)) = curatable_inputs(run) else {
                    job.skipped_no_io += 1;
                    continue;
                };
                if !seen.insert(hash) {
                    job.skipped_duplicate += 1;
                    continue;
                }
                let feedback = self
                    .store()
                    .list_feedback(tenant, &FeedbackQuery { runs: vec![run.id], limit: 100, ..Default::default() })
                    .await
                    .map_err(storage_error)?;
                let (_, input) = example_from_run(dataset, run, &feedback, ("curation_job_id", job.id)).expect("checked above");
                inputs.push(input);
            }
            if !inputs.is_empty() {
                let n = inputs.len() as u64;
                let (_, as_of) = self.create_examples(tenant, dataset, inputs).await?;
                job.added += n;
                job.as_of = Some(as_of);
            }
            job.updated_at = Timestamp::now();
            if page.next.is_none() {
                job.progress = Some(1.0);
            } else if let (Some(from), Some(oldest)) = (job.selection.start_time, page.runs.last().and_then(|r| r.start_time)) {
                let to = job.selection.end_time.unwrap_or(job.created_at);
                let span = (to.micros() - from.micros()).max(1) as f64;
                let covered = ((to.micros() - oldest.micros()) as f64 / span).clamp(0.0, 1.0);
                job.progress = Some(job.progress.unwrap_or(0.0).max(covered));
            }
            self.store().put_curation_job(tenant, job).await.map_err(storage_error)?;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }
}

/// The run's inputs and their content hash, if the run can become an example: it has object
/// inputs that are not empty, and outputs.
fn curatable_inputs(run: &Run) -> Option<(String, Value)> {
    let (Some(inputs), Some(_)) = (&run.inputs, &run.outputs) else { return None };
    let doc = inputs.to_value().ok()?;
    if doc.as_object().is_none_or(|o| o.is_empty()) {
        return None;
    }
    Some((content_hash(inputs), doc))
}

/// The id a curated example gets: derived from the dataset and the inputs' hash, so the same
/// inputs curated twice (a redelivered event, two replicas, a job after a rule) collide on
/// the id instead of making a second example.
pub fn curated_example_id(dataset: DatasetId, inputs_hash: &str) -> ExampleId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x5e7a_47c0_da7a_5e70_8000_c0de_c0de_0001);
    ExampleId(Uuid::new_v5(&NAMESPACE, format!("{}/{inputs_hash}", dataset.0).as_bytes()))
}

/// A run as an example: its inputs, its outputs (wrapped in `{"output": ...}` when not an
/// object) and, in metadata, its source run, its feedback by key and what curated it
/// (`provenance`: `("curation_job_id", job)` or `("curation_rule_id", rule)`). `None` when the
/// run has no inputs or outputs. Returns the inputs' hash too.
pub(crate) fn example_from_run(
    dataset: DatasetId,
    run: &Run,
    feedback: &[Feedback],
    provenance: (&str, Uuid),
) -> Option<(String, ExampleInput)> {
    let (hash, inputs_doc) = curatable_inputs(run)?;
    let outputs_doc = run.outputs.as_ref()?.to_value().ok()?;
    let mut by_key: BTreeMap<String, Value> = BTreeMap::new();
    for f in feedback {
        by_key.insert(
            f.key.clone(),
            json!({"score": f.score.map(|s| s.to_json()), "value": f.value.as_ref().map(sextant_core::RawJson::to_value_or_null), "comment": f.comment}),
        );
    }
    let mut metadata = json!({
        "source_run_id": run.id,
        "source_project_id": run.project_id,
        "source_run_name": run.name,
        "feedback": by_key,
    });
    metadata[provenance.0] = json!(provenance.1);
    let input = ExampleInput {
        id: Some(curated_example_id(dataset, &hash)),
        inputs: Some(inputs_doc),
        // Chat and LLM outputs are often not objects; wrap them so every example has one.
        outputs: Some(if outputs_doc.is_object() { outputs_doc } else { json!({"output": outputs_doc}) }),
        metadata: metadata.as_object().cloned(),
        split: None,
        source_run_id: Some(run.id),
        created_at: None,
        attachments: Vec::new(),
        retain_attachments: None,
        rename_attachments: Vec::new(),
    };
    Some((hash, input))
}

/// The job as the API shows it.
pub fn job_json(j: &CurationJob) -> Value {
    json!({
        "id": j.id,
        "dataset_id": j.dataset_id,
        "state": j.state.as_str(),
        "filter": j.selection.filter,
        "project_ids": j.selection.project_ids,
        "start_time": j.selection.start_time.map(Timestamp::to_iso),
        "end_time": j.selection.end_time.map(Timestamp::to_iso),
        "root_only": j.selection.root_only,
        "scanned": j.scanned,
        "matched": j.matched,
        "added": j.added,
        "skipped_no_io": j.skipped_no_io,
        "skipped_duplicate": j.skipped_duplicate,
        "error": j.error,
        "created_at": j.created_at.to_iso(),
        "updated_at": j.updated_at.to_iso(),
        "finished_at": j.finished_at.map(Timestamp::to_iso),
        "as_of": j.as_of.map(Timestamp::to_iso),
        "progress": j.progress,
    })
}
