"""Feedback through the SDK: every create_feedback field on both wire paths (POST /feedback and
the multipart `feedback.<id>` part), list/read/update/delete, feedback filters on list_runs,
feedback_stats on runs and projects, presigned tokens as a FastAPI-style backend uses them
and as the SDK redeems them, project-level feedback, feedback configs, and bad input."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
import requests

import langsmith as ls
from langsmith import traceable

from sextant_helpers import API_KEY, eventually, recorder_of, unique, wait_for_project_runs


def traced_runs(client: ls.Client, project: str, names: list[str]) -> dict[str, ls.schemas.Run]:
    @traceable
    def answer(q: str) -> str:
        return q.upper()

    for n in names:
        answer(n, langsmith_extra={"name": n, "project_name": project, "client": client})
    client.flush()
    return {r.name: r for r in wait_for_project_runs(client, project, len(names))}


def test_create_feedback_with_every_field_then_update_and_delete(make_client):
    c = make_client()
    project = unique("py-fb")
    run = traced_runs(c, project, ["graded"])["graded"]
    fid = uuid.uuid4()
    c.create_feedback(
        run.id,
        key="correctness",
        score=0.8,
        value={"label": "mostly right"},
        comment="misses an edge case",
        correction={"answer": "GRADED!"},
        source_info={"grader": "alice"},
        feedback_source_type=ls.schemas.FeedbackSourceType.MODEL,
        feedback_id=fid,
        feedback_config={"type": "continuous", "min": 0, "max": 1},
        extra={"rubric": "v2"},
    )
    posts = recorder_of(c).matching("POST", "/feedback")
    assert posts and posts[-1].status == 200, recorder_of(c).summary()
    f = eventually(lambda: c.read_feedback(fid), client=c, what="the feedback")
    assert (f.key, f.score, f.comment) == ("correctness", 0.8, "misses an edge case")
    assert f.value == {"label": "mostly right"}
    assert f.correction == {"answer": "GRADED!"}
    assert f.run_id == run.id
    assert f.feedback_source.type == "model"
    assert f.feedback_source.metadata["grader"] == "alice"
    listed = list(c.list_feedback(run_ids=[run.id]))
    assert [x.id for x in listed] == [fid]

    c.update_feedback(fid, score=0.2, comment="worse than I thought")
    eventually(lambda: _assert_score(c, fid, 0.2), client=c)
    assert c.read_feedback(fid).comment == "worse than I thought"
    assert c.read_feedback(fid).correction == {"answer": "GRADED!"}, "fields not patched stay"

    c.delete_feedback(fid)

    def gone():
        # Not pytest.raises: its "DID NOT RAISE" is not an AssertionError, so `eventually`
        # would stop polling at the first read that still sees the entry.
        try:
            c.read_feedback(fid)
        except ls.utils.LangSmithNotFoundError:
            return
        raise AssertionError(f"feedback {fid} is still readable")

    eventually(gone, client=c)
    assert list(c.list_feedback(run_ids=[run.id])) == []


def _assert_score(c: ls.Client, fid, score):
    assert c.read_feedback(fid).score == score


def test_feedback_with_trace_id_travels_in_multipart_and_counts_in_stats(make_client):
    c = make_client()
    project = unique("py-fb-mp")
    runs = traced_runs(c, project, ["a", "b"])
    for name, score in [("a", True), ("b", False)]:
        c.create_feedback(runs[name].id, key="thumbs", score=score, trace_id=runs[name].trace_id)
    c.create_feedback(runs["a"].id, key="category", value="refund", trace_id=runs["a"].trace_id)
    c.flush()
    parts = [e for e in recorder_of(c).matching("POST", "/runs/multipart") if e.status < 300]
    assert parts, "feedback with trace_id goes through /runs/multipart"

    def stats():
        a = c.read_run(runs["a"].id)
        assert a.feedback_stats and a.feedback_stats["thumbs"]["n"] == 1, a.feedback_stats
        assert a.feedback_stats["thumbs"]["avg"] == 1.0
        assert a.feedback_stats.get("category", {}).get("values") == {"refund": 1}, a.feedback_stats
        return a

    eventually(stats, client=c, what="run feedback_stats")
    proj = c.read_project(project_name=project, include_stats=True)
    fs = proj.feedback_stats
    assert fs["thumbs"]["n"] == 2 and fs["thumbs"]["avg"] == 0.5, fs
    assert fs["category"]["values"] == {"refund": 1}
    listed = list(c.list_feedback(run_ids=[runs["a"].id, runs["b"].id], feedback_key=["thumbs"]))
    assert sorted(f.score for f in listed) == [False, True] or sorted(f.score for f in listed) == [0, 1]


def test_feedback_filter_pairs_key_and_score_on_one_entry(make_client):
    c = make_client()
    project = unique("py-fb-filter")
    names = ["low1", "mid", "low2", "high", "other-key-low", "edge"]
    runs = traced_runs(c, project, names)
    ratings = {"low1": 0.1, "mid": 0.5, "low2": 0.3, "high": 0.9, "edge": 0.39}
    for name, score in ratings.items():
        c.create_feedback(runs[name].id, key="user_rating", score=score)
    # High user_rating, but a low score under another key: must not match.
    c.create_feedback(runs["other-key-low"].id, key="user_rating", score=0.95)
    c.create_feedback(runs["other-key-low"].id, key="helpfulness", score=0.1)
    flt = 'and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))'

    def check():
        got = {r.name for r in c.list_runs(project_name=project, filter=flt)}
        assert got == {"low1", "low2", "edge"}, got

    eventually(check, client=c, what="feedback filter")
    got = {r.name for r in c.list_runs(project_name=project, filter='and(eq(feedback_key, "helpfulness"), lt(feedback_score, 0.4))')}
    assert got == {"other-key-low"}


def test_feedback_for_a_run_not_yet_ingested_is_accepted(make_client):
    c = make_client()
    early = uuid.uuid4()
    c.create_feedback(early, key="thumbs", score=1)
    statuses = [e.status for e in recorder_of(c).matching("POST", "/feedback")]
    assert statuses == [200], f"accepted at once, never 404: {statuses}"
    got = eventually(lambda: list(c.list_feedback(run_ids=[early])) or _fail("not yet"), client=c)
    assert got[0].run_id == early


def _fail(msg):
    raise AssertionError(msg)


def test_fastapi_style_backend_thumbs_categories_and_presigned_tokens(make_client, sextant):
    """What a web backend does: log thumbs and a category for the run it served, and hand the
    browser a presigned URL so the user's vote needs no API key."""
    c = make_client()
    project = unique("py-fb-app")
    run = traced_runs(c, project, ["chat-turn"])["chat-turn"]
    c.create_feedback(run.id, key="thumbs", score=1, comment="great answer", source_info={"user_id": "u-42"})
    c.create_feedback(run.id, key="category", value="billing")

    token = c.create_presigned_feedback_token(run.id, "user_vote", expiration=dt.timedelta(hours=1))
    expires = token.expires_at if token.expires_at.tzinfo else token.expires_at.replace(tzinfo=dt.timezone.utc)
    assert token.url.startswith("http") and expires > dt.datetime.now(dt.timezone.utc)
    # The browser: no API key.
    r = requests.post(token.url, json={"score": 0, "comment": "actually wrong"}, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.get(token.url, params={"score": "1"}, timeout=10)
    assert r.status_code == 200, r.text

    def votes():
        fb = list(c.list_feedback(run_ids=[run.id], feedback_key=["user_vote"]))
        assert len(fb) == 1, "one entry per token: the second vote replaced the first"
        assert fb[0].score == 1
        return fb

    eventually(votes, client=c)
    keys = sorted(f.key for f in c.list_feedback(run_ids=[run.id]))
    assert keys == ["category", "thumbs", "user_vote"]

    # Forged and expired tokens are refused.
    forged = token.url[:-4] + ("0000" if not token.url.endswith("0000") else "1111")
    assert requests.post(forged, json={"score": 1}, timeout=10).status_code == 403
    with pytest.raises(ls.utils.LangSmithError):
        c.create_presigned_feedback_token(run.id, "user_vote", expiration=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    many = c.create_presigned_feedback_tokens(run.id, ["a", "b"])
    assert len(many) == 2 and many[0].url != many[1].url


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"key": "k", "score": "high"}, "score: expected a number or a boolean"),
        ({"key": "", "score": 1}, "key: must not be empty"),
        ({"key": "k" * 300, "score": 1}, "longer than 256"),
        ({"key": "k", "run_id": "not-a-uuid"}, "run_id"),
        ({"score": 1}, "key: required"),
        ({"key": "k", "comment": 5}, "comment: expected a string"),
    ],
)
def test_bad_feedback_is_a_clear_4xx(sextant, body, needle):
    r = requests.post(f"{sextant.url}/feedback", json=body, headers={"x-api-key": API_KEY}, timeout=10)
    assert r.status_code == 422 and needle in r.text, (r.status_code, r.text)


def test_feedback_ids_conflict_unknown_ids_404(sextant):
    h = {"x-api-key": API_KEY}
    fid = str(uuid.uuid4())
    body = {"id": fid, "key": "k", "score": 1, "run_id": str(uuid.uuid4())}
    assert requests.post(f"{sextant.url}/feedback", json=body, headers=h, timeout=10).status_code == 200

    def stored():
        assert requests.get(f"{sextant.url}/feedback/{fid}", headers=h, timeout=10).status_code == 200

    eventually(stored)
    # The same submission again (an SDK retry) is fine; other content under the id is a conflict.
    assert requests.post(f"{sextant.url}/feedback", json=body, headers=h, timeout=10).status_code == 200
    r = requests.post(f"{sextant.url}/feedback", json={**body, "score": 0}, headers=h, timeout=10)
    assert r.status_code == 409 and "already exists" in r.text
    missing = str(uuid.uuid4())
    assert requests.get(f"{sextant.url}/feedback/{missing}", headers=h, timeout=10).status_code == 404
    assert requests.patch(f"{sextant.url}/feedback/{missing}", json={"score": 1}, headers=h, timeout=10).status_code == 404
    r = requests.patch(f"{sextant.url}/feedback/{fid}", json={"score": [1]}, headers=h, timeout=10)
    assert r.status_code == 422 and "score" in r.text
    r = requests.patch(f"{sextant.url}/feedback/{fid}", json={"key": "other"}, headers=h, timeout=10)
    assert r.status_code == 422 and "not a field PATCH can change" in r.text


def test_presigned_token_sdk_flow_redeems_by_uuid_and_lists_per_run(make_client, sextant):
    """The SDK's own round trip: create a token, redeem it with create_feedback_from_token
    (which takes the URL's last segment as a UUID), read the feedback back, list the run's tokens."""
    c = make_client()
    project = unique("py-fb-token")
    run = traced_runs(c, project, ["answer"])["answer"]
    fid = uuid.uuid4()
    token = c.create_presigned_feedback_token(
        run.id, "helpful", expiration=dt.timedelta(minutes=30), feedback_config={"type": "continuous", "min": 0, "max": 1}, feedback_id=fid
    )
    assert uuid.UUID(token.url.rstrip("/").split("/")[-1]) == token.id, token.url
    c.create_feedback_from_token(token.url, score=0.5, comment="half right", metadata={"browser": "firefox"})

    def stored():
        f = c.read_feedback(fid)
        assert (f.key, f.score, f.comment, f.run_id) == ("helpful", 0.5, "half right", run.id), f
        assert f.feedback_source.type == "app" and f.feedback_source.metadata == {"browser": "firefox"}
        return f

    eventually(stored, client=c, what="feedback posted with the token")
    # The bare UUID works as well as the URL; a GET with query parameters too (a changed vote).
    c.create_feedback_from_token(token.id, score=1)
    eventually(lambda: _assert_score(c, fid, 1), client=c)
    assert requests.get(token.url, params={"score": "0", "comment": "changed my mind"}, timeout=10).status_code == 200
    eventually(lambda: _assert_score(c, fid, 0), client=c)
    assert len(list(c.list_feedback(run_ids=[run.id], feedback_key=["helpful"]))) == 1, "one entry per token"

    others = c.create_presigned_feedback_tokens(run.id, ["stars", "thumbs"])
    listed = list(c.list_presigned_feedback_tokens(run.id))
    assert sorted(t.id for t in listed) == sorted([token.id] + [t.id for t in others])
    assert all(t.url.endswith(str(t.id)) for t in listed)
    assert [t.id for t in c.list_presigned_feedback_tokens(run.id, limit=2)] == [t.id for t in listed[:2]]
    assert list(c.list_presigned_feedback_tokens(uuid.uuid4())) == []

    # Unknown tokens are refused; a bad run_id on the listing is a clear 422.
    r = requests.post(f"{sextant.url}/feedback/tokens/{uuid.uuid4()}", json={"score": 1}, timeout=10)
    assert r.status_code == 403 and "unknown" in r.text, r.text
    r = requests.get(f"{sextant.url}/feedback/tokens", params={"run_id": "nope"}, headers={"x-api-key": API_KEY}, timeout=10)
    assert r.status_code == 422 and "run_id" in r.text, r.text


def test_presigned_tokens_expire(make_client, sextant):
    c = make_client()
    run_id = uuid.uuid4()
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).isoformat()
    body = {"run_id": str(run_id), "feedback_key": "vote", "expires_at": soon}
    r = requests.post(f"{sextant.url}/feedback/tokens", json=body, headers={"x-api-key": API_KEY}, timeout=10)
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    time.sleep(2.5)
    r = requests.post(url, json={"score": 1}, timeout=10)
    assert r.status_code == 403 and "expired" in r.text, r.text
    assert list(c.list_feedback(run_ids=[run_id])) == [], "nothing was written with the expired token"


def test_project_level_feedback_is_listed_by_session_and_counted(make_client):
    """Summary feedback on a whole project (an experiment's score), with no run."""
    c = make_client()
    project = c.create_project(unique("py-fb-project"))
    fid = uuid.uuid4()
    c.create_feedback(project_id=project.id, key="overall_quality", score=0.75, comment="good run", feedback_id=fid)

    def listed():
        got = list(c.list_feedback(session=[project.id]))
        assert [f.id for f in got] == [fid], got
        return got[0]

    f = eventually(listed, client=c, what="project-level feedback")
    assert (f.key, f.score, f.run_id, f.comment) == ("overall_quality", 0.75, None, "good run")
    assert c.read_feedback(fid).session_id == project.id
    stats = c.read_project(project_id=project.id, include_stats=True).feedback_stats
    assert stats["overall_quality"]["n"] == 1 and stats["overall_quality"]["avg"] == 0.75, stats
    assert list(c.list_feedback(session=[uuid.uuid4()])) == []


def test_feedback_configs_create_list_update_delete(make_client):
    c = make_client()
    key = unique("rating")
    created = c.create_feedback_config(key, feedback_config={"type": "continuous", "min": 0, "max": 5})
    assert created.feedback_key == key and created.feedback_config["max"] == 5 and created.is_first
    assert created.is_lower_score_better is False
    again = c.create_feedback_config(key, feedback_config={"type": "continuous", "min": 0, "max": 5})
    assert again.id == created.id, "an identical config is returned unchanged"
    with pytest.raises(ls.utils.LangSmithError, match="already exists"):
        c.create_feedback_config(key, feedback_config={"type": "continuous", "min": 0, "max": 10})
    topics = unique("topics")
    c.create_feedback_config(
        topics,
        feedback_config={"type": "categorical", "categories": [{"value": 0, "label": "billing"}, {"value": 1, "label": "shipping"}]},
    )

    listed = list(c.list_feedback_configs(feedback_key=[key]))
    assert [x.id for x in listed] == [created.id]
    assert {x.feedback_key for x in c.list_feedback_configs(feedback_key=[key, topics])} == {key, topics}
    assert [x.feedback_key for x in c.list_feedback_configs(name_contains=topics[-12:])] == [topics]

    updated = c.update_feedback_config(key, feedback_config={"type": "continuous", "min": 1, "max": 10}, is_lower_score_better=True)
    assert updated.id == created.id and updated.feedback_config["max"] == 10 and updated.is_lower_score_better is True
    (read,) = c.list_feedback_configs(feedback_key=[key])
    assert (read.feedback_config["min"], read.feedback_config["max"], read.is_lower_score_better) == (1, 10, True)
    assert read.modified_at > created.modified_at
    cats = c.add_feedback_categories(topics, [{"value": 2, "label": "returns"}])
    assert [x["label"] for x in cats.feedback_config["categories"]] == ["billing", "shipping", "returns"]
    with pytest.raises(ls.utils.LangSmithError, match="appears twice"):
        c.add_feedback_categories(topics, [{"value": 3, "label": "billing"}])
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.update_feedback_config(unique("never-configured"), is_lower_score_better=True)
    with pytest.raises(ls.utils.LangSmithError, match="feedback_config.type"):
        c.create_feedback_config(unique("bad"), feedback_config={"type": "stars"})

    c.delete_feedback_config(key)
    assert list(c.list_feedback_configs(feedback_key=[key])) == []
    (gone,) = c.list_feedback_configs(feedback_key=[key], include_all_configs=True)
    assert gone.id == created.id and gone.is_deleted
    with pytest.raises(ls.utils.LangSmithNotFoundError):
        c.delete_feedback_config(key)
    # The key can be configured again, as a new config.
    fresh = c.create_feedback_config(key, feedback_config={"type": "freeform"})
    assert fresh.id != created.id
    assert [x.feedback_config["type"] for x in c.list_feedback_configs(feedback_key=[key])] == ["freeform"]
    c.delete_feedback_config(config_id=fresh.id)
    assert list(c.list_feedback_configs(feedback_key=[key, topics])) and all(
        x.feedback_key == topics for x in c.list_feedback_configs(feedback_key=[key, topics])
    )
