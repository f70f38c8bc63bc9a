"""Runs shared by public link, through the SDK: `share_run`, `read_run_shared_link`,
`run_is_shared`, `read_shared_run` (the root and a run below it), `list_shared_runs`,
`unshare_run`; the link works without an API key, shows only the shared tree, and dies when
unshared. Shares survive a restart on the same data directory."""

from __future__ import annotations

import signal
import uuid

import langsmith
import pytest
import requests

from sextant_helpers import API_KEY


def _trace(client: langsmith.Client, project: str) -> tuple[str, str]:
    ids = {}

    @langsmith.traceable(client=client, project_name=project, run_type="tool")
    def child() -> str:
        ids["child"] = str(langsmith.get_current_run_tree().id)
        return "leaf"

    @langsmith.traceable(client=client, project_name=project)
    def parent() -> str:
        ids["root"] = str(langsmith.get_current_run_tree().id)
        return child()

    parent()
    client.flush()
    return ids["root"], ids["child"]


def test_share_read_list_and_unshare_through_the_sdk(make_client, project_name, sextant) -> None:
    client = make_client()
    root, child = _trace(client, project_name)
    other_root, _ = _trace(client, project_name)
    assert client.run_is_shared(root) is False
    url = client.share_run(root)
    token = url.rstrip("/").split("/")[-2]
    uuid.UUID(token)
    assert client.read_run_shared_link(root) == url
    assert client.share_run(root) == url, "sharing again keeps the link"

    shared = client.read_shared_run(url)
    assert str(shared.id) == root and shared.outputs == {"output": "leaf"}
    below = client.read_shared_run(token, child)
    assert str(below.id) == child
    listed = sorted(str(r.id) for r in client.list_shared_runs(token))
    assert listed == sorted([root, child])
    assert [str(r.id) for r in client.list_shared_runs(token, run_ids=[child])] == [child]

    # The link is the credential: no API key needed; runs outside the shared tree stay hidden.
    r = requests.get(f"{sextant.url}/public/{token}/run", timeout=10)
    assert r.status_code == 200 and r.json()["id"] == root
    r = requests.get(f"{sextant.url}/public/{token}/run/{other_root}", timeout=10)
    assert r.status_code == 404
    r = requests.get(f"{sextant.url}/public/{uuid.uuid4()}/run", timeout=10)
    assert r.status_code == 404
    r = requests.get(f"{sextant.url}/public/not-a-token/run", timeout=10)
    assert r.status_code == 404

    client.unshare_run(root)
    assert client.run_is_shared(root) is False
    r = requests.get(f"{sextant.url}/public/{token}/run", timeout=10)
    assert r.status_code == 404


def test_sharing_a_run_that_does_not_exist_is_a_404(sextant) -> None:
    r = requests.put(f"{sextant.url}/runs/{uuid.uuid4()}/share", headers={"x-api-key": API_KEY}, json={}, timeout=10)
    assert r.status_code == 404, r.text


def test_a_share_survives_a_restart_on_the_same_data_directory(private_server) -> None:
    with private_server() as (server, make):
        client = make()
        root, _ = _trace(client, "shared-restart")
        url = client.share_run(root)
    with private_server() as (server, make):
        token = url.rstrip("/").split("/")[-2]
        r = requests.get(f"{server.url}/public/{token}/run", timeout=10)
        assert r.status_code == 200 and r.json()["id"] == root


def test_shares_and_unshares_survive_kill_9_right_after_they_are_acknowledged(server_control) -> None:
    """Acknowledged means durable: a share made (and another run's unshare) just before a
    kill -9 hold on the same data directory."""
    h = {"x-api-key": API_KEY}
    server = server_control.start(name="shares")
    roots = []
    for i in range(2):
        rid = str(uuid.uuid4())
        r = requests.post(f"{server.url}/runs", headers=h, timeout=10, json={
            "id": rid, "name": f"k{i}", "run_type": "chain", "inputs": {}, "start_time": "2026-12-01T00:00:00Z",
            "end_time": "2026-12-01T00:00:01Z", "session_name": "shares-kill"})
        assert r.status_code == 202, r.text
        roots.append(rid)
    kept = requests.put(f"{server.url}/runs/{roots[0]}/share", headers=h, json={}, timeout=10).json()["share_token"]
    dropped = requests.put(f"{server.url}/runs/{roots[1]}/share", headers=h, json={}, timeout=10).json()["share_token"]
    assert requests.delete(f"{server.url}/runs/{roots[1]}/share", headers=h, timeout=10).status_code == 200
    server_control.stop(signal.SIGKILL)
    server = server_control.start(name="shares")
    assert requests.get(f"{server.url}/public/{kept}/run", timeout=10).json()["id"] == roots[0]
    assert requests.get(f"{server.url}/public/{dropped}/run", timeout=10).status_code == 404
