//! `POST /api/v2/datasets/{id}/experiment-runs` (the SDKs' `datasets.experiment_runs.query`):
//! a page of the dataset's examples, each with the root runs the requested experiments made
//! on it, in the `{items, next_cursor}` envelope.
//!
//! Runs belong to ingest's read model; this reads them through the storage port's run and
//! feedback reads (as curation does), never through another service. Examples come in id
//! order; the cursor is the last example of the page. With `filters`, runs of a project must
//! match all of that project's filters, and examples left without runs are skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use sextant_core::{DatasetId, Example, ExampleId, FeedbackStats, ProjectId, Run, RunId, TenantId, Timestamp};
use sextant_proto::{truncate, ApiError};
use sextant_storage::{ExampleQuery, RunMatcher, RunQuery};

use crate::core::{storage_error, Datasets};

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;
const MAX_EXAMPLE_IDS: usize = 1000;
/// Runs read per store call.
const RUN_PAGE: usize = 1000;

/// The run fields `selects` may name (the v2 runs API's tokens).
const SELECTS: &[&str] = &[
    "ID",
    "NAME",
    "RUN_TYPE",
    "STATUS",
    "START_TIME",
    "END_TIME",
    "LATENCY_SECONDS",
    "FIRST_TOKEN_TIME",
    "ERROR",
    "ERROR_PREVIEW",
    "EXTRA",
    "METADATA",
    "EVENTS",
    "INPUTS",
    "INPUTS_PREVIEW",
    "OUTPUTS",
    "OUTPUTS_PREVIEW",
    "MANIFEST",
    "PARENT_RUN_IDS",
    "PROJECT_ID",
    "TRACE_ID",
    "THREAD_ID",
    "DOTTED_ORDER",
    "IS_ROOT",
    "REFERENCE_EXAMPLE_ID",
    "REFERENCE_DATASET_ID",
    "TOTAL_TOKENS",
    "PROMPT_TOKENS",
    "COMPLETION_TOKENS",
    "TOTAL_COST",
    "PROMPT_COST",
    "COMPLETION_COST",
    "PROMPT_TOKEN_DETAILS",
    "COMPLETION_TOKEN_DETAILS",
    "PROMPT_COST_DETAILS",
    "COMPLETION_COST_DETAILS",
    "PRICE_MODEL_ID",
    "TAGS",
    "APP_PATH",
    "ATTACHMENTS",
    "THREAD_EVALUATION_TIME",
    "IS_IN_DATASET",
    "LAST_QUEUED_AT",
    "SHARE_URL",
    "FEEDBACK_STATS",
    "LS_USER_ID",
];

/// A parsed request body.
pub struct ExperimentRunsQuery {
    pub experiments: Vec<ProjectId>,
    pub example_ids: Vec<ExampleId>,
    pub filters: HashMap<ProjectId, Vec<sextant_filter::Filter>>,
    pub page_size: usize,
    /// Examples after this one.
    pub cursor: Option<ExampleId>,
    /// Lower-case field names; `id` always first.
    pub selects: Vec<String>,
}

fn uuid_at(v: &Value, at: &str) -> Result<Uuid, ApiError> {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::unprocessable(format!("{at}: expected a UUID string, got {}", truncate(&v.to_string()))))
}

fn uuid_list(o: &Map<String, Value>, k: &str) -> Result<Vec<Uuid>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().enumerate().map(|(i, v)| uuid_at(v, &format!("{k}[{i}]"))).collect(),
        Some(_) => Err(ApiError::unprocessable(format!("{k}: expected a list of UUIDs"))),
    }
}

impl ExperimentRunsQuery {
    pub fn from_json(body: &Value) -> Result<Self, ApiError> {
        let o = body.as_object().ok_or_else(|| ApiError::unprocessable("body: expected a JSON object"))?;
        let experiments: Vec<ProjectId> = uuid_list(o, "experiment_ids")?.into_iter().map(ProjectId).collect();
        if experiments.is_empty() {
            return Err(ApiError::unprocessable("experiment_ids: required, at least one experiment (project) id"));
        }
        let example_ids: Vec<ExampleId> = uuid_list(o, "example_ids")?.into_iter().map(ExampleId).collect();
        if example_ids.len() > MAX_EXAMPLE_IDS {
            return Err(ApiError::unprocessable(format!("example_ids: at most {MAX_EXAMPLE_IDS}")));
        }
        let page_size = match o.get("page_size") {
            None | Some(Value::Null) => DEFAULT_PAGE,
            Some(v) => match v.as_u64() {
                Some(n @ 1..) if n as usize <= MAX_PAGE => n as usize,
                _ => return Err(ApiError::unprocessable(format!("page_size: expected 1 to {MAX_PAGE}"))),
            },
        };
        let cursor = match o.get("cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) if c.is_empty() => None,
            Some(Value::String(c)) => Some(decode_cursor(c)?),
            Some(_) => return Err(ApiError::unprocessable("cursor: expected the next_cursor string of a previous page")),
        };
        let mut selects = vec!["id".to_owned()];
        match o.get("selects") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let s = v.as_str().unwrap_or_default();
                    let known = SELECTS.iter().find(|k| k.eq_ignore_ascii_case(s));
                    let Some(k) = known else {
                        return Err(ApiError::unprocessable(format!("selects[{i}]: {} is not a run field", truncate(&v.to_string()))));
                    };
                    let name = k.to_ascii_lowercase();
                    if !selects.contains(&name) {
                        selects.push(name);
                    }
                }
            }
            Some(_) => return Err(ApiError::unprocessable("selects: expected a list of run fields (\"NAME\", \"OUTPUTS\", ...)")),
        }
        let mut filters: HashMap<ProjectId, Vec<sextant_filter::Filter>> = HashMap::new();
        match o.get("filters") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (project, list) in m {
                    let p = ProjectId(uuid_at(&Value::String(project.clone()), "filters")?);
                    if !experiments.contains(&p) {
                        return Err(ApiError::unprocessable(format!("filters: {p} is not one of experiment_ids")));
                    }
                    let list =
                        list.as_array().ok_or_else(|| ApiError::unprocessable(format!("filters.{p}: expected a list of filters")))?;
                    for (i, f) in list.iter().enumerate() {
                        let text =
                            f.as_str().ok_or_else(|| ApiError::unprocessable(format!("filters.{p}[{i}]: expected a filter string")))?;
                        let parsed = sextant_filter::parse(text).map_err(|e| ApiError::unprocessable(format!("filters.{p}[{i}]: {e}")))?;
                        filters.entry(p).or_default().push(parsed);
                    }
                }
            }
            Some(_) => return Err(ApiError::unprocessable("filters: expected an object of project id to a list of filters")),
        }
        if o.get("sort").is_some_and(|s| !s.is_null()) {
            return Err(ApiError::unprocessable("sort: sorting by feedback is not supported; examples come in id order"));
        }
        Ok(Self { experiments, example_ids, filters, page_size, cursor, selects })
    }
}

fn encode_cursor(id: ExampleId) -> String {
    format!("e1.{}", id.0.simple())
}

fn decode_cursor(s: &str) -> Result<ExampleId, ApiError> {
    s.strip_prefix("e1.")
        .and_then(|u| Uuid::parse_str(u).ok())
        .map(ExampleId)
        .ok_or_else(|| ApiError::unprocessable("cursor: not one this server issued"))
}

/// A page: examples with their runs (and the runs' feedback stats when selected).
pub struct ExperimentRunsPage {
    pub items: Vec<(Example, Vec<Run>)>,
    pub stats: HashMap<RunId, FeedbackStats>,
    pub next_cursor: Option<String>,
}

/// All of one project's filters, as a run predicate.
struct AllOf(Vec<sextant_filter::Filter>);

impl RunMatcher for AllOf {
    fn matches(&self, run: &Run, feedback: &[sextant_core::Feedback]) -> bool {
        self.0.iter().all(|f| f.matches_run(run, feedback))
    }
    fn needs_feedback(&self) -> bool {
        self.0.iter().any(|f| f.needs().feedback)
    }
}

impl Datasets {
    pub async fn experiment_runs(&self, tenant: TenantId, id: DatasetId, q: &ExperimentRunsQuery) -> Result<ExperimentRunsPage, ApiError> {
        self.get_dataset(tenant, id).await?;
        for p in &q.experiments {
            let project = self.store().get_project(tenant, *p).await.map_err(storage_error)?;
            match project {
                None => return Err(ApiError::not_found(format!("experiment {p} not found"))),
                Some(pr) if pr.reference_dataset_id.is_some_and(|d| d != id.0) => {
                    return Err(ApiError::unprocessable(format!(
                        "experiment_ids: {p} is an experiment on dataset {}, not on {id}",
                        pr.reference_dataset_id.unwrap_or_default()
                    )))
                }
                Some(_) => {}
            }
        }
        let mut items = Vec::with_capacity(q.page_size);
        let mut after = q.cursor;
        let mut more = false;
        'pages: loop {
            let eq = ExampleQuery { ids: q.example_ids.clone(), after, limit: q.page_size, ..Default::default() };
            let page = self.store().list_examples(tenant, id, &eq).await.map_err(storage_error)?;
            let exhausted = page.len() < q.page_size;
            let mut runs = self.runs_of(tenant, q, &page).await?;
            for e in page {
                if items.len() == q.page_size {
                    more = true;
                    break 'pages;
                }
                after = Some(e.id);
                let mine = runs.remove(&e.id.0).unwrap_or_default();
                if !q.filters.is_empty() && mine.is_empty() {
                    continue;
                }
                items.push((e, mine));
            }
            if exhausted {
                break;
            }
            if items.len() == q.page_size {
                more = true;
                break;
            }
        }
        let stats = if q.selects.iter().any(|s| s == "feedback_stats") {
            let ids: Vec<RunId> = items.iter().flat_map(|(_, rs)| rs.iter().map(|r| r.id)).collect();
            self.store().run_feedback_stats(tenant, &ids).await.map_err(storage_error)?
        } else {
            HashMap::new()
        };
        let next_cursor = if more { items.last().map(|(e, _)| encode_cursor(e.id)) } else { None };
        Ok(ExperimentRunsPage { items, stats, next_cursor })
    }

    /// The root runs of the requested experiments on these examples, by example, oldest first.
    async fn runs_of(&self, tenant: TenantId, q: &ExperimentRunsQuery, examples: &[Example]) -> Result<HashMap<Uuid, Vec<Run>>, ApiError> {
        let mut out: HashMap<Uuid, Vec<Run>> = HashMap::new();
        if examples.is_empty() {
            return Ok(out);
        }
        let wanted: HashSet<Uuid> = examples.iter().map(|e| e.id.0).collect();
        for p in &q.experiments {
            let mut rq = RunQuery {
                projects: vec![*p],
                reference_examples: wanted.iter().copied().collect(),
                is_root: Some(true),
                filter: q.filters.get(p).map(|f| Arc::new(AllOf(f.clone())) as Arc<dyn RunMatcher>),
                limit: RUN_PAGE,
                ..Default::default()
            };
            loop {
                let page = self.store().query_runs(tenant, &rq).await.map_err(storage_error)?;
                for r in page.runs {
                    if let Some(ex) = r.reference_example_id.filter(|x| wanted.contains(x)) {
                        out.entry(ex).or_default().push(r);
                    }
                }
                match page.next {
                    Some(c) => rq.cursor = Some(c),
                    None => break,
                }
            }
        }
        for runs in out.values_mut() {
            runs.sort_by_key(|r| (r.start_time, r.id.0));
        }
        Ok(out)
    }
}

/// One run with the selected fields, in the v2 shape (upper-case `run_type` and `status`,
/// RFC 3339 times). Fields Sextant does not record are omitted.
pub fn run_json(run: &Run, dataset: DatasetId, selects: &[String], stats: Option<&FeedbackStats>) -> Value {
    let time = |t: Option<Timestamp>| json!(t.map(|t| format!("{}Z", t.to_iso())));
    let doc = |r: &Option<sextant_core::RawJson>| r.as_ref().map_or(Value::Null, sextant_core::RawJson::to_value_or_null);
    let preview = |v: Value| -> Value {
        if v.is_null() {
            return v;
        }
        let text = v.to_string();
        json!(match text.char_indices().nth(280) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text,
        })
    };
    let mut out = Map::new();
    for field in selects {
        let v = match field.as_str() {
            "id" => json!(run.id),
            "name" => json!(run.name),
            "run_type" => json!(run.run_type.as_deref().unwrap_or("chain").to_ascii_uppercase()),
            "status" => json!(run.status().as_str().to_ascii_uppercase()),
            "start_time" => time(run.start_time.or(run.end_time)),
            "end_time" => time(run.end_time),
            "first_token_time" => time(run.first_token_time),
            "latency_seconds" => json!(run.latency_secs()),
            "error" => json!(run.error),
            "error_preview" => preview(json!(run.error)),
            "extra" => Value::Object(run.extra.clone()),
            "metadata" => run.metadata().map_or(Value::Null, |m| Value::Object(m.clone())),
            "events" => doc(&run.events),
            "inputs" => doc(&run.inputs),
            "inputs_preview" => preview(doc(&run.inputs)),
            "outputs" => doc(&run.outputs),
            "outputs_preview" => preview(doc(&run.outputs)),
            "parent_run_ids" => json!(run.parent_run_ids()),
            "project_id" => json!(run.project_id),
            "trace_id" => json!(run.trace()),
            "dotted_order" => json!(run.dotted_order),
            "is_root" => json!(run.is_root()),
            "reference_example_id" => json!(run.reference_example_id),
            "reference_dataset_id" => json!(dataset),
            "total_tokens" => json!(run.total_tokens),
            "prompt_tokens" => json!(run.prompt_tokens),
            "completion_tokens" => json!(run.completion_tokens),
            "total_cost" => json!(run.total_cost),
            "prompt_cost" => json!(run.prompt_cost),
            "completion_cost" => json!(run.completion_cost),
            "tags" => json!(run.tags),
            "feedback_stats" => stats.map_or_else(|| json!({}), FeedbackStats::to_json),
            "is_in_dataset" => json!(false),
            _ => continue,
        };
        out.insert(field.clone(), v);
    }
    Value::Object(out)
}
