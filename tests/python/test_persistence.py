"""A self-hosted server keeps what it acknowledged: stop it (SIGTERM) and start it again over
the same data directory, and the projects and runs are all still there."""

from __future__ import annotations

import langsmith as ls
from langsmith import traceable

from sextant_helpers import by_name, unique, wait_for_compression, wait_for_project_runs


@traceable(name="kept_child", run_type="tool")
def kept_child(x: int) -> int:
    return x + 1


@traceable(name="kept_root", tags=["keep"], metadata={"user_id": "u-restart"})
def kept_root(x: int) -> dict:
    return {"y": kept_child(x)}


def test_data_survives_restart(private_server):
    project = unique("py-restart")
    with private_server() as (_, make):
        c = make(project=project)
        created = c.create_project(unique("py-restart-empty"), description="kept", metadata={"a": 1})
        wait_for_compression(c)
        with ls.tracing_context(client=c, project_name=project, enabled=True):
            kept_root(41)
        c.flush(timeout=30)
        before = by_name(wait_for_project_runs(c, project, 2))

    with private_server() as (_, make):
        c = make(project=project)
        after = by_name(wait_for_project_runs(c, project, 2))
        for name, r in before.items():
            a = after[name]
            assert (a.id, a.trace_id, a.parent_run_id, a.dotted_order) == (r.id, r.trace_id, r.parent_run_id, r.dotted_order)
            assert (a.inputs, a.outputs, a.tags, a.status) == (r.inputs, r.outputs, r.tags, r.status)
            assert (a.start_time, a.end_time) == (r.start_time, r.end_time)
            assert a.extra["metadata"] == r.extra["metadata"]
        empty = c.read_project(project_id=str(created.id))
        assert empty.name == created.name and empty.description == "kept"
        assert (empty.extra or {}).get("metadata") == {"a": 1}
        # And it still takes new writes into the same project.
        with ls.tracing_context(client=c, project_name=project, enabled=True):
            kept_root(1)
        c.flush(timeout=30)
        wait_for_project_runs(c, project, 4)
