"""What other clients send, accepted everywhere: times as epoch milliseconds (the JS SDK's
`Date.now()`) and float seconds as well as ISO 8601, trailing slashes (`GET /repos/`, as the
async client sends), `/info` advertising only what exists, and the v2 run API through the
Python SDK's generated client (`client.runs.query`, `client.runs.retrieve`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import langsmith
import requests

from sextant_helpers import API_KEY

H = {"x-api-key": API_KEY}


def _iso_ms(iso: str) -> int:
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return round(t.timestamp() * 1000)


def _read(url: str, run_id: str) -> dict:
    r = requests.get(f"{url}/runs/{run_id}", headers=H, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_epoch_milliseconds_and_float_seconds_are_times_on_every_ingest_path(sextant, project_name) -> None:
    url = sextant.url
    t0 = 1_796_354_081_888  # ms, as Date.now() gives
    posted, batched, multi = (str(uuid.uuid4()) for _ in range(3))
    r = requests.post(f"{url}/runs", headers=H, timeout=10, json={
        "id": posted, "name": "ms", "run_type": "chain", "inputs": {}, "start_time": t0, "session_name": project_name})
    assert r.status_code == 202, r.text
    r = requests.patch(f"{url}/runs/{posted}", headers=H, timeout=10, json={"end_time": (t0 + 2500) / 1000.0, "outputs": {"ok": 1}})
    assert r.status_code == 202, r.text
    r = requests.post(f"{url}/runs/batch", headers=H, timeout=10, json={
        "post": [{"id": batched, "name": "batch", "run_type": "llm", "inputs": {}, "start_time": t0 + 1, "end_time": t0 + 5,
                  "session_name": project_name}]})
    assert r.status_code == 202, r.text
    body = json.dumps({"id": multi, "name": "multi", "run_type": "tool", "inputs": {}, "start_time": t0 + 7,
                       "session_name": project_name})
    files = {f"post.{multi}": (None, body, "application/json")}
    r = requests.post(f"{url}/runs/multipart", headers=H, files=files, timeout=10)
    assert r.status_code == 202, r.text

    run = _read(url, posted)
    assert _iso_ms(run["start_time"]) == t0
    assert _iso_ms(run["end_time"]) == t0 + 2500
    b = _read(url, batched)
    assert (_iso_ms(b["start_time"]), _iso_ms(b["end_time"])) == (t0 + 1, t0 + 5)
    assert _iso_ms(_read(url, multi)["start_time"]) == t0 + 7

    # Query bounds take numbers too.
    q = requests.post(f"{url}/runs/query", headers=H, timeout=10, json={
        "session": [run["session_id"]], "start_time": t0 + 2})
    assert q.status_code == 200, q.text
    assert sorted(x["name"] for x in q.json()["runs"]) == ["multi"]


def test_a_time_of_the_wrong_kind_is_a_422_naming_the_field(sextant) -> None:
    for bad in (True, "next tuesday", 1e300, [1]):
        r = requests.post(f"{sextant.url}/runs", headers=H, timeout=10, json={
            "id": str(uuid.uuid4()), "name": "bad", "run_type": "chain", "inputs": {}, "start_time": bad})
        assert r.status_code == 422, (bad, r.status_code, r.text)
        assert "start_time" in r.text, r.text


def test_trailing_slashes_name_the_same_resource(sextant, make_client) -> None:
    for path in ("/repos/", "/datasets/", "/sessions/", "/api/v1/repos/"):
        r = requests.get(f"{sextant.url}{path}", headers=H, timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text)
    # The async client lists prompts with GET /repos/ and creates them with POST /repos/.
    make_client()  # sets the SDK environment for this test

    async def go() -> list[str]:
        async with langsmith.AsyncClient(api_url=sextant.url, api_key=API_KEY) as ac:
            name = f"async-{uuid.uuid4().hex[:8]}"
            await ac.create_prompt(name)
            listed = await ac.list_prompts(query=name)
            return [p.repo_handle for p in listed.repos]

    assert len(asyncio.run(go())) == 1


def test_info_advertises_the_implemented_api_version(sextant) -> None:
    info = requests.get(f"{sextant.url}/info", timeout=10).json()
    assert info["version"] == "0.16.0"
    flags = info["instance_flags"]
    assert flags["sdb_query_enabled"] is False and flags["ch_query_enabled"] is True
    assert flags["gzip_body_enabled"] is True and flags["zstd_compression_enabled"] is True


def test_the_v2_run_api_through_the_python_sdk(make_client, project_name) -> None:
    client = make_client()

    @langsmith.traceable(client=client, project_name=project_name, run_type="llm")
    def leaf(i: int) -> dict:
        return {"i": i}

    @langsmith.traceable(client=client, project_name=project_name)
    def root() -> str:
        for i in range(3):
            leaf(i)
        return "done"

    root()
    client.flush()
    project = client.read_project(project_name=project_name)

    # `Client.runs` is the generated async resource, even on the sync client.
    async def go():
        runs = [r async for r in client.runs.query(
            project_ids=[str(project.id)], selects=["NAME", "RUN_TYPE", "IS_ROOT", "PARENT_RUN_IDS"], page_size=2)]
        one = await client.runs.retrieve(runs[0].id, project_id=str(project.id), selects=["NAME", "OUTPUTS", "STATUS"])
        return runs, one

    runs, one = asyncio.run(go())
    assert sorted(r.name for r in runs) == ["leaf", "leaf", "leaf", "root"]
    top = next(r for r in runs if r.name == "root")
    assert top.run_type == "CHAIN" and top.is_root is True
    assert all(r.parent_run_ids == [top.id] for r in runs if r.name == "leaf")
    assert one.name == runs[0].name and one.status == "SUCCESS"
    assert one.outputs == ({"output": "done"} if one.name == "root" else {"i": one.outputs["i"]})


def test_a_query_reads_every_run_acknowledged_before_it(sextant, project_name) -> None:
    """Read your writes: once a write is acknowledged, the next read sees it, even while the
    projector has a backlog (here 8 batches of 500 runs acknowledged back to back)."""
    last = None
    for b in range(8):
        ids = [str(uuid.uuid4()) for _ in range(500)]
        post = [{"id": i, "name": f"b{b}", "run_type": "chain", "inputs": {"pad": "x" * 200}, "start_time": "2026-12-01T00:00:00Z",
                 "session_name": project_name} for i in ids]
        r = requests.post(f"{sextant.url}/runs/batch", headers=H, json={"post": post}, timeout=30)
        assert r.status_code == 202, r.text
        last = ids[-1]
    r = requests.get(f"{sextant.url}/runs/{last}", headers=H, timeout=10)
    assert r.status_code == 200, r.text
    q = requests.post(f"{sextant.url}/runs/query", headers=H, timeout=10, json={"id": [last]})
    assert [x["id"] for x in q.json()["runs"]] == [last]
