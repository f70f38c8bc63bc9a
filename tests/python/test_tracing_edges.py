"""Tracing situations that real applications hit beyond the happy path: a run whose start and
end travel in different requests, tags and metadata added while the run is in flight (they
only travel in the patch), large payloads, many traces at once from worker threads, and reading
several projects at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

import langsmith as ls
from langsmith import traceable

from sextant_helpers import batch_info, by_name, unique, wait_for_compression, wait_for_project_runs

MODES = ["zstd", "batch"]


def _client(mode, make_client, sextant, project):
    if mode == "zstd":
        c = make_client(project=project)
        wait_for_compression(c)
        return c
    return make_client(project=project, info=batch_info(sextant.url))


@pytest.mark.parametrize("mode", MODES)
def test_start_and_end_in_separate_requests(mode, make_client, sextant, project_name):
    c = _client(mode, make_client, sextant, project_name)

    @traceable
    def step(i: int) -> int:
        return i * 10

    @traceable(name="long_root", tags=["long"])
    def long_root(n: int) -> dict:
        step(1, langsmith_extra={"name": "step1"})
        # The root's post (and the first child) are sent before the root has finished.
        c.flush(timeout=30)
        step(2, langsmith_extra={"name": "step2"})
        run = ls.get_current_run_tree()
        run.add_tags(["late-tag"])
        run.add_metadata({"late": {"k": [1, 2]}, "phase": "end"})
        return {"n": n}

    with ls.tracing_context(client=c, project_name=project_name, enabled=True):
        long_root(2)
    c.flush(timeout=30)

    runs = by_name(wait_for_project_runs(c, project_name, 3))
    root = runs["long_root"]
    assert root.outputs == {"n": 2} and root.status == "success" and root.end_time is not None
    assert root.inputs == {"n": 2}, "the patch must not wipe the inputs sent with the post"
    assert "late-tag" in (root.tags or []) and "long" in (root.tags or []), root.tags
    md = root.extra["metadata"]
    assert md.get("late") == {"k": [1, 2]} and md.get("phase") == "end", md
    assert md.get("ls_method") == "traceable", "metadata from the post must survive the patch"
    full = c.read_run(root.id, load_child_runs=True)
    assert [k.outputs for k in full.child_runs or []] == [{"output": 10}, {"output": 20}]


def test_large_payload(make_client, project_name):
    c = make_client(project=project_name)
    wait_for_compression(c)
    big = "".join(f"line {i}: lorem ipsum dolor sit amet ✓\n" for i in range(60_000))  # ~2.3 MB

    @traceable(name="big_io", run_type="llm")
    def big_io(prompt: str) -> dict:
        return {"echo": prompt[::-1]}

    with ls.tracing_context(client=c, project_name=project_name, enabled=True):
        big_io(big)
    c.flush(timeout=60)
    (run,) = wait_for_project_runs(c, project_name, 1, timeout=20)
    assert run.inputs == {"prompt": big}
    assert run.outputs == {"echo": big[::-1]}


def test_list_runs_over_several_projects(make_client):
    c = make_client()
    wait_for_compression(c)
    p1, p2, p3 = unique("py-multi-a"), unique("py-multi-b"), unique("py-multi-c")

    @traceable(name="in_project")
    def in_project(p: str) -> str:
        return p

    for p in (p1, p2, p3):
        with ls.tracing_context(client=c, project_name=p, enabled=True):
            in_project(p)
    c.flush(timeout=30)
    for p in (p1, p2, p3):
        wait_for_project_runs(c, p, 1)
    got = sorted(r.inputs["p"] for r in c.list_runs(project_name=[p1, p3]))
    assert got == sorted([p1, p3])
    ids = [c.read_project(project_name=p).id for p in (p2, p3)]
    got = sorted(r.inputs["p"] for r in c.list_runs(project_id=ids))
    assert got == sorted([p2, p3])


def test_concurrent_traces_from_threads(make_client, project_name):
    """A web app traces many requests at once from worker threads, through one client."""
    c = make_client(project=project_name)
    wait_for_compression(c)

    @traceable(name="worker_leaf", run_type="tool")
    def leaf(i: int, j: int) -> int:
        return i * 100 + j

    @traceable(name="worker_root")
    def handle(i: int) -> dict:
        return {"sum": sum(leaf(i, j) for j in range(2))}

    def request(i: int) -> dict:
        with ls.tracing_context(client=c, project_name=project_name, enabled=True):
            return handle(i)

    n = 40
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(request, range(n)))
    assert results == [{"sum": 200 * i + 1} for i in range(n)]
    c.flush(timeout=60)

    runs = wait_for_project_runs(c, project_name, 3 * n, timeout=30)
    roots = {r.id: r for r in runs if r.parent_run_id is None}
    assert len(roots) == n
    for r in runs:
        if r.parent_run_id is not None:
            root = roots[r.parent_run_id]
            assert r.trace_id == root.id and r.dotted_order.startswith(root.dotted_order + ".")
            i = root.inputs["i"]
            assert r.inputs["i"] == i and r.outputs == {"output": i * 100 + r.inputs["j"]}
    assert sorted(r.outputs["sum"] for r in roots.values()) == [200 * i + 1 for i in range(n)]
