//! The gRPC `RunService` (`proto/sextant/v1/runs.proto`): a thin transport over [`Ingest`],
//! like `http.rs`. Runs coming in are validated by the same code as REST ([`WireRun`]), and
//! every failure becomes a status through [`ApiError`], the one mapping.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use tracing::{field, instrument, Span};

use sextant_auth::Authenticator;
use sextant_core::{FragmentKind, ProjectId, RunFragment, RunId, WireTime};
use sextant_proto::grpc::{authenticate, non_empty, opt_timestamp, opt_uuid, required_uuid, rfc3339, run_to_pb, uuids, ClientErrors};
use sextant_proto::pb;
use sextant_proto::pb::run_service_server::{RunService, RunServiceServer};
use sextant_proto::prost_types;
use sextant_proto::ApiError;

use crate::core::{Ingest, RunQueryRequest};
use crate::wire::{ProjectRef, WireRun};

/// Responses (a query page, a streamed run) may be larger than requests: one stored run can
/// be the merge of several requests. Beyond this a client should ask for fewer runs per page.
const MAX_ENCODED_BYTES: usize = 256 * 1024 * 1024;

/// The `RunService` implementation; build it with [`service`].
pub struct RunGrpc {
    ingest: Arc<Ingest>,
    auth: Arc<Authenticator>,
}

/// The gRPC `RunService` over `ingest`, authenticating with `auth`. Requests are limited to
/// the REST body limit (`IngestLimits::max_body_bytes`, after decompression); gzip and zstd
/// are accepted and used for responses when the client accepts them.
pub fn service(ingest: Arc<Ingest>, auth: Arc<Authenticator>) -> ClientErrors<RunServiceServer<RunGrpc>> {
    let max_request = ingest.limits.max_body_bytes;
    sextant_proto::tuned_server!(RunServiceServer::new(RunGrpc { ingest, auth }), max_request, MAX_ENCODED_BYTES)
}

#[tonic::async_trait]
impl RunService for RunGrpc {
    #[instrument(name = "grpc.ingest_runs", skip_all, fields(tenant = field::Empty, runs = field::Empty))]
    async fn ingest_runs(&self, req: Request<pb::IngestRunsRequest>) -> Result<Response<pb::IngestRunsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let body = req.into_inner();
        Span::current().record("runs", body.post.len() + body.patch.len());
        let mut fragments = Vec::with_capacity(body.post.len() + body.patch.len());
        for (kind, label, runs) in [(FragmentKind::Post, "post", body.post), (FragmentKind::Patch, "patch", body.patch)] {
            for (i, run) in runs.into_iter().enumerate() {
                fragments.push(to_fragment(run, kind, &format!("{label}[{i}]"))?);
            }
        }
        let runs = fragments.len();
        if !fragments.is_empty() {
            self.ingest.ingest(p.tenant, fragments).await?;
        }
        metrics::counter!("sextant_ingest_requests_total", "path" => "grpc").increment(1);
        Ok(Response::new(pb::IngestRunsResponse { runs: runs as u64 }))
    }

    #[instrument(name = "grpc.get_run", skip_all, fields(tenant = field::Empty))]
    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let id = run_id("id", &req.get_ref().id)?;
        let run = self.ingest.get_run(p.tenant, id).await?;
        Ok(Response::new(run_to_pb(run)))
    }

    #[instrument(name = "grpc.query_runs", skip_all, fields(tenant = field::Empty))]
    async fn query_runs(&self, req: Request<pb::QueryRunsRequest>) -> Result<Response<pb::QueryRunsResponse>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let q = to_query(req.into_inner())?;
        let page = self.ingest.query_runs(p.tenant, q).await?;
        Ok(Response::new(pb::QueryRunsResponse {
            runs: page.runs.into_iter().map(run_to_pb).collect(),
            next_cursor: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    type StreamTraceStream = Pin<Box<dyn Stream<Item = Result<pb::Run, Status>> + Send>>;

    /// One message per run, converted as the transport asks for it: tonic encodes several
    /// runs per HTTP/2 write and stops pulling when the client's flow-control window is full.
    #[instrument(name = "grpc.stream_trace", skip_all, fields(tenant = field::Empty, runs = field::Empty))]
    async fn stream_trace(&self, req: Request<pb::StreamTraceRequest>) -> Result<Response<Self::StreamTraceStream>, Status> {
        let p = authenticate(&self.auth, &req)?;
        let trace = run_id("trace_id", &req.get_ref().trace_id)?;
        let runs = self.ingest.trace_runs(p.tenant, trace).await?;
        Span::current().record("runs", runs.len());
        Ok(Response::new(Box::pin(futures::stream::iter(runs.into_iter().map(|r| Ok(run_to_pb(r)))))))
    }
}

// ---- requests into the domain ----

/// A proto run through the same validation as a REST run: the typed fields become a
/// [`WireRun`] and its `into_fragment` applies the rules.
fn to_fragment(run: pb::Run, kind: FragmentKind, where_: &str) -> Result<(RunFragment, ProjectRef), ApiError> {
    let pb::Run {
        id,
        trace_id,
        parent_run_id,
        dotted_order,
        parent_run_ids: _,
        session_id,
        session_name,
        name,
        run_type,
        start_time,
        end_time,
        first_token_time,
        tags,
        inputs_json,
        outputs_json,
        error,
        extra_json,
        events_json,
        serialized_json,
        reference_example_id,
        status,
        prompt_tokens,
        completion_tokens,
        total_tokens,
        prompt_cost,
        completion_cost,
        total_cost,
        attachments: _,
    } = run;
    let extra = match extra_json.as_deref() {
        None => None,
        Some(s) => serde_json::from_str::<Option<Map<String, Value>>>(s)
            .map_err(|e| ApiError::unprocessable(format!("{where_}.extra_json: not a JSON object: {e}")))?,
    };
    let wire = WireRun {
        id: Some(id),
        trace_id,
        parent_run_id,
        dotted_order,
        name,
        run_type,
        start_time: wire_time(where_, "start_time", start_time)?,
        end_time: wire_time(where_, "end_time", end_time)?,
        first_token_time: wire_time(where_, "first_token_time", first_token_time)?,
        session_name,
        session_id,
        tags: if tags.is_empty() { None } else { Some(tags) },
        inputs: raw_json(where_, "inputs_json", &inputs_json)?,
        outputs: raw_json(where_, "outputs_json", &outputs_json)?,
        events: raw_json(where_, "events_json", &events_json)?,
        serialized: raw_json(where_, "serialized_json", &serialized_json)?,
        extra,
        error,
        reference_example_id,
        status,
        prompt_tokens,
        completion_tokens,
        total_tokens,
        prompt_cost,
        completion_cost,
        total_cost,
    };
    wire.into_fragment(kind, where_, None)
}

/// A proto time as the text a REST body would carry, so [`WireRun`] applies its one set of
/// rules to it (the conversion is exact: both sides keep microseconds).
fn wire_time(where_: &str, field: &str, t: Option<prost_types::Timestamp>) -> Result<Option<WireTime>, ApiError> {
    Ok(opt_timestamp(&format!("{where_}.{field}"), t.as_ref())?.map(|t| WireTime::Text(rfc3339(t))))
}

/// JSON text, validated and borrowed (kept verbatim, as REST keeps it).
fn raw_json<'a>(where_: &str, field: &str, v: &'a Option<String>) -> Result<Option<&'a RawValue>, ApiError> {
    v.as_deref()
        .map(|s| serde_json::from_str::<&RawValue>(s).map_err(|e| ApiError::unprocessable(format!("{where_}.{field}: invalid JSON: {e}"))))
        .transpose()
}

fn run_id(field: &str, v: &str) -> Result<RunId, ApiError> {
    required_uuid(field, v).map(RunId)
}

fn opt_run_id(field: &str, v: &str) -> Result<Option<RunId>, ApiError> {
    Ok(opt_uuid(field, v)?.map(RunId))
}

/// Mirrors REST's `QueryBody` → [`RunQueryRequest`]; the core validates the limit and the
/// filters (their errors carry the position).
fn to_query(q: pb::QueryRunsRequest) -> Result<RunQueryRequest, ApiError> {
    Ok(RunQueryRequest {
        projects: uuids("session_ids", &q.session_ids)?.into_iter().map(ProjectId).collect(),
        ids: if q.ids.is_empty() { None } else { Some(uuids("ids", &q.ids)?.into_iter().map(RunId).collect()) },
        trace: opt_run_id("trace", &q.trace)?,
        parent_run: opt_run_id("parent_run", &q.parent_run)?,
        is_root: q.is_root,
        run_type: non_empty(q.run_type),
        error: q.error,
        reference_examples: uuids("reference_examples", &q.reference_examples)?,
        start_time: opt_timestamp("start_time", q.start_time.as_ref())?,
        end_time: opt_timestamp("end_time", q.end_time.as_ref())?,
        filter: non_empty(q.filter),
        trace_filter: non_empty(q.trace_filter),
        tree_filter: non_empty(q.tree_filter),
        query: non_empty(q.query),
        limit: if q.limit == 0 { None } else { Some(q.limit as usize) },
        cursor: non_empty(q.cursor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_core::{Run, Timestamp};

    const ID: &str = "01a21085-dddd-7ab9-9494-115de01cbb17";

    fn ts(iso: &str) -> prost_types::Timestamp {
        sextant_proto::grpc::timestamp_to_pb(Timestamp::parse(iso).unwrap())
    }

    fn run() -> pb::Run {
        pb::Run {
            id: ID.into(),
            session_name: Some("p".into()),
            start_time: Some(ts("2026-11-25T02:25:38.269290Z")),
            inputs_json: Some(r#"{"q": 1}"#.into()),
            extra_json: Some(r#"{"metadata":{"user":"u1"}}"#.into()),
            tags: vec!["t".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_proto_run_becomes_the_same_fragment_as_rest() {
        let (f, p) = to_fragment(run(), FragmentKind::Post, "post[0]").unwrap();
        assert_eq!(p, ProjectRef::Name("p".into()));
        assert_eq!(f.inputs.unwrap().as_str(), r#"{"q": 1}"#);
        assert_eq!(f.extra.unwrap()["metadata"]["user"], "u1");
        assert_eq!(f.tags.unwrap(), ["t"]);
        assert_eq!(f.start_time, Some(Timestamp::parse("2026-11-25T02:25:38.269290").unwrap()));
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |edit: fn(&mut pb::Run)| {
            let mut r = run();
            edit(&mut r);
            let e = to_fragment(r, FragmentKind::Post, "post[3]").unwrap_err();
            assert_eq!(e.kind.grpc(), tonic::Code::InvalidArgument);
            e.message
        };
        assert!(bad(|r| r.id = "nope".into()).contains("post[3].id"));
        assert!(bad(|r| r.id = String::new()).contains("post[3].id is required"));
        assert!(bad(|r| r.parent_run_id = Some("x".into())).contains("post[3].parent_run_id"));
        assert!(bad(|r| r.start_time = Some(prost_types::Timestamp { seconds: 0, nanos: -1 })).contains("post[3].start_time: nanos"));
        assert!(bad(|r| r.end_time = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 })).contains("post[3].end_time"));
        assert!(bad(|r| r.inputs_json = Some("{".into())).contains("post[3].inputs_json"));
        assert!(bad(|r| r.extra_json = Some("[1]".into())).contains("post[3].extra_json"));
    }

    #[test]
    fn grpc_runs_meet_the_same_rules_as_rest() {
        let bad = |edit: fn(&mut pb::Run)| {
            let mut r = run();
            edit(&mut r);
            let e = to_fragment(r, FragmentKind::Post, "post[0]").unwrap_err();
            assert_eq!(e.kind.grpc(), tonic::Code::InvalidArgument);
            e.message
        };
        assert!(bad(|r| r.prompt_cost = Some(f64::NAN)).contains("post[0].prompt_cost: NaN"));
        assert!(bad(|r| r.completion_cost = Some(f64::INFINITY)).contains("post[0].completion_cost"));
        assert!(bad(|r| r.total_cost = Some(f64::NEG_INFINITY)).contains("post[0].total_cost"));
        assert!(bad(|r| r.total_cost = Some(-0.5)).contains("post[0].total_cost: -0.5"));
        assert!(bad(|r| r.prompt_tokens = Some(-1)).contains("post[0].prompt_tokens: -1 is negative"));
        assert!(bad(|r| r.completion_tokens = Some(-3)).contains("post[0].completion_tokens"));
        assert!(bad(|r| r.total_tokens = Some(i64::MIN)).contains("post[0].total_tokens"));
        assert!(bad(|r| r.status = Some("exploded".into())).contains("post[0].status: \"exploded\" is not one of success, error, pending"));
        assert!(bad(|r| r.inputs_json = Some("5".into())).contains("post[0].inputs: expected a JSON object, got a number"));
        assert!(bad(|r| r.outputs_json = Some(r#"["a"]"#.into())).contains("post[0].outputs: expected a JSON object, got an array"));
        // What the SDK sends is fine: zero costs, capitalised statuses, null outputs.
        let mut ok = run();
        ok.prompt_cost = Some(0.0);
        ok.total_tokens = Some(0);
        ok.status = Some("SUCCESS".into());
        ok.outputs_json = Some("null".into());
        let (f, _) = to_fragment(ok, FragmentKind::Post, "post[0]").unwrap();
        assert_eq!(f.status.as_deref(), Some("success"));
    }

    #[test]
    fn round_trips_through_the_domain() {
        let (f, _) = to_fragment(run(), FragmentKind::Post, "post[0]").unwrap();
        let mut stored = Run::empty(f.id, ProjectId(uuid::Uuid::nil()));
        stored.apply(&f);
        stored.derive();
        let out = run_to_pb(stored);
        assert_eq!(out.id, ID);
        assert_eq!(out.trace_id.as_deref(), Some(ID));
        assert_eq!(out.start_time, Some(ts("2026-11-25T02:25:38.269290Z")));
        assert_eq!(out.start_time.unwrap().to_string(), "2026-11-25T02:25:38.269290Z");
        assert_eq!(out.inputs_json.as_deref(), Some(r#"{"q": 1}"#));
        assert_eq!(out.status.as_deref(), Some("pending"));
        assert_eq!(out.dotted_order.as_deref(), Some(format!("20261125T022538269290Z{ID}").as_str()));
    }

    #[test]
    fn empty_query_fields_mean_not_given() {
        let q = to_query(pb::QueryRunsRequest::default()).unwrap();
        assert!(q.ids.is_none() && q.trace.is_none() && q.filter.is_none() && q.limit.is_none() && q.projects.is_empty());
        let e = to_query(pb::QueryRunsRequest { session_ids: vec!["zz".into()], ..Default::default() }).unwrap_err();
        assert!(e.message.contains("session_ids"), "{}", e.message);
    }
}
