"""Experiments through the SDK's `evaluate()`, read back, and compared by the deploy gate
(`sextant eval gate` and `POST /experiments/compare`)."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid

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


GATE_ROW = re.compile(
    r"^(?P<metric>\S+)(?P<lower> \(lower\))?\s+(?P<baseline>\S+)\s+(?P<candidate>\S+)\s+(?P<delta>\S+)\s+"
    r"(?P<pct>\S+)\s+(?P<interval>\[[^]]*\]|-)\s+(?P<n>\d+)\s+(?P<verdict>\S.*)$"
)


def gate_rows(stdout: str) -> dict[str, dict]:
    """The gate's table, one row per metric: {metric: {baseline, candidate, delta, verdict, ...}}."""
    lines = stdout.splitlines()
    header = next((i for i, ln in enumerate(lines) if ln.split()[:2] == ["metric", "baseline"]), None)
    assert header is not None, f"no metric table in the gate's output:\n{stdout}"
    rows = {}
    for ln in lines[header + 1:]:
        if not ln.strip():
            break
        m = GATE_ROW.match(ln)
        assert m, f"a table row the test cannot read: {ln!r}\n{stdout}"
        rows[m["metric"]] = m.groupdict()
    return rows


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

    # The verdicts the gate is about are the gated metrics' rows; latency is reported but not
    # gated (timing can make it REGRESSED on any run), so only its row's "(not gated)" is checked.
    ok = gate("--baseline", baseline, "--candidate", clean)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rows = gate_rows(ok.stdout)
    assert set(rows) == {"correct", "concise", "latency"}, ok.stdout
    for metric in ("correct", "concise"):  # the same answers: the same scores
        assert rows[metric]["verdict"] == "NEUTRAL" and rows[metric]["delta"] == "+0.0000", f"{metric}: {rows[metric]}\n{ok.stdout}"
    assert rows["latency"]["verdict"].endswith("(not gated)") and rows["latency"]["lower"], ok.stdout
    assert "GATE PASSED: no metric regressed" in ok.stdout and "GATE FAILED" not in ok.stdout, ok.stdout

    bad = gate("--baseline", baseline, "--candidate", regressed)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "GATE FAILED" in bad.stdout and "correct regressed" in bad.stdout, bad.stdout
    correct_row = gate_rows(bad.stdout)["correct"]
    assert correct_row["verdict"] == "REGRESSED" and correct_row["delta"] == "-0.4800", correct_row  # 1.0 -> 0.52

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


class FakeJudge:
    """A mock OpenAI-compatible chat-completions endpoint (no real model can run here): it
    answers a fenced JSON score, or garbage when the prompt mentions "3+3"."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        calls = self.calls = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                calls.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
                prompt = body["messages"][-1]["content"]
                content = "I cannot say." if "3+3" in prompt else '```json\n{"score": 0.8, "reasoning": "mostly right"}\n```'
                out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}],
                                  "usage": {"prompt_tokens": 100, "completion_tokens": 20}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_server_side_evaluators_score_an_experiment_resumably(private_server, monkeypatch, tmp_path) -> None:
    import json

    judge = FakeJudge()
    monkeypatch.setenv("SEXTANT_JUDGE__BASE_URL", judge.url)
    monkeypatch.setenv("SEXTANT_JUDGE__API_KEY", "judge-secret")
    monkeypatch.setenv("SEXTANT_JUDGE__MODEL", "fake-judge")
    monkeypatch.setenv("SEXTANT_JUDGE__PRICES__PROMPT_USD_PER_MTOK", "1.0")
    with private_server() as (server, make):
        client = make()
        ds = client.create_dataset(unique("server-eval"))
        questions = ["1+1", "2+2", "3+3", "4+4"]
        client.create_examples(dataset_id=ds.id, inputs=[{"q": q} for q in questions],
                               outputs=[{"a": str(eval(q))} for q in questions])

        def target(inputs: dict) -> dict:
            return {"a": "5" if inputs["q"] == "4+4" else str(eval(inputs["q"]))}  # one wrong answer

        res = evaluate(target, data=ds.name, evaluators=[], experiment_prefix="server-side", client=client)
        assert len(list(res)) == 4
        client.flush()
        name = res.experiment_name
        eventually(lambda: _assert(client.read_project(project_name=name, include_stats=True).run_count == 4), client=client)

        configs = tmp_path / "evaluators.json"
        configs.write_text(json.dumps([
            {"type": "exact_match", "key": "exact"},
            {"type": "llm_judge", "key": "judge", "prompt": "Question: {inputs}\nAnswer: {outputs}\nReference: {reference}"},
        ]))
        env = {**os.environ, "LANGSMITH_ENDPOINT": client.api_url, "LANGSMITH_API_KEY": client.api_key}

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(sextant_binary()), "eval", "run", *args], env=env, capture_output=True, text=True, timeout=60)

        done = cli("--experiment", name, "--evaluators", str(configs))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "8 evaluations: 7 scored, 0 already scored, 1 evaluator errors" in done.stdout, done.stdout
        assert len(judge.calls) == 4 and all(c["auth"] == "Bearer judge-secret" for c in judge.calls)
        assert all(c["body"]["temperature"] == 0 and c["body"]["model"] == "fake-judge" for c in judge.calls)

        runs = {r.inputs["q"]: r for r in client.list_runs(project_name=name, is_root=True)}

        def results() -> dict:
            fb = list(client.list_feedback(run_ids=[r.id for r in runs.values()]))
            assert len(fb) == 8, fb
            return {(str(f.run_id), f.key): f for f in fb}

        fb = eventually(results, client=client)
        assert fb[(str(runs["4+4"].id), "exact")].score == 0 and fb[(str(runs["2+2"].id), "exact")].score == 1
        ok = fb[(str(runs["1+1"].id), "judge")]
        assert ok.score == 0.8 and ok.comment.startswith("mostly right") and ok.feedback_source.type == "model"
        garbage = fb[(str(runs["3+3"].id), "judge")]
        assert garbage.score is None and "evaluator error" in garbage.comment, garbage  # never a made-up 0.5
        assert "error" in garbage.value

        # Running again resumes: nothing is scored twice, the judge is not called again.
        again = cli("--experiment", name, "--evaluators", str(configs))
        assert again.returncode == 0 and "0 scored, 8 already scored" in again.stdout, again.stdout
        assert len(judge.calls) == 4

        # Bad input: a config that does not parse, an unknown experiment.
        configs.write_text(json.dumps([{"type": "regex", "key": "r", "pattern": "("}]))
        bad = cli("--experiment", name, "--evaluators", str(configs))
        assert bad.returncode == 1 and "pattern" in bad.stderr, bad.stderr
        missing = cli("--experiment", unique("nope"), "--evaluators", str(configs))
        assert missing.returncode == 1 and "no experiment named" in missing.stderr, missing.stderr
    judge.server.shutdown()


def _assert(cond: bool) -> None:
    assert cond


def test_dataset_evaluators_score_every_experiment_of_the_sdk(private_server, monkeypatch) -> None:
    """Rule and judge evaluators configured on the dataset (versioned) score the runs of the
    SDK's `evaluate()` on the server, whatever evaluators the call itself passes."""
    judge = FakeJudge()
    monkeypatch.setenv("SEXTANT_JUDGE__BASE_URL", judge.url)
    monkeypatch.setenv("SEXTANT_JUDGE__MODEL", "fake-judge")
    with private_server() as (server, make):
        client = make()
        headers = {"x-api-key": client.api_key}
        ds = client.create_dataset(unique("scored"))
        questions = ["1+1", "2+2", "4+4"]
        client.create_examples(dataset_id=ds.id, inputs=[{"q": q} for q in questions],
                               outputs=[{"a": str(eval(q))} for q in questions])
        url = f"{client.api_url}/datasets/{ds.id}/evaluators"
        r = client.session.post(url, headers=headers, json={"type": "exact_match", "key": "exact"})
        assert r.status_code == 201 and r.json()["version"] == 1, r.text
        r = client.session.post(url, headers=headers, json={"type": "llm_judge", "key": "judge", "prompt": "Q {inputs} A {outputs} R {reference}"})
        assert r.status_code == 201, r.text
        bad = client.session.post(url, headers=headers, json={"type": "regex", "key": "r", "pattern": "("})
        assert bad.status_code == 422 and "pattern" in bad.text, bad.text
        assert client.session.post(f"{client.api_url}/datasets/{uuid.uuid4()}/evaluators", headers=headers,
                                   json={"type": "json", "key": "j"}).status_code == 404

        def target(inputs: dict) -> dict:
            return {"a": "5" if inputs["q"] == "4+4" else str(eval(inputs["q"]))}

        def scored(name: str, n: int) -> dict:
            runs = {r.inputs["q"]: r for r in client.list_runs(project_name=name, is_root=True)}
            assert len(runs) == 3
            fb = [f for f in client.list_feedback(run_ids=[r.id for r in runs.values()]) if f.key in ("exact", "judge")]
            assert len(fb) == n, fb
            return {(q, f.key): f for q, r in runs.items() for f in fb if f.run_id == r.id}

        first = evaluate(target, data=ds.name, evaluators=[], experiment_prefix="auto", client=client)
        assert len(list(first)) == 3
        client.flush()
        fb = eventually(lambda: scored(first.experiment_name, 6), client=client, what="server-side scores")
        assert fb[("2+2", "exact")].score == 1 and fb[("4+4", "exact")].score == 0
        assert fb[("1+1", "judge")].score == 0.8 and fb[("1+1", "judge")].feedback_source.type == "model"
        assert fb[("1+1", "exact")].feedback_source.metadata["dataset_evaluator_version"] == 1
        assert len(judge.calls) == 3

        # A new config under the same key is version 2; the next experiment is scored with it.
        r = client.session.post(url, headers=headers, json={"type": "fuzzy_match", "key": "exact", "threshold": 0.5})
        assert r.status_code == 201 and r.json()["version"] == 2, r.text
        versions = client.session.get(url, headers=headers).json()
        assert [(v["key"], v["version"], v["active"]) for v in versions] == [("exact", 1, False), ("judge", 1, True), ("exact", 2, True)]
        assert client.session.delete(f"{url}/judge", headers=headers).status_code == 204
        time.sleep(2.5)  # evaluator configs are cached for 2 s
        second = evaluate(target, data=ds.name, evaluators=[], experiment_prefix="auto", client=client)
        assert len(list(second)) == 3
        client.flush()
        fb = eventually(lambda: scored(second.experiment_name, 3), client=client, what="scores with version 2")
        assert all(f.feedback_source.metadata["dataset_evaluator_version"] == 2 for f in fb.values())
        assert len(judge.calls) == 3  # the retired judge scored nothing new
    judge.server.shutdown()
