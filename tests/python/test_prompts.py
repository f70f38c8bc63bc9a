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
from langsmith.utils import LangSmithConflictError, LangSmithNotFoundError

from sextant_helpers import eventually, raw_json, unique


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
