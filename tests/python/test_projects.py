"""Projects (`/sessions`) through the SDK: create, conflict, upsert, read, list, update, stats,
delete."""

from __future__ import annotations

import uuid

import pytest

import langsmith as ls
from langsmith import traceable

from sextant_helpers import eventually, recorder_of, unique, wait_for_project_runs


@traceable(name="stat_run")
def stat_run(i: int) -> int:
    return i


def test_project_lifecycle(make_client):
    c = make_client()
    name = unique("py-proj")
    created = c.create_project(name, description="first description", metadata={"team": "a", "n": 1})
    assert created.name == name
    assert created.description == "first description"
    assert (created.extra or {}).get("metadata") == {"team": "a", "n": 1}
    assert created.tenant_id is not None
    assert created.reference_dataset_id is None

    # A duplicate name is a conflict ...
    with pytest.raises(ls.utils.LangSmithConflictError):
        c.create_project(name, description="again")
    conflicts = [e for e in recorder_of(c).matching("POST", "/sessions") if e.status == 409]
    assert conflicts, recorder_of(c).summary()
    # ... unless upsert is asked for, which returns the existing project.
    again = c.create_project(name, upsert=True)
    assert again.id == created.id

    by_name = c.read_project(project_name=name)
    assert by_name.id == created.id
    assert by_name.description == "first description"
    assert (by_name.extra or {}).get("metadata") == {"team": "a", "n": 1}
    by_id = c.read_project(project_id=str(created.id))
    assert by_id.id == created.id and by_id.name == name
    assert c.has_project(name)

    updated = c.update_project(created.id, description="second description", metadata={"team": "b"})
    assert updated.id == created.id
    assert updated.name == name, "name=None in the PATCH means unchanged"
    assert updated.description == "second description"
    assert ((updated.extra or {}).get("metadata") or {}).get("team") == "b", updated.extra
    reread = c.read_project(project_id=str(created.id))
    assert reread.name == name and reread.description == "second description"
    assert ((reread.extra or {}).get("metadata") or {}).get("team") == "b", reread.extra

    c.delete_project(project_name=name)
    assert not c.has_project(name)
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.read_project(project_id=str(created.id))


def test_read_missing_project(make_client):
    c = make_client()
    missing = unique("py-missing")
    assert not c.has_project(missing)
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.read_project(project_name=missing)
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.read_project(project_id=str(uuid.uuid4()))


def test_list_projects_name_contains(make_client):
    c = make_client()
    token = uuid.uuid4().hex[:10]
    names = {f"py-list-{token}-{i}" for i in range(3)}
    other = unique("py-list-other")
    for n in sorted(names):
        c.create_project(n)
    c.create_project(other)
    got = {p.name for p in c.list_projects(name_contains=token)}
    assert got == names
    exact = [p.name for p in c.list_projects(name=f"py-list-{token}-1")]
    assert exact == [f"py-list-{token}-1"]
    ids = [c.read_project(project_name=n).id for n in sorted(names)[:2]]
    assert {p.id for p in c.list_projects(project_ids=ids)} == set(ids)
    assert {p.name for p in c.list_projects(name_contains=token, limit=2)} <= names
    assert len(list(c.list_projects(name_contains=token, limit=2))) == 2


def test_project_stats_run_count(make_client, project_name):
    c = make_client(project=project_name)
    created = c.create_project(project_name, description="stats")
    with ls.tracing_context(client=c, project_name=project_name, enabled=True):
        for i in range(3):
            stat_run(i)
    c.flush(timeout=30)
    wait_for_project_runs(c, project_name, 3)

    def check():
        by_id = c.read_project(project_id=str(created.id), include_stats=True)
        assert by_id.run_count == 3, f"run_count={by_id.run_count}"
        assert by_id.last_run_start_time is not None
        by_name = c.read_project(project_name=project_name, include_stats=True)
        assert by_name.id == created.id
        listed = [p for p in c.list_projects(name=project_name, include_stats=True)]
        assert len(listed) == 1 and listed[0].run_count == 3, listed
        return by_id

    eventually(check, client=c)


def test_tracing_auto_creates_project(make_client, project_name):
    c = make_client(project=project_name)
    assert not c.has_project(project_name)
    with ls.tracing_context(client=c, project_name=project_name, enabled=True):
        stat_run(1)
    c.flush(timeout=30)
    eventually(lambda: c.read_project(project_name=project_name), client=c)
    (run,) = wait_for_project_runs(c, project_name, 1)
    assert run.session_id == c.read_project(project_name=project_name).id


def test_project_names_with_special_characters(make_client):
    c = make_client()
    name = f"py proj & co + ü/x?#={uuid.uuid4().hex[:8]}"
    created = c.create_project(name)
    assert c.read_project(project_name=name).id == created.id
    assert [p.id for p in c.list_projects(name=name)] == [created.id]
    with ls.tracing_context(client=c, project_name=name, enabled=True):
        stat_run(7)
    c.flush(timeout=30)
    (run,) = wait_for_project_runs(c, name, 1)
    assert run.session_id == created.id


def test_list_projects_pages_past_100(make_client):
    """Offset pagination: the SDK stops at the first page shorter than `limit` (100)."""
    c = make_client()
    token = uuid.uuid4().hex[:10]
    names = {f"py-page-{token}-{i:03d}" for i in range(105)}
    for n in sorted(names):
        c.create_project(n)
    got = [p.name for p in c.list_projects(name_contains=token)]
    assert len(got) == len(set(got)) == 105
    assert set(got) == names
    gets = [e for e in recorder_of(c).matching("GET", "/sessions") if f"name_contains={token}" in e.url]
    assert len(gets) >= 2, "105 projects cannot come back in one page of 100"
