"""The prompt hub through the SDK with `langchain-core`: push_prompt (a chat prompt, a
structured prompt, a prompt with a model), pull_prompt latest, by commit hash (short and full)
and by tag, list_prompts, list_prompt_commits, a push identical to its parent, and pulled
prompts that format exactly as the pushed ones. Then Sextant's extras over raw HTTP: caching
headers, tag history, and A/B assignment recorded in the metadata of the run that uses it."""

from __future__ import annotations

import time
import uuid

import pytest
from langchain_core.load import dumpd, load
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.prompts.structured import StructuredPrompt
from langchain_core.tracers import LangChainTracer

from langsmith import tracing_context
from langsmith.utils import LangSmithConflictError, LangSmithError, LangSmithNotFoundError

from sextant_helpers import eventually, raw_json, recorder_of, unique


def chat_prompt(system: str) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", system), ("human", "{question}")])


def same_output(a, b, **inputs) -> None:
    assert a.format_messages(**inputs) == b.format_messages(**inputs)
    # Not traced: the suite's environment turns tracing on, and these runs would be sent by
    # the SDK's global client after the server is gone.
    with tracing_context(enabled=False):
        assert a.invoke(inputs) == b.invoke(inputs)


def test_push_pull_by_latest_hash_and_tag(make_client) -> None:
    client = make_client()
    name = unique("py-prompt")
    v1 = chat_prompt("You are {role}. Answer briefly.")
    url = client.push_prompt(name, object=v1, description="support answers", tags=["support"])
    assert f"/prompts/{name}/" in url

    pulled = client.pull_prompt(name)
    assert isinstance(pulled, ChatPromptTemplate)
    same_output(pulled, v1, role="a pirate", question="Where is my parcel?")
    assert pulled.format_messages(role="a pirate", question="Where?") == [
        SystemMessage(content="You are a pirate. Answer briefly."),
        HumanMessage(content="Where?"),
    ]
    first = pulled.metadata["lc_hub_commit_hash"]
    assert len(first) == 64 and pulled.metadata["lc_hub_repo"] == name

    # A second version, tagged production as it is pushed (the SDK tags by commit id).
    v2 = chat_prompt("You are {role}. Answer in one sentence.")
    client.push_prompt(name, object=v2, commit_tags=["production"], commit_description="one sentence")
    latest = client.pull_prompt(name, skip_cache=True)
    same_output(latest, v2, role="a clerk", question="Refund?")
    second = latest.metadata["lc_hub_commit_hash"]
    assert second != first

    # By short hash, full hash and tag.
    same_output(client.pull_prompt(f"{name}:{first[:8]}", skip_cache=True), v1, role="r", question="q")
    same_output(client.pull_prompt(f"{name}:{first}", skip_cache=True), v1, role="r", question="q")
    by_tag = client.pull_prompt(f"{name}:production", skip_cache=True)
    same_output(by_tag, v2, role="r", question="q")
    assert by_tag.metadata["lc_hub_commit_hash"] == second
    commit = client.pull_prompt_commit(f"{name}:{first[:8]}", skip_cache=True)
    assert commit.commit_hash == first and commit.examples == []

    # The same manifest again: nothing to commit, as LangSmith answers.
    with pytest.raises(LangSmithConflictError, match="Nothing to commit"):
        client.push_prompt(name, object=v2)

    # Reading the prompt and its commits back.
    prompt = client.get_prompt(name)
    assert prompt.repo_handle == name and prompt.num_commits == 2 and prompt.last_commit_hash == second
    assert prompt.description == "support answers" and prompt.tags == ["support"]
    commits = list(client.list_prompt_commits(name))
    assert [c.commit_hash for c in commits] == [second, first]
    assert commits[0].parent_commit_hash == first
    assert [c.commit_hash for c in client.list_prompt_commits(name, limit=1)] == [second]

    # Unknown refs are a clean 404 the SDK reports.
    with pytest.raises(LangSmithNotFoundError):
        client.pull_prompt(f"{name}:staging", skip_cache=True)
    with pytest.raises(LangSmithNotFoundError):
        client.pull_prompt(f"{name}:0000ffff", skip_cache=True)
    assert client.get_prompt(unique("missing")) is None


def test_list_prompts_filters_and_pages(make_client) -> None:
    client = make_client()
    marker = uuid.uuid4().hex[:10]
    names = [f"list-{marker}-{i}" for i in range(3)]
    for i, n in enumerate(names):
        client.push_prompt(n, object=chat_prompt(f"prompt {i}: {{role}}"))
    listed = client.list_prompts(query=marker)
    assert listed.total == 3
    assert [p.repo_handle for p in listed.repos] == list(reversed(names)), "the newest update first"
    assert all(p.num_commits == 1 for p in listed.repos)
    page = client.list_prompts(query=marker, limit=2, offset=2)
    assert [p.repo_handle for p in page.repos] == [names[0]] and page.total == 3
    oldest_first = client.list_prompts(query=marker, sort_direction="asc")
    assert [p.repo_handle for p in oldest_first.repos] == names
    client.update_prompt(names[1], is_archived=True, description="retired")
    assert [p.repo_handle for p in client.list_prompts(query=marker).repos] == [names[2], names[0]]
    assert [p.repo_handle for p in client.list_prompts(query=marker, is_archived=True).repos] == [names[1]]
    client.like_prompt(names[0])
    assert client.get_prompt(names[0]).num_likes == 1
    client.delete_prompt(names[2])
    assert client.get_prompt(names[2]) is None
    assert client.list_prompts(query=marker).total == 1


def test_structured_prompt_round_trips(make_client) -> None:
    client = make_client()
    name = unique("py-structured")
    schema = {"title": "Refund", "type": "object", "properties": {"eligible": {"type": "boolean"}}, "required": ["eligible"]}
    prompt = StructuredPrompt(messages=[("system", "Decide if the order is refundable."), ("human", "{order}")], schema_=schema)
    client.push_prompt(name, object=prompt)
    pulled = client.pull_prompt(name)
    assert isinstance(pulled, StructuredPrompt)
    assert pulled.schema_ == schema
    same_output(pulled, prompt, order="order 42, delivered yesterday")


def test_a_prompt_with_a_model_pulls_as_the_prompt_unless_the_model_is_asked_for(make_client) -> None:
    client = make_client()
    name = unique("py-with-model")
    prompt = chat_prompt("You are {role}.")
    # `prompt | ChatOpenAI(...)` as the SDK serialises it; langchain-openai is not installed,
    # so the manifest is pushed as the dict it would be (a dict with `lc` and `id` goes as is).
    manifest = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "runnable", "RunnableSequence"],
        "kwargs": {
            "first": dumpd(prompt),
            "last": {"lc": 1, "type": "constructor", "id": ["langchain", "chat_models", "openai", "ChatOpenAI"],
                     "kwargs": {"model_name": "gpt-4o-mini", "temperature": 0.2}},
        },
        "name": "RunnableSequence",
    }
    client.push_prompt(name, object=manifest)
    pulled = client.pull_prompt(name)
    assert isinstance(pulled, ChatPromptTemplate)
    same_output(pulled, prompt, role="a pirate", question="Hi?")
    with_model = client.pull_prompt_commit(name, include_model=True, skip_cache=True)
    assert with_model.manifest["kwargs"]["last"]["kwargs"]["model_name"] == "gpt-4o-mini"
    without = client.pull_prompt_commit(name, skip_cache=True)
    assert without.manifest["id"][-1] == "ChatPromptTemplate"
    assert with_model.commit_hash == without.commit_hash


def test_pulls_by_hash_are_cacheable(make_client) -> None:
    client = make_client()
    name = unique("py-cache")
    client.push_prompt(name, object=chat_prompt("{role}"))
    commit = client.pull_prompt_commit(name, skip_cache=True).commit_hash
    r = client.request_with_retries("GET", f"/commits/-/{name}/{commit}")
    assert r.headers["ETag"] == f'"{commit}"'
    assert "immutable" in r.headers["Cache-Control"]
    again = client.session.get(f"{client.api_url}/commits/-/{name}/{commit}",
                               headers={"x-api-key": client.api_key, "If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    latest = client.request_with_retries("GET", f"/commits/-/{name}/latest")
    assert latest.headers["Cache-Control"] == "private, max-age=5"


def test_tag_history_says_what_production_was_at_a_time(make_client) -> None:
    client = make_client()
    name = unique("py-history")
    client.push_prompt(name, object=chat_prompt("v1 {role}"), commit_tags=["production"])
    v1 = client.pull_prompt_commit(f"{name}:production", skip_cache=True).commit_hash
    time.sleep(0.05)
    then = raw_json(client, "GET", f"/repos/-/{name}/tags/production")["moved_at"]
    time.sleep(0.05)
    client.push_prompt(name, object=chat_prompt("v2 {role}"), commit_tags=["production"])
    v2 = client.pull_prompt_commit(f"{name}:production", skip_cache=True).commit_hash
    assert v2 != v1
    at_then = raw_json(client, "GET", f"/repos/-/{name}/tags/production", params={"as_of": then})
    assert at_then["commit_hash"] == v1
    history = raw_json(client, "GET", f"/repos/-/{name}/tags/production/history")
    assert [m["commit_hash"] for m in history["moves"]] == [v1, v2]


def test_ab_assignment_is_stable_and_recorded_in_run_metadata(make_client) -> None:
    project = unique("py-ab")
    client = make_client(project=project)
    name = unique("py-ab-prompt")
    client.push_prompt(name, object=chat_prompt("control: {role}"), commit_tags=["production"])
    client.push_prompt(name, object=chat_prompt("canary: {role}"), commit_tags=["canary"])
    raw_json(client, "PUT", f"/repos/-/{name}/variants", json={"variants": {"production": 50, "canary": 50}})

    def assign(user: str) -> dict:
        return raw_json(client, "POST", f"/repos/-/{name}/assign", json={"user_id": user})

    seen = {}
    for i in range(40):
        a = assign(f"user-{i}")
        assert assign(f"user-{i}")["variant"] == a["variant"], "the same user always gets the same variant"
        seen.setdefault(a["variant"], a)
    assert set(seen) == {"production", "canary"}

    # The service formats the assigned prompt and attaches the assignment's metadata to its run
    # (LangChain's tracer sends it); run filters then find the runs of each variant.
    tracer = LangChainTracer(project_name=project, client=client)
    for variant, a in seen.items():
        prompt = load(a["manifest"], allowed_objects="core")
        out = prompt.invoke({"role": "a clerk", "question": "Refund?"},
                            config={"metadata": a["metadata"], "callbacks": [tracer], "run_name": f"ab-{variant}"})
        assert out.messages[0].content == f"{'control' if variant == 'production' else 'canary'}: a clerk"
    tracer.wait_for_futures()
    client.flush()

    def runs_of(variant: str) -> list:
        runs = list(client.list_runs(project_name=project,
                                     filter=f'and(eq(metadata_key, "prompt_variant"), eq(metadata_value, "{variant}"))'))
        assert [r.name for r in runs] == [f"ab-{variant}"], [r.name for r in runs]
        return runs

    canary_run = eventually(lambda: runs_of("canary"), client=client, what="the canary run")[0]
    assert canary_run.metadata["lc_hub_commit_hash"] == seen["canary"]["commit_hash"]
    assert canary_run.metadata["lc_hub_repo"] == name
    eventually(lambda: runs_of("production"), client=client, what="the production run")


def test_the_tenant_handle_is_the_owner_the_sdk_uses_everywhere(make_client) -> None:
    """`GET /settings` gives the tenant a hub handle; the SDK then accepts `handle/name` as the
    caller's own (create, push, pull, like, delete), may make a prompt public, and never asks
    for `/commits/None/...`."""
    client = make_client()
    handle = client._get_settings().tenant_handle
    assert handle == "local", "the single tenant of an open server"
    name = unique("py-owned")
    own = f"{handle}/{name}"
    v1 = chat_prompt("You are {role}.")
    url = client.push_prompt(own, object=v1, is_public=True, description="shared")
    assert f"/prompts/{name}/" in url, "the SDK sees its own prompt (not another tenant's hub URL)"
    prompt = client.get_prompt(own)
    assert (prompt.owner, prompt.full_name, prompt.is_public) == (handle, own, True)
    assert client.get_prompt(name).id == prompt.id, "`name` and `handle/name` are the same prompt"
    assert any(p.repo_handle == name for p in client.list_prompts(is_public=True, query=name).repos)
    pulled = client.pull_prompt(own, dangerously_pull_public_prompt=True)
    same_output(pulled, v1, role="a clerk", question="Hi?")
    assert pulled.metadata["lc_hub_owner"] == handle
    client.push_prompt(own, object=chat_prompt("You are {role}!"), commit_tags="production")
    assert client.pull_prompt_commit(f"{own}:production", skip_cache=True, dangerously_pull_public_prompt=True).commit_hash == \
        client.get_prompt(name).last_commit_hash
    assert client.like_prompt(own) == {"likes": 1}
    assert client.get_prompt(own).liked_by_auth_user is True
    assert client.unlike_prompt(own) == {"likes": 0}
    # Another owner is another tenant: the SDK refuses to write there, the server finds nothing.
    with pytest.raises(Exception, match="another tenant"):
        client.create_prompt(f"t-{'0' * 32}/{name}")
    assert client.get_prompt(f"t-{'0' * 32}/{name}") is None
    client.delete_prompt(own)
    assert client.get_prompt(name) is None
    paths = [e.path for e in recorder_of(client).snapshot()]
    assert paths and not [p for p in paths if "/None" in p], [p for p in paths if "/None" in p]


def test_a_manifest_without_an_id_is_a_400_naming_it(make_client) -> None:
    client = make_client()
    name = unique("py-no-id")
    client.create_prompt(name)
    # A dict that is not a LangChain object: the SDK sends it as it is.
    with pytest.raises(LangSmithError) as e:
        client.create_commit(name, {"template": "Hello {name}", "lc": 1})
    assert "400" in str(e.value) and "Manifest must have an id field" in str(e.value)
    r = client.session.post(f"{client.api_url}/commits/-/{name}", headers={"x-api-key": client.api_key},
                            json={"manifest": {"template": "x"}, "parent_commit": None})
    assert (r.status_code, r.json()["detail"]) == (400, "Manifest must have an id field")
    assert client.get_prompt(name).num_commits == 0, "nothing was committed"


def test_the_rest_of_the_sdk_prompt_api(make_client) -> None:
    """create_prompt, create_commit (with tags and a description), list_prompt_commits (with
    and without the model, paged), get_prompt, update_prompt, unlike_prompt, pulls by tag and
    hash with include_model, and delete_prompt, each read back."""
    client = make_client()
    name = unique("py-api")
    created = client.create_prompt(name, description="first", readme="# r", tags=["a"])
    assert (created.description, created.readme, created.tags, created.num_commits) == ("first", "# r", ["a"], 0)
    url = client.create_commit(name, chat_prompt("v1 {role}"), tags=["staging", "qa"], description="one")
    h1 = url.split(f"/prompts/{name}/")[1][:8]
    manifest = {
        "lc": 1, "type": "constructor", "id": ["langchain", "schema", "runnable", "RunnableSequence"],
        "kwargs": {"first": dumpd(chat_prompt("v2 {role}")),
                   "last": {"lc": 1, "type": "constructor", "id": ["langchain", "chat_models", "openai", "ChatOpenAI"],
                            "kwargs": {"model_name": "gpt-4o-mini"}}},
    }
    client.create_commit(name, manifest, parent_commit_hash="latest", tags="production")
    commits = list(client.list_prompt_commits(name))
    assert len(commits) == 2 and commits[1].commit_hash.startswith(h1)
    assert commits[1].description == "one" and commits[0].parent_commit_hash == commits[1].commit_hash
    assert commits[0].manifest_id is not None and commits[0].repo_id == uuid.UUID(created.id)
    assert [c.commit_hash for c in client.list_prompt_commits(name, offset=1)] == [commits[1].commit_hash]
    # Listing without the model shows the prompt; with it, the whole sequence.
    raw = raw_json(client, "GET", f"/commits/-/{name}/", params={"include_model": False})
    assert raw["commits"][0]["manifest"]["id"][-1] == "ChatPromptTemplate"
    raw = raw_json(client, "GET", f"/commits/-/{name}/", params={"include_model": True})
    assert raw["commits"][0]["manifest"]["id"][-1] == "RunnableSequence"
    # Pulls by tag and hash, with and without the model.
    for ref in ["staging", "qa", h1, commits[1].commit_hash]:
        assert client.pull_prompt_commit(f"{name}:{ref}", skip_cache=True).commit_hash == commits[1].commit_hash, ref
    prod = client.pull_prompt_commit(f"{name}:production", include_model=True, skip_cache=True)
    assert prod.manifest["kwargs"]["last"]["kwargs"]["model_name"] == "gpt-4o-mini"
    assert client.pull_prompt(f"{name}:production").format_messages(role="r", question="q")[0].content == "v2 r"
    # Metadata updates.
    updated = client.update_prompt(name, description="second", readme="# s", tags=["b"], is_archived=False)
    assert updated["repo"]["description"] == "second"
    got = client.get_prompt(name)
    assert (got.description, got.readme, got.tags, got.num_commits) == ("second", "# s", ["b"], 2)
    assert got.last_commit_hash == commits[0].commit_hash
    client.like_prompt(name)
    assert client.unlike_prompt(name) == {"likes": 0} and client.get_prompt(name).num_likes == 0
    client.delete_prompt(name)
    assert client.get_prompt(name) is None
    with pytest.raises(LangSmithNotFoundError):
        client.pull_prompt_commit(name, skip_cache=True)


def test_the_async_client_pushes_pulls_and_lists(make_client) -> None:
    client = make_client()
    from langsmith import AsyncClient

    async def run() -> None:
        a = AsyncClient(api_url=client.api_url, api_key=client.api_key)
        name = unique("py-async")
        await a.push_prompt(name, object=chat_prompt("async {role}"), commit_tags=["production"])
        pulled = await a.pull_prompt(f"{name}:production")
        assert pulled.format_messages(role="r", question="q")[0].content == "async r"
        got = await a.get_prompt(f"local/{name}")
        assert got.owner == "local" and got.num_commits == 1
        assert (await a.like_prompt(name)) == {"likes": 1}
        assert [p.repo_handle for p in (await a.list_prompts(query=name)).repos] == [name]
        await a.delete_prompt(name)
        assert await a.get_prompt(name) is None
        await a.aclose()

    import asyncio
    asyncio.run(run())
