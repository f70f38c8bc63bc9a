"""Sextant's gRPC API from Python, the way a user of another language gets it: stubs generated
from `proto/` with grpcio-tools (at test time, into a temporary directory), a plain `grpc`
channel with the `x-api-key` metadata, and a real server. Every service is exercised by writing
through gRPC and reading back (over gRPC, and over REST where the two must agree); the standard
health and reflection services are checked with stubs generated from their own protos.

Times are `google.protobuf.Timestamp`; free-form documents are JSON text in `*_json` fields
(docs/grpc.md).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional, TypeVar

import grpc
import pytest
import requests
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp

from sextant_helpers import API_KEY, READ_TIMEOUT_S

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
SERVICES = [
    "sextant.v1.RunService",
    "sextant.v1.FeedbackService",
    "sextant.v1.AnnotationQueueService",
    "sextant.v1.DatasetService",
    "sextant.v1.EvaluationService",
    "sextant.v1.PromptService",
]
METADATA = (("x-api-key", API_KEY),)

T = TypeVar("T")

# The standard protos, as published by the gRPC project (grpc/health/v1/health.proto and
# grpc/reflection/v1/reflection.proto, the messages this test uses), so the test needs no
# package beyond grpcio-tools. Package names and field numbers are those of the originals;
# the files are written under `std_protos/` so the generated Python modules do not collide
# with grpcio's own `grpc` package.
HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""
REFLECTION_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""


def generate_stubs(out: Path) -> SimpleNamespace:
    """Runs protoc (grpcio-tools) over proto/sextant/v1 and the two standard protos, as the
    docs tell users to, and imports the generated modules."""
    from grpc_tools import protoc
    import grpc_tools

    std = out / "std"
    (std / "std_protos").mkdir(parents=True)
    (std / "std_protos" / "health.proto").write_text(HEALTH_PROTO)
    (std / "std_protos" / "reflection.proto").write_text(REFLECTION_PROTO)
    gen = out / "gen"
    gen.mkdir()
    # grpc_tools ships the well-known types (google/protobuf/timestamp.proto) here.
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "sextant" / "v1").glob("*.proto"))
    assert protos, f"no protos under {PROTO_ROOT}"
    for include, files in [(PROTO_ROOT, protos), (std, ["std_protos/health.proto", "std_protos/reflection.proto"])]:
        args = ["protoc", f"-I{include}", f"-I{well_known}", f"--python_out={gen}", f"--grpc_python_out={gen}", *files]
        code = protoc.main(args)
        assert code == 0, f"protoc failed ({code}): {' '.join(args)}"
    sys.path.insert(0, str(gen))
    try:
        mods = {}
        for name in ["runs", "feedback", "datasets", "evaluation", "prompts"]:
            mods[name] = importlib.import_module(f"sextant.v1.{name}_pb2")
            mods[name + "_grpc"] = importlib.import_module(f"sextant.v1.{name}_pb2_grpc")
        for name in ["health", "reflection"]:
            mods[name] = importlib.import_module(f"std_protos.{name}_pb2")
            mods[name + "_grpc"] = importlib.import_module(f"std_protos.{name}_pb2_grpc")
    finally:
        sys.path.remove(str(gen))
    return SimpleNamespace(**mods)


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return generate_stubs(tmp_path_factory.mktemp("grpc-stubs"))


@pytest.fixture(scope="module")
def channel(sextant: Any) -> grpc.Channel:
    if sextant.grpc_target is None:
        pytest.skip("the gRPC address of an external SEXTANT_URL server is not known")
    ch = grpc.insecure_channel(
        sextant.grpc_target,
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()


def ts(iso: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(iso)
    return t


def poll(what: str, f: Callable[[], Optional[T]], timeout: float = READ_TIMEOUT_S) -> T:
    """Calls `f` until it returns something other than None (reads lag writes a little)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            v = f()
            if v is not None:
                return v
        except grpc.RpcError as e:
            last = f"{e.code()}: {e.details()}"
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:.0f}s (last error: {last})")
        time.sleep(0.05)


def ingest_experiment(pb: SimpleNamespace, runs: Any, project: str, examples: list[str]) -> list[str]:
    """One root run per example into `project` over gRPC; returns the run ids."""
    ids = []
    posts = []
    start = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.timezone.utc)
    for i, ex in enumerate(examples):
        rid = str(uuid.uuid4())
        ids.append(rid)
        start_time, end_time = Timestamp(), Timestamp()
        start_time.FromDatetime(start)
        end_time.FromDatetime(start + dt.timedelta(seconds=i + 0.5))
        posts.append(
            pb.runs.Run(
                id=rid,
                name="answer",
                run_type="chain",
                session_name=project,
                start_time=start_time,
                end_time=end_time,
                inputs_json=json.dumps({"q": i}),
                outputs_json=json.dumps({"a": "x" * (3 if i % 2 else 30)}),
                reference_example_id=ex,
            )
        )
    resp = runs.IngestRuns(pb.runs.IngestRunsRequest(post=posts), metadata=METADATA)
    assert resp.runs == len(posts)
    return ids


def test_health_is_serving_for_the_server_and_every_service(pb: SimpleNamespace, channel: grpc.Channel) -> None:
    health = pb.health_grpc.HealthStub(channel)
    serving = pb.health.HealthCheckResponse.SERVING
    for service in ["", *SERVICES]:
        # No API key: probes and load balancers send none. Health re-checks readiness every
        # second, so it may trail /readyz (which the fixture waited for) by that much.
        def check() -> Optional[Any]:
            r = health.Check(pb.health.HealthCheckRequest(service=service), timeout=5)
            return r if r.status == serving else None

        poll(f"{service!r} SERVING", check, timeout=5)
    with pytest.raises(grpc.RpcError) as e:
        health.Check(pb.health.HealthCheckRequest(service="sextant.v1.Nope"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # Watch streams the current status first.
    watch = health.Watch(pb.health.HealthCheckRequest(service="sextant.v1.RunService"), timeout=5)
    assert next(watch).status == serving
    watch.cancel()


def test_reflection_lists_the_services_and_serves_descriptors_a_client_can_use(pb: SimpleNamespace, channel: grpc.Channel) -> None:
    refl = pb.reflection_grpc.ServerReflectionStub(channel)
    Req = pb.reflection.ServerReflectionRequest

    def ask(**kw: str) -> Any:
        (answer,) = list(refl.ServerReflectionInfo(iter([Req(**kw)]), timeout=10))
        assert answer.WhichOneof("message_response") != "error_response", answer.error_response
        return answer

    names = {s.name for s in ask(list_services="").list_services_response.service}
    assert set(SERVICES) | {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names, names

    files = ask(file_containing_symbol="sextant.v1.FeedbackService").file_descriptor_response.file_descriptor_proto
    decoded = {}
    for raw in files:
        fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        decoded[fd.name] = fd
    feedback = decoded["sextant/v1/feedback.proto"]
    assert feedback.package == "sextant.v1"
    assert feedback.options.java_package == "dev.sextant.v1" and feedback.options.java_multiple_files
    assert feedback.options.go_package.endswith(";sextantv1")
    assert [s.name for s in feedback.service] == ["FeedbackService", "AnnotationQueueService"]
    # Its imports are served by name (as grpcurl fetches them): a pool built from reflection
    # alone resolves every type.
    wanted = [d for d in feedback.dependency]
    while wanted:
        name = wanted.pop()
        if name in decoded:
            continue
        for raw in ask(file_by_filename=name).file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            decoded[fd.name] = fd
            wanted.extend(fd.dependency)
    assert {"sextant/v1/runs.proto", "google/protobuf/timestamp.proto"} <= set(decoded), sorted(decoded)
    pool = descriptor_pool.DescriptorPool()
    pending = dict(decoded)
    while pending:
        for name, fd in list(pending.items()):
            if all(dep not in pending for dep in fd.dependency):
                pool.Add(fd)
                del pending[name]
    msg = pool.FindMessageTypeByName("sextant.v1.Feedback")
    assert msg.fields_by_name["created_at"].message_type.full_name == "google.protobuf.Timestamp"
    assert msg.fields_by_name["value_json"].type == msg.fields_by_name["value_json"].TYPE_STRING



def test_runs_are_ingested_read_queried_and_streamed(pb: SimpleNamespace, channel: grpc.Channel, sextant: Any, project_name: str) -> None:
    runs = pb.runs_grpc.RunServiceStub(channel)
    root, child = str(uuid.uuid4()), str(uuid.uuid4())
    post = [
        pb.runs.Run(
            id=root,
            trace_id=root,
            name="root",
            run_type="chain",
            session_name=project_name,
            start_time=ts("2026-11-25T02:25:38.269290Z"),
            inputs_json='{"question": "why?"}',
            extra_json='{"metadata": {"user": "py"}}',
            tags=["grpc-py"],
        ),
        pb.runs.Run(
            id=child,
            trace_id=root,
            parent_run_id=root,
            name="llm",
            run_type="llm",
            session_name=project_name,
            start_time=ts("2026-11-25T02:25:38.300000Z"),
            end_time=ts("2026-11-25T02:25:39Z"),
            inputs_json="{}",
        ),
    ]
    patch = [pb.runs.Run(id=root, end_time=ts("2026-11-25T02:25:40.5Z"), outputs_json='{"answer": 42}')]
    assert runs.IngestRuns(pb.runs.IngestRunsRequest(post=post, patch=patch), metadata=METADATA).runs == 3

    got = poll(
        "the patched root run",
        lambda: (lambda r: r if r.HasField("end_time") and r.outputs_json else None)(
            runs.GetRun(pb.runs.GetRunRequest(id=root), metadata=METADATA)
        ),
    )
    assert got.name == "root" and got.status == "success"
    assert got.start_time == ts("2026-11-25T02:25:38.269290Z")
    assert got.start_time.ToDatetime(tzinfo=dt.timezone.utc) == dt.datetime(2026, 11, 25, 2, 25, 38, 269290, tzinfo=dt.timezone.utc)
    assert got.end_time.ToJsonString() == "2026-11-25T02:25:40.500Z"
    assert json.loads(got.outputs_json) == {"answer": 42}
    assert got.inputs_json == '{"question": "why?"}', "JSON text comes back verbatim"
    assert list(got.tags) == ["grpc-py"]

    # REST reads the same run, the same instant.
    rest = requests.get(f"{sextant.url}/runs/{root}", headers={"x-api-key": API_KEY}, timeout=10).json()
    assert rest["start_time"] == "2026-11-25T02:25:38.269290"
    assert rest["extra"]["metadata"]["user"] == "py"

    # Query by project and a Timestamp window; the filter language as REST has it.
    project = got.session_id
    window = pb.runs.QueryRunsRequest(
        session_ids=[project], start_time=ts("2026-11-25T02:25:38.280Z"), end_time=ts("2026-11-25T02:26:00Z")
    )
    page = poll("the child in the window", lambda: (lambda p: p if p.runs else None)(runs.QueryRuns(window, metadata=METADATA)))
    assert [r.id for r in page.runs] == [child], "the root started before the window"
    llm = runs.QueryRuns(pb.runs.QueryRunsRequest(session_ids=[project], filter='eq(run_type, "llm")'), metadata=METADATA)
    assert [r.id for r in llm.runs] == [child]
    with pytest.raises(grpc.RpcError) as e:
        runs.QueryRuns(pb.runs.QueryRunsRequest(filter="eq(run_type"), metadata=METADATA)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    streamed = list(runs.StreamTrace(pb.runs.StreamTraceRequest(trace_id=root), metadata=METADATA))
    assert [r.id for r in streamed] == [root, child], "parents before their children"
    assert list(streamed[1].parent_run_ids) == [root]

    # A time the Timestamp type forbids is refused, naming the field.
    bad = pb.runs.Run(id=str(uuid.uuid4()), session_name=project_name, start_time=Timestamp(seconds=0, nanos=-1))
    with pytest.raises(grpc.RpcError) as e:
        runs.IngestRuns(pb.runs.IngestRunsRequest(post=[bad]), metadata=METADATA)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "post[0].start_time" in e.value.details()


def test_feedback_and_annotation_queues(pb: SimpleNamespace, channel: grpc.Channel, sextant: Any, project_name: str) -> None:
    runs = pb.runs_grpc.RunServiceStub(channel)
    fb = pb.feedback_grpc.FeedbackServiceStub(channel)
    queues = pb.feedback_grpc.AnnotationQueueServiceStub(channel)
    run_id = str(uuid.uuid4())
    runs.IngestRuns(
        pb.runs.IngestRunsRequest(
            post=[pb.runs.Run(id=run_id, name="answer", run_type="chain", session_name=project_name,
                              start_time=ts("2026-11-25T02:00:00Z"), end_time=ts("2026-11-25T02:00:01Z"),
                              inputs_json='{"q": 1}', outputs_json='{"a": 2}')]
        ),
        metadata=METADATA,
    )
    stored = poll("the run", lambda: runs.GetRun(pb.runs.GetRunRequest(id=run_id), metadata=METADATA))

    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    created = fb.CreateFeedback(
        pb.feedback.CreateFeedbackRequest(
            feedback=pb.feedback.Feedback(
                run_id=run_id, key="correctness", score=pb.feedback.Score(number=0.75),
                value_json='{"label": "mostly"}', comment="good",
            )
        ),
        metadata=METADATA,
    )
    assert created.id and created.session_id == stored.session_id, "resolved from the run's project"
    assert created.created_at.ToDatetime(tzinfo=dt.timezone.utc) > before
    got = poll("the feedback", lambda: fb.GetFeedback(pb.feedback.GetFeedbackRequest(id=created.id), metadata=METADATA))
    assert got.score.number == 0.75 and json.loads(got.value_json) == {"label": "mostly"}
    assert got.session_id == stored.session_id and got.created_at == created.created_at
    rest = requests.get(f"{sextant.url}/feedback/{created.id}", headers={"x-api-key": API_KEY}, timeout=10).json()
    assert rest["key"] == "correctness" and rest["score"] == 0.75

    updated = fb.UpdateFeedback(pb.feedback.UpdateFeedbackRequest(id=created.id, score=pb.feedback.Score(boolean=True), clear=["comment"]), metadata=METADATA)
    assert updated.score.boolean is True and not updated.HasField("comment")
    listed = poll(
        "the updated feedback in the list",
        lambda: (lambda l: l if l and l[0].score.HasField("boolean") else None)(
            list(fb.ListFeedback(pb.feedback.ListFeedbackRequest(run_ids=[run_id]), metadata=METADATA).feedback)
        ),
    )
    assert [f.id for f in listed] == [created.id]
    fb.DeleteFeedback(pb.feedback.DeleteFeedbackRequest(id=created.id), metadata=METADATA)

    def gone() -> Optional[bool]:
        try:
            fb.GetFeedback(pb.feedback.GetFeedbackRequest(id=created.id), metadata=METADATA)
            return None
        except grpc.RpcError as e:
            return True if e.code() == grpc.StatusCode.NOT_FOUND else None

    poll("the deletion", gone)

    # A queue: add the run, lease it, review it (the review becomes feedback).
    q = queues.CreateQueue(pb.feedback.CreateQueueRequest(name=f"py {project_name}", rubric_instructions="Is it right?"), metadata=METADATA)
    assert queues.GetQueue(pb.feedback.GetQueueRequest(id=q.id), metadata=METADATA).name == q.name
    assert q.HasField("created_at")
    added = queues.AddRuns(pb.feedback.AddRunsRequest(queue_id=q.id, run_ids=[run_id]), metadata=METADATA)
    assert [i.run_id for i in added.items] == [run_id]
    nxt = queues.NextItem(pb.feedback.NextItemRequest(queue_id=q.id, reviewer="ana"), metadata=METADATA)
    assert nxt.item.run_id == run_id and nxt.run.name == "answer" and nxt.item.leased_to == "ana"
    assert nxt.item.lease_expires_at.ToDatetime(tzinfo=dt.timezone.utc) > dt.datetime.now(dt.timezone.utc)
    reviewed = queues.ReviewItem(
        pb.feedback.ReviewItemRequest(queue_id=q.id, item_id=nxt.item.id, reviewer="ana",
                                      scores=[pb.feedback.ReviewScore(key="right", score=pb.feedback.Score(boolean=True))]),
        metadata=METADATA,
    )
    assert reviewed.status == "completed" and [r.reviewer for r in reviewed.reviews] == ["ana"]
    review_feedback = poll(
        "the review as feedback",
        lambda: [f for f in fb.ListFeedback(pb.feedback.ListFeedbackRequest(run_ids=[run_id], keys=["right"]), metadata=METADATA).feedback] or None,
    )
    assert review_feedback[0].score.boolean is True
    queues.DeleteQueue(pb.feedback.DeleteQueueRequest(id=q.id), metadata=METADATA)


def test_datasets_examples_versions_and_curation(pb: SimpleNamespace, channel: grpc.Channel, sextant: Any, project_name: str) -> None:
    ds = pb.datasets_grpc.DatasetServiceStub(channel)
    d = ds.CreateDataset(
        pb.datasets.CreateDatasetRequest(name=f"py-grpc-{project_name}", description="from Python",
                                         inputs_schema_json='{"type": "object", "required": ["q"]}'),
        metadata=METADATA,
    )
    assert ds.GetDataset(pb.datasets.GetDatasetRequest(name=d.name), metadata=METADATA).id == d.id
    with pytest.raises(grpc.RpcError) as e:
        ds.CreateExamples(pb.datasets.CreateExamplesRequest(dataset_id=d.id, examples=[pb.datasets.Example(inputs_json='{"x": 1}')]), metadata=METADATA)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "examples[0].inputs" in e.value.details()

    first = ds.CreateExamples(
        pb.datasets.CreateExamplesRequest(dataset_id=d.id, examples=[
            pb.datasets.Example(inputs_json='{"q": "one"}', outputs_json='{"a": 1}', splits=["test"]),
            pb.datasets.Example(inputs_json='{"q": "two"}'),
        ]),
        metadata=METADATA,
    )
    assert len(first.examples) == 2 and first.HasField("as_of")
    # A version reference is text: the version's Timestamp as RFC 3339, or a tag.
    tagged = ds.SetTag(pb.datasets.SetDatasetTagRequest(dataset_id=d.id, tag="prod", as_of=first.as_of.ToJsonString()), metadata=METADATA)
    assert tagged.as_of == first.as_of and list(tagged.tags) == ["prod"]
    second = ds.CreateExamples(pb.datasets.CreateExamplesRequest(dataset_id=d.id, examples=[pb.datasets.Example(inputs_json='{"q": "three"}')]), metadata=METADATA)

    latest = poll(
        "three examples",
        lambda: (lambda ex: ex if len(ex) == 3 else None)(list(ds.ListExamples(pb.datasets.ListExamplesRequest(dataset_id=d.id), metadata=METADATA).examples)),
    )
    assert sorted(json.loads(e.inputs_json)["q"] for e in latest) == ["one", "three", "two"]
    assert all(e.HasField("created_at") and e.dataset_id == d.id for e in latest)
    at_prod = ds.ListExamples(pb.datasets.ListExamplesRequest(dataset_id=d.id, as_of="prod"), metadata=METADATA).examples
    assert len(at_prod) == 2
    test_split = ds.ListExamples(pb.datasets.ListExamplesRequest(dataset_id=d.id, splits=["test"]), metadata=METADATA).examples
    assert [json.loads(e.inputs_json)["q"] for e in test_split] == ["one"]
    versions = ds.ListVersions(pb.datasets.ListVersionsRequest(dataset_id=d.id), metadata=METADATA).versions
    assert [v.as_of for v in versions if "prod" in v.tags] == [first.as_of]
    diff = ds.DiffVersions(pb.datasets.DiffVersionsRequest(dataset_id=d.id, from_version="prod", to_version=second.as_of.ToJsonString()), metadata=METADATA)
    assert list(diff.examples_added) == [second.examples[0].id]
    # The same dataset over REST (and so to the SDK).
    rest = requests.get(f"{sextant.url}/datasets/{d.id}", headers={"x-api-key": API_KEY}, timeout=10).json()
    assert rest["name"] == d.name

    # Curation: a rule and a job over a Timestamp window.
    sel = pb.datasets.RunSelection(filter='eq(name, "nothing-matches-this")', start_time=ts("2026-01-01T00:00:00Z"), end_time=ts("2026-12-31T00:00:00Z"))
    rule = ds.AddCurationRule(pb.datasets.AddCurationRuleRequest(dataset_id=d.id, selection=sel), metadata=METADATA)
    assert rule.selection.start_time == sel.start_time and rule.HasField("created_at")
    job = ds.StartCuration(pb.datasets.StartCurationRequest(dataset_id=d.id, selection=sel), metadata=METADATA)
    done = poll(
        "the curation job",
        lambda: (lambda j: j if j.state != "running" else None)(ds.GetCurationJob(pb.datasets.GetCurationJobRequest(dataset_id=d.id, job_id=job.id), metadata=METADATA)),
        timeout=30,
    )
    assert done.state == "succeeded" and done.added == 0 and done.HasField("finished_at")
    ds.DeleteCurationRule(pb.datasets.DeleteCurationRuleRequest(dataset_id=d.id, rule_id=rule.id), metadata=METADATA)
    ds.DeleteDataset(pb.datasets.DeleteDatasetRequest(id=d.id), metadata=METADATA)


def test_evaluation_compares_runs_and_configures_evaluators(pb: SimpleNamespace, channel: grpc.Channel, project_name: str) -> None:
    runs = pb.runs_grpc.RunServiceStub(channel)
    fb = pb.feedback_grpc.FeedbackServiceStub(channel)
    ds = pb.datasets_grpc.DatasetServiceStub(channel)
    ev = pb.evaluation_grpc.EvaluationServiceStub(channel)

    d = ds.CreateDataset(pb.datasets.CreateDatasetRequest(name=f"py-eval-{project_name}"), metadata=METADATA)
    examples = [e.id for e in ds.CreateExamples(pb.datasets.CreateExamplesRequest(
        dataset_id=d.id, examples=[pb.datasets.Example(inputs_json=json.dumps({"q": i})) for i in range(6)]), metadata=METADATA).examples]
    baseline, candidate = f"{project_name}-base", f"{project_name}-cand"
    for project, wrong in [(baseline, set()), (candidate, {0, 1, 2})]:
        ids = ingest_experiment(pb, runs, project, examples)
        poll(f"{project}'s runs", lambda: runs.GetRun(pb.runs.GetRunRequest(id=ids[-1]), metadata=METADATA))
        for i, rid in enumerate(ids):
            fb.CreateFeedback(pb.feedback.CreateFeedbackRequest(feedback=pb.feedback.Feedback(
                run_id=rid, key="correct", score=pb.feedback.Score(number=0.0 if i in wrong else 1.0))), metadata=METADATA)

    def compared() -> Any:
        r = ev.CompareExperiments(pb.evaluation.CompareExperimentsRequest(baseline=baseline, candidate=candidate, resamples=500), metadata=METADATA)
        m = [m for m in r.metrics if m.metric == "correct"]
        return r if m and m[0].baseline_n == 6 and m[0].candidate_n == 6 else None

    report = poll("both experiments scored", compared)
    correct = next(m for m in report.metrics if m.metric == "correct")
    assert correct.baseline_mean == 1.0 and correct.candidate_mean == 0.5 and correct.shared_n == 6
    assert correct.verdict in ("REGRESSED", "NEUTRAL") and "correct" in report.report

    # Evaluators on the server, streamed progress; a second run skips what is scored.
    req = pb.evaluation.RunEvaluationRequest(experiment=candidate, evaluators_json='[{"type": "length", "key": "short", "max": 10}]')
    progress = list(ev.RunEvaluation(req, metadata=METADATA))
    assert progress and progress[-1].done and progress[-1].total == 6 and progress[-1].scored == 6, progress[-1]
    again = list(ev.RunEvaluation(req, metadata=METADATA))[-1]
    assert again.done and again.scored == 0 and again.skipped == 6
    with pytest.raises(grpc.RpcError) as e:
        list(ev.RunEvaluation(pb.evaluation.RunEvaluationRequest(experiment=candidate, evaluators_json='[{"type": "nope", "key": "k"}]'), metadata=METADATA))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Dataset evaluators: set (versioned), list, retire.
    config = {"type": "length", "key": "brief", "max": 20}
    v1 = ev.SetDatasetEvaluator(pb.evaluation.SetDatasetEvaluatorRequest(dataset_id=d.id, config_json=json.dumps(config)), metadata=METADATA)
    assert (v1.key, v1.version, v1.active) == ("brief", 1, True) and v1.HasField("created_at")
    v2 = ev.SetDatasetEvaluator(pb.evaluation.SetDatasetEvaluatorRequest(dataset_id=d.id, config_json=json.dumps({**config, "max": 5})), metadata=METADATA)
    assert v2.version == 2
    listed = ev.ListDatasetEvaluators(pb.evaluation.ListDatasetEvaluatorsRequest(dataset_id=d.id), metadata=METADATA).evaluators
    assert [(e.key, e.version, e.active) for e in listed if e.active] == [("brief", 2, True)]
    assert json.loads(next(e for e in listed if e.version == 2).config_json)["max"] == 5
    ev.RetireDatasetEvaluator(pb.evaluation.RetireDatasetEvaluatorRequest(dataset_id=d.id, key="brief"), metadata=METADATA)
    after = ev.ListDatasetEvaluators(pb.evaluation.ListDatasetEvaluatorsRequest(dataset_id=d.id), metadata=METADATA).evaluators
    assert not [e for e in after if e.active]


def test_prompts_push_pull_tag_and_assign(pb: SimpleNamespace, channel: grpc.Channel, sextant: Any, project_name: str) -> None:
    prompts = pb.prompts_grpc.PromptServiceStub(channel)
    name = f"py-grpc-{uuid.uuid4().hex[:12]}"

    def manifest(template: str) -> str:
        return json.dumps({"lc": 1, "type": "constructor", "id": ["langchain", "prompts", "prompt", "PromptTemplate"],
                           "kwargs": {"input_variables": ["question"], "template": template, "template_format": "f-string"}})

    p = prompts.CreatePrompt(pb.prompts.CreatePromptRequest(name=name, description="from Python", tags=["py"]), metadata=METADATA)
    assert p.name == name and p.num_commits == 0 and p.HasField("created_at")
    v1 = prompts.PushCommit(pb.prompts.PushCommitRequest(name=name, manifest_json=manifest("v1 {question}")), metadata=METADATA)
    v2 = prompts.PushCommit(pb.prompts.PushCommitRequest(name=name, manifest_json=manifest("v2 {question}"), parent_commit=v1.commit_hash), metadata=METADATA)
    assert len(v1.commit_hash) == 64 and v2.parent_commit_hash == v1.commit_hash
    pulled = prompts.PullCommit(pb.prompts.PullCommitRequest(name=name, ref=v1.commit_hash[:8]), metadata=METADATA)
    assert json.loads(pulled.manifest_json)["kwargs"]["template"] == "v1 {question}"
    assert pulled.created_at == v1.created_at
    assert prompts.GetPrompt(pb.prompts.GetPromptRequest(name=name), metadata=METADATA).num_commits == 2
    commits = prompts.ListCommits(pb.prompts.ListCommitsRequest(name=name), metadata=METADATA)
    assert [c.commit_hash for c in commits.commits] == [v2.commit_hash, v1.commit_hash] and commits.total == 2

    prod = prompts.SetTag(pb.prompts.SetTagRequest(name=name, tag="production", commit=v1.commit_hash), metadata=METADATA)
    assert prod.commit_hash == v1.commit_hash and prod.HasField("moved_at")
    prompts.SetTag(pb.prompts.SetTagRequest(name=name, tag="production", commit="latest"), metadata=METADATA)
    now_tags = prompts.ListTags(pb.prompts.ListTagsRequest(name=name), metadata=METADATA).tags
    assert [(t.tag, t.commit_hash) for t in now_tags] == [("production", v2.commit_hash)]
    then = prompts.ListTags(pb.prompts.ListTagsRequest(name=name, as_of=prod.moved_at), metadata=METADATA).tags
    assert [(t.tag, t.commit_hash) for t in then] == [("production", v1.commit_hash)], "a Timestamp names the past"
    history = prompts.TagHistory(pb.prompts.TagHistoryRequest(name=name, tag="production"), metadata=METADATA).moves
    assert [m.commit_hash for m in history] == [v1.commit_hash, v2.commit_hash]

    prompts.SetTag(pb.prompts.SetTagRequest(name=name, tag="canary", commit=v1.commit_hash), metadata=METADATA)
    with_variants = prompts.SetVariants(pb.prompts.SetVariantsRequest(name=name, variants=[
        pb.prompts.Variant(tag="production", weight=1), pb.prompts.Variant(tag="canary", weight=1)]), metadata=METADATA)
    assert sorted(v.tag for v in with_variants.variants) == ["canary", "production"]
    a = prompts.Assign(pb.prompts.AssignRequest(name=name, user_id="user-7"), metadata=METADATA)
    assert a.variant in ("production", "canary") and a.commit.commit_hash in (v1.commit_hash, v2.commit_hash)
    assert a.metadata["prompt_variant"] == a.variant
    again = prompts.Assign(pb.prompts.AssignRequest(name=name, user_id="user-7"), metadata=METADATA)
    assert again.variant == a.variant, "assignment is stable"

    # The LangSmith REST route serves the gRPC push.
    rest = requests.get(f"{sextant.url}/commits/-/{name}/{v2.commit_hash[:8]}", headers={"x-api-key": API_KEY}, timeout=10)
    assert rest.status_code == 200 and rest.json()["commit_hash"] == v2.commit_hash
    with pytest.raises(grpc.RpcError) as e:
        prompts.PushCommit(pb.prompts.PushCommitRequest(name=name, manifest_json=manifest("v2 {question}")), metadata=METADATA)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_every_service_takes_gzip_requests(pb: SimpleNamespace, sextant: Any) -> None:
    if sextant.grpc_target is None:
        pytest.skip("the gRPC address of an external SEXTANT_URL server is not known")
    missing = str(uuid.uuid4())
    with grpc.insecure_channel(sextant.grpc_target, compression=grpc.Compression.Gzip) as ch:
        calls = [
            (pb.runs_grpc.RunServiceStub(ch).GetRun, pb.runs.GetRunRequest(id=missing)),
            (pb.feedback_grpc.FeedbackServiceStub(ch).ListFeedback, pb.feedback.ListFeedbackRequest(limit=1)),
            (pb.feedback_grpc.AnnotationQueueServiceStub(ch).ListQueues, pb.feedback.ListQueuesRequest(limit=1)),
            (pb.datasets_grpc.DatasetServiceStub(ch).ListDatasets, pb.datasets.ListDatasetsRequest(limit=1)),
            (pb.evaluation_grpc.EvaluationServiceStub(ch).ListDatasetEvaluators, pb.evaluation.ListDatasetEvaluatorsRequest(dataset_id=missing)),
            (pb.prompts_grpc.PromptServiceStub(ch).ListPrompts, pb.prompts.ListPromptsRequest(limit=1)),
        ]
        for call, req in calls:
            try:
                call(req, metadata=METADATA, timeout=10)
            except grpc.RpcError as e:
                # Read and answered: only the unknown ids are NOT_FOUND. A server that cannot
                # read gzip answers UNIMPLEMENTED.
                assert e.code() == grpc.StatusCode.NOT_FOUND, f"{call}: {e.code()} {e.details()}"
