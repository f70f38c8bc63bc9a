"""The non-batch run API: `client.create_run` (`POST /runs`) and `client.update_run`
(`PATCH /runs/{id}`), as used by code that builds runs by hand without dotted_order."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

import langsmith as ls

from sextant_helpers import eventually, raw_json, recorder_of, utcnow


def test_create_and_update_run(make_client, project_name):
    c = make_client(project=project_name)
    run_id = uuid.uuid4()
    start = utcnow()
    c.create_run(
        "direct_run",
        inputs={"question": "2+2?", "nested": {"xs": [1, 2, 3]}},
        run_type="chain",
        project_name=project_name,
        id=run_id,
        start_time=start,
        tags=["direct", "manual"],
        extra={"metadata": {"source": "create_run", "k": 1}},
    )
    end = start + dt.timedelta(milliseconds=250)
    c.update_run(run_id, outputs={"answer": 4}, end_time=end)

    posts = recorder_of(c).matching("POST", "/runs")
    patches = recorder_of(c).matching("PATCH", f"/runs/{run_id}")
    assert posts and all(e.status < 300 for e in posts), recorder_of(c).summary()
    assert patches and all(e.status < 300 for e in patches), recorder_of(c).summary()

    def check():
        r = c.read_run(run_id)
        assert r.outputs == {"answer": 4}, r.outputs
        assert r.end_time is not None
        return r

    r = eventually(check, client=c)
    assert r.name == "direct_run" and r.run_type == "chain"
    assert r.inputs == {"question": "2+2?", "nested": {"xs": [1, 2, 3]}}
    assert sorted(r.tags or []) == ["direct", "manual"]
    assert (r.extra or {}).get("metadata", {}).get("source") == "create_run"
    assert r.extra["metadata"].get("k") == 1
    assert r.start_time == start
    assert r.end_time == end
    assert r.status == "success"
    assert not r.error
    assert r.trace_id == run_id
    assert r.parent_run_id is None
    assert r.session_id == c.read_project(project_name=project_name).id

    # No dotted_order was sent; the server must still return a string (the SDK model needs it).
    body = raw_json(c, "GET", f"/runs/{run_id}")
    assert isinstance(body.get("dotted_order"), str) and body["dotted_order"], body.get("dotted_order")
    assert body.get("trace_id") == str(run_id)

    listed = list(c.list_runs(project_name=project_name))
    assert [x.id for x in listed] == [run_id]


def test_create_run_with_child_and_error(make_client, project_name):
    c = make_client(project=project_name)
    parent_id, child_id = uuid.uuid4(), uuid.uuid4()
    t = utcnow()
    c.create_run("parent", inputs={"a": 1}, run_type="chain", project_name=project_name, id=parent_id, start_time=t)
    c.create_run(
        "child",
        inputs={"b": 2},
        run_type="tool",
        project_name=project_name,
        id=child_id,
        parent_run_id=parent_id,
        start_time=t + dt.timedelta(milliseconds=1),
    )
    c.update_run(child_id, error="ValueError('broken child')", end_time=t + dt.timedelta(milliseconds=2))
    c.update_run(parent_id, outputs={"ok": True}, end_time=t + dt.timedelta(milliseconds=3))

    def check():
        child = c.read_run(child_id)
        parent = c.read_run(parent_id)
        assert child.end_time is not None and parent.end_time is not None
        return parent, child

    parent, child = eventually(check, client=c)
    assert child.status == "error" and "broken child" in (child.error or "")
    assert child.parent_run_id == parent_id
    assert child.trace_id == parent_id, "a child's trace is its root's"
    assert parent.status == "success" and parent.outputs == {"ok": True}
    full = c.read_run(parent_id, load_child_runs=True)
    assert [r.id for r in full.child_runs or []] == [child_id]


def test_read_unknown_run_is_not_found(make_client):
    c = make_client()
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.read_run(uuid.uuid4())
