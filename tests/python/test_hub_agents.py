"""Agents and skills on the hub through the unmodified SDK (sync and async): push_skill and
push_agent (files, links to a skill), pull_agent / pull_skill by latest, tag and hash,
agent_exists / skill_exists, list_agents / list_skills, delete_agent / delete_skill, each read
back; the directories survive a restart (they are events like every other hub write). Then
two tenants on one server: each tenant's handle is the owner of its prompts, another tenant's
public prompt is pulled and liked by that handle, and private prompts, agents and skills stay
private."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests

import langsmith as ls
from langchain_core.prompts import ChatPromptTemplate
from langsmith.schemas import FileEntry, SkillEntry
from langsmith.utils import LangSmithConflictError, LangSmithNotFoundError

from conftest import Server, sextant_binary, start_server, stop_server
from sextant_helpers import raw_json, unique

KEY_A = "hub-key-tenant-a"
KEY_B = "hub-key-tenant-b"
TENANT_A = "00000000-0000-4000-8000-0000000000a1"
TENANT_B = "00000000-0000-4000-8000-0000000000b2"


def handle_of(tenant: str) -> str:
    return "t-" + uuid.UUID(tenant).hex


def test_agents_and_skills_push_pull_list_and_delete(make_client) -> None:
    client = make_client()
    skill, agent = unique("skill"), unique("agent")
    assert not client.skill_exists(skill) and not client.agent_exists(agent)

    url = client.push_skill(skill, files={"SKILL.md": FileEntry(content="# Search\nv1"), "ref/a.txt": FileEntry(content="a")},
                            description="searches")
    assert f"/context/{skill}/" in url
    s1 = client.pull_skill(skill)
    assert {p: e.content for p, e in s1.files.items()} == {"SKILL.md": "# Search\nv1", "ref/a.txt": "a"}
    assert url.split(f"/context/{skill}/")[1].startswith(s1.commit_hash[:8])

    # The agent links the skill (following its latest commit).
    client.push_agent(agent, files={"AGENTS.md": FileEntry(content="be brief"), "skills/search": SkillEntry(repo_handle=skill)},
                      tags=["support"])
    a1 = client.pull_agent(agent)
    link = a1.files["skills/search"]
    assert (link.type, link.repo_handle, link.commit_hash, link.owner) == ("skill", skill, s1.commit_hash, "local")
    assert a1.files["AGENTS.md"].content == "be brief"

    # A second skill commit edits one file and deletes another; the agent's link follows it.
    client.push_skill(skill, files={"SKILL.md": FileEntry(content="# Search\nv2"), "ref/a.txt": None}, parent_commit=s1.commit_hash)
    s2 = client.pull_skill(skill)
    assert {p: e.content for p, e in s2.files.items()} == {"SKILL.md": "# Search\nv2"}
    assert client.pull_agent(agent).files["skills/search"].commit_hash == s2.commit_hash
    # Old versions by hash (in the identifier or as `version`) and by tag.
    assert client.pull_skill(f"{skill}:{s1.commit_hash[:8]}").files["ref/a.txt"].content == "a"
    assert client.pull_skill(skill, version=s1.commit_hash).commit_id == s1.commit_id
    raw_json(client, "POST", f"/repos/-/{skill}/tags", json={"tag_name": "stable", "commit_id": str(s1.commit_id)})
    assert client.pull_skill(f"{skill}:stable").commit_hash == s1.commit_hash
    # The same files again: nothing to commit; a stale parent: a conflict.
    with pytest.raises(LangSmithConflictError, match="Nothing to commit"):
        client.push_skill(skill, files={"SKILL.md": FileEntry(content="# Search\nv2")})
    with pytest.raises(LangSmithConflictError, match="not the latest commit"):
        client.push_skill(skill, files={"x.md": FileEntry(content="x")}, parent_commit=s1.commit_hash)

    # Listed by type, with their metadata; prompts are not agents.
    agents = client.list_agents(query=agent)
    assert [r.repo_handle for r in agents.repos] == [agent] and agents.total == 1
    assert agents.repos[0].tags == ["support"] and agents.repos[0].num_commits == 1
    skills = client.list_skills(query=skill)
    assert [(r.repo_handle, r.description, r.num_commits) for r in skills.repos] == [(skill, "searches", 2)]
    assert client.list_prompts(query=agent).total == 0
    assert client.get_prompt(agent).owner == "local"

    # A prompt cannot be pulled as an agent, nor an agent pushed as a prompt.
    prompt = unique("plain")
    client.push_prompt(prompt, object=ChatPromptTemplate.from_messages([("human", "{q}")]))
    with pytest.raises(LangSmithNotFoundError, match="is a prompt"):
        client.pull_agent(prompt)
    with pytest.raises(LangSmithNotFoundError, match="is a skill, not an agent"):
        client.pull_agent(skill)
    with pytest.raises(LangSmithConflictError, match="directories/commits"):
        client.create_commit(agent, ChatPromptTemplate.from_messages([("human", "{q}")]))

    # Deleting the skill leaves the agent with a link that resolves to nothing.
    client.delete_skill(skill)
    assert not client.skill_exists(skill)
    assert client.pull_agent(agent).files["skills/search"].commit_hash is None
    with pytest.raises(ls.utils.LangSmithUserError, match="another tenant"):
        client.delete_agent(f"someone-else/{agent}")
    client.delete_agent(agent)
    assert not client.agent_exists(agent)
    with pytest.raises(LangSmithNotFoundError):
        client.pull_agent(agent)


def test_the_async_client_pushes_and_pulls_agents(make_client) -> None:
    client = make_client()

    async def run() -> None:
        a = ls.AsyncClient(api_url=client.api_url, api_key=client.api_key)
        name = unique("async-agent")
        await a.push_agent(name, files={"AGENTS.md": FileEntry(content="hi")})
        assert await a.agent_exists(name)
        pulled = await a.pull_agent(name)
        assert pulled.files["AGENTS.md"].content == "hi"
        assert [r.repo_handle for r in (await a.list_agents(query=name)).repos] == [name]
        await a.delete_agent(name)
        assert not await a.agent_exists(name)
        await a.aclose()

    asyncio.run(run())


def test_agents_survive_a_restart(private_server) -> None:
    name, skill = unique("durable-agent"), unique("durable-skill")
    with private_server() as (_, make):
        client = make()
        client.push_skill(skill, files={"SKILL.md": FileEntry(content="s")})
        client.push_agent(name, files={"AGENTS.md": FileEntry(content="v1"), "s": SkillEntry(repo_handle=skill)})
        client.push_agent(name, files={"AGENTS.md": FileEntry(content="v2")})
        before = client.pull_agent(name)
    with private_server() as (_, make):
        client = make()
        after = client.pull_agent(name)
        assert after.commit_hash == before.commit_hash
        assert after.files["AGENTS.md"].content == "v2"
        assert after.files["s"].commit_hash == client.pull_skill(skill).commit_hash
        assert [r.repo_handle for r in client.list_agents(query=name).repos] == [name]
        assert len(raw_json(client, "GET", f"/commits/-/{name}/")["commits"]) == 2


def hash_key(key: str) -> str:
    out = subprocess.run([str(sextant_binary()), "hash-key", key], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def two_tenants(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    import os

    if os.environ.get("SEXTANT_URL"):
        pytest.skip("needs its own server with two tenants' keys (SEXTANT_URL points at an external one)")
    config = "".join(
        f'[[auth.api_keys]]\nname = "{n}"\nhash = "{hash_key(k)}"\ntenant = "{t}"\n\n'
        for n, k, t in (("a", KEY_A, TENANT_A), ("b", KEY_B, TENANT_B))
    )
    log_path = tmp_path / "server.log"
    request.node._sextant_private_logs = [log_path]
    server = start_server(tmp_path / "data", log_path, config=config)
    try:
        yield server
    finally:
        stop_server(server)


def test_each_tenant_owns_its_handle_and_reads_others_public_prompts_by_it(two_tenants: Server, monkeypatch) -> None:
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    a = ls.Client(api_url=two_tenants.url, api_key=KEY_A, auto_batch_tracing=False)
    b = ls.Client(api_url=two_tenants.url, api_key=KEY_B, auto_batch_tracing=False)
    ha, hb = handle_of(TENANT_A), handle_of(TENANT_B)
    assert (a._get_settings().tenant_handle, b._get_settings().tenant_handle) == (ha, hb)
    # Stable: the same handle on every ask.
    assert requests.get(f"{two_tenants.url}/settings", headers={"x-api-key": KEY_A}, timeout=10).json()["tenant_handle"] == ha

    public, private = unique("shared"), unique("secret")
    prompt = ChatPromptTemplate.from_messages([("system", "You are {role}."), ("human", "{q}")])
    a.push_prompt(f"{ha}/{public}", object=prompt, is_public=True)
    a.push_prompt(private, object=prompt)
    a.push_agent(unique("a-agent"), files={"AGENTS.md": FileEntry(content="private")})

    # B pulls and likes A's public prompt by A's handle; the pull says whose it is.
    pulled = b.pull_prompt(f"{ha}/{public}", dangerously_pull_public_prompt=True)
    assert pulled.format_messages(role="r", q="q")[0].content == "You are r."
    assert pulled.metadata["lc_hub_owner"] == ha
    seen = b.get_prompt(f"{ha}/{public}")
    assert (seen.owner, seen.full_name) == (ha, f"{ha}/{public}")
    assert b.like_prompt(f"{ha}/{public}") == {"likes": 1}
    assert a.get_prompt(public).num_likes == 1 and a.get_prompt(public).liked_by_auth_user is False
    assert b.unlike_prompt(f"{ha}/{public}") == {"likes": 0}
    # ... but cannot change it (the SDK refuses before asking; the server refuses too).
    with pytest.raises(ls.utils.LangSmithUserError, match="another tenant"):
        b.delete_prompt(f"{ha}/{public}")
    r = requests.post(f"{two_tenants.url}/commits/{ha}/{public}", headers={"x-api-key": KEY_B},
                      json={"manifest": {"lc": 1, "type": "constructor", "id": ["x"]}}, timeout=10)
    assert r.status_code == 403, r.text
    # A's private prompt and agent do not exist for B; B's lists hold only B's own.
    assert b.get_prompt(f"{ha}/{private}") is None
    with pytest.raises(LangSmithNotFoundError):
        b.pull_prompt(f"{ha}/{private}", dangerously_pull_public_prompt=True)
    assert b.list_prompts().total == 0 and b.list_agents().total == 0
    # B's own handle is B's own namespace.
    b.push_prompt(f"{hb}/{public}", object=prompt)
    assert b.get_prompt(public).owner == hb
    assert a.get_prompt(public).owner == ha, "the same name in two tenants is two prompts"
