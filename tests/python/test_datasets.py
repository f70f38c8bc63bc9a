"""Datasets through the SDK: create/read/list/update/delete datasets, examples on both write
paths of spec §7 (multipart with attachments, and the JSON `/examples/bulk` path), versions
read back with `as_of` (a time or a tag), tags that move, diffs, splits, JSON Schema
validation, and bad input."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

import langsmith as ls
from langsmith.utils import LangSmithConflictError, LangSmithError, LangSmithNotFoundError

from sextant_helpers import raw_json, recorder_of, unique


def json_path(make_client) -> ls.Client:
    """A client on the JSON example path (`POST /examples/bulk`), as the SDK behaves with a
    server without `dataset_examples_multipart_enabled`."""
    info = make_client().info.model_dump()
    info["instance_flags"] = {**(info.get("instance_flags") or {}), "dataset_examples_multipart_enabled": False}
    return make_client(info=info)


def paths(client: ls.Client) -> list[str]:
    return [f"{e.method} {e.path}" for e in recorder_of(client).exchanges]


def test_dataset_lifecycle(make_client) -> None:
    client = make_client()
    name = unique("ds")
    ds = client.create_dataset(name, description="refund questions", data_type=ls.schemas.DataType.kv, metadata={"team": "support"})
    assert ds.name == name and ds.description == "refund questions"
    assert client.read_dataset(dataset_name=name).id == ds.id
    assert client.read_dataset(dataset_id=ds.id).name == name
    assert client.has_dataset(dataset_name=name)
    assert not client.has_dataset(dataset_name=unique("missing"))
    listed = list(client.list_datasets(dataset_name_contains=name[:-3]))
    assert ds.id in [d.id for d in listed]
    assert [d.id for d in client.list_datasets(metadata={"team": "support"}) if d.id == ds.id] == [ds.id]
    with pytest.raises(LangSmithConflictError):
        client.create_dataset(name)
    client.delete_dataset(dataset_id=ds.id)
    with pytest.raises(LangSmithNotFoundError):
        client.read_dataset(dataset_name=name)


def test_examples_on_the_multipart_path_with_attachments_and_splits(make_client) -> None:
    client = make_client()
    ds = client.create_dataset(unique("mp"))
    created = client.create_examples(
        dataset_id=ds.id,
        examples=[
            {"inputs": {"question": "Can I get a refund?"}, "outputs": {"answer": "Within 30 days."}, "split": "test",
             "metadata": {"source": "prod"}, "attachments": {"receipt": ("image/png", b"\x89PNG fake")}},
            {"inputs": {"question": "Where is my order?"}, "outputs": {"answer": "Track it online."}, "split": ["train", "test"]},
            {"inputs": {"question": "Hello?"}, "outputs": {"answer": "Hi."}},
        ],
    )
    assert created["count"] == 3 and len(created["example_ids"]) == 3
    assert any(p.startswith(f"POST /v1/platform/datasets/{ds.id}/examples") for p in paths(client)), paths(client)

    examples = list(client.list_examples(dataset_id=ds.id, include_attachments=True))
    assert len(examples) == 3
    refund = next(e for e in examples if e.inputs["question"].startswith("Can I"))
    assert refund.outputs == {"answer": "Within 30 days."}
    assert refund.metadata["source"] == "prod"
    assert refund.metadata["dataset_split"] == ["test"]
    assert refund.attachments["receipt"]["reader"].read() == b"\x89PNG fake"
    assert refund.attachments["receipt"]["mime_type"] == "image/png"

    assert sorted(client.list_dataset_splits(dataset_id=ds.id)) == ["base", "test", "train"]
    assert len(list(client.list_examples(dataset_id=ds.id, splits=["test"]))) == 2
    assert len(list(client.list_examples(dataset_id=ds.id, splits=["base"]))) == 1
    # Moving an example between splits is a new version.
    hello = next(e for e in examples if e.inputs["question"] == "Hello?")
    client.update_dataset_splits(dataset_id=ds.id, split_name="train", example_ids=[hello.id])
    assert len(list(client.list_examples(dataset_id=ds.id, splits=["train"]))) == 2

    one = client.read_example(refund.id)
    assert one.dataset_id == ds.id and one.inputs == refund.inputs
    assert client.read_dataset(dataset_id=ds.id).example_count == 3


def test_examples_on_the_json_path(make_client) -> None:
    client = json_path(make_client)
    ds = client.create_dataset(unique("json"))
    ids = [uuid.uuid4() for _ in range(3)]
    client.create_examples(
        dataset_id=ds.id,
        examples=[{"id": i, "inputs": {"n": n}, "outputs": {"double": 2 * n}} for n, i in enumerate(ids)],
    )
    assert any(p.startswith("POST /examples/bulk") for p in paths(client)), paths(client)
    one = client.create_example(inputs={"n": 9}, outputs={"double": 18}, dataset_id=ds.id, split="holdout")
    got = sorted((e.inputs["n"], e.outputs["double"]) for e in client.list_examples(dataset_id=ds.id))
    assert got == [(0, 0), (1, 2), (2, 4), (9, 18)]
    assert client.read_example(one.id).metadata["dataset_split"] == ["holdout"]
    client.update_example(one.id, outputs={"double": 19})
    assert client.read_example(one.id).outputs == {"double": 19}
    client.delete_example(one.id)
    with pytest.raises(LangSmithNotFoundError):
        client.read_example(one.id)
    assert sorted(str(e.id) for e in client.list_examples(dataset_id=ds.id, example_ids=ids[:2])) == sorted(map(str, ids[:2]))


def test_versions_as_of_tags_and_diff(make_client) -> None:
    client = make_client()
    ds = client.create_dataset(unique("versions"))
    first = client.create_examples(dataset_id=ds.id, examples=[{"inputs": {"q": "a"}}, {"inputs": {"q": "b"}}])
    v1 = dt.datetime.fromisoformat(first["as_of"]).replace(tzinfo=dt.timezone.utc)
    client.update_dataset_tag(dataset_id=ds.id, as_of=v1, tag="prod")
    time.sleep(0.01)
    a_id, b_id = first["example_ids"]
    client.update_example(a_id, inputs={"q": "a edited"})
    client.delete_example(b_id)
    client.create_examples(dataset_id=ds.id, examples=[{"inputs": {"q": "c"}}])

    now = sorted(e.inputs["q"] for e in client.list_examples(dataset_id=ds.id))
    assert now == ["a edited", "c"]
    at_v1 = sorted(e.inputs["q"] for e in client.list_examples(dataset_id=ds.id, as_of=v1))
    assert at_v1 == ["a", "b"]
    by_tag = sorted(e.inputs["q"] for e in client.list_examples(dataset_id=ds.id, as_of="prod"))
    assert by_tag == ["a", "b"], "a tag reads the version it points at"
    assert client.read_example(a_id, as_of=v1).inputs == {"q": "a"}

    versions = list(client.list_dataset_versions(dataset_id=ds.id))
    assert len(versions) == 4
    assert [v.tags for v in versions if v.tags] == [["prod"]]
    assert client.read_dataset_version(dataset_id=ds.id, tag="prod").as_of.replace(tzinfo=dt.timezone.utc) == v1

    diff = client.diff_dataset_versions(dataset_id=ds.id, from_version="prod", to_version=versions[0].as_of)
    assert [str(x) for x in diff.examples_modified] == [str(a_id)]
    assert [str(x) for x in diff.examples_removed] == [str(b_id)]
    assert len(diff.examples_added) == 1

    # The tag moves to the newest version.
    client.update_dataset_tag(dataset_id=ds.id, as_of=versions[0].as_of, tag="prod")
    assert sorted(e.inputs["q"] for e in client.list_examples(dataset_id=ds.id, as_of="prod")) == ["a edited", "c"]


def test_schemas_validate_every_example_write(make_client) -> None:
    client = make_client()
    ds = client.create_dataset(
        unique("schema"),
        inputs_schema={"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]},
        outputs_schema={"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    )
    with pytest.raises(LangSmithError) as e:
        client.create_examples(dataset_id=ds.id, examples=[{"inputs": {"question": "ok"}, "outputs": {"answer": "fine"}},
                                                           {"inputs": {"question": 42}, "outputs": {"answer": "x"}}])
    said = recorder_of(client).exchanges[-1]
    assert said.status == 422
    assert "examples[1].inputs does not match the dataset's schema at /question" in said.response_text
    assert list(client.list_examples(dataset_id=ds.id)) == [], "nothing half-written"
    with pytest.raises(LangSmithError) as e:
        json_path(make_client).create_examples(dataset_id=ds.id, examples=[{"inputs": {"question": "q"}, "outputs": {"nope": 1}}])
    assert "outputs does not match" in str(e.value)
    ok = client.create_example(inputs={"question": "q"}, outputs={"answer": "a"}, dataset_id=ds.id)
    with pytest.raises(LangSmithError):
        client.update_example(ok.id, inputs={"question": ["not", "a", "string"]})
    assert client.read_example(ok.id).inputs == {"question": "q"}


def test_bad_input_is_named(make_client) -> None:
    client = make_client()
    ds = client.create_dataset(unique("bad"))
    ex = client.create_example(inputs={"q": 1}, dataset_id=ds.id)
    # An id that exists already.
    with pytest.raises(LangSmithConflictError):
        json_path(make_client).create_examples(dataset_id=ds.id, examples=[{"id": ex.id, "inputs": {"q": 2}}])
    cases = [
        ("GET", f"/examples?dataset={ds.id}&as_of=2999-01-01T00:00:00Z", 422, "in the future"),
        ("GET", f"/examples?dataset={ds.id}&as_of=2024-13-45", 422, "as_of"),
        ("GET", f"/examples?dataset={ds.id}&as_of=no-such-tag", 404, "no tag"),
        ("GET", f"/examples?dataset={uuid.uuid4()}", 404, "not found"),
        ("GET", "/examples?dataset=nope", 422, "not a UUID"),
        ("POST", "/examples/bulk", 422, "examples[0].dataset_id"),
        ("PUT", f"/datasets/{ds.id}/tags", 422, "tag"),
        ("POST", "/datasets", 422, "data_type"),
    ]
    bodies = {"/examples/bulk": [{"inputs": {"q": 1}}], f"/datasets/{ds.id}/tags": {"as_of": "2024-01-01T00:00:00Z"},
              "/datasets": {"name": unique("x"), "data_type": "table"}}
    for method, path, status, needle in cases:
        r = client.session.request(method, f"{client.api_url}{path}", headers={"x-api-key": client.api_key}, json=bodies.get(path))
        assert r.status_code == status, (path, r.status_code, r.text)
        assert needle in r.text, (path, r.text)
    # A bad schema is refused when the dataset is created.
    r = client.session.post(f"{client.api_url}/datasets", headers={"x-api-key": client.api_key},
                            json={"name": unique("s"), "inputs_schema_definition": {"type": "no-such-type"}})
    assert r.status_code == 422 and "not a valid JSON Schema" in r.text, r.text


def test_curation_from_runs_with_negative_feedback(make_client, project_name) -> None:
    from langsmith import traceable

    from sextant_helpers import eventually, wait_for_project_runs

    client = make_client()

    @traceable
    def answer(question: str) -> str:
        return question.upper()

    questions = ["refund after 40 days?", "cancel my order", "refund after 40 days?", "hello", "legal threat"]
    for i, q in enumerate(questions):
        answer(q, langsmith_extra={"name": f"answer-{i}", "project_name": project_name, "client": client})
    client.flush()
    runs = {r.name: r for r in wait_for_project_runs(client, project_name, len(questions))}
    ratings = {"answer-0": 0.1, "answer-1": 0.9, "answer-2": 0.2, "answer-3": 0.3, "answer-4": 0.0}
    for name, score in ratings.items():
        client.create_feedback(runs[name].id, key="user_rating", score=score)
    project = client.read_project(project_name=project_name)
    flt = 'and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))'
    def four_low_ratings() -> None:
        assert len(list(client.list_runs(project_name=project_name, filter=flt))) == 4

    eventually(four_low_ratings)

    ds = client.create_dataset(unique("curated"))
    headers = {"x-api-key": client.api_key}

    def curate() -> dict:
        r = client.session.post(f"{client.api_url}/datasets/{ds.id}/curate", headers=headers,
                                json={"filter": flt, "project_ids": [str(project.id)], "root_only": True,
                                      "start_time": (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)).isoformat()})
        assert r.status_code == 202, r.text
        job = r.json()

        def done():
            j = client.session.get(f"{client.api_url}/datasets/{ds.id}/curate/{job['id']}", headers=headers).json()
            assert j["state"] != "running", j
            return j

        return eventually(done)

    job = curate()
    assert job["state"] == "succeeded", job
    # answer-0, -2 (same inputs as -0: a duplicate), -3, -4 match; answer-1 (0.9) does not.
    assert (job["matched"], job["added"], job["skipped_duplicate"]) == (4, 3, 1), job
    examples = list(client.list_examples(dataset_id=ds.id))
    assert sorted(e.inputs["question"] for e in examples) == ["hello", "legal threat", "refund after 40 days?"]
    by_q = {e.inputs["question"]: e for e in examples}
    legal = by_q["legal threat"]
    assert str(legal.source_run_id) == str(runs["answer-4"].id)
    assert legal.metadata["feedback"]["user_rating"]["score"] == 0.0
    assert legal.outputs == {"output": "LEGAL THREAT"}

    # Running it again adds nothing: every run is already in the dataset.
    again = curate()
    assert (again["added"], again["skipped_duplicate"]) == (0, 4), again
    assert len(list(client.list_examples(dataset_id=ds.id))) == 3

    # Export streams every example, as JSONL and CSV.
    r = client.session.get(f"{client.api_url}/datasets/{ds.id}/export?format=jsonl", headers=headers)
    lines = [ln for ln in r.text.splitlines() if ln]
    assert r.status_code == 200 and len(lines) == 3
    import csv as csvmod
    import io
    import json as jsonmod
    assert sorted(jsonmod.loads(ln)["inputs"]["question"] for ln in lines) == sorted(by_q)
    r = client.session.get(f"{client.api_url}/datasets/{ds.id}/export?format=csv", headers=headers)
    rows = list(csvmod.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and {jsonmod.loads(row["inputs"])["question"] for row in rows} == set(by_q)

    bad = client.session.post(f"{client.api_url}/datasets/{ds.id}/curate", headers=headers, json={"filter": "lt(feedback_score"})
    assert bad.status_code == 422 and "filter" in bad.text


def test_import_jsonl_and_csv_all_or_nothing_or_partial(make_client, tmp_path) -> None:
    import json as jsonmod

    client = make_client()
    headers = {"x-api-key": client.api_key}
    ds = client.create_dataset(unique("import"), inputs_schema={"type": "object", "required": ["question"]})

    def post(dataset_id, body: bytes, **params):
        return client.session.post(f"{client.api_url}/datasets/{dataset_id}/import", headers=headers, params=params, data=body)

    jsonl = "\n".join([
        jsonmod.dumps({"inputs": {"question": "q1"}, "outputs": {"answer": "a1"}, "split": "test"}),
        "{not json",
        jsonmod.dumps({"inputs": {"question": "q2"}}),
        jsonmod.dumps({"inputs": {"prompt": "no question"}}),
        "",
        jsonmod.dumps({"inputs": {"question": "q3"}, "metadata": {"source": "import"}}),
    ]).encode()

    # Atomic (the default): two bad rows, reported by line; nothing written.
    r = post(ds.id, jsonl, format="jsonl")
    assert r.status_code == 422, r.text
    report = r.json()
    assert [e["line"] for e in report["errors"]] == [2, 4], report
    assert "not valid JSON" in report["errors"][0]["error"]
    assert "does not match the dataset's schema" in report["errors"][1]["error"], report
    assert (report["rows"], report["imported"], report["rejected"]) == (5, 0, 2)
    assert "nothing was imported" in report["detail"]
    assert list(client.list_examples(dataset_id=ds.id)) == []

    # Partial: the three good rows are written as one version, the bad ones listed.
    r = post(ds.id, jsonl, format="jsonl", atomic="false")
    assert r.status_code == 201, r.text
    assert (r.json()["imported"], r.json()["rejected"]) == (3, 2)
    examples = list(client.list_examples(dataset_id=ds.id))
    assert sorted(e.inputs["question"] for e in examples) == ["q1", "q2", "q3"]
    assert [e.inputs["question"] for e in client.list_examples(dataset_id=ds.id, splits=["test"])] == ["q1"]
    assert len(client.session.get(f"{client.api_url}/datasets/{ds.id}/versions", headers=headers).json()) == 1

    # CSV with plain columns named by input_keys/output_keys; a quoted cell spans two lines.
    csv_text = 'question,answer,team\n"multi\nline",yes,support\nplain,no,sales\n'
    r = post(ds.id, csv_text.encode(), format="csv", input_keys="question", output_keys="answer", metadata_keys="team")
    assert r.status_code == 201, r.text
    plain = [e for e in client.list_examples(dataset_id=ds.id) if e.inputs["question"] == "plain"][0]
    assert plain.outputs == {"answer": "no"} and plain.metadata["team"] == "sales"
    r = post(ds.id, csv_text.encode(), format="csv", input_keys="prompt")
    assert r.status_code == 422 and r.json()["detail"] == 'input_keys: column "prompt" is not in the CSV header', r.text

    # Export then import into another dataset with fresh ids: the same examples. Importing the
    # export into its own dataset, ids kept, is refused row by row and writes nothing.
    exported = client.session.get(f"{client.api_url}/datasets/{ds.id}/export?format=csv", headers=headers).content
    copy = client.create_dataset(unique("import-copy"))
    r = post(copy.id, exported, format="csv", ids="new")
    assert r.status_code == 201 and r.json()["imported"] == 5, r.text
    assert sorted(e.inputs["question"] for e in client.list_examples(dataset_id=copy.id)) == sorted(
        e.inputs["question"] for e in client.list_examples(dataset_id=ds.id))
    again = post(ds.id, exported, format="csv")
    assert again.status_code == 422 and again.json()["rejected"] == 5 and "already exists" in again.text, again.text
    assert [e["line"] for e in again.json()["errors"]] == [2, 3, 4, 5, 6], again.text
    assert len(list(client.list_examples(dataset_id=ds.id))) == 5

    # Bad requests: unknown dataset, format, an empty file.
    assert post(uuid.uuid4(), b"{}", format="jsonl").status_code == 404
    assert post(ds.id, b"x", format="xml").status_code == 422
    r = post(ds.id, b"\n\n", format="jsonl")
    assert r.status_code == 422 and "no rows" in r.text


def test_cli_curates_with_progress_imports_and_exports(make_client, project_name, tmp_path) -> None:
    import os
    import subprocess

    from langsmith import traceable

    from conftest import sextant_binary
    from sextant_helpers import eventually, wait_for_project_runs

    client = make_client()

    @traceable
    def answer(question: str) -> str:
        return question[::-1]

    for i, q in enumerate(["where is my parcel", "thanks", "refund now"]):
        answer(q, langsmith_extra={"name": f"cli-{i}", "project_name": project_name, "client": client})
    client.flush()
    runs = {r.name: r for r in wait_for_project_runs(client, project_name, 3)}
    for name, score in {"cli-0": 0.1, "cli-1": 1.0, "cli-2": 0.3}.items():
        client.create_feedback(runs[name].id, key="user_rating", score=score)
    flt = 'and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))'

    def two_low_ratings() -> None:
        assert len(list(client.list_runs(project_name=project_name, filter=flt))) == 2

    eventually(two_low_ratings)
    ds_name = unique("cli")
    client.create_dataset(ds_name)

    env = {**os.environ, "LANGSMITH_ENDPOINT": client.api_url, "LANGSMITH_API_KEY": client.api_key}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(sextant_binary()), "datasets", *args], env=env, capture_output=True, text=True, timeout=60)

    done = cli("curate", "--dataset", ds_name, "--project", project_name, "--since", "1d", "--filter", flt)
    assert done.returncode == 0, done.stderr
    assert "2 added" in done.stdout, done.stdout
    assert sorted(e.inputs["question"] for e in client.list_examples(dataset_name=ds_name)) == ["refund now", "where is my parcel"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"inputs": {"q": 1}}\n{"inputs": 5}\n')
    r = cli("import", "--dataset", ds_name, str(bad))
    assert r.returncode == 1 and "line 2" in r.stderr and "0 imported, 1 rejected" in r.stdout, (r.stdout, r.stderr)
    r = cli("import", "--dataset", ds_name, "--partial", str(bad))
    assert r.returncode == 0 and "1 imported, 1 rejected" in r.stdout, (r.stdout, r.stderr)

    out = tmp_path / "out.jsonl"
    r = cli("export", "--dataset", ds_name, "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 3

    missing = cli("curate", "--dataset", unique("nope"), "--filter", flt)
    assert missing.returncode == 1 and "no dataset named" in missing.stderr
    bad_since = cli("curate", "--dataset", ds_name, "--filter", flt, "--since", "3y")
    assert bad_since.returncode == 1 and "unknown unit" in bad_since.stderr
