"""Annotation queues through the SDK (spec §10): queue CRUD, the legacy run endpoints and the
platform items API; then the reviewer flow (leases, reviews stored as feedback, agreement) and
routing rules that fill a queue from the run stream."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import requests

import langsmith as ls
from langsmith import traceable

from sextant_helpers import API_KEY, eventually, unique, wait_for_project_runs

H = {"x-api-key": API_KEY}


def traced(client: ls.Client, project: str, items: list[tuple[str, str]]) -> dict[str, ls.schemas.Run]:
    @traceable
    def support_bot(question: str) -> str:
        return f"answer to {question}"

    for name, q in items:
        support_bot(q, langsmith_extra={"name": name, "project_name": project, "client": client})
    client.flush()
    return {r.name: r for r in wait_for_project_runs(client, project, len(items))}


def test_queue_lifecycle_and_legacy_run_endpoints(make_client):
    c = make_client()
    name = unique("py-queue")
    rubric = [{"feedback_key": "correct", "description": "Is the answer right?"}]
    q = c.create_annotation_queue(name=name, description="first pass", rubric_instructions="Be strict.", rubric_items=rubric)
    assert q.name == name and q.tenant_id is not None
    assert c.read_annotation_queue(q.id).rubric_instructions == "Be strict."
    assert [x.id for x in c.list_annotation_queues(name_contains=name[-12:])] == [q.id]
    c.update_annotation_queue(q.id, name=name + "-v2", description="second pass")
    assert c.read_annotation_queue(q.id).name == name + "-v2"

    project = unique("py-queue-runs")
    runs = traced(c, project, [("r1", "one"), ("r2", "two"), ("r3", "three")])
    c.add_runs_to_annotation_queue(q.id, run_ids=[runs["r1"].id, runs["r2"].id])
    c.add_runs_to_annotation_queue(q.id, run_ids=[runs["r1"].id])  # again: still once
    listed = list(c.list_runs_from_annotation_queue(q.id))
    assert [r.id for r in listed] == [runs["r1"].id, runs["r2"].id]
    assert listed[0].added_at is not None
    assert c.get_run_from_annotation_queue(q.id, index=1).id == runs["r2"].id
    c.delete_run_from_annotation_queue(q.id, run_id=runs["r1"].id)
    assert [r.id for r in c.list_runs_from_annotation_queue(q.id)] == [runs["r2"].id]

    # Unknown queues are clear 404s (unknown runs are accepted: they may not be ingested yet).
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.add_runs_to_annotation_queue(uuid.uuid4(), run_ids=[runs["r3"].id])
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.read_annotation_queue(uuid.uuid4())

    # The platform items API (Stainless, async).
    async def platform():
        created = await c.annotation_queues.items.create(
            str(q.id), items=[{"item_type": "RUN", "run_id": str(runs["r3"].id), "project_id": str(runs["r3"].session_id)}]
        )
        assert created.items[0].run_id == str(runs["r3"].id)
        page = c.annotation_queues.items.list(str(q.id), status="needs_my_review")
        ids = [it.run_id async for it in page]
        assert ids == [str(runs["r2"].id), str(runs["r3"].id)]
        count = await c.annotation_queues.items.retrieve_count(str(q.id), status="needs_my_review")
        assert count.count == 2

    asyncio.run(platform())
    c.delete_annotation_queue(q.id)
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.read_annotation_queue(q.id)


def review(url: str, qid, item_id, reviewer: str, scores: list[dict], **extra) -> requests.Response:
    return requests.post(f"{url}/annotation-queues/{qid}/items/{item_id}/review", json={"reviewer": reviewer, "scores": scores, **extra}, headers=H, timeout=10)


def take_next(url: str, qid, reviewer: str) -> dict | None:
    r = requests.post(f"{url}/annotation-queues/{qid}/next", json={"reviewer": reviewer, "lease_seconds": 120}, headers=H, timeout=10)
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


def test_reviewers_lease_items_submit_scores_and_agreement_is_computed(make_client, sextant):
    c = make_client()
    project = unique("py-review")
    runs = traced(c, project, [(f"t{i}", f"question {i}") for i in range(4)])
    q = c.create_annotation_queue(name=unique("py-review-q"), rubric_items=[{"feedback_key": "correct"}])
    requests.patch(f"{sextant.url}/annotation-queues/{q.id}", json={"num_reviewers_per_item": 2}, headers=H, timeout=10).raise_for_status()
    ordered = [runs[f"t{i}"].id for i in range(4)]
    c.add_runs_to_annotation_queue(q.id, run_ids=ordered)

    # Two reviewers take items at once: never the same item.
    ann, bob = take_next(sextant.url, q.id, "ann"), take_next(sextant.url, q.id, "bob")
    assert ann["item"]["id"] != bob["item"]["id"]
    assert ann["run"]["inputs"] == {"question": "question 0"} and ann["rubric_items"][0]["feedback_key"] == "correct"
    # Bob cannot review Ann's leased item.
    r = review(sextant.url, q.id, ann["item"]["id"], "bob", [{"key": "correct", "score": 1}])
    assert r.status_code == 409 and "lease" in r.text

    # Labels: ann 1,1,0,0 and bob 1,0,0,0 over the four items -> p_o = 0.75, p_e = 0.5, kappa = 0.5.
    labels = {"ann": [1, 1, 0, 0], "bob": [1, 0, 0, 0]}

    def submit(reviewer: str, got: dict) -> None:
        i = ordered.index(uuid.UUID(got["item"]["run_id"]))
        r = review(sextant.url, q.id, got["item"]["id"], reviewer, [{"key": "correct", "score": labels[reviewer][i], "comment": f"{reviewer} on {i}"}], correction={"answer": "fixed"})
        assert r.status_code == 200, r.text

    submit("bob", bob)  # releases bob's lease
    for reviewer, remaining in [("ann", 4), ("bob", 3)]:
        for _ in range(remaining):
            got = take_next(sextant.url, q.id, reviewer)
            assert got is not None, f"{reviewer} ran out of items early"
            submit(reviewer, got)
        assert take_next(sextant.url, q.id, reviewer) is None, "everything reviewed"
    # A second submission by the same reviewer is refused, and stores nothing.
    items = requests.get(f"{sextant.url}/api/v1/platform/annotation-queues/{q.id}/items", params={"status": "archived"}, headers=H, timeout=10).json()["items"]
    assert len(items) == 4, "completed: two reviews each"
    r = review(sextant.url, q.id, items[0]["id"], "ann", [{"key": "correct", "score": 0}])
    assert r.status_code == 409

    agreement = requests.get(f"{sextant.url}/annotation-queues/{q.id}/agreement", headers=H, timeout=10).json()
    k = agreement["keys"][0]
    assert (k["feedback_key"], k["items"], k["pairs"]) == ("correct", 4, 4)
    assert k["raw_agreement"] == pytest.approx(0.75) and k["cohen_kappa"] == pytest.approx(0.5)

    # Reviews are feedback on the runs, with the reviewer as the source.
    def fb():
        got = list(c.list_feedback(run_ids=[ordered[0]], feedback_key=["correct"]))
        assert sorted(f.feedback_source.metadata["reviewer"] for f in got) == ["ann", "bob"]
        assert all(f.feedback_source.type == "app" and f.correction == {"answer": "fixed"} for f in got)

    eventually(fb, client=c)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"reviewer": "ann", "scores": [{"key": "correct", "score": "yes"}]}, "score: expected a number or a boolean"),
        ({"reviewer": "ann", "scores": []}, "scores: required"),
        ({"reviewer": "", "scores": [{"key": "correct", "score": 1}]}, "reviewer"),
        ({"reviewer": "ann", "scores": [{"key": "", "score": 1}]}, "key: must not be empty"),
        ({"reviewer": "ann", "scores": [{"key": "a", "score": 1}, {"key": "a", "score": 0}]}, "appears twice"),
    ],
)
def test_bad_reviews_are_refused_and_store_nothing(make_client, sextant, body, needle):
    c = make_client()
    project = unique("py-bad-review")
    run = traced(c, project, [("x", "q")])["x"]
    q = c.create_annotation_queue(name=unique("py-bad-review-q"))
    c.add_runs_to_annotation_queue(q.id, run_ids=[run.id])
    item = take_next(sextant.url, q.id, "ann")["item"]
    r = requests.post(f"{sextant.url}/annotation-queues/{q.id}/items/{item['id']}/review", json=body, headers=H, timeout=10)
    assert r.status_code == 422 and needle in r.text, r.text
    after = requests.get(f"{sextant.url}/api/v1/platform/annotation-queues/{q.id}/items", params={"status": "needs_my_review"}, headers=H, timeout=10).json()
    assert after["items"][0]["completed_by"] == []


def test_routing_rules_fill_a_queue_from_the_run_stream(make_client, sextant):
    c = make_client()
    project = unique("py-route")
    q = c.create_annotation_queue(name=unique("py-route-q"))
    bad = requests.post(f"{sextant.url}/annotation-queues/{q.id}/rules", json={"filter": "eq(oops"}, headers=H, timeout=10)
    assert bad.status_code == 422 and "filter" in bad.text
    rule = requests.post(f"{sextant.url}/annotation-queues/{q.id}/rules", json={"filter": 'or(search("refund"), eq(error, true))'}, headers=H, timeout=10)
    assert rule.status_code == 200, rule.text
    import time

    time.sleep(2.5)  # the router caches rules for 2 s

    @traceable
    def bot(question: str) -> str:
        if "crash" in question:
            raise ValueError("boom")
        return "ok"

    questions = {"refund-me": "I want a refund now", "weather": "what is the weather", "crashes": "please crash", "hello": "hello there"}
    for name, text in questions.items():
        try:
            bot(text, langsmith_extra={"name": name, "project_name": project, "client": c})
        except ValueError:
            pass
    c.flush()
    runs = {r.name: r for r in wait_for_project_runs(c, project, 4)}

    def routed():
        got = {r.name for r in c.list_runs_from_annotation_queue(q.id)}
        assert got == {"refund-me", "crashes"}, got

    eventually(routed, client=c, what="routed runs")
    assert runs["weather"].id not in {r.id for r in c.list_runs_from_annotation_queue(q.id)}


def queue_size(url: str, qid, **params) -> int:
    r = requests.get(f"{url}/annotation-queues/{qid}/size", params=params, headers=H, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["size"]


def test_queue_size_counts_items_by_status(make_client, sextant):
    c = make_client()
    q = c.create_annotation_queue(name=unique("py-queue-size"))
    assert queue_size(sextant.url, q.id) == 0
    runs = traced(c, unique("py-queue-size-runs"), [("a", "one"), ("b", "two"), ("c", "three")])
    c.add_runs_to_annotation_queue(q.id, run_ids=[r.id for r in runs.values()])
    assert queue_size(sextant.url, q.id) == 3
    assert queue_size(sextant.url + "/api/v1", q.id) == 3

    # The SDK's (deprecated) Stainless call parses {"size": n}.
    async def sdk_size(**kw):
        return (await c.annotation_queues.retrieve_size(str(q.id), **kw)).size

    assert asyncio.run(sdk_size()) == 3
    nxt = requests.post(f"{sextant.url}/annotation-queues/{q.id}/next", json={"reviewer": "ann"}, headers=H, timeout=10).json()
    assert review(sextant.url, q.id, nxt["item"]["id"], "ann", [{"key": "correct", "score": 1}], done=True).status_code == 200
    assert queue_size(sextant.url, q.id, status="completed") == 1
    assert asyncio.run(sdk_size(status="needs_my_review")) == 2
    assert queue_size(sextant.url, q.id) == 3
    r = requests.get(f"{sextant.url}/annotation-queues/{q.id}/size", params={"status": "soon"}, headers=H, timeout=10)
    assert r.status_code == 422 and "status" in r.text
    assert requests.get(f"{sextant.url}/annotation-queues/{uuid.uuid4()}/size", headers=H, timeout=10).status_code == 404


def test_runs_added_before_they_are_ingested_show_up_once_they_arrive(make_client):
    """add_runs_to_annotation_queue from inside the @traceable function that produces the run:
    the run is not sent yet, and the add must not 404."""
    c = make_client()
    q = c.create_annotation_queue(name=unique("py-queue-early"))
    project = unique("py-queue-early-runs")
    run_id = uuid.uuid4()
    # Certainly before the run exists: it has not even started.
    c.add_runs_to_annotation_queue(q.id, run_ids=[run_id])
    assert list(c.list_runs_from_annotation_queue(q.id)) == [], "nothing to show until the run arrives"

    @traceable
    def flagged_answer(question: str) -> str:
        rt = ls.get_current_run_tree()
        c.add_runs_to_annotation_queue(q.id, run_ids=[rt.id])  # again, from inside: still once
        return f"unsure about {question}"

    flagged_answer("refunds", langsmith_extra={"project_name": project, "client": c, "run_id": run_id})
    c.flush()
    (run,) = wait_for_project_runs(c, project, 1)

    def shows_the_run():
        listed = list(c.list_runs_from_annotation_queue(q.id))
        assert [r.id for r in listed] == [run.id], listed
        assert listed[0].outputs == {"output": "unsure about refunds"}
        return listed

    eventually(shows_the_run, client=c, what="the queue to show the late run")

    async def item():
        page = c.annotation_queues.items.list(str(q.id), status="needs_my_review")
        return [it async for it in page]

    (it,) = asyncio.run(item())
    assert it.run_id == str(run.id) and it.project_id == str(run.session_id), "resolved once the run arrived"
    assert c.get_run_from_annotation_queue(q.id, index=0).id == run.id
