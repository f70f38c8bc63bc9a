"""Experiments through the SDK's `evaluate()`, read back, and compared by the deploy gate
(`sextant eval gate` and `POST /experiments/compare`)."""

from __future__ import annotations

import os
import subprocess

import langsmith as ls
from langsmith import evaluate

from conftest import sextant_binary
from sextant_helpers import eventually, unique

QUESTIONS = [f"{a}+{b}" for a in range(1, 6) for b in range(1, 6)]  # 25 examples


def make_dataset(client: ls.Client) -> ls.schemas.Dataset:
    ds = client.create_dataset(unique("arith"))
    client.create_examples(dataset_id=ds.id, inputs=[{"q": q} for q in QUESTIONS],
                           outputs=[{"a": str(eval(q))} for q in QUESTIONS])
    return ds


def correct(outputs: dict, reference_outputs: dict) -> bool:
    return outputs["a"] == reference_outputs["a"]


def concise(outputs: dict) -> dict:
    return {"key": "concise", "score": 1.0 if len(outputs["a"]) <= 1 else 0.0}


def run_experiment(client: ls.Client, dataset: str, prefix: str, wrong_every: int = 0) -> str:
    def target(inputs: dict) -> dict:
        i = QUESTIONS.index(inputs["q"])
        right = str(eval(inputs["q"]))
        return {"a": right + "0" if wrong_every and i % wrong_every != 0 else right}

    res = evaluate(target, data=dataset, evaluators=[correct, concise], experiment_prefix=prefix,
                   metadata={"model": prefix}, max_concurrency=4, client=client)
    rows = list(res)
    assert len(rows) == len(QUESTIONS)
    client.flush()
    return res.experiment_name


def test_evaluate_end_to_end_then_results_read_back(make_client) -> None:
    client = make_client()
    ds = make_dataset(client)
    name = run_experiment(client, ds.name, "readback", wrong_every=5)  # 5 of 25 right

    def stats() -> ls.schemas.TracerSessionResult:
        exp = client.read_project(project_name=name, include_stats=True)
        assert exp.run_count == len(QUESTIONS), exp.run_count
        assert exp.feedback_stats and exp.feedback_stats["correct"]["n"] == len(QUESTIONS), exp.feedback_stats
        return exp

    exp = eventually(stats, client=client, what="experiment stats")
    assert str(exp.reference_dataset_id) == str(ds.id)
    assert exp.feedback_stats["correct"]["avg"] == 5 / 25
    assert exp.extra["metadata"]["model"] == "readback"
    # Runs per example: each example has exactly one root run citing it, with both scores.
    runs = list(client.list_runs(project_name=name, is_root=True))
    examples = {str(e.id) for e in client.list_examples(dataset_id=ds.id)}
    assert sorted(str(r.reference_example_id) for r in runs) == sorted(examples)
    feedback = list(client.list_feedback(run_ids=[r.id for r in runs]))
    assert len(feedback) == 2 * len(QUESTIONS)
    assert {f.key for f in feedback} == {"correct", "concise"}
    assert all(f.feedback_source.type == "model" for f in feedback)


def test_gate_blocks_a_regression_and_passes_a_clean_candidate(make_client) -> None:
    client = make_client()
    ds = make_dataset(client)
    baseline = run_experiment(client, ds.name, "prod")
    clean = run_experiment(client, ds.name, "clean")
    regressed = run_experiment(client, ds.name, "regressed", wrong_every=2)  # 13 of 25 right

    def all_scored() -> None:
        for n in (baseline, clean, regressed):
            assert client.read_project(project_name=n, include_stats=True).feedback_stats["correct"]["n"] == len(QUESTIONS)

    eventually(all_scored, client=client, what="feedback of three experiments")
    env = {**os.environ, "LANGSMITH_ENDPOINT": client.api_url, "LANGSMITH_API_KEY": client.api_key}

    def gate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(sextant_binary()), "eval", "gate", *args], env=env, capture_output=True, text=True, timeout=60)

    ok = gate("--baseline", baseline, "--candidate", clean)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "GATE PASSED" in ok.stdout and "REGRESSED" not in ok.stdout, ok.stdout

    bad = gate("--baseline", baseline, "--candidate", regressed)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "GATE FAILED" in bad.stdout and "correct regressed" in bad.stdout, bad.stdout
    correct_line = [ln for ln in bad.stdout.splitlines() if ln.startswith("correct ")][0]
    assert "REGRESSED" in correct_line and "-0.4800" in correct_line, correct_line  # 1.0 -> 0.52

    # A threshold the clean candidate misses fails the gate too.
    strict = gate("--baseline", baseline, "--candidate", clean, "--threshold", "concise=0.99")
    assert strict.returncode == 1 and "concise is below its threshold" in strict.stdout, strict.stdout

    # The API gives the same verdicts as JSON.
    headers = {"x-api-key": client.api_key}
    r = client.session.post(f"{client.api_url}/experiments/compare", headers=headers,
                            json={"baseline": baseline, "candidate": regressed, "thresholds": {"correct": 0.9}})
    assert r.status_code == 200, r.text
    report = r.json()
    by_metric = {m["metric"]: m for m in report["metrics"]}
    assert report["passed"] is False and report["shared_examples"] == len(QUESTIONS)
    assert by_metric["correct"]["verdict"] == "REGRESSED" and by_metric["correct"]["below_threshold"] is True
    assert by_metric["correct"]["ci_high"] < 0 and abs(by_metric["correct"]["delta"] + 0.48) < 1e-9
    assert by_metric["latency"]["lower_is_better"] is True

    # Errors: an unknown experiment, experiments with no shared example, bad options.
    missing = gate("--baseline", baseline, "--candidate", unique("nope"))
    assert missing.returncode == 2 and "not found" in missing.stderr, missing.stderr
    other = make_dataset(client)
    elsewhere = run_experiment(client, other.name, "elsewhere")

    def elsewhere_stored() -> None:
        assert client.read_project(project_name=elsewhere, include_stats=True).run_count == len(QUESTIONS)

    eventually(elsewhere_stored, client=client)
    apart = gate("--baseline", baseline, "--candidate", elsewhere)
    assert apart.returncode == 2 and "share no example" in apart.stderr, apart.stderr
    r = client.session.post(f"{client.api_url}/experiments/compare", headers=headers,
                            json={"baseline": baseline, "candidate": clean, "confidence": 2})
    assert r.status_code == 422 and "confidence" in r.text
    assert gate("--baseline", baseline, "--candidate", clean, "--threshold", "x").returncode == 2
