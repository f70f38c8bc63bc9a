"""Tracing with `@traceable` through every ingestion path the SDK has, then reading the tree back.

One trace, three levels deep:

    root_pipeline (chain, tags root-tag, metadata user_id/env)
    └── middle (chain, tags mid-tag, metadata stage)
        ├── fetch_docs (retriever)
        ├── flaky_tool (tool) raises ValueError("boom 1"), caught by `middle`
        └── fake_llm (llm) returns usage_metadata 11/3/14

is sent through each path (`mode`):

* `zstd`: the default; the server's /info advertises zstd, so the SDK posts zstd-compressed
  `/runs/multipart` bodies with separate post and patch parts.
* `multipart_plain`: `LANGSMITH_DISABLE_RUN_COMPRESSION=true`; uncompressed multipart, post and
  patch of one run merged.
* `batch`: /info overridden with `batch_ingest_config.use_multipart_endpoint=false`; JSON
  `POST /runs/batch`.
* `api_v1`: `LANGSMITH_ENDPOINT=http://host:port/api/v1` (the self-hosted form), default path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import pytest

import langsmith as ls
import langsmith.run_trees as run_trees
from langsmith import traceable

from sextant_helpers import (
    API_KEY,
    batch_info,
    by_name,
    eventually,
    raw_json,
    recorder_of,
    parse_time,
    reset_sdk_env_caches,
    sent_runs,
    utcnow,
    wait_for_compression,
    wait_for_project_runs,
)

USAGE = {"input_tokens": 11, "output_tokens": 3, "total_tokens": 14}
DOC = {"page_content": "Paris is the capital of France.", "metadata": {"source": "wiki", "rank": 1}}


@traceable(name="fetch_docs", run_type="retriever", tags=["retr-tag"])
def fetch_docs(query: str, k: int = 1) -> list:
    return [DOC] * k


@traceable(run_type="tool", tags=["tool-tag"])
def flaky_tool(x: int) -> int:
    raise ValueError(f"boom {x}")


@traceable(run_type="llm", name="fake_llm", metadata={"ls_provider": "fake", "ls_model_name": "fake-1"})
def fake_llm(prompt: str) -> dict:
    return {"content": "Paris", "usage_metadata": dict(USAGE)}


@traceable(tags=["mid-tag"], metadata={"stage": "middle"})
def middle(question: str) -> dict:
    docs = fetch_docs(question, k=1)
    try:
        flaky_tool(1)
    except ValueError:
        pass
    answer = fake_llm(f"Q: {question}")
    return {"answer": answer["content"], "n_docs": len(docs), "nested": {"ok": True, "list": [1, 2.5, None]}}


@traceable(name="root_pipeline", tags=["root-tag"], metadata={"user_id": "u1", "env": "test"})
def root_pipeline(question: str, options: dict) -> dict:
    return middle(question)


QUESTION = "What is the capital of France? (ünïcödé ✓)"
OPTIONS = {"temperature": 0, "stop": ["\n"], "nested": {"a": [1, {"b": None}]}}
ROOT_OUTPUTS = {"answer": "Paris", "n_docs": 1, "nested": {"ok": True, "list": [1, 2.5, None]}}

MODES = ["zstd", "multipart_plain", "batch", "api_v1"]


def _client_for(mode: str, make_client, sextant, project: str):
    if mode == "zstd":
        c = make_client(project=project)
        wait_for_compression(c)
    elif mode == "multipart_plain":
        c = make_client(project=project, compression=False)
    elif mode == "batch":
        c = make_client(project=project, info=batch_info(sextant.url))
    elif mode == "api_v1":
        c = make_client(project=project, api_v1=True)
        wait_for_compression(c)
    else:  # pragma: no cover
        raise ValueError(mode)
    return c


def _trace(c, project: str) -> tuple[dt.datetime, dt.datetime]:
    t0 = utcnow()
    with ls.tracing_context(client=c, project_name=project, enabled=True):
        out = root_pipeline(QUESTION, OPTIONS)
    t1 = utcnow()
    assert out == ROOT_OUTPUTS
    c.flush(timeout=30)
    return t0, t1


def _assert_ingestion_path(mode: str, c) -> None:
    rec = recorder_of(c)
    posts_mp = rec.matching("POST", "/runs/multipart")
    posts_batch = rec.matching("POST", "/runs/batch")
    failed = [e.describe() for e in posts_mp + posts_batch if e.status >= 300]
    assert not failed, "ingestion requests were refused:\n" + "\n".join(failed)
    if mode in ("zstd", "api_v1"):
        assert posts_mp, rec.summary()
        assert any(e.request_headers.get("Content-Encoding") == "zstd" for e in posts_mp), (
            "expected zstd-compressed /runs/multipart bodies\n" + rec.summary()
        )
        assert not posts_batch
    elif mode == "multipart_plain":
        assert posts_mp, rec.summary()
        assert all("Content-Encoding" not in e.request_headers for e in posts_mp)
        assert not posts_batch
    elif mode == "batch":
        assert posts_batch, rec.summary()
        assert not posts_mp, "use_multipart_endpoint=false must keep the SDK off /runs/multipart"
    if mode == "api_v1":
        paths = {e.path for e in rec.snapshot()}
        stray = sorted(p for p in paths if not p.startswith("/api/v1/"))
        assert not stray, f"with an /api/v1 endpoint every request must go under /api/v1: {stray}"


@pytest.mark.parametrize("mode", MODES)
def test_nested_traceable_tree(mode, make_client, sextant, project_name):
    c = _client_for(mode, make_client, sextant, project_name)
    t0, t1 = _trace(c, project_name)
    _assert_ingestion_path(mode, c)

    runs = wait_for_project_runs(c, project_name, 5)
    named = by_name(runs)
    assert set(named) == {"root_pipeline", "middle", "fetch_docs", "flaky_tool", "fake_llm"}
    root, mid = named["root_pipeline"], named["middle"]
    docs, tool, llm = named["fetch_docs"], named["flaky_tool"], named["fake_llm"]

    # --- structure -------------------------------------------------------------------------
    assert root.parent_run_id is None
    assert mid.parent_run_id == root.id
    for child in (docs, tool, llm):
        assert child.parent_run_id == mid.id, child.name
    project_id = c.read_project(project_name=project_name).id
    for r in runs:
        assert r.trace_id == root.id, f"{r.name}: trace_id {r.trace_id} != root {root.id}"
        assert r.session_id == project_id, f"{r.name}: session_id {r.session_id} != project {project_id}"
    assert root.dotted_order.endswith(str(root.id)) and "." not in root.dotted_order, root.dotted_order
    assert mid.dotted_order.startswith(root.dotted_order + "."), (mid.dotted_order, root.dotted_order)
    assert mid.dotted_order.endswith(str(mid.id))
    for child in (docs, tool, llm):
        assert child.dotted_order.startswith(mid.dotted_order + "."), child.name
        assert child.dotted_order.endswith(str(child.id))
        assert child.dotted_order.count(".") == 2
    # Siblings in call order.
    assert docs.dotted_order < tool.dotted_order < llm.dotted_order

    # --- run types, tags, metadata -----------------------------------------------------------
    assert (root.run_type, mid.run_type, docs.run_type, tool.run_type, llm.run_type) == (
        "chain", "chain", "retriever", "tool", "llm")
    assert root.tags == ["root-tag"]
    assert set(mid.tags) == {"root-tag", "mid-tag"}
    assert set(docs.tags) == {"root-tag", "mid-tag", "retr-tag"}
    assert set(tool.tags) == {"root-tag", "mid-tag", "tool-tag"}
    assert set(llm.tags) == {"root-tag", "mid-tag"}
    for r in runs:
        md = (r.extra or {}).get("metadata") or {}
        assert md.get("user_id") == "u1" and md.get("env") == "test", f"{r.name}: {md}"
        assert md.get("ls_method") == "traceable", f"{r.name}: {md}"
        assert ((r.extra or {}).get("runtime") or {}).get("sdk") == "langsmith-py", f"{r.name}: {r.extra}"
    assert "stage" not in root.extra["metadata"]
    for r in (mid, docs, tool, llm):
        assert r.extra["metadata"]["stage"] == "middle", r.name
    assert llm.extra["metadata"]["ls_provider"] == "fake"
    assert llm.extra["metadata"]["ls_model_name"] == "fake-1"
    assert llm.extra["metadata"]["usage_metadata"] == USAGE

    # --- inputs / outputs exactly as sent ------------------------------------------------------
    assert root.inputs == {"question": QUESTION, "options": OPTIONS}
    assert root.outputs == ROOT_OUTPUTS
    assert mid.inputs == {"question": QUESTION}
    assert mid.outputs == ROOT_OUTPUTS
    assert docs.inputs == {"query": QUESTION, "k": 1}
    assert docs.outputs == {"output": [DOC]}
    assert tool.inputs == {"x": 1}
    assert tool.outputs in ({"output": None}, None), tool.outputs
    assert llm.inputs == {"prompt": f"Q: {QUESTION}"}
    assert llm.outputs == {"content": "Paris", "usage_metadata": USAGE}

    # --- errors and status -----------------------------------------------------------------
    assert tool.status == "error"
    assert tool.error and "boom 1" in tool.error and "ValueError" in tool.error, tool.error
    for r in (root, mid, docs, llm):
        assert r.status == "success", f"{r.name}: {r.status}"
        assert not r.error, f"{r.name}: {r.error!r}"

    # --- times --------------------------------------------------------------------------------
    for r in runs:
        assert r.start_time.tzinfo is not None and r.end_time is not None
        assert t0 <= r.start_time <= r.end_time <= t1, (r.name, t0, r.start_time, r.end_time, t1)
    for parent, children in ((root, [mid]), (mid, [docs, tool, llm])):
        for ch in children:
            assert parent.start_time <= ch.start_time and ch.end_time <= parent.end_time, ch.name

    # --- every field exactly as the SDK sent it (decoded from the recorded requests) ---------
    sent = sent_runs(c)
    assert set(sent) == {str(r.id) for r in runs}, (set(sent), [str(r.id) for r in runs])
    for r in runs:
        s = sent[str(r.id)]
        assert r.start_time == parse_time(s["start_time"]), (r.name, r.start_time, s["start_time"])
        assert r.end_time == parse_time(s["end_time"]), (r.name, r.end_time, s["end_time"])
        assert r.inputs == s["inputs"], r.name
        assert r.outputs == s.get("outputs") or (not r.outputs and not s.get("outputs")), (r.name, r.outputs, s.get("outputs"))
        assert sorted(r.tags or []) == sorted(s.get("tags") or []), (r.name, r.tags, s.get("tags"))
        stored_md = (r.extra or {}).get("metadata") or {}
        for key, value in s["extra"]["metadata"].items():
            assert stored_md.get(key) == value, f"{r.name}: extra.metadata[{key!r}] = {stored_md.get(key)!r}, sent {value!r}"
        assert (r.extra or {}).get("runtime") == s["extra"]["runtime"], r.name
        assert r.dotted_order == s["dotted_order"] and str(r.trace_id) == s["trace_id"], r.name
        if s.get("error"):
            assert r.error == s["error"], (r.name, r.error, s["error"])

    # --- tokens derived from usage_metadata ---------------------------------------------------
    assert (llm.prompt_tokens, llm.completion_tokens, llm.total_tokens) == (11, 3, 14)

    # --- read_run with children -------------------------------------------------------------
    full = c.read_run(root.id, load_child_runs=True)
    assert full.id == root.id and full.name == "root_pipeline"
    assert full.inputs == root.inputs and full.outputs == ROOT_OUTPUTS
    assert [r.id for r in full.child_runs or []] == [mid.id]
    kids = full.child_runs[0].child_runs or []
    assert [k.name for k in kids] == ["fetch_docs", "flaky_tool", "fake_llm"]
    assert "boom 1" in (kids[1].error or "")

    # --- the raw wire shape the SDK relies on ----------------------------------------------------
    for r in (root, tool):
        body = raw_json(c, "GET", f"/runs/{r.id}")
        assert isinstance(body.get("dotted_order"), str) and body["dotted_order"] == r.dotted_order
        assert body["trace_id"] == str(root.id)
        for key in ("id", "name", "start_time", "run_type", "trace_id"):
            assert key in body, key


def test_info_advertises_zstd_and_full_batch_config(make_client, sextant):
    c = make_client()
    info = raw_json(c, "GET", "/info")
    assert (info.get("instance_flags") or {}).get("zstd_compression_enabled") is True, info
    cfg = info.get("batch_ingest_config")
    if cfg is not None:
        # The tracing thread indexes these keys directly: a partial object breaks tracing.
        for key in ("size_limit", "scale_up_nthreads_limit", "scale_up_qsize_trigger"):
            assert key in cfg, (key, cfg)
        assert cfg.get("use_multipart_endpoint", True) is True
    assert not (info.get("instance_flags") or {}).get("sdb_query_enabled"), info
    v1 = raw_json(make_client(api_v1=True), "GET", "/info")
    assert v1 == info


def test_patch_may_arrive_before_post(make_client, sextant, project_name):
    """Requests from different SDK threads can arrive out of order: the server must upsert."""
    c = make_client(project=project_name, info=batch_info(sextant.url))
    run_id = uuid.uuid4()
    start = utcnow()
    dotted = start.strftime("%Y%m%dT%H%M%S%fZ") + str(run_id)
    end = start + dt.timedelta(milliseconds=5)
    common = {"id": str(run_id), "trace_id": str(run_id), "dotted_order": dotted, "session_name": project_name}
    patch = {**common, "end_time": end.isoformat(), "outputs": {"y": 2}}
    post = {**common, "name": "out_of_order", "run_type": "chain", "start_time": start.isoformat(), "inputs": {"x": 1}}
    # Sent exactly as the SDK's batch path would, through its own session and URL rules.
    c.request_with_retries("POST", "/runs/batch", data=json.dumps({"patch": [patch]}))
    c.request_with_retries("POST", "/runs/batch", data=json.dumps({"post": [post]}))

    def check():
        r = c.read_run(run_id)
        assert r.name == "out_of_order" and r.inputs == {"x": 1} and r.outputs == {"y": 2}, r
        assert r.end_time is not None and r.status == "success", (r.end_time, r.status)
        return r

    eventually(check, client=c)


@pytest.mark.parametrize("prefix", ["LANGSMITH", "LANGCHAIN"])
def test_environment_only_configuration(prefix, make_client, sextant, monkeypatch, project_name):
    """The README's promise: point the unchanged SDK at sextant with environment variables only
    (the legacy LANGCHAIN_* names included), and `@traceable` with no client argument works."""
    reader = make_client()  # for reading back; the traced code below uses the SDK's own client
    monkeypatch.setattr(run_trees, "_CLIENT", None)
    for key in list(os.environ):
        if key.startswith(("LANGSMITH_", "LANGCHAIN_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv(f"{prefix}_ENDPOINT", sextant.url)
    monkeypatch.setenv(f"{prefix}_API_KEY", API_KEY)
    monkeypatch.setenv(f"{prefix}_TRACING_V2" if prefix == "LANGCHAIN" else f"{prefix}_TRACING", "true")
    monkeypatch.setenv(f"{prefix}_PROJECT", project_name)
    reset_sdk_env_caches()
    try:
        assert fetch_docs("env only", k=2) == [DOC, DOC]
    finally:
        cached = run_trees._CLIENT
        if cached is not None:
            assert cached.api_url == sextant.url
            cached.flush(timeout=30)
            cached.cleanup(timeout=0)
    (run,) = wait_for_project_runs(reader, project_name, 1)
    assert run.name == "fetch_docs" and run.inputs == {"query": "env only", "k": 2}
    assert run.outputs == {"output": [DOC, DOC]}
