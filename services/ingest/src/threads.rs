//! LangSmith's v2 threads API (`client.threads.query()`, `.list_traces()`), relative to
//! `/api/v2`. A thread is the set of root runs (turns) of one project that share a thread id
//! ([`sextant_filter::thread_id`]); it is derived from the runs on every request, through
//! [`crate::core::Ingest::query_runs`], so tenancy and the filter language behave as on
//! `/runs/query`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use sextant_core::{FeedbackStats, ProjectId, Run, RunId, TenantId, Timestamp, WireTime};
use sextant_proto::http::{read_body, Caller, QueryParams};
use sextant_proto::ApiError;

use crate::core::{merge_feedback_stats, RunQueryRequest};
use crate::http::HttpState;
use crate::wire::parse_json;

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;
const PREVIEW_CHARS: usize = 280;
/// Root runs one request may read: threads are derived from runs on each request, so this
/// bounds its memory and time.
const MAX_SCAN: usize = 10_000;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/threads/query", post(query_threads))
        .route("/threads/stats", post(aggregate_stats))
        .route("/threads/{thread_id}/traces", get(list_traces))
        .route("/threads/{thread_id}/stats", get(thread_stats))
}

fn rfc3339(t: Option<Timestamp>) -> Value {
    json!(t.map(|t| format!("{}Z", t.to_iso())))
}

fn preview(v: Option<&sextant_core::RawJson>) -> Option<String> {
    let text = v?.as_str();
    Some(match text.char_indices().nth(PREVIEW_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    })
}

fn page_size(n: Option<i64>) -> Result<usize, ApiError> {
    match n {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::unprocessable(format!("page_size must be between 1 and {MAX_PAGE}, got {n}"))),
    }
}

fn project(v: Option<&str>) -> Result<ProjectId, ApiError> {
    let v = v.filter(|v| !v.is_empty()).ok_or_else(|| ApiError::unprocessable("project_id is required"))?;
    uuid::Uuid::parse_str(v)
        .map(ProjectId)
        .map_err(|_| ApiError::unprocessable(format!("project_id: {:?} is not a UUID", sextant_proto::truncate(v))))
}

/// `and(a, b)` of optional filters.
fn and(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a.filter(|s| !s.trim().is_empty()), b.filter(|s| !s.trim().is_empty())) {
        (Some(a), Some(b)) => Some(format!("and({a}, {b})")),
        (a, b) => a.or(b),
    }
}

/// Every root run the request matches, oldest first (all pages, at most [`MAX_SCAN`]).
async fn roots(s: &HttpState, tenant: TenantId, mut req: RunQueryRequest) -> Result<Vec<Run>, ApiError> {
    req.is_root = Some(true);
    req.limit = Some(s.ingest.limits.max_query_limit);
    s.ingest.await_acknowledged_runs().await;
    let mut out = Vec::new();
    loop {
        let page = s.ingest.query_page(tenant, req.clone()).await?;
        let next = page.next.filter(|_| !page.runs.is_empty());
        out.extend(page.runs);
        if out.len() > MAX_SCAN {
            return Err(ApiError::unprocessable(format!(
                "more than {MAX_SCAN} turns match; narrow the query (min_start_time/max_start_time, filter)"
            )));
        }
        match next {
            Some(next) => req.cursor = Some(next.encode()),
            None => break,
        }
    }
    out.reverse();
    Ok(out)
}

/// The ids of the threads with a turn in `base` matching the filters; `None` when no filter is
/// given (every thread qualifies).
async fn threads_with_a_match(
    s: &HttpState,
    tenant: TenantId,
    base: RunQueryRequest,
    filter: Option<String>,
    trace_filter: Option<String>,
    tree_filter: Option<String>,
) -> Result<Option<std::collections::HashSet<String>>, ApiError> {
    if filter.is_none() && trace_filter.is_none() && tree_filter.is_none() {
        return Ok(None);
    }
    let req = RunQueryRequest { filter, trace_filter, tree_filter, ..base };
    Ok(Some(roots(s, tenant, req).await?.iter().filter_map(|r| sextant_filter::thread_id(r).map(str::to_string)).collect()))
}

/// A page position: the `(max_start_time, thread_id)` of the last thread returned, or the
/// number of traces already returned.
fn encode_cursor(parts: &[&str]) -> String {
    parts.iter().map(|p| p.bytes().map(|b| format!("{b:02x}")).collect::<String>()).collect::<Vec<_>>().join(".")
}

fn decode_cursor(c: &str, n: usize) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::unprocessable("cursor is not one this server issued");
    let parts: Vec<String> = c
        .split('.')
        .map(|p| {
            let bytes = (0..p.len())
                .step_by(2)
                .map(|i| p.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(bad)?;
            String::from_utf8(bytes).map_err(|_| bad())
        })
        .collect::<Result<_, _>>()?;
    if parts.len() == n {
        Ok(parts)
    } else {
        Err(bad())
    }
}

#[derive(Debug, Default, Deserialize)]
struct ThreadQuery {
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    min_start_time: Option<WireTime>,
    #[serde(default)]
    max_start_time: Option<WireTime>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    trace_filter: Option<String>,
    #[serde(default)]
    tree_filter: Option<String>,
    #[serde(default)]
    thread_filter: Option<String>,
    #[serde(default)]
    ai_search: Option<String>,
    #[serde(default)]
    sem_filter: Option<String>,
    #[serde(default)]
    page_size: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

fn not_implemented(what: &str) -> ApiError {
    ApiError::new(sextant_proto::ErrorKind::NotImplemented, format!("{what} is not supported by this server"))
}

/// One thread's summary over its turns (root runs) in the window, oldest first.
fn thread_json(id: &str, turns: &[&Run], feedback: &FeedbackStats) -> Value {
    let first = turns.first().copied();
    let last = turns.last().copied();
    let mut latencies: Vec<f64> = turns.iter().filter_map(|r| r.latency_secs()).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| (!latencies.is_empty()).then(|| latencies[((latencies.len() - 1) as f64 * q).round() as usize]);
    let errored: Vec<&&Run> = turns.iter().filter(|r| r.status() == sextant_core::RunStatus::Error).collect();
    let tokens: Option<i64> = turns.iter().filter_map(|r| r.total_tokens).reduce(|a, b| a.saturating_add(b));
    let cost: Option<f64> = turns.iter().filter_map(|r| r.total_cost).reduce(|a, b| a + b);
    json!({
        "thread_id": id,
        "count": turns.len(),
        "min_start_time": rfc3339(first.and_then(|r| r.start_time)),
        "max_start_time": rfc3339(last.and_then(|r| r.start_time)),
        "start_time": rfc3339(first.and_then(|r| r.start_time)),
        "first_trace_id": first.map(|r| r.trace()),
        "last_trace_id": last.map(|r| r.trace()),
        "trace_id": last.map(|r| r.trace()),
        "first_inputs": first.and_then(|r| preview(r.inputs.as_ref())),
        "last_outputs": last.and_then(|r| preview(r.outputs.as_ref())),
        "last_error": errored.last().and_then(|r| r.error.clone()),
        "num_errored_turns": errored.len(),
        "latency_p50": pct(0.5),
        "latency_p99": pct(0.99),
        "total_tokens": tokens,
        "total_cost": cost,
        "feedback_stats": feedback.to_json(),
    })
}

/// `POST /threads/query`: the project's threads with a turn in the window (and, when filters
/// are given, a turn matching them), most recently active first.
async fn query_threads(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let b: ThreadQuery = parse_json("body", &raw)?;
    for (given, what) in
        [(b.ai_search.is_some(), "ai_search"), (b.sem_filter.is_some(), "sem_filter"), (b.thread_filter.is_some(), "thread_filter")]
    {
        if given {
            return Err(not_implemented(what));
        }
    }
    let project = project(b.project_id.as_deref())?;
    let size = page_size(b.page_size)?;
    let (min, max) = crate::v2::window(b.min_start_time, b.max_start_time)?;
    let after = b.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| decode_cursor(c, 2)).transpose()?;
    let base = RunQueryRequest { projects: vec![project], start_time: Some(min), end_time: Some(max), ..Default::default() };
    let all = roots(&s, p.tenant, base.clone()).await?;
    let wanted = threads_with_a_match(&s, p.tenant, base, b.filter, b.trace_filter, b.tree_filter).await?;
    let mut threads: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in &all {
        if let Some(t) = sextant_filter::thread_id(r).filter(|t| wanted.as_ref().is_none_or(|w| w.contains(*t))) {
            threads.entry(t).or_default().push(r);
        }
    }
    // Most recently active first; ties by thread id.
    let last_start = |turns: &Vec<&Run>| turns.last().and_then(|r| r.start_time).map_or(i64::MIN, Timestamp::micros);
    let mut order: Vec<(i64, &str)> = threads.iter().map(|(id, turns)| (last_start(turns), *id)).collect();
    order.sort_by(|a, b| b.cmp(a));
    if let Some(after) = &after {
        let pos: i64 = after[0].parse().map_err(|_| ApiError::unprocessable("cursor is not one this server issued"))?;
        order.retain(|(t, id)| (*t, *id) < (pos, after[1].as_str()));
    }
    let more = order.len() > size;
    order.truncate(size);
    let mut items = Vec::with_capacity(order.len());
    for (_, id) in &order {
        let turns = &threads[id];
        let ids: Vec<RunId> = turns.iter().map(|r| r.id).collect();
        let mut feedback = FeedbackStats::default();
        for fs in s.ingest.run_feedback_stats(p.tenant, &ids).await?.values() {
            merge_feedback_stats(&mut feedback, fs);
        }
        items.push(thread_json(id, turns, &feedback));
    }
    let next = match order.last() {
        Some((t, id)) if more => Some(encode_cursor(&[&t.to_string(), id])),
        _ => None,
    };
    Ok(Json(json!({"items": items, "next_cursor": next})).into_response())
}

/// One turn in the ThreadTrace shape, with the selected fields (all but the full inputs and
/// outputs when none are selected).
fn trace_json(run: &Run, thread: &str, turn: usize, selects: &[String]) -> Value {
    let wants = |f: &str| if selects.is_empty() { !matches!(f, "inputs" | "outputs") } else { selects.iter().any(|s| s == f) };
    let raw = |v: Option<&sextant_core::RawJson>| v.and_then(|j| j.to_value().ok()).unwrap_or(Value::Null);
    let fields: [(&str, Value); 20] = [
        ("thread_id", json!(thread)),
        ("trace_id", json!(run.trace())),
        ("name", json!(run.name)),
        ("turn_number", json!(turn)),
        ("op", Value::Null),
        ("start_time", rfc3339(run.start_time)),
        ("end_time", rfc3339(run.end_time)),
        ("first_token_time", rfc3339(run.first_token_time)),
        ("latency", json!(run.latency_secs())),
        ("prompt_tokens", json!(run.prompt_tokens)),
        ("completion_tokens", json!(run.completion_tokens)),
        ("total_tokens", json!(run.total_tokens)),
        ("prompt_cost", json!(run.prompt_cost)),
        ("completion_cost", json!(run.completion_cost)),
        ("total_cost", json!(run.total_cost)),
        ("error", json!(run.error.as_deref().filter(|e| !e.is_empty()))),
        ("inputs_preview", json!(preview(run.inputs.as_ref()))),
        ("outputs_preview", json!(preview(run.outputs.as_ref()))),
        ("inputs", raw(run.inputs.as_ref())),
        ("outputs", raw(run.outputs.as_ref())),
    ];
    let mut out = Map::new();
    for (k, v) in fields {
        if k == "trace_id" || wants(k) {
            out.insert(k.to_string(), v);
        }
    }
    if wants("error_preview") {
        let e = run.error.as_deref().filter(|e| !e.is_empty()).map(|e| e.chars().take(PREVIEW_CHARS).collect::<String>());
        out.insert("error_preview".into(), json!(e));
    }
    Value::Object(out)
}

/// `GET /threads/{thread_id}/traces?project_id=…`: the thread's turns, oldest first, numbered
/// from 1 over the whole thread.
async fn list_traces(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(thread): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let project = project(q.get("project_id"))?;
    let size = page_size(
        q.get("page_size")
            .map(|n| n.parse().map_err(|_| ApiError::unprocessable(format!("page_size: {n:?} is not a number"))))
            .transpose()?,
    )?;
    let selects: Vec<String> = q.all("selects").iter().map(|s| s.to_ascii_lowercase()).collect();
    let offset = match q.get("cursor").filter(|c| !c.is_empty()) {
        Some(c) => decode_cursor(c, 1)?[0].parse::<usize>().map_err(|_| ApiError::unprocessable("cursor is not one this server issued"))?,
        None => 0,
    };
    let thread_filter = format!("eq(thread_id, {})", serde_json::to_string(&thread).unwrap_or_default());
    let base = RunQueryRequest { projects: vec![project], filter: Some(thread_filter.clone()), ..Default::default() };
    let turns = roots(&s, p.tenant, base.clone()).await?;
    let user_filter = q.get("filter").map(str::to_string);
    let narrowed = user_filter.is_some() || q.get("trace_filter").is_some() || q.get("tree_filter").is_some();
    let keep: Option<std::collections::HashSet<RunId>> = if narrowed {
        let req = RunQueryRequest {
            filter: and(Some(thread_filter), user_filter),
            trace_filter: q.get("trace_filter").map(str::to_string),
            tree_filter: q.get("tree_filter").map(str::to_string),
            ..base
        };
        Some(roots(&s, p.tenant, req).await?.iter().map(|r| r.id).collect())
    } else {
        None
    };
    let numbered: Vec<(usize, &Run)> =
        turns.iter().enumerate().map(|(i, r)| (i + 1, r)).filter(|(_, r)| keep.as_ref().is_none_or(|k| k.contains(&r.id))).collect();
    let page: Vec<Value> = numbered.iter().skip(offset).take(size).map(|(n, r)| trace_json(r, &thread, *n, &selects)).collect();
    let next = (numbered.len() > offset + size).then(|| encode_cursor(&[&(offset + size).to_string()]));
    Ok(Json(json!({"items": page, "next_cursor": next})).into_response())
}

/// What `GET /threads/{thread_id}/stats` may select (LangSmith's `SingleThreadStatsSelectField`).
const STATS_SELECTS: [&str; 17] = [
    "TURNS",
    "FIRST_START_TIME",
    "LAST_START_TIME",
    "LAST_END_TIME",
    "LATENCY_P50",
    "LATENCY_P99",
    "PROMPT_TOKENS",
    "PROMPT_COST",
    "COMPLETION_TOKENS",
    "COMPLETION_COST",
    "TOTAL_TOKENS",
    "TOTAL_COST",
    "PROMPT_TOKEN_DETAILS",
    "COMPLETION_TOKEN_DETAILS",
    "PROMPT_COST_DETAILS",
    "COMPLETION_COST_DETAILS",
    "FEEDBACK_STATS",
];

/// `GET /threads/{thread_id}/stats?session_id=…&selects=…`: aggregates over the thread's turns
/// (those matching `filter`). Per-category token and cost details are not tracked (`null`).
async fn thread_stats(
    State(s): State<HttpState>,
    Caller(p): Caller,
    Path(thread): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(q.as_deref());
    let project = project(q.get("session_id").or(q.get("project_id")))?;
    let selects = q.all("selects");
    if selects.is_empty() {
        return Err(ApiError::unprocessable(format!("selects: at least one of {} is required", STATS_SELECTS.join(", "))));
    }
    if let Some(bad) = selects.iter().find(|s| !STATS_SELECTS.contains(&s.as_str())) {
        return Err(ApiError::unprocessable(format!(
            "selects: {:?} is not one of {}",
            sextant_proto::truncate(bad),
            STATS_SELECTS.join(", ")
        )));
    }
    let thread_filter = format!("eq(thread_id, {})", serde_json::to_string(&thread).unwrap_or_default());
    let req = RunQueryRequest {
        projects: vec![project],
        filter: and(Some(thread_filter), q.get("filter").map(str::to_string)),
        ..Default::default()
    };
    let turns = roots(&s, p.tenant, req).await?;
    let mut latencies: Vec<f64> = turns.iter().filter_map(|r| r.latency_secs()).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| (!latencies.is_empty()).then(|| latencies[((latencies.len() - 1) as f64 * q).round() as usize]);
    let isum = |f: fn(&Run) -> Option<i64>| turns.iter().filter_map(f).fold(0i64, i64::saturating_add);
    let fsum = |f: fn(&Run) -> Option<f64>| turns.iter().filter_map(f).sum::<f64>();
    let mut out = Map::new();
    for sel in selects {
        let (key, value) = match sel.as_str() {
            "TURNS" => ("turns", json!(turns.len())),
            "FIRST_START_TIME" => ("first_start_time", rfc3339(turns.iter().filter_map(|r| r.start_time).min())),
            "LAST_START_TIME" => ("last_start_time", rfc3339(turns.iter().filter_map(|r| r.start_time).max())),
            "LAST_END_TIME" => ("last_end_time", rfc3339(turns.iter().filter_map(|r| r.end_time).max())),
            "LATENCY_P50" => ("latency_p50_seconds", json!(pct(0.5))),
            "LATENCY_P99" => ("latency_p99_seconds", json!(pct(0.99))),
            "PROMPT_TOKENS" => ("prompt_tokens", json!(isum(|r| r.prompt_tokens))),
            "COMPLETION_TOKENS" => ("completion_tokens", json!(isum(|r| r.completion_tokens))),
            "TOTAL_TOKENS" => ("total_tokens", json!(isum(|r| r.total_tokens))),
            "PROMPT_COST" => ("prompt_cost", json!(fsum(|r| r.prompt_cost))),
            "COMPLETION_COST" => ("completion_cost", json!(fsum(|r| r.completion_cost))),
            "TOTAL_COST" => ("total_cost", json!(fsum(|r| r.total_cost))),
            "FEEDBACK_STATS" => {
                let ids: Vec<RunId> = turns.iter().map(|r| r.id).collect();
                let mut feedback = FeedbackStats::default();
                for fs in s.ingest.run_feedback_stats(p.tenant, &ids).await?.values() {
                    merge_feedback_stats(&mut feedback, fs);
                }
                ("feedback_stats", feedback.to_json())
            }
            other => {
                out.insert(other.to_ascii_lowercase(), Value::Null);
                continue;
            }
        };
        out.insert(key.to_string(), value);
    }
    Ok(Json(Value::Object(out)).into_response())
}

/// What `POST /threads/stats` may select (LangSmith's aggregate thread stats fields).
const AGGREGATE_SELECTS: [&str; 20] = [
    "THREAD_COUNT",
    "TRACE_COUNT",
    "TOTAL_TOKENS",
    "TOTAL_COST",
    "ERROR_RATE",
    "STREAMING_RATE",
    "LATENCY_P50",
    "LATENCY_P99",
    "MEDIAN_TOKENS",
    "FIRST_TOKEN_P50",
    "FIRST_TOKEN_P99",
    "PROMPT_TOKENS",
    "COMPLETION_TOKENS",
    "PROMPT_COST",
    "COMPLETION_COST",
    "PROMPT_TOKEN_DETAILS",
    "COMPLETION_TOKEN_DETAILS",
    "PROMPT_COST_DETAILS",
    "COMPLETION_COST_DETAILS",
    "THREAD_FEEDBACK_STATS",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateQuery {
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    select: Vec<String>,
    #[serde(default)]
    min_start_time: Option<WireTime>,
    #[serde(default)]
    max_start_time: Option<WireTime>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    trace_filter: Option<String>,
    #[serde(default)]
    tree_filter: Option<String>,
    #[serde(default)]
    thread_filter: Option<String>,
}

/// The value at quantile `q` of sorted `v` (nearest rank), `None` when empty.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize])
}

/// `POST /threads/stats` (`client.threads.aggregateStats`): aggregates over the traces of
/// every thread that has a trace in the window matching the filters (the threads
/// `POST /threads/query` would list). Per-category token and cost details are not tracked:
/// selected, they are `{}`.
async fn aggregate_stats(State(s): State<HttpState>, Caller(p): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, 1024 * 1024).await?;
    let b: AggregateQuery = parse_json("body", &raw)?;
    if b.thread_filter.is_some() {
        return Err(not_implemented("thread_filter"));
    }
    let project = project(b.project_id.as_deref())?;
    if b.select.is_empty() {
        return Err(ApiError::unprocessable(format!("select: at least one of {} is required", AGGREGATE_SELECTS.join(", "))));
    }
    if let Some(bad) = b.select.iter().find(|s| !AGGREGATE_SELECTS.contains(&s.as_str())) {
        return Err(ApiError::unprocessable(format!(
            "select: {:?} is not one of {}",
            sextant_proto::truncate(bad),
            AGGREGATE_SELECTS.join(", ")
        )));
    }
    let (min, max) = crate::v2::window(b.min_start_time, b.max_start_time)?;
    let base = RunQueryRequest { projects: vec![project], start_time: Some(min), end_time: Some(max), ..Default::default() };
    let all = roots(&s, p.tenant, base.clone()).await?;
    let wanted = threads_with_a_match(&s, p.tenant, base, b.filter, b.trace_filter, b.tree_filter).await?;
    let traces: Vec<&Run> =
        all.iter().filter(|r| sextant_filter::thread_id(r).is_some_and(|t| wanted.as_ref().is_none_or(|w| w.contains(t)))).collect();
    let threads: std::collections::HashSet<&str> = traces.iter().filter_map(|r| sextant_filter::thread_id(r)).collect();
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let latencies = sorted(traces.iter().filter_map(|r| r.latency_secs()).collect());
    let first_tokens =
        sorted(traces.iter().filter_map(|r| Some((r.first_token_time?.micros() - r.start_time?.micros()) as f64 / 1e6)).collect());
    let tokens = sorted(traces.iter().filter_map(|r| r.total_tokens).map(|t| t as f64).collect());
    let completed: Vec<&&Run> = traces.iter().filter(|r| r.end_time.is_some() || r.status() == sextant_core::RunStatus::Error).collect();
    let rate = |n: usize, of: usize| if of == 0 { None } else { Some(n as f64 / of as f64) };
    let isum = |f: fn(&Run) -> Option<i64>| traces.iter().filter_map(|r| f(r)).fold(0i64, i64::saturating_add);
    let fsum = |f: fn(&Run) -> Option<f64>| traces.iter().filter_map(|r| f(r)).sum::<f64>();
    let mut out = Map::new();
    for sel in &b.select {
        let (key, value) = match sel.as_str() {
            "THREAD_COUNT" => ("thread_count", json!(threads.len())),
            "TRACE_COUNT" => ("trace_count", json!(traces.len())),
            "TOTAL_TOKENS" => ("total_tokens", json!(isum(|r| r.total_tokens))),
            "PROMPT_TOKENS" => ("prompt_tokens", json!(isum(|r| r.prompt_tokens))),
            "COMPLETION_TOKENS" => ("completion_tokens", json!(isum(|r| r.completion_tokens))),
            "TOTAL_COST" => ("total_cost", json!(fsum(|r| r.total_cost))),
            "PROMPT_COST" => ("prompt_cost", json!(fsum(|r| r.prompt_cost))),
            "COMPLETION_COST" => ("completion_cost", json!(fsum(|r| r.completion_cost))),
            "ERROR_RATE" => (
                "error_rate",
                json!(rate(completed.iter().filter(|r| r.status() == sextant_core::RunStatus::Error).count(), completed.len())),
            ),
            "STREAMING_RATE" => {
                ("streaming_rate", json!(rate(completed.iter().filter(|r| r.first_token_time.is_some()).count(), completed.len())))
            }
            "LATENCY_P50" => ("latency_p50_seconds", json!(quantile(&latencies, 0.5))),
            "LATENCY_P99" => ("latency_p99_seconds", json!(quantile(&latencies, 0.99))),
            "MEDIAN_TOKENS" => ("median_tokens", json!(quantile(&tokens, 0.5))),
            "FIRST_TOKEN_P50" => ("first_token_p50_seconds", json!(quantile(&first_tokens, 0.5))),
            "FIRST_TOKEN_P99" => ("first_token_p99_seconds", json!(quantile(&first_tokens, 0.99))),
            "PROMPT_TOKEN_DETAILS" => ("prompt_token_details", json!({})),
            "COMPLETION_TOKEN_DETAILS" => ("completion_token_details", json!({})),
            "PROMPT_COST_DETAILS" => ("prompt_cost_details", json!({})),
            "COMPLETION_COST_DETAILS" => ("completion_cost_details", json!({})),
            _ => {
                // THREAD_FEEDBACK_STATS: every key's stats over the matching traces.
                let ids: Vec<RunId> = traces.iter().map(|r| r.id).collect();
                let mut feedback = FeedbackStats::default();
                for fs in s.ingest.run_feedback_stats(p.tenant, &ids).await?.values() {
                    merge_feedback_stats(&mut feedback, fs);
                }
                ("thread_feedback_stats", feedback.to_json())
            }
        };
        out.insert(key.to_string(), value);
    }
    Ok(Json(Value::Object(out)).into_response())
}
