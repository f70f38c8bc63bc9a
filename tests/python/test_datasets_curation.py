"""Dataset routes the SDK reaches beyond the basics, read back through the SDK: `latest` as a
built-in version, the bulk metadata route behind `update_dataset_splits`, `upload_csv`,
example filters, attachment replace/rename/retain on multipart updates, and the v2
`datasets.experiment_runs.query`."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
import requests

import langsmith as ls
from langsmith import evaluate
from langsmith.utils import LangSmithConflictError, LangSmithError

from sextant_helpers import API_KEY, eventually, recorder_of, unique

H = {"x-api-key": API_KEY}


def paths(client: ls.Client) -> list[str]:
    return [f"{e.method} {e.path} {e.status}" for e in recorder_of(client).exchanges]


def utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def test_latest_is_a_built_in_version(make_client, sextant) -> None:
    client = make_client()
    ds = client.create_dataset(unique("latest"))
    # Before any example: the dataset as created.
    assert utc(client.read_dataset_version(dataset_id=ds.id, tag="latest").as_of) == utc(ds.created_at)

    first = client.create_examples(dataset_id=ds.id, examples=[{"inputs": {"q": "a"}}, {"inputs": {"q": "b"}}])
    v1 = utc(dt.datetime.fromisoformat(first["as_of"]))
    a_id, b_id = first["example_ids"]
    client.update_example(a_id, inputs={"q": "a2"})
    newest = utc(list(client.list_dataset_versions(dataset_id=ds.id))[0].as_of)
    assert newest > v1

    assert utc(client.read_dataset_version(dataset_id=ds.id, tag="latest").as_of) == newest
    # `as_of` (the SDK sends str(datetime), with a space) finds the version in effect then.
    assert utc(client.read_dataset_version(dataset_id=ds.id, as_of=newest - dt.timedelta(microseconds=1)).as_of) == v1
    diff = client.diff_dataset_versions(dataset_id=ds.id, from_version=v1.isoformat(), to_version="latest")
    assert [str(x) for x in diff.examples_modified] == [str(a_id)]
    assert diff.examples_added == [] and diff.examples_removed == []
    assert sorted(e.inputs["q"] for e in client.list_examples(dataset_id=ds.id, as_of="latest")) == ["a2", "b"]
    # "latest" can be the version a tag is pointed at (the JS SDK passes a string as_of
    # through), but not a tag name.
    r = requests.put(f"{sextant.url}/datasets/{ds.id}/tags", headers=H, json={"as_of": "latest", "tag": "prod"}, timeout=10)
    assert r.status_code == 200, r.text
    assert utc(client.read_dataset_version(dataset_id=ds.id, tag="prod").as_of) == newest
    with pytest.raises(LangSmithError) as e:
        client.update_dataset_tag(dataset_id=ds.id, as_of=v1, tag="latest")
    assert "built in" in str(e.value)


def test_bulk_metadata_route_behind_update_dataset_splits(make_client, sextant) -> None:
    client = make_client()
    ds = client.create_dataset(unique("meta"))
    ids = client.create_examples(
        dataset_id=ds.id, examples=[{"inputs": {"n": n}, "metadata": {"tier": n}} for n in range(3)]
    )["example_ids"]

    client.update_dataset_splits(dataset_id=ds.id, split_name="train", example_ids=ids[:2])
    sent = paths(client)
    assert f"PATCH /v1/platform/datasets/{ds.id}/examples/metadata 207" in sent, sent
    assert not any(p.startswith("PUT ") for p in sent), "no fallback to the legacy splits route"
    assert sorted(str(e.id) for e in client.list_examples(dataset_id=ds.id, splits=["train"])) == sorted(ids[:2])
    assert [str(e.id) for e in client.list_examples(dataset_id=ds.id, splits=["base"])] == [ids[2]]
    client.update_dataset_splits(dataset_id=ds.id, split_name="train", example_ids=[ids[0]], remove=True)
    assert client.read_example(ids[0]).metadata["dataset_split"] == ["base"]
    assert client.read_example(ids[0]).metadata["tier"] == 0, "other keys keep their values"

    # The route itself, under /api/v1 as the generated clients call it: SET and array ops in
    # order, any letter case, one status per submitted id.
    missing = str(uuid.uuid4())
    r = requests.patch(
        f"{sextant.url}/api/v1/platform/datasets/{ds.id}/examples/metadata",
        headers=H,
        json={
            "example_ids": [ids[1], missing],
            "operations": [
                {"key": "owner", "operation": "SET", "value": {"team": "support"}},
                {"key": "labels", "operation": "array_add", "values": ["x", "y"]},
                {"key": "labels", "operation": "ARRAY_REMOVE", "values": ["x"]},
            ],
        },
        timeout=10,
    )
    assert r.status_code == 207, r.text
    assert r.json()["statuses"][0] == {"id": ids[1], "status": "UPDATED"}
    assert r.json()["statuses"][1]["id"] == missing and r.json()["statuses"][1]["status"] == "NOT_FOUND"
    md = client.read_example(ids[1]).metadata
    assert md["owner"] == {"team": "support"} and md["labels"] == ["y"] and md["tier"] == 1
    assert md["dataset_split"] == ["train"]

    # update_examples with a split goes through the multipart example route, not this one.
    client.update_examples(dataset_id=ds.id, updates=[{"id": ids[0], "split": ["validation"]}])
    assert client.read_example(ids[0]).metadata["dataset_split"] == ["validation"]
    assert any(p.startswith(f"PATCH /v1/platform/datasets/{ds.id}/examples 200") for p in paths(client)), paths(client)

    # The generated client parses the 207.
    async def typed() -> list[str]:
        res = await client.datasets.examples.update_metadata(
            str(ds.id), example_ids=[ids[2]], operations=[{"key": "dataset_split", "operation": "ARRAY_ADD", "values": ["test"]}]
        )
        return [s.status for s in res.statuses]

    assert asyncio.run(typed()) == ["UPDATED"]
    assert client.read_example(ids[2]).metadata["dataset_split"] == ["test"]

    bad = requests.patch(
        f"{sextant.url}/v1/platform/datasets/{ds.id}/examples/metadata",
        headers=H,
        json={"example_ids": [ids[0]], "operations": [{"key": "k", "operation": "MERGE", "value": 1}]},
        timeout=10,
    )
    assert bad.status_code == 422 and "operations[0].operation" in bad.text and "MERGE" in bad.text
    gone = requests.patch(
        f"{sextant.url}/v1/platform/datasets/{uuid.uuid4()}/examples/metadata",
        headers=H,
        json={"example_ids": [ids[0]], "operations": [{"key": "k", "operation": "SET", "value": 1}]},
        timeout=10,
    )
    assert gone.status_code == 404 and "dataset not found" in gone.text.lower()


def test_upload_csv_creates_the_dataset_and_its_examples(make_client, tmp_path) -> None:
    client = make_client()
    path = tmp_path / "faq.csv"
    path.write_text("question,answer,ignored\nCan I get a refund?,Within 30 days.,x\nWhere is my order?,Track it online.,y\n")
    name = unique("csv")
    ds = client.upload_csv(str(path), input_keys=["question"], output_keys=["answer"], name=name,
                           description="support FAQ", data_type="kv")
    assert ds.name == name and ds.description == "support FAQ" and ds.data_type.value == "kv"
    assert client.read_dataset(dataset_name=name).id == ds.id
    got = sorted(((e.inputs, e.outputs) for e in client.list_examples(dataset_id=ds.id)), key=str)
    assert got == [({"question": "Can I get a refund?"}, {"answer": "Within 30 days."}),
                   ({"question": "Where is my order?"}, {"answer": "Track it online."})]

    with pytest.raises(LangSmithConflictError):
        client.upload_csv(str(path), input_keys=["question"], output_keys=["answer"], name=name)
    # Without a name the dataset is named after the file (the JS SDK sends no name either).
    named = tmp_path / f"{unique('faq')}.csv"
    named.write_text(path.read_text())
    by_file = client.upload_csv(str(named), input_keys=["question"], output_keys=[])
    assert by_file.name == named.name
    assert sorted(e.inputs["question"] for e in client.list_examples(dataset_id=by_file.id)) == ["Can I get a refund?", "Where is my order?"]
    assert all(e.outputs in (None, {}) for e in client.list_examples(dataset_id=by_file.id))
    # A column the file lacks: an error naming it, and no dataset left behind.
    other = unique("csv-bad")
    with pytest.raises(LangSmithError) as e:
        client.upload_csv(str(path), input_keys=["question"], output_keys=["nope"], name=other)
    assert "nope" in str(e.value)
    assert not client.has_dataset(dataset_name=other)


def test_list_examples_with_a_filter(make_client) -> None:
    client = make_client()
    ds = client.create_dataset(unique("filter"))
    client.create_examples(dataset_id=ds.id, examples=[
        {"inputs": {"q": "one"}, "metadata": {"foo": "bar", "tenant_id": "t1"}},
        {"inputs": {"q": "two"}, "metadata": {"foo": "baz", "tenant_id": "t2"}},
        {"inputs": {"q": "three"}, "metadata": {"foo": "bar"}},
    ])

    def qs(f: str, **kw) -> list[str]:
        return sorted(e.inputs["q"] for e in client.list_examples(dataset_id=ds.id, filter=f, **kw))

    assert qs('exists(metadata, "tenant_id")') == ["one", "two"]
    assert qs('has(metadata, \'{"foo": "bar"}\')') == ["one", "three"]
    assert qs('and(not(has(metadata, \'{"foo": "bar"}\')), exists(metadata, "tenant_id"))') == ["two"]
    assert qs('search(inputs, "THR")') == ["three"]
    assert len(list(client.list_examples(dataset_id=ds.id, filter='exists(metadata, "foo")', limit=2))) == 2

    for bad, named in [('exists(metadata, "k"', "invalid filter at position"), ('gt(latency, "1s")', "latency is a run field")]:
        with pytest.raises(LangSmithError):
            list(client.list_examples(dataset_id=ds.id, filter=bad))
        said = recorder_of(client).exchanges[-1]
        assert said.status == 422 and named in said.response_text, said.response_text


def test_multipart_updates_replace_rename_retain_and_refuse_two_datasets(make_client) -> None:
    client = make_client()
    ds = client.create_dataset(unique("att"))
    eid = client.create_examples(dataset_id=ds.id, examples=[
        {"inputs": {"q": 1}, "attachments": {"a": ("text/plain", b"A"), "b": ("text/plain", b"B")}},
    ])["example_ids"][0]

    def attachments() -> dict[str, bytes]:
        e = client.read_example(eid)
        return {k: v["reader"].read() for k, v in (e.attachments or {}).items()}

    assert attachments() == {"a": b"A", "b": b"B"}
    # New attachments without operations replace the set.
    client.update_examples(dataset_id=ds.id, updates=[{"id": eid, "attachments": {"c": ("text/plain", b"C")}}])
    assert attachments() == {"c": b"C"}
    # Rename keeps the bytes under the new name; a plain update keeps what is there.
    client.update_examples(dataset_id=ds.id, updates=[{"id": eid, "attachments_operations": {"rename": {"c": "d"}}}])
    assert attachments() == {"d": b"C"}
    client.update_examples(dataset_id=ds.id, updates=[{"id": eid, "inputs": {"q": 2}}])
    assert attachments() == {"d": b"C"}
    # Retain plus a new one: both.
    client.update_examples(dataset_id=ds.id, updates=[{"id": eid, "attachments": {"e": ("text/plain", b"E")},
                                                        "attachments_operations": {"retain": ["d"]}}])
    assert attachments() == {"d": b"C", "e": b"E"}
    with pytest.raises(LangSmithError) as e:
        client.update_examples(dataset_id=ds.id, updates=[{"id": eid, "attachments_operations": {"rename": {"zz": "y"}}}])
    assert "no attachment" in str(e.value)
    assert attachments() == {"d": b"C", "e": b"E"}

    # One update spanning two datasets is a conflict, and changes nothing.
    other = client.create_dataset(unique("att-other"))
    oid = client.create_examples(dataset_id=other.id, examples=[{"inputs": {"q": "o"}}])["example_ids"][0]
    with pytest.raises(LangSmithConflictError):
        client.update_examples(dataset_id=ds.id, updates=[{"id": eid, "inputs": {"q": 3}}, {"id": oid, "inputs": {"q": "o2"}}])
    assert client.read_example(eid).inputs == {"q": 2} and client.read_example(oid).inputs == {"q": "o"}


def test_experiment_runs_query_pages_examples_with_their_runs(make_client) -> None:
    client = make_client()
    ds = client.create_dataset(unique("xruns"))
    ids = client.create_examples(dataset_id=ds.id, examples=[{"inputs": {"n": n}, "outputs": {"d": 2 * n}} for n in range(3)])["example_ids"]
    def correct(outputs: dict, reference_outputs: dict) -> bool:
        return outputs == reference_outputs

    res = evaluate(lambda inputs: {"d": inputs["n"] * 2}, data=ds.name, evaluators=[correct], experiment_prefix="xruns", client=client)
    assert len(list(res)) == 3
    client.flush()
    project = client.read_project(project_name=res.experiment_name)

    async def query(**kw) -> list:
        page = client.datasets.experiment_runs.query(str(ds.id), experiment_ids=[str(project.id)], **kw)
        return [item async for item in page]

    def all_runs() -> list:
        items = asyncio.run(query(selects=["NAME", "OUTPUTS", "STATUS", "REFERENCE_EXAMPLE_ID", "FEEDBACK_STATS"], page_size=2))
        assert sorted(i.id for i in items) == sorted(ids), "every example, across pages"
        assert all(len(i.runs) == 1 for i in items), [len(i.runs) for i in items]
        assert all(i.runs[0].feedback_stats["correct"].avg == 1 for i in items), [i.runs[0].feedback_stats for i in items]
        return items

    items = eventually(all_runs)
    for item in items:
        run = item.runs[0]
        assert run.reference_example_id == item.id and run.outputs == {"d": item.inputs["n"] * 2}
        assert run.status == "SUCCESS" and run.name
        assert item.dataset_id == str(ds.id)
    # Only `id` unless selected; example_ids narrows the page.
    only = asyncio.run(query(example_ids=[ids[1]]))
    assert [i.id for i in only] == [ids[1]] and only[0].runs[0].id and only[0].runs[0].outputs is None
    # Filters narrow the runs (and drop examples left without any).
    none = asyncio.run(query(filters={str(project.id): ['eq(name, "no-such-run")']}))
    assert none == []

    with pytest.raises(Exception) as e:
        asyncio.run(query(selects=["NOT_A_FIELD"]))
    assert "NOT_A_FIELD" in str(e.value)
