"""Online evaluators (`/api/v1/platform/evaluators`) through the Python SDK's generated client:
`Client.evaluators` is the async `online_evaluators` resource, even on the sync client.
Every write is read back; bad input is a 422 naming the field; evaluators are the tenant's own
and outlive a restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Iterator

import langsmith
import pytest
import requests
from langsmith._exceptions import NotFoundError, UnprocessableEntityError

from conftest import Server, sextant_binary, start_server, stop_server
from sextant_helpers import API_KEY


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _all(ev, **kw) -> list:
    return [e async for e in ev.list(**kw)]


def test_create_list_read_update_and_delete_read_back(make_client) -> None:
    client = make_client()
    tag = unique("team")

    async def go() -> None:
        ev = client.evaluators
        llm = (await ev.create(
            name=f"helpfulness {tag}", type="llm", metadata={"team": tag, "tier": 1},
            llm_evaluator={"prompt_repo_handle": "helpfulness-judge", "commit_hash_or_tag": "latest",
                           "variable_mapping": {"question": "input.question", "answer": "output"}},
        )).evaluator
        code = (await ev.create(
            name=f"has-citation {tag}", type="code", metadata={"team": tag},
            code_evaluator={"code": "def perform_eval(run, example):\n    return {'cited': 1}\n"},
        )).evaluator
        assert llm.type == "llm" and llm.name == f"helpfulness {tag}" and llm.run_rules == []
        assert llm.llm_evaluator.prompt_repo_handle == "helpfulness-judge"
        assert llm.llm_evaluator.variable_mapping == {"question": "input.question", "answer": "output"}
        assert llm.llm_evaluator.evaluator_id == llm.id and llm.code_evaluator is None
        assert code.code_evaluator.language == "python" and code.code_evaluator.code.startswith("def perform_eval")

        # Read back, one by one and listed.
        got = await ev.retrieve(llm.id)
        assert (got.id, got.name, got.type, got.metadata, got.tenant_id) == (llm.id, llm.name, "llm", {"team": tag, "tier": 1}, llm.tenant_id)
        assert got.created_at == llm.created_at and got.llm_evaluator.commit_hash_or_tag == "latest"
        mine = await _all(ev, name_contains=tag.upper())  # case-insensitive
        assert sorted(e.id for e in mine) == sorted([llm.id, code.id])
        assert [e.id for e in await _all(ev, name_contains=tag, type="code")] == [code.id]
        assert [e.id for e in await _all(ev, metadata='{"tier": 1, "team": "%s"}' % tag)] == [llm.id]
        # Pages of one follow offsets to the end; the envelope carries the total.
        paged = await _all(ev, name_contains=tag, limit=1, sort_by="name", sort_by_desc=False)
        assert [e.name for e in paged] == [code.name, llm.name]
        page = await ev.list(name_contains=tag, limit=1)
        assert page.total == 2 and len(page.evaluators) == 1
        # Nothing is attached to a project here, so an attachment filter matches nothing.
        assert await _all(ev, name_contains=tag, resource_id=[str(uuid.uuid4())]) == []

        # Update merges into the evaluator's own sub-object; null metadata clears it.
        upd = (await ev.update(llm.id, name=f"helpful {tag}", metadata=None,
                               llm_evaluator={"commit_hash_or_tag": "v2", "num_few_shot_examples": 3})).evaluator
        assert upd.name == f"helpful {tag}" and upd.metadata is None
        assert upd.llm_evaluator.prompt_repo_handle == "helpfulness-judge" and upd.llm_evaluator.commit_hash_or_tag == "v2"
        back = await ev.retrieve(llm.id)
        assert (back.name, back.metadata, back.llm_evaluator.num_few_shot_examples) == (f"helpful {tag}", None, 3)
        assert back.updated_at > back.created_at == llm.created_at
        code_upd = (await ev.update(code.id, code_evaluator={"code": "def perform_eval(run):\n    return 0\n",
                                                             "code_evaluator_input": "thread"})).evaluator
        assert code_upd.code_evaluator.code_evaluator_input == "thread"
        assert (await ev.retrieve(code.id)).code_evaluator.code == "def perform_eval(run):\n    return 0\n"

        # Delete one; bulk-delete the rest with an unknown and a malformed id among them.
        await ev.delete(llm.id)
        with pytest.raises(NotFoundError):
            await ev.retrieve(llm.id)
        assert [e.id for e in await _all(ev, name_contains=tag)] == [code.id]
        missing = str(uuid.uuid4())
        res = await ev.bulk_delete(evaluator_ids=[code.id, missing, "not-a-uuid", llm.id])
        assert res.succeeded == [code.id]
        assert sorted(f.id for f in res.failed) == sorted([missing, "not-a-uuid", llm.id])
        assert all(f.error for f in res.failed)
        assert await _all(ev, name_contains=tag) == []
        with pytest.raises(NotFoundError):
            await ev.delete(code.id)

    asyncio.run(go())


def test_bad_input_is_a_422_naming_the_field(make_client, sextant) -> None:
    client = make_client()
    ev = client.evaluators

    async def status(coro) -> str:
        with pytest.raises(UnprocessableEntityError) as e:
            await coro
        return str(e.value.body)

    async def go() -> None:
        assert "name" in await status(ev.create(type="llm", llm_evaluator={"prompt_repo_handle": "j"}))
        assert "type" in await status(ev.create(name="x", type="vibes"))  # type: ignore[arg-type]
        assert "llm_evaluator" in await status(ev.create(name="x", type="llm"))
        assert "prompt_repo_handle" in await status(ev.create(name="x", type="llm", llm_evaluator={"commit_hash_or_tag": "v1"}))
        assert "code_evaluator.code" in await status(ev.create(name="x", type="code", code_evaluator={"language": "python"}))
        assert "language" in await status(ev.create(name="x", type="code", code_evaluator={"code": "x", "language": "cobol"}))
        assert "llm_evaluator" in await status(ev.create(name="x", type="code", code_evaluator={"code": "x"},
                                                          llm_evaluator={"prompt_repo_handle": "j"}))
        assert "metadata" in await status(ev.create(name="x", type="decision_model", extra_body={"metadata": [1]}))
        assert "limit" in await status(ev.list(limit=1000))
        assert "evaluator id" in await status(ev.retrieve("nope"))
        assert "period_start" in await status(ev.spend(period_start="last week", group_by="evaluator"))
        assert "exactly one" in await status(ev.spend(period_start="2026-01-05"))
        made = (await ev.create(name=unique("kind"), type="code", code_evaluator={"code": "x"})).evaluator
        assert "llm_evaluator" in await status(ev.update(made.id, llm_evaluator={"prompt_repo_handle": "j"}))
        assert "name" in await status(ev.update(made.id, name=""))
        assert (await ev.retrieve(made.id)).name == made.name  # refused changes changed nothing
        await ev.delete(made.id)

    asyncio.run(go())
    # Not JSON, and not an object.
    url = f"{sextant.url}/api/v1/platform/evaluators"
    r = requests.post(url, data="{", headers={"x-api-key": API_KEY, "content-type": "application/json"}, timeout=10)
    assert 400 <= r.status_code < 500, r.text
    r = requests.post(url, json=[1], headers={"x-api-key": API_KEY}, timeout=10)
    assert r.status_code == 422 and "body" in r.text, r.text
    r = requests.delete(url, headers={"x-api-key": API_KEY}, timeout=10)
    assert r.status_code == 422 and "evaluator_ids" in r.text, r.text
    # The same API at /v1 (LangSmith's platform prefix without /api).
    r = requests.post(f"{sextant.url}/v1/platform/evaluators", json={"name": unique("v1"), "type": "decision_model"},
                      headers={"x-api-key": API_KEY}, timeout=10)
    assert r.status_code == 201, r.text
    made = r.json()["evaluator"]
    r = requests.get(f"{url}/{made['id']}", headers={"x-api-key": API_KEY}, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == made["name"], r.text
    assert requests.delete(f"{sextant.url}/v1/platform/evaluators/{made['id']}", headers={"x-api-key": API_KEY},
                           timeout=10).status_code == 204


def test_spend_has_the_documented_shape_with_zero_amounts(make_client) -> None:
    client = make_client()

    async def go():
        ev = client.evaluators
        made = (await ev.create(name=unique("spend"), type="llm", llm_evaluator={"prompt_repo_handle": "j"})).evaluator
        by_eval = await ev.spend(period_start="2026-02-26", group_by="evaluator", type="llm")
        one = await ev.spend(period_start="2026-02-26", evaluator_id=made.id)
        await ev.delete(made.id)
        return made, by_eval, one

    made, by_eval, one = asyncio.run(go())
    assert (by_eval.period_start, by_eval.period_end) == ("2026-02-26", "2026-03-05")
    group = next(g for g in by_eval.groups if g.evaluator_id == made.id)
    assert group.evaluator_name == made.name and group.total_spend_usd == 0 and group.total_trace_count == 0
    assert [d.date for d in group.days] == ["2026-02-26", "2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    assert [g.evaluator_id for g in one.groups] == [made.id]


KEY_A, KEY_B = "platform-eval-key-a", "platform-eval-key-b"
TENANT_A, TENANT_B = "00000000-0000-4000-8000-0000000000a1", "00000000-0000-4000-8000-0000000000b1"


def _hash_key(key: str) -> str:
    import subprocess

    out = subprocess.run([str(sextant_binary()), "hash-key", key], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def two_tenants(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str, Server]]:
    import os

    if os.environ.get("SEXTANT_URL"):
        pytest.skip("needs its own server with two tenants' keys (SEXTANT_URL points at an external one)")
    config = "".join(
        f'[[auth.api_keys]]\nname = "{n}"\nhash = "{_hash_key(k)}"\ntenant = "{t}"\n\n'
        for n, k, t in (("a", KEY_A, TENANT_A), ("b", KEY_B, TENANT_B))
    )
    log_path = tmp_path / "server.log"
    request.node._sextant_private_logs = [log_path]
    server = start_server(tmp_path / "data", log_path, config=config)
    try:
        yield tmp_path, config, server
    finally:
        stop_server(server)


def test_evaluators_are_the_tenants_own_and_survive_a_restart(two_tenants, monkeypatch) -> None:
    tmp_path, config, server = two_tenants
    monkeypatch.setenv("LANGSMITH_TRACING", "false")

    def clients(url: str):
        return (langsmith.Client(api_url=url, api_key=KEY_A, auto_batch_tracing=False),
                langsmith.Client(api_url=url, api_key=KEY_B, auto_batch_tracing=False))

    a, b = clients(server.url)

    async def setup():
        made = (await a.evaluators.create(name="a-only", type="llm", llm_evaluator={"prompt_repo_handle": "j"})).evaluator
        with pytest.raises(NotFoundError):
            await b.evaluators.retrieve(made.id)
        with pytest.raises(NotFoundError):
            await b.evaluators.update(made.id, name="stolen")
        with pytest.raises(NotFoundError):
            await b.evaluators.delete(made.id)
        assert await _all(b.evaluators) == []
        return made

    made = asyncio.run(setup())
    assert made.tenant_id == TENANT_A
    stop_server(server)
    again = start_server(tmp_path / "data", tmp_path / "server2.log", config=config)
    try:
        a, b = clients(again.url)

        async def after():
            return await a.evaluators.retrieve(made.id), await _all(a.evaluators), await _all(b.evaluators)

        got, listed_a, listed_b = asyncio.run(after())
        assert (got.name, got.llm_evaluator.prompt_repo_handle) == ("a-only", "j")
        assert [e.id for e in listed_a] == [made.id] and listed_b == []
    finally:
        stop_server(again)
