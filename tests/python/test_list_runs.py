"""`client.list_runs` filters (no feedback involved), `select`, and cursor pagination.

One project holds four traces (9 runs), created once for the module:

    alpha  (tags x, prod; metadata user_id=u1, team=u2)   > 0.4 s
      ├── alpha_llm  (llm, usage 5/7/12)
      └── alpha_slow (tool, sleeps 0.4 s)
    beta   (tags y; user_id=u2)
      └── beta_fail  (tool, raises RuntimeError("kaput-beta"), caught)
    gamma  (tags x; user_id=u2; input contains the search token; sleeps 0.35 s)
      └── gamma_child
    ---- `mid` timestamp ----
    delta  (user_id=u3)
      └── delta_llm  (llm)

Tags and metadata are inherited by children (that is what the SDK sends).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import pytest

import langsmith as ls
from langsmith import traceable

from sextant_helpers import (
    by_name,
    eventually,
    raw_json,
    recorder_of,
    unique,
    utcnow,
    wait_for_compression,
    wait_for_project_runs,
)

NEEDLE = "NDL7f3qzx"
# Runs that sleep are well above the latency threshold and the others well below it, even on a
# busy 2-core machine.
SLOW_S = 0.4
POSITION = re.compile(r"(position|pos|column|col|offset|char(acter)?|index|byte|\bat\b)\D{0,6}\d+", re.I)


@traceable(name="alpha_llm", run_type="llm")
def alpha_llm(prompt: str) -> dict:
    return {"content": "ok", "usage_metadata": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}


@traceable(name="alpha_slow", run_type="tool")
def alpha_slow(x: int) -> int:
    time.sleep(SLOW_S)
    return x


@traceable(name="alpha", tags=["x", "prod"], metadata={"user_id": "u1", "team": "u2"})
def alpha(text: str) -> dict:
    alpha_llm(text)
    alpha_slow(1)
    return {"done": "alpha"}


@traceable(name="beta_fail", run_type="tool")
def beta_fail() -> None:
    raise RuntimeError("kaput-beta")


@traceable(name="beta", tags=["y"], metadata={"user_id": "u2"})
def beta(text: str) -> dict:
    try:
        beta_fail()
    except RuntimeError:
        pass
    return {"done": "beta"}


@traceable(name="gamma_child")
def gamma_child(n: int) -> int:
    return n + 1


@traceable(name="gamma", tags=["x"], metadata={"user_id": "u2"})
def gamma(text: str) -> dict:
    time.sleep(SLOW_S - 0.05)
    gamma_child(1)
    return {"done": "gamma"}


@traceable(name="delta_llm", run_type="llm")
def delta_llm(prompt: str) -> dict:
    return {"content": "z", "usage_metadata": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}}


@traceable(name="delta", metadata={"user_id": "u3"})
def delta(text: str) -> dict:
    delta_llm(text)
    return {"done": "delta"}


ALL = {"alpha", "alpha_llm", "alpha_slow", "beta", "beta_fail", "gamma", "gamma_child", "delta", "delta_llm"}
ALPHA = {"alpha", "alpha_llm", "alpha_slow"}


@dataclass
class Dataset:
    client: ls.Client
    project: str
    runs: dict
    mid: object


@pytest.fixture(scope="module")
def ds(module_make_client) -> Dataset:
    project = unique("py-filters")
    c = module_make_client(project=project)
    wait_for_compression(c)
    with ls.tracing_context(client=c, project_name=project, enabled=True):
        alpha("hello alpha")
        beta("hello beta")
        gamma(f"find the {NEEDLE} here")
    time.sleep(0.05)
    mid = utcnow()
    time.sleep(0.05)
    with ls.tracing_context(client=c, project_name=project, enabled=True):
        delta("hello delta")
    c.flush(timeout=30)
    runs = by_name(wait_for_project_runs(c, project, len(ALL)))
    assert set(runs) == ALL
    return Dataset(client=c, project=project, runs=runs, mid=mid)


def names(ds: Dataset, **kwargs) -> list[str]:
    return sorted(r.name for r in ds.client.list_runs(project_name=ds.project, **kwargs))


def assert_names(ds: Dataset, expected: set[str], **kwargs) -> None:
    def check():
        got = names(ds, **kwargs)
        assert got == sorted(expected), f"list_runs({kwargs}) returned {got}, expected {sorted(expected)}"

    eventually(check, timeout=3, client=ds.client)


CASES = {
    "has_tag_x": ({"filter": 'has(tags, "x")'}, ALPHA | {"gamma", "gamma_child"}),
    "has_tag_prod": ({"filter": 'has(tags, "prod")'}, ALPHA),
    "metadata_pair_u2": (
        {"filter": 'and(eq(metadata_key, "user_id"), eq(metadata_value, "u2"))'},
        # alpha has user_id=u1 and team=u2: the key and the value must belong to the same entry.
        {"beta", "beta_fail", "gamma", "gamma_child"},
    ),
    "metadata_pair_team": ({"filter": 'and(eq(metadata_key, "team"), eq(metadata_value, "u2"))'}, ALPHA),
    "metadata_pair_u1_roots": (
        {"filter": 'and(eq(metadata_key,"user_id"), eq(metadata_value,"u1"))', "is_root": True},
        {"alpha"},
    ),
    "is_root": ({"is_root": True}, {"alpha", "beta", "gamma", "delta"}),
    "not_root": ({"is_root": False}, {"alpha_llm", "alpha_slow", "beta_fail", "gamma_child", "delta_llm"}),
    "run_type_llm": ({"run_type": "llm"}, {"alpha_llm", "delta_llm"}),
    "error_true": ({"error": True}, {"beta_fail"}),
    "error_false": ({"error": False}, ALL - {"beta_fail"}),
    "status_error": ({"filter": 'eq(status, "error")'}, {"beta_fail"}),
    "search": ({"filter": f'search("{NEEDLE}")'}, {"gamma"}),
    "has_metadata_json": ({"filter": """has(metadata, '{"user_id": "u3"}')"""}, {"delta", "delta_llm"}),
    "exists_metadata_key": ({"filter": 'exists(metadata, "team")'}, ALPHA),
    "single_quotes": ({"filter": "eq(name, 'gamma')"}, {"gamma"}),
    "and_tag_llm": ({"filter": 'and(has(tags, "x"), eq(run_type, "llm"))'}, {"alpha_llm"}),
    "or_names": ({"filter": 'or(eq(name, "beta"), eq(name, "delta"))'}, {"beta", "delta"}),
    "not_tag_roots": ({"filter": 'not(has(tags, "x"))', "is_root": True}, {"beta", "delta"}),
    "in_names": ({"filter": 'in(name, ["beta", "gamma_child"])'}, {"beta", "gamma_child"}),
    "trace_filter_root_name": ({"trace_filter": 'eq(name, "beta")'}, {"beta", "beta_fail"}),
    "trace_filter_children": (
        {"trace_filter": 'eq(name, "alpha")', "is_root": False},
        {"alpha_llm", "alpha_slow"},
    ),
    "tree_filter_failing_child": ({"tree_filter": 'eq(name, "beta_fail")', "is_root": True}, {"beta"}),
    "tree_filter_has_llm": ({"tree_filter": 'eq(run_type, "llm")', "is_root": True}, {"alpha", "delta"}),
    "filter_and_trace_filter": (
        {"filter": 'eq(run_type, "llm")', "trace_filter": 'eq(name, "delta")'},
        {"delta_llm"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_filter(ds, case):
    kwargs, expected = CASES[case]
    assert_names(ds, expected, **kwargs)


# Latency filters: which runs are above 0.25 s is read from the runs' own recorded times, not
# assumed: a run that does not sleep is normally far below it, but a busy machine can stall it.
# The runs that sleep are above it whatever the load.
SLEPT = {"alpha", "alpha_slow", "gamma"}
LATENCY_CASES = {
    "latency_string_seconds": ({"filter": 'gt(latency, "0.25s")'}, lambda latency, run: latency > 0.25),
    "latency_number": ({"filter": "gt(latency, 0.25)"}, lambda latency, run: latency > 0.25),
    "latency_lt_roots": ({"filter": 'lt(latency, "0.25s")', "is_root": True},
                         lambda latency, run: latency < 0.25 and run.parent_run_id is None),
}


@pytest.mark.parametrize("case", list(LATENCY_CASES))
def test_latency_filter(ds, case):
    kwargs, keep = LATENCY_CASES[case]
    latency = {n: (r.end_time - r.start_time).total_seconds() for n, r in ds.runs.items()}
    expected = {n for n, r in ds.runs.items() if keep(latency[n], r)}
    if case.startswith("latency_lt"):
        assert not expected & SLEPT, f"a run that slept {SLOW_S - 0.05} s or more is below 0.25 s: {latency}"
    else:
        assert SLEPT <= expected, f"a run that slept {SLOW_S - 0.05} s or more is not above 0.25 s: {latency}"
    assert_names(ds, expected, **kwargs)


def test_trace_id(ds):
    assert_names(ds, {"beta", "beta_fail"}, trace_id=ds.runs["beta"].id)
    assert_names(ds, ALPHA, trace_id=ds.runs["alpha"].id)


def test_start_time(ds):
    assert_names(ds, {"delta", "delta_llm"}, start_time=ds.mid)


def test_run_ids(ds):
    wanted = [ds.runs["gamma"].id, ds.runs["delta_llm"].id]
    got = sorted(r.name for r in ds.client.list_runs(run_ids=wanted))
    assert got == ["delta_llm", "gamma"]


def test_parent_run_id(ds):
    assert_names(ds, {"alpha_llm", "alpha_slow"}, parent_run_id=ds.runs["alpha"].id)


def test_select_returns_only_what_was_asked(ds):
    select = ["id", "name", "run_type", "start_time", "trace_id", "inputs"]
    runs = list(ds.client.list_runs(project_name=ds.project, is_root=True, select=select))
    assert sorted(r.name for r in runs) == ["alpha", "beta", "delta", "gamma"]
    got = by_name(runs)
    assert got["gamma"].inputs == {"text": f"find the {NEEDLE} here"}
    assert got["alpha"].trace_id == ds.runs["alpha"].id
    for r in runs:
        assert r.outputs is None, f"{r.name}: outputs were not selected but came back: {r.outputs}"
    # The wire shape: required keys are present even with a narrow select.
    pid = ds.client.read_project(project_name=ds.project).id
    body = raw_json(ds.client, "POST", "/runs/query",
                    data=json.dumps({"session": [str(pid)], "is_root": True, "select": ["inputs"]}))
    assert len(body["runs"]) == 4
    for r in body["runs"]:
        for key in ("id", "name", "run_type", "start_time", "trace_id"):
            assert key in r, (key, r)


def test_limit_smaller_than_result(ds):
    runs = list(ds.client.list_runs(project_name=ds.project, limit=3))
    assert len(runs) == 3
    assert len({r.id for r in runs}) == 3
    assert {r.name for r in runs} <= ALL


def test_tokens_on_llm_runs(ds):
    llm = ds.runs["alpha_llm"]
    assert (llm.prompt_tokens, llm.completion_tokens, llm.total_tokens) == (5, 7, 12)


def test_bad_filter_reports_position(ds):
    bad = 'and(eq(name, "alpha"), has(tags "x"))'
    with pytest.raises(ls.utils.LangSmithError) as excinfo:
        list(ds.client.list_runs(project_name=ds.project, filter=bad))
    message = str(excinfo.value)
    failed = [e for e in recorder_of(ds.client).matching("POST", "/runs/query") if e.status >= 400]
    assert failed, "the server accepted a malformed filter"
    last = failed[-1]
    assert last.status in (400, 422), last.describe()
    m = POSITION.search(last.response_text)
    assert m, f"the error should say where the filter is wrong: {last.response_text}"
    assert m.group(0) in message, f"the SDK's error should carry the server's explanation: {message}"
    # The missing comma is after `tags`: the position must point into `has(tags "x")`.
    position = int(re.search(r"\d+", m.group(0)[len(m.group(1)):]).group(0))
    assert bad.index("has(") <= position <= bad.index('"x"') + 3, (position, bad)


# --- cursor pagination over > 100 runs -------------------------------------------------------------

N_PAGED = 120


@traceable(name="paged")
def paged(i: int) -> dict:
    return {"i": i}


@pytest.fixture(scope="module")
def paged_project(module_make_client):
    project = unique("py-paging")
    c = module_make_client(project=project)
    wait_for_compression(c)
    with ls.tracing_context(client=c, project_name=project, enabled=True):
        for i in range(N_PAGED):
            # Half of them carry a tag, to page through a filtered result as well.
            paged(i, langsmith_extra={"tags": ["even"] if i % 2 == 0 else ["odd"], "metadata": {"i": i}})
    c.flush(timeout=60)
    wait_for_project_runs(c, project, N_PAGED, timeout=30)
    return c, project


def test_list_runs_follows_cursor(paged_project):
    c, project = paged_project
    rec = recorder_of(c)
    before = len(rec.matching("POST", "/runs/query"))
    runs = list(c.list_runs(project_name=project))
    ids = [r.id for r in runs]
    assert len(ids) == N_PAGED and len(set(ids)) == N_PAGED
    assert sorted(r.inputs["i"] for r in runs) == list(range(N_PAGED))
    # limit above the server's page size: the SDK keeps following cursors.next.
    runs = list(c.list_runs(project_name=project, limit=110))
    assert len(runs) == 110 and len({r.id for r in runs}) == 110
    assert len(rec.matching("POST", "/runs/query")) > before


def test_cursor_pages_do_not_overlap(paged_project):
    c, project = paged_project
    pid = str(c.read_project(project_name=project).id)
    body = {"session": [pid], "limit": 50, "select": ["id", "name", "inputs"]}
    seen: list[str] = []
    pages = 0
    while True:
        page = raw_json(c, "POST", "/runs/query", data=json.dumps(body))
        pages += 1
        assert len(page["runs"]) <= 50
        seen += [r["id"] for r in page["runs"]]
        nxt = (page.get("cursors") or {}).get("next")
        if not nxt or not page["runs"]:
            break
        assert pages < 10, "cursor never ends"
        body["cursor"] = nxt
    assert pages >= 3, f"120 runs at limit 50 should take 3 pages, took {pages}"
    assert len(seen) == N_PAGED and len(set(seen)) == N_PAGED


def test_filtered_paging(paged_project):
    c, project = paged_project
    runs = list(c.list_runs(project_name=project, filter='has(tags, "even")'))
    assert sorted(r.inputs["i"] for r in runs) == list(range(0, N_PAGED, 2))
    pid = str(c.read_project(project_name=project).id)
    body = {"session": [pid], "limit": 25, "filter": 'has(tags, "even")', "select": ["id", "inputs"]}
    seen = []
    for _ in range(10):
        page = raw_json(c, "POST", "/runs/query", data=json.dumps(body))
        seen += [r["inputs"]["i"] for r in page["runs"]]
        nxt = (page.get("cursors") or {}).get("next")
        if not nxt or not page["runs"]:
            break
        body["cursor"] = nxt
    assert sorted(seen) == list(range(0, N_PAGED, 2))
