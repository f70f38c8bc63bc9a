"""Poison input at the JSON depth limit, on a server with two tenants.

The limit is 100 levels of nesting, counted in the field's own document (`[]` and `{}` are
depth 1, `{"a": {"b": 1}}` is depth 2), not in the request envelope around it. For run inputs,
run outputs (an llm run whose outputs carry `usage_metadata`, as the SDK sends them), run
metadata (`extra.metadata`), feedback value and correction, and dataset example inputs:

* depth 99 and 100 are accepted and read back intact;
* depth 101, 128 and 1000 get a 4xx whose message names the nesting (never a 500, never a
  dropped connection), and nothing is stored. serde_json's own "recursion limit exceeded at
  line 1 column N" does not count: it names neither the nesting nor the limit.

After each write, tenant B's runs, feedback and examples still become readable (a poison event
must only ever affect itself), and tenant A's listings over the project and dataset that hold
the deep documents it accepted still page.

A case that fails leaves the server in an unknown state (a dead projection, say): the next case
then gets a new server on a new data directory, so one failure does not hide the others."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import requests

import langsmith as ls

from conftest import Server, sextant_binary, start_server, stop_server
from sextant_helpers import READ_TIMEOUT_S, Recorder, utcnow

LIMIT = 100  # MAX_JSON_DEPTH in libs/core/src/json.rs
DEPTHS = (LIMIT - 1, LIMIT, LIMIT + 1, 128, 1000)
TENANT_A = "00000000-0000-4000-8000-00000000000a"
TENANT_B = "00000000-0000-4000-8000-00000000000b"
KEY_A, KEY_B = "poison-key-a", "poison-key-b"
DEPTH_MESSAGE = re.compile(r"nest|depth|deep", re.I)


def deep_text(depth: int) -> str:
    """A JSON document nested exactly `depth` levels: objects and arrays alternating, an object
    outermost, a string at the bottom (strings do not count)."""
    opens = ['{"k":' if i % 2 == 0 else "[" for i in range(depth)]
    closes = ["}" if i % 2 == 0 else "]" for i in reversed(range(depth))]
    return "".join(opens) + '"bottom [{"' + "".join(closes)


def measured_depth(text: str) -> int:
    """The nesting depth of JSON text, strings skipped: the test's own yardstick."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def llm_outputs_text(depth: int) -> str:
    """llm outputs as the SDK sends them (usage_metadata), nested `depth` levels in all."""
    usage = '{"input_tokens":3,"output_tokens":4,"total_tokens":7}'
    return '{"usage_metadata":' + usage + ',"generations":' + deep_text(depth - 1) + "}"


def with_deep(template: Any, deep: str) -> str:
    """`template` as JSON text with the string "<DEEP>" replaced by the deep document."""
    text = json.dumps(template)
    assert text.count('"<DEEP>"') == 1
    return text.replace('"<DEEP>"', deep)


def hash_key(key: str) -> str:
    out = subprocess.run([str(sextant_binary()), "hash-key", key], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Tenants:
    """One server with two API keys bound to two tenants; A writes the deep documents, B is the
    bystander whose writes must keep flowing."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.generation = 0
        self.server: Optional[Server] = None
        self.log_paths: list[Path] = []
        self.config = "".join(
            f'[[auth.api_keys]]\nname = "{name}"\nhash = "{hash_key(key)}"\ntenant = "{tenant}"\n\n'
            for name, key, tenant in (("a", KEY_A, TENANT_A), ("b", KEY_B, TENANT_B))
        )
        self.a = requests.Session()
        self.a.headers["x-api-key"] = KEY_A
        self.b = requests.Session()
        self.b.headers["x-api-key"] = KEY_B
        self.start()

    def start(self) -> None:
        self.generation += 1
        log_path = self.workdir / f"server-{self.generation}.log"
        self.log_paths.append(log_path)
        self.server = start_server(self.workdir / f"data-{self.generation}", log_path, config=self.config)
        self.url = self.server.url
        # Tenant A's project, dataset and run that the deep documents go into or are about.
        self.project = f"deep-{uuid.uuid4().hex[:8]}"
        self.target_run = self.post_run(self.a, self.project, "target")
        r = self.a.post(f"{self.url}/datasets", json={"name": f"deep-{uuid.uuid4().hex[:8]}"}, timeout=10)
        assert r.status_code in (200, 201), r.text
        self.dataset_id = r.json()["id"]
        r = self.b.post(f"{self.url}/datasets", json={"name": f"bystander-{uuid.uuid4().hex[:8]}"}, timeout=10)
        assert r.status_code in (200, 201), r.text
        self.b_dataset_id = r.json()["id"]
        self.b_run = self.post_run(self.b, "bystander", "b-first")
        wait_readable(self.b, f"{self.url}/runs/{self.b_run}", "tenant B's first run")
        wait_readable(self.a, f"{self.url}/runs/{self.target_run}", "tenant A's target run")

    def restart_fresh(self) -> None:
        if self.server is not None:
            stop_server(self.server)
        self.start()

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)
            self.server = None

    def post_run(self, s: requests.Session, project: str, name: str) -> str:
        rid = str(uuid.uuid4())
        r = s.post(f"{self.url}/runs/batch", json={"post": [plain_run(rid, project, name)]}, timeout=10)
        assert r.status_code == 202, f"POST /runs/batch of an ordinary run: {r.status_code} {r.text[:300]}"
        return rid

    def sdk(self) -> ls.Client:
        """Tenant A through the SDK, with its exchanges recorded."""
        session = requests.Session()
        recorder = Recorder()
        session.hooks["response"].append(recorder.hook)
        return ls.Client(api_url=self.url, api_key=KEY_A, session=session, auto_batch_tracing=False)


def plain_run(rid: str, project: str, name: str, run_type: str = "chain") -> dict:
    now = utcnow()
    return {
        "id": rid, "trace_id": rid, "dotted_order": now.strftime("%Y%m%dT%H%M%S%fZ") + rid, "name": name,
        "run_type": run_type, "start_time": now.isoformat(), "end_time": now.isoformat(), "session_name": project,
        "inputs": {"q": name}, "outputs": {"a": name},
    }


def wait_readable(s: requests.Session, url: str, what: str, timeout: float = READ_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            r = s.get(url, timeout=10)
            if r.status_code == 200:
                return r.json()
            last = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as e:
            last = repr(e)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} was not readable within {timeout:.0f}s at GET {url} (last: {last})")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    import os

    if os.environ.get("SEXTANT_URL"):
        pytest.skip("needs its own server with two tenants' keys (SEXTANT_URL points at an external one)")
    t = Tenants(tmp_path_factory.mktemp("poison"))
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def env(tenants: Tenants, request: pytest.FixtureRequest) -> Iterator[Tenants]:
    request.node._sextant_private_logs = [tenants.log_paths[-1]]
    yield tenants
    call = getattr(request.node, "_sextant_rep_call", None)
    if call is None or call.failed:
        tenants.restart_fresh()


# ---------------------------------------------------------------------------------------------
# What must hold after every case.


def others_keep_flowing(env: Tenants) -> None:
    """Tenant B's new run, feedback and example become readable; tenant A's listings page."""
    url = env.url
    rid = env.post_run(env.b, "bystander", "b-after")
    wait_readable(env.b, f"{url}/runs/{rid}", "a run tenant B posted after the deep write")
    fid = str(uuid.uuid4())
    r = env.b.post(f"{url}/feedback", json={"id": fid, "run_id": rid, "key": "bystander", "score": 1}, timeout=10)
    assert r.status_code == 200, f"tenant B's feedback: {r.status_code} {r.text[:300]}"
    wait_readable(env.b, f"{url}/feedback/{fid}", "feedback tenant B posted after the deep write")
    eid = str(uuid.uuid4())
    r = env.b.post(f"{url}/examples/bulk", json=[{"id": eid, "dataset_id": env.b_dataset_id, "inputs": {"q": 1}}], timeout=10)
    assert r.status_code == 200, f"tenant B's example: {r.status_code} {r.text[:300]}"
    wait_readable(env.b, f"{url}/examples/{eid}", "an example tenant B created after the deep write")
    listings_page(env)


def listings_page(env: Tenants) -> None:
    """Tenant A's project (every deep run it accepted) and dataset, page by page (two per
    page), then whole through the SDK."""
    url = env.url
    r = env.a.get(f"{url}/sessions", params={"name": env.project}, timeout=10)
    assert r.status_code == 200 and r.json(), f"tenant A's project {env.project}: {r.status_code} {r.text[:300]}"
    pid = r.json()[0]["id"]
    paged, cursor, pages = [], None, 0
    while True:
        body: dict[str, Any] = {"session": [pid], "limit": 2}
        if cursor:
            body["cursor"] = cursor
        try:
            r = env.a.post(f"{url}/runs/query", json=body, timeout=10)
        except requests.RequestException as e:
            raise AssertionError(f"POST /runs/query page {pages} over tenant A's project: {e!r}") from e
        assert r.status_code == 200, f"POST /runs/query page {pages}: {r.status_code} {r.text[:300]}"
        page = r.json()
        paged += [x["id"] for x in page["runs"]]
        pages += 1
        cursor = (page.get("cursors") or {}).get("next")
        if not cursor:
            break
    assert len(paged) == len(set(paged)), f"a run listed twice while paging: {paged}"
    client = env.sdk()
    listed = [str(x.id) for x in client.list_runs(project_name=env.project)]
    assert sorted(listed) == sorted(paged), f"list_runs and paged /runs/query disagree: {listed} vs {paged}"
    assert env.target_run in listed, "tenant A's first run is missing from its project"
    ex_paged, offset = [], 0
    while True:
        r = env.a.get(f"{url}/examples", params={"dataset": env.dataset_id, "limit": 2, "offset": offset}, timeout=10)
        assert r.status_code == 200, f"GET /examples offset {offset}: {r.status_code} {r.text[:300]}"
        got = [x["id"] for x in r.json()]
        ex_paged += got
        offset += 2
        if len(got) < 2:
            break
    examples = [str(e.id) for e in client.list_examples(dataset_id=env.dataset_id)]
    assert sorted(examples) == sorted(ex_paged), f"list_examples and paged GET /examples disagree: {examples} vs {ex_paged}"


def aftermath(env: Tenants) -> str:
    """For the message of a write that was accepted but should not have been: what it did."""
    try:
        others_keep_flowing(env)
        flowing = "other tenants' writes still flow and listings page"
    except Exception as e:  # noqa: BLE001 - reported, not handled
        flowing = f"then: {str(e).splitlines()[0][:300]}"
    try:
        ready = requests.get(f"{env.url}/readyz", timeout=5).status_code
    except requests.RequestException as e:
        ready = repr(e)
    alive = env.server.process.poll() is None if env.server and env.server.process else "?"
    return f"{flowing}; /readyz {ready}; process alive: {alive}"


def assert_rejected(env: Tenants, r: Optional[requests.Response], what: str, depth: int,
                    err: Optional[Exception] = None) -> None:
    assert err is None, f"{what} nested {depth} deep: the connection failed instead of a 4xx: {err!r}"
    assert r is not None
    if 200 <= r.status_code < 300:
        raise AssertionError(
            f"{what} nested {depth} deep (limit {LIMIT}): expected a 4xx, got {r.status_code} {r.text[:200]}; "
            f"{aftermath(env)}"
        )
    assert 400 <= r.status_code < 500, (
        f"{what} nested {depth} deep (limit {LIMIT}): expected a 4xx, got {r.status_code} {r.text[:300]}"
    )
    assert DEPTH_MESSAGE.search(r.text), f"{what} nested {depth} deep: the {r.status_code} does not say why: {r.text[:300]}"


def send(s: requests.Session, method: str, url: str, **kwargs: Any) -> tuple[Optional[requests.Response], Optional[Exception]]:
    try:
        return s.request(method, url, timeout=30, **kwargs), None
    except requests.RequestException as e:
        return None, e


JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------
# Runs: inputs, llm outputs with usage_metadata, metadata; on /runs/batch, POST /runs and
# /runs/multipart (the SDK's tracing path).


def run_with(field: str, depth: int, rid: str, project: str) -> tuple[dict, str, str]:
    """The run (with "<DEEP>" where the deep document goes), the deep text, and the key the deep
    document sits under in the run."""
    run_type = "llm" if field == "outputs" else "chain"
    run = plain_run(rid, project, f"deep-{field}-{depth}", run_type)
    if field == "inputs":
        run["inputs"] = "<DEEP>"
        deep = deep_text(depth)
    elif field == "outputs":
        run["outputs"] = "<DEEP>"
        deep = llm_outputs_text(depth)
    else:
        # The document measured is the metadata itself (what the user wrote), so the `extra`
        # around it is one level deeper: metadata nested 100 deep is accepted.
        run["extra"] = {"metadata": "<DEEP>", "runtime": {"sdk": "python"}}
        deep = deep_text(depth)
    assert measured_depth(deep) == depth, (measured_depth(deep), depth)
    return run, deep, field


def post_run_with(env: Tenants, path: str, run: dict, deep: str, field: str):
    url = env.url
    rid = run["id"]
    if path == "batch":
        return send(env.a, "POST", f"{url}/runs/batch", data=with_deep({"post": [run]}, deep).encode(), headers=JSON)
    if path == "single":
        return send(env.a, "POST", f"{url}/runs", data=with_deep(run, deep).encode(), headers=JSON)
    # Multipart, laid out as the SDK sends it: inputs and outputs in parts of their own, the
    # rest (extra with its metadata included) in the run's part.
    main = {k: v for k, v in run.items() if k not in ("inputs", "outputs")}
    parts = []
    main_text = with_deep(main, deep) if field == "metadata" else json.dumps(main)
    parts.append((f"post.{rid}", (None, main_text.encode(), "application/json")))
    for sub in ("inputs", "outputs"):
        text = deep if run[sub] == "<DEEP>" else json.dumps(run[sub])
        parts.append((f"post.{rid}.{sub}", (None, text.encode(), "application/json")))
    return send(env.a, "POST", f"{url}/runs/multipart", files=parts)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("path", ["batch", "single", "multipart"])
@pytest.mark.parametrize("field", ["inputs", "outputs", "metadata"])
def test_run_field_at_the_depth_limit(env: Tenants, field: str, path: str, depth: int) -> None:
    rid = str(uuid.uuid4())
    run, deep, _ = run_with(field, depth, rid, env.project)
    r, err = post_run_with(env, path, run, deep, field)
    what = f"run {field} on {path}"
    if depth <= LIMIT:
        assert err is None, f"{what} nested {depth} deep: {err!r}"
        assert r.status_code == 202, f"{what} nested {depth} deep (limit {LIMIT}) was refused: {r.status_code} {r.text[:300]}"
        stored = wait_readable(env.a, f"{env.url}/runs/{rid}", f"a run with {field} nested {depth} deep")
        expected = json.loads(deep)
        got = stored["extra"]["metadata"] if field == "metadata" else stored[field]
        if field == "metadata":
            assert stored["extra"].get("runtime") == {"sdk": "python"}, stored["extra"]
        assert got == expected, f"{what} nested {depth} deep read back different (depth {measured_depth(json.dumps(got))})"
        if field == "outputs":
            # The projection looked inside the deep outputs for usage_metadata.
            assert (stored.get("prompt_tokens"), stored.get("completion_tokens"), stored.get("total_tokens")) == (3, 4, 7), stored
        client = env.sdk()
        via_sdk = client.read_run(rid)
        assert (via_sdk.extra["metadata"] if field == "metadata" else getattr(via_sdk, field)) == expected
    else:
        assert_rejected(env, r, what, depth, err)
        # Nothing stored: a later run of the same project is readable, this one never is.
        later = env.post_run(env.a, env.project, "after-rejected")
        wait_readable(env.a, f"{env.url}/runs/{later}", "the run posted after the rejected one")
        gone = env.a.get(f"{env.url}/runs/{rid}", timeout=10)
        assert gone.status_code == 404, f"the rejected run was stored: {gone.status_code} {gone.text[:200]}"
    others_keep_flowing(env)


# ---------------------------------------------------------------------------------------------
# Feedback value and correction.


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("field", ["value", "correction"])
def test_feedback_field_at_the_depth_limit(env: Tenants, field: str, depth: int) -> None:
    fid = str(uuid.uuid4())
    deep = deep_text(depth)
    body = {"id": fid, "run_id": env.target_run, "key": f"deep-{field}", "score": 0.5, field: "<DEEP>"}
    r, err = send(env.a, "POST", f"{env.url}/feedback", data=with_deep(body, deep).encode(), headers=JSON)
    what = f"feedback {field}"
    if depth <= LIMIT:
        assert err is None, f"{what} nested {depth} deep: {err!r}"
        assert r.status_code == 200, f"{what} nested {depth} deep (limit {LIMIT}) was refused: {r.status_code} {r.text[:300]}"
        stored = wait_readable(env.a, f"{env.url}/feedback/{fid}", f"feedback with {field} nested {depth} deep")
        assert stored[field] == json.loads(deep), f"{what} nested {depth} deep read back different"
        listed = env.sdk().list_feedback(run_ids=[env.target_run])
        assert fid in [str(f.id) for f in listed], f"list_feedback does not show feedback {fid}"
    else:
        assert_rejected(env, r, what, depth, err)
        later = str(uuid.uuid4())
        r = env.a.post(f"{env.url}/feedback", json={"id": later, "run_id": env.target_run, "key": "after"}, timeout=10)
        assert r.status_code == 200, r.text
        wait_readable(env.a, f"{env.url}/feedback/{later}", "the feedback posted after the rejected one")
        gone = env.a.get(f"{env.url}/feedback/{fid}", timeout=10)
        assert gone.status_code == 404, f"the rejected feedback was stored: {gone.status_code} {gone.text[:200]}"
    others_keep_flowing(env)


# ---------------------------------------------------------------------------------------------
# Dataset example inputs: the JSON path (`POST /examples/bulk`) and the SDK's create_examples
# (multipart). The SDK cannot send depth 1000 (orjson refuses to encode past 255 levels).


def example_ids(env: Tenants) -> list[str]:
    return [str(e.id) for e in env.sdk().list_examples(dataset_id=env.dataset_id)]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("path", ["bulk", "sdk"])
def test_example_inputs_at_the_depth_limit(env: Tenants, path: str, depth: int) -> None:
    if path == "sdk" and depth > 255:
        pytest.skip("the SDK's orjson cannot encode a document nested this deep; /examples/bulk covers it")
    eid = str(uuid.uuid4())
    deep = deep_text(depth)
    before = example_ids(env)
    what = f"example inputs via {path}"
    if path == "bulk":
        item = {"id": eid, "dataset_id": env.dataset_id, "inputs": "<DEEP>", "outputs": {"a": depth}}
        r, err = send(env.a, "POST", f"{env.url}/examples/bulk", data=with_deep([item], deep).encode(), headers=JSON)
        accepted = depth <= LIMIT
        if accepted:
            assert err is None, f"{what} nested {depth} deep: {err!r}"
            assert r.status_code == 200, f"{what} nested {depth} deep (limit {LIMIT}) was refused: {r.status_code} {r.text[:300]}"
        else:
            assert_rejected(env, r, what, depth, err)
    else:
        client = env.sdk()
        try:
            client.create_examples(dataset_id=env.dataset_id,
                                   examples=[{"id": eid, "inputs": json.loads(deep), "outputs": {"a": depth}}])
            failure = None
        except ls.utils.LangSmithError as e:
            failure = str(e)
        if depth <= LIMIT:
            assert failure is None, f"{what} nested {depth} deep (limit {LIMIT}) was refused: {failure}"
        else:
            assert failure is not None, f"{what} nested {depth} deep (limit {LIMIT}) was accepted; {aftermath(env)}"
            assert re.search(r"\b4\d\d\b", failure) and DEPTH_MESSAGE.search(failure), (
                f"{what} nested {depth} deep: expected a 4xx that names the nesting, the SDK raised: {failure[:400]}"
            )
    if depth <= LIMIT:
        stored = wait_readable(env.a, f"{env.url}/examples/{eid}", f"an example with inputs nested {depth} deep")
        assert stored["inputs"] == json.loads(deep), f"{what} nested {depth} deep read back different"
        assert sorted(example_ids(env)) == sorted(before + [eid])
    else:
        gone = env.a.get(f"{env.url}/examples/{eid}", timeout=10)
        assert gone.status_code == 404, f"the rejected example was stored: {gone.status_code} {gone.text[:200]}"
        assert sorted(example_ids(env)) == sorted(before), "the dataset changed after a rejected write"
    others_keep_flowing(env)


def test_the_yardstick() -> None:
    """The depth the cases claim is the depth they send."""
    assert measured_depth("[]") == 1 and measured_depth('{"a":{"b":1}}') == 2
    assert measured_depth('{"a":"[[[{{"}') == 1
    for d in DEPTHS:
        assert measured_depth(deep_text(d)) == d
        assert measured_depth(llm_outputs_text(d)) == d
    assert json.loads(deep_text(LIMIT))["k"][0]["k"][0]["k"] is not None
