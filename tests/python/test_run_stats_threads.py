"""`list_runs(execution_order=1)`, `get_run_stats` (`POST /runs/stats`), `run_type`
validation on every ingest path, and threads (`thread_id` in filters and results,
`list_threads`, `read_thread`).

Runs are created by hand (`create_run` without batching) with fixed times, so latencies,
token counts and costs are known exactly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from dataclasses import dataclass

import pytest
import requests

import langsmith as ls

from sextant_helpers import API_KEY, by_name, eventually, recorder_of, unique, utcnow

H = {"x-api-key": API_KEY}
RUN_TYPES = ["tool", "chain", "llm", "retriever", "embedding", "prompt", "parser"]


def usage(prompt: int, completion: int, cost: float) -> dict:
    return {
        "usage_metadata": {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_cost": cost / 3,
            "output_cost": 2 * cost / 3,
            "total_cost": cost,
        }
    }


@dataclass
class Stats:
    client: ls.Client
    project: str
    project_id: uuid.UUID
    t0: dt.datetime
    ids: dict[str, uuid.UUID]


@pytest.fixture(scope="module")
def stats_project(module_make_client) -> Stats:
    """Two traces:

        r1 (chain, 1.0 s)          r2 (chain, 3.0 s, error "boom")
          └── l1 (llm, 0.2 s,        └── l2 (llm, 0.4 s,
                  5+7 tokens, $0.003)          10+20 tokens, $0.006)
    """
    project = unique("py-run-stats")
    c = module_make_client(project=project, auto_batch_tracing=False)
    t0 = utcnow() - dt.timedelta(minutes=10)
    at = lambda s: t0 + dt.timedelta(seconds=s)  # noqa: E731
    ids = {n: uuid.uuid4() for n in ("r1", "l1", "r2", "l2")}
    specs = [
        ("r1", "chain", None, 0.0, 1.0, {"done": 1}, None),
        ("l1", "llm", "r1", 0.1, 0.3, usage(5, 7, 0.003), None),
        ("r2", "chain", None, 2.0, 5.0, None, "boom"),
        ("l2", "llm", "r2", 2.1, 2.5, usage(10, 20, 0.006), None),
    ]
    for name, run_type, parent, start, end, outputs, error in specs:
        c.create_run(
            name,
            inputs={"q": name},
            run_type=run_type,
            project_name=project,
            id=ids[name],
            parent_run_id=ids[parent] if parent else None,
            start_time=at(start),
            end_time=at(end),
            outputs=outputs,
            error=error,
        )

    def all_there():
        runs = list(c.list_runs(project_name=project))
        assert len(runs) == 4 and all(r.end_time for r in runs), [r.name for r in runs]
        assert by_name(runs)["l2"].total_tokens == 30

    eventually(all_there, client=c)
    return Stats(c, project, c.read_project(project_name=project).id, t0, ids)


def test_execution_order_one_lists_only_top_level_runs(stats_project):
    s = stats_project
    c = s.client
    runs = list(c.list_runs(project_name=s.project, execution_order=1))
    assert sorted(r.name for r in runs) == ["r1", "r2"]
    assert all(r.parent_run_id is None for r in runs)
    sent = recorder_of(c).matching("POST", "/runs/query")[-1]
    assert json.loads(sent.body_bytes())["execution_order"] == 1, "the SDK passes execution_order through"
    # Roots and non-roots at once: nothing.
    assert list(c.list_runs(project_name=s.project, execution_order=1, is_root=False)) == []
    # LangSmith accepts only 1.
    with pytest.raises(ls.utils.LangSmithError, match="execution_order"):
        list(c.list_runs(project_name=s.project, execution_order=2))


def test_run_stats_aggregate_the_queried_runs(stats_project):
    s = stats_project
    c = s.client
    every = c.get_run_stats(project_ids=[s.project_id])
    assert every["run_count"] == 4
    assert every["error_rate"] == pytest.approx(0.25)
    assert (every["prompt_tokens"], every["completion_tokens"], every["total_tokens"]) == (15, 27, 42)
    assert every["total_cost"] == pytest.approx(0.009)
    assert every["prompt_cost"] == pytest.approx(0.003)
    assert every["completion_cost"] == pytest.approx(0.006)
    # Latencies 0.2, 0.4, 1.0 and 3.0 s.
    assert every["latency_p50"] in (pytest.approx(0.4), pytest.approx(1.0))
    assert every["latency_p99"] == pytest.approx(3.0)
    assert every["median_tokens"] in (12, 30)
    assert every["tokens_p99"] == 30
    assert every["streaming_rate"] == 0
    last = dt.datetime.fromisoformat(every["last_run_start_time"]).replace(tzinfo=dt.timezone.utc)  # naive UTC
    assert last == s.t0 + dt.timedelta(seconds=2.1)
    for key in ("first_token_p50", "first_token_p99", "cost_p50", "cost_p99", "feedback_stats", "run_facets"):
        assert key in every, key

    # By name as well as by id, and each filter of /runs/query narrows the aggregate.
    assert c.get_run_stats(project_names=[s.project])["run_count"] == 4
    roots = c.get_run_stats(project_ids=[s.project_id], is_root=True)
    assert (roots["run_count"], roots["error_rate"], roots["total_tokens"]) == (2, pytest.approx(0.5), 0)
    assert roots["latency_p99"] == pytest.approx(3.0)
    llm = c.get_run_stats(project_ids=[s.project_id], run_type="llm")
    assert (llm["run_count"], llm["total_tokens"], llm["error_rate"]) == (2, 42, 0)
    failed = c.get_run_stats(project_ids=[s.project_id], error=True)
    assert failed["run_count"] == 1 and failed["error_rate"] == 1
    one = c.get_run_stats(project_ids=[s.project_id], filter='eq(name, "l1")')
    assert (one["run_count"], one["total_tokens"], one["latency_p50"]) == (1, 12, pytest.approx(0.2))
    trace = c.get_run_stats(project_ids=[s.project_id], trace=s.ids["r2"])
    assert (trace["run_count"], trace["total_tokens"]) == (2, 30)
    later = c.get_run_stats(project_ids=[s.project_id], start_time=(s.t0 + dt.timedelta(seconds=2)).isoformat())
    assert later["run_count"] == 2
    ids = c.get_run_stats(project_ids=[s.project_id], id=[s.ids["l1"], s.ids["r1"]])
    assert ids["run_count"] == 2 and ids["total_tokens"] == 12
    none = c.get_run_stats(project_ids=[s.project_id], filter='eq(name, "nobody")')
    assert none["run_count"] == 0 and none["latency_p50"] is None and none["total_tokens"] == 0


def test_run_stats_count_feedback_and_refuse_bad_bodies(stats_project, sextant):
    s = stats_project
    c = s.client
    c.create_feedback(s.ids["r1"], key="stats_quality", score=1.0, session_id=s.project_id)
    c.create_feedback(s.ids["r2"], key="stats_quality", score=0.0, session_id=s.project_id)

    def counted():
        fb = c.get_run_stats(project_ids=[s.project_id], is_root=True)["feedback_stats"]
        assert fb.get("stats_quality", {}).get("n") == 2, fb
        return fb["stats_quality"]

    assert eventually(counted, client=c)["avg"] == pytest.approx(0.5)
    for body, needle in [
        ({}, "session"),
        ({"session": [str(s.project_id)], "filter": "eq(oops"}, "filter"),
        ({"session": [str(s.project_id)], "run_type": "agent"}, "run_type"),
        ({"session": ["not-a-uuid"]}, "session"),
    ]:
        r = requests.post(f"{sextant.url}/runs/stats", json=body, headers=H, timeout=10)
        assert 400 <= r.status_code < 500 and needle in r.text, (body, r.status_code, r.text)


def run_body(rid: str, project: str, run_type: str) -> dict:
    now = utcnow()
    return {
        "id": rid, "trace_id": rid, "dotted_order": now.strftime("%Y%m%dT%H%M%S%fZ") + rid, "name": "typed",
        "run_type": run_type, "start_time": now.isoformat(), "session_name": project, "inputs": {"q": 1},
    }


def test_unknown_run_type_is_refused_on_every_ingest_path(make_client, sextant, project_name):
    url = sextant.url
    good = str(uuid.uuid4())
    assert requests.post(f"{url}/runs", json=run_body(good, project_name, "chain"), headers=H, timeout=10).status_code == 202

    def refused(r: requests.Response, what: str) -> None:
        assert r.status_code == 422, (what, r.status_code, r.text)
        detail = r.text
        assert "run_type" in detail and '"agent"' in detail.replace('\\"', '"'), (what, detail)
        assert all(t in detail for t in RUN_TYPES), (what, detail)

    bad = str(uuid.uuid4())
    refused(requests.post(f"{url}/runs", json=run_body(bad, project_name, "agent"), headers=H, timeout=10), "POST /runs")
    refused(requests.patch(f"{url}/runs/{good}", json={"run_type": "agent"}, headers=H, timeout=10), "PATCH /runs/{id}")
    refused(requests.post(f"{url}/runs/batch", json={"post": [run_body(bad, project_name, "agent")]}, headers=H, timeout=10), "batch post")
    refused(requests.post(f"{url}/runs/batch", json={"patch": [{"id": good, "run_type": "agent"}]}, headers=H, timeout=10), "batch patch")
    part = (None, json.dumps(run_body(bad, project_name, "agent")), "application/json")
    refused(requests.post(f"{url}/runs/multipart", files={f"post.{bad}": part}, headers=H, timeout=10), "multipart")
    refused(requests.post(f"{url}/api/v1/runs/query", json={"run_type": "agent"}, headers=H, timeout=10), "query")
    # Through the SDK: the unbatched create_run surfaces the 422.
    c = make_client(project=project_name, auto_batch_tracing=False)
    with pytest.raises(ls.utils.LangSmithError, match="run_type"):
        c.create_run("sdk-agent", inputs={}, run_type="agent", project_name=project_name, id=uuid.uuid4())
    # Nothing of the refused requests was stored; the good run was, and kept its type.
    run = eventually(lambda: c.read_run(good), client=c)
    assert run.run_type == "chain"
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.read_run(bad)


@dataclass
class Threads:
    client: ls.Client
    project: str
    t0: dt.datetime
    ids: dict[str, uuid.UUID]


@pytest.fixture(scope="module")
def threads_project(module_make_client) -> Threads:
    """Roots a1..a3 in thread "th-a" (metadata.thread_id), b1 in "th-b" (session_id), c1 in
    "th-c" (conversation_id, with an empty thread_id), and n1 in none; a1 has a child that
    inherits the thread metadata."""
    project = unique("py-threads")
    c = module_make_client(project=project, auto_batch_tracing=False)
    t0 = utcnow() - dt.timedelta(minutes=5)
    ids = {n: uuid.uuid4() for n in ("a1", "a1_child", "a2", "b1", "a3", "c1", "n1")}
    specs = [
        ("a1", None, 0, {"thread_id": "th-a", "session_id": "ignored"}),
        ("a1_child", "a1", 0.5, {"thread_id": "th-a"}),
        ("a2", None, 10, {"thread_id": "th-a"}),
        ("b1", None, 20, {"session_id": "th-b"}),
        ("a3", None, 30, {"thread_id": "th-a"}),
        ("c1", None, 40, {"thread_id": "", "conversation_id": "th-c"}),
        ("n1", None, 50, {"user": "u1"}),
    ]
    for name, parent, start, metadata in specs:
        at = t0 + dt.timedelta(seconds=start)
        c.create_run(
            name,
            inputs={"q": name},
            run_type="chain",
            project_name=project,
            id=ids[name],
            parent_run_id=ids[parent] if parent else None,
            start_time=at,
            end_time=at + dt.timedelta(seconds=0.1),
            outputs={"a": name},
            extra={"metadata": metadata},
        )
    def all_there():
        assert len(list(c.list_runs(project_name=project))) == 7

    eventually(all_there, client=c)
    return Threads(c, project, t0, ids)


def test_thread_id_is_a_field_of_runs_and_filters(threads_project):
    t = threads_project
    c = t.client

    def read_all():
        runs = by_name(c.list_runs(project_name=t.project, select=["name", "thread_id", "extra"]))
        assert len(runs) == 7, sorted(runs)
        return runs

    eventually(read_all, client=c)  # the SDK's Run model takes the extra field
    raw = c.request_with_retries("POST", "/runs/query", data=json.dumps({"session": [str(c.read_project(project_name=t.project).id)], "select": ["thread_id"]})).json()
    threads = {r["id"]: r.get("thread_id") for r in raw["runs"]}
    assert threads[str(t.ids["a1"])] == "th-a", "metadata.thread_id wins over session_id"
    assert threads[str(t.ids["a1_child"])] == "th-a"
    assert threads[str(t.ids["b1"])] == "th-b"
    assert threads[str(t.ids["c1"])] == "th-c", "an empty thread_id falls through to conversation_id"
    assert threads[str(t.ids["n1"])] is None

    a = sorted(r.name for r in c.list_runs(project_name=t.project, filter='eq(thread_id, "th-a")'))
    assert a == ["a1", "a1_child", "a2", "a3"]
    roots = sorted(r.name for r in c.list_runs(project_name=t.project, is_root=True, filter='eq(thread_id, "th-a")'))
    assert roots == ["a1", "a2", "a3"]
    assert [r.name for r in c.list_runs(project_name=t.project, filter="eq(thread_id, 'th-b')")] == ["b1"]
    assert sorted(r.name for r in c.list_runs(project_name=t.project, filter='in(thread_id, ["th-b", "th-c"])')) == ["b1", "c1"]
    assert [r.name for r in c.list_runs(project_name=t.project, is_root=True, filter="eq(thread_id, null)")] == ["n1"]


def test_list_threads_and_read_thread(threads_project):
    t = threads_project
    c = t.client
    threads = c.list_threads(project_name=t.project)
    assert [th["thread_id"] for th in threads] == ["th-c", "th-a", "th-b"], "newest thread first"
    by_id = {th["thread_id"]: th for th in threads}
    a = by_id["th-a"]
    assert a["count"] == 3
    assert [r.name for r in a["runs"]] == ["a1", "a2", "a3"], "a thread's root runs, oldest first"
    assert a["min_start_time"] < a["max_start_time"]
    assert [r.name for r in by_id["th-b"]["runs"]] == ["b1"]
    assert c.list_threads(project_name=t.project, limit=1, offset=1)[0]["thread_id"] == "th-a"

    thread = list(c.read_thread(thread_id="th-a", project_name=t.project))
    assert [r.name for r in thread] == ["a1", "a2", "a3"], "read_thread asks for chronological order"
    newest = list(c.read_thread(thread_id="th-a", project_name=t.project, order="desc"))
    assert [r.name for r in newest] == ["a3", "a2", "a1"]
    assert all(r.parent_run_id is None for r in thread)
    children = list(c.read_thread(thread_id="th-a", project_name=t.project, is_root=False))
    assert [r.name for r in children] == ["a1_child"]
    assert list(c.read_thread(thread_id="th-none", project_name=t.project)) == []


def test_v2_threads_query_and_list_traces(threads_project, sextant):
    """The SDK's replacement for list_threads/read_thread: `client.threads` (async)."""
    t = threads_project
    c = t.client
    pid = str(c.read_project(project_name=t.project).id)

    async def query(**kw):
        return [th async for th in c.threads.query(project_id=pid, **kw)]

    threads = asyncio.run(query())
    assert [th.thread_id for th in threads] == ["th-c", "th-a", "th-b"], "most recently active first"
    a = next(th for th in threads if th.thread_id == "th-a")
    assert a.count == 3 and a.first_trace_id == str(t.ids["a1"]) and a.last_trace_id == str(t.ids["a3"])
    assert a.min_start_time == t.t0 and a.max_start_time == t.t0 + dt.timedelta(seconds=30)
    assert a.latency_p50 == pytest.approx(0.1) and a.num_errored_turns == 0
    assert "a1" in (a.first_inputs or "") and "a3" in (a.last_outputs or "")
    # Pages of one thread follow the cursor to the same list.
    assert [th.thread_id for th in asyncio.run(query(page_size=1))] == ["th-c", "th-a", "th-b"]
    # `filter` keeps threads with a matching turn; the window bounds the turns.
    assert [th.thread_id for th in asyncio.run(query(filter='eq(name, "a2")'))] == ["th-a"]
    early = asyncio.run(query(min_start_time=t.t0, max_start_time=t.t0 + dt.timedelta(seconds=15)))
    assert [(th.thread_id, th.count) for th in early] == [("th-a", 2)]

    async def traces(thread_id: str, **kw):
        return [tr async for tr in c.threads.list_traces(thread_id, project_id=pid, **kw)]

    turns = asyncio.run(traces("th-a"))
    assert [(tr.trace_id, tr.turn_number) for tr in turns] == [(str(t.ids[n]), i) for i, n in enumerate(["a1", "a2", "a3"], 1)]
    assert turns[0].name == "a1" and turns[0].latency == pytest.approx(0.1) and turns[0].inputs is None
    full = asyncio.run(traces("th-a", selects=["INPUTS", "OUTPUTS"], page_size=2))
    assert [tr.outputs for tr in full] == [{"a": "a1"}, {"a": "a2"}, {"a": "a3"}]
    assert full[0].name is None, "only the selected fields (and trace_id)"
    assert [tr.turn_number for tr in asyncio.run(traces("th-a", filter='eq(name, "a3")'))] == [3]
    assert asyncio.run(traces("th-none")) == []

    async def stats(thread_id: str, selects: list[str], **kw):
        return await c.threads.stats(thread_id, selects=selects, session_id=pid, **kw)

    st = asyncio.run(stats("th-a", ["TURNS", "FIRST_START_TIME", "LAST_START_TIME", "LAST_END_TIME", "LATENCY_P99", "TOTAL_TOKENS"]))
    assert st.turns == 3 and st.total_tokens == 0
    assert st.first_start_time == t.t0 and st.last_start_time == t.t0 + dt.timedelta(seconds=30)
    assert st.last_end_time == t.t0 + dt.timedelta(seconds=30.1) and st.latency_p99_seconds == pytest.approx(0.1)
    assert st.total_cost is None, "only what was selected"
    assert asyncio.run(stats("th-a", ["TURNS"], filter='neq(name, "a1")')).turns == 2
    r = requests.get(f"{sextant.url}/api/v2/threads/th-a/stats", params={"session_id": pid, "selects": "NOPE"}, headers=H, timeout=10)
    assert r.status_code == 422 and "TURNS" in r.text, r.text

    r = requests.post(f"{sextant.url}/api/v2/threads/query", json={}, headers=H, timeout=10)
    assert r.status_code == 422 and "project_id" in r.text, r.text
    r = requests.post(f"{sextant.url}/api/v2/threads/query", json={"project_id": pid, "page_size": 0}, headers=H, timeout=10)
    assert r.status_code == 422 and "page_size" in r.text, r.text
    r = requests.post(f"{sextant.url}/api/v2/threads/query", json={"project_id": pid, "filter": "eq(oops"}, headers=H, timeout=10)
    assert 400 <= r.status_code < 500 and "filter" in r.text, r.text


def test_runs_query_order_asc_pages_oldest_first(threads_project, sextant):
    t = threads_project
    c = t.client
    pid = str(c.read_project(project_name=t.project).id)
    chronological = ["a1", "a1_child", "a2", "b1", "a3", "c1", "n1"]
    assert [r.name for r in c.list_runs(project_name=t.project, order="asc")] == chronological
    body = {"session": [pid], "order": "asc", "limit": 2, "select": ["name"]}
    names, pages = [], 0
    while True:
        r = requests.post(f"{sextant.url}/runs/query", json=body, headers=H, timeout=10)
        assert r.status_code == 200, r.text
        page = r.json()
        names += [run["name"] for run in page["runs"]]
        pages += 1
        if not page["cursors"]["next"]:
            break
        body["cursor"] = page["cursors"]["next"]
    assert names == chronological and pages == 4
    roots = [r.name for r in c.list_runs(project_name=t.project, order="asc", is_root=True, filter='eq(thread_id, "th-a")')]
    assert roots == ["a1", "a2", "a3"]
    r = requests.post(f"{sextant.url}/runs/query", json={"session": [pid], "order": "sideways"}, headers=H, timeout=10)
    assert r.status_code == 422 and "order" in r.text, r.text


def test_v2_threads_aggregate_stats(threads_project):
    """`client.threads.aggregate_stats`: counts and sums over the traces of the matching threads
    (runs in no thread are not counted); filters narrow the threads; bad selects are a 422."""
    t = threads_project
    c = t.client
    pid = str(c.read_project(project_name=t.project).id)

    async def stats(**kw):
        return await c.threads.aggregate_stats(project_id=pid, **kw)

    s = asyncio.run(stats(select=["THREAD_COUNT", "TRACE_COUNT", "ERROR_RATE", "LATENCY_P50", "TOTAL_TOKENS", "PROMPT_TOKEN_DETAILS"]))
    assert (s.thread_count, s.trace_count) == (3, 5), s  # th-a (3 turns), th-b, th-c; n1 has no thread
    assert s.error_rate == 0 and s.latency_p50_seconds == pytest.approx(0.1) and s.total_tokens == 0
    narrowed = asyncio.run(stats(select=["THREAD_COUNT", "TRACE_COUNT"], filter='eq(name, "a2")'))
    assert (narrowed.thread_count, narrowed.trace_count) == (1, 3), "the whole thread of a matching turn"
    with pytest.raises(Exception, match="NOPE|422"):
        asyncio.run(stats(select=["NOPE"]))
