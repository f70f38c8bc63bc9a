"""A restart matrix on ONE data directory: {SIGTERM, kill -9} x {idle long enough for the bus to
trim its log, under load, right after start} x 2 cycles, for runs, feedback, dataset examples
and prompt commits.

After every restart, every write the server acknowledged (a 2xx answer) must be readable with
the content that was sent, and none twice; writes made after the restart must become readable
too. A write in flight when the server was killed, without an answer, may be lost or present,
never twice. Nothing that the test did not send may appear.

The data directory is never replaced: each cycle starts where the previous one stopped. That is
what catches a bus that reuses sequence numbers after its log was trimmed empty (new events
numbered below the consumers' saved positions were skipped: 202, then never readable).

Writes use the SDK where it reports the outcome of each call (`@traceable` with the recorded
exchanges, `create_run` without batching, `create_feedback`, `create_examples`,
`push_prompt`), and raw HTTP from threads under load, so every acknowledgement is known."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import requests
from langchain_core.load import dumpd
from langchain_core.prompts import ChatPromptTemplate

import langsmith as ls
from langsmith import traceable

from conftest import ServerControl, client_factory
from sextant_helpers import API_KEY, raw_json, sent_runs, utcnow

IDLE_S = 7.0  # the in-process bus trims its log every 5 s once every consumer caught up
LOAD_S = 1.5  # writers in flight for this long before the signal
VERIFY_TIMEOUT_S = 30.0  # after a kill -9 the projections may have a backlog to finish
CYCLES = int(os.environ.get("SEXTANT_MATRIX_CYCLES", "2"))
SIGNALS = (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL))
MODES = ("idle", "load", "right-after-start")
KINDS = ("runs", "feedback", "examples", "prompts")
HEADERS = {"x-api-key": API_KEY}
MARKER = re.compile(r"matrix-[0-9a-f]{16}")


def marker() -> str:
    return f"matrix-{uuid.uuid4().hex[:16]}"


def chat_prompt(m: str) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", f"You are {{role}}. {m}"), ("human", "{question}")])


@dataclass
class Ledger:
    """Every write sent, and every write acknowledged with what it must read back as, by kind.
    Keys: run id, feedback id, example id, prompt marker (one marker per pushed manifest)."""

    acked: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    attempted: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, kind: str, keys: list[str]) -> None:
        with self.lock:
            self.attempted[kind].update(keys)

    def ack(self, kind: str, expected: dict[str, Any], phase: str) -> None:
        with self.lock:
            for key, value in expected.items():
                self.attempted[kind].add(key)
                self.acked[kind][key] = (value, phase)

    def count(self, kind: Optional[str] = None) -> int:
        with self.lock:
            return sum(len(self.acked[k]) for k in ([kind] if kind else KINDS))

    def unacked(self) -> int:
        with self.lock:
            return sum(len(self.attempted[k] - self.acked[k].keys()) for k in KINDS)


@dataclass
class World:
    project: str
    dataset_id: str
    repo: str
    anchors: list[str]  # runs the feedback is about


class RawWriter:
    """One write of each kind over raw HTTP: exactly one request, the ack is its 2xx status.
    No retries: a request the server did not answer is an unacknowledged write."""

    def __init__(self, url: str, world: World, ledger: Ledger, phase: str) -> None:
        self.url, self.world, self.ledger, self.phase = url, world, ledger, phase
        self.session = requests.Session()
        self.session.headers.update(HEADERS)
        self.n = 0

    def _post(self, path: str, body: Any) -> Optional[requests.Response]:
        try:
            r = self.session.post(self.url + path, json=body, timeout=(2, 15))
        except requests.RequestException:
            return None
        return r if 200 <= r.status_code < 300 else None

    def runs(self, n: int = 5) -> bool:
        now = utcnow()
        stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
        batch, expected = [], {}
        for _ in range(n):
            rid, m = str(uuid.uuid4()), marker()
            batch.append({
                "id": rid, "trace_id": rid, "dotted_order": f"{stamp}{rid}", "name": m, "run_type": "chain",
                "start_time": now.isoformat(), "end_time": now.isoformat(), "session_name": self.world.project,
                "inputs": {"q": m}, "outputs": {"a": m},
            })
            expected[rid] = (m, {"a": m})
        self.ledger.attempt("runs", list(expected))
        if self._post("/runs/batch", {"post": batch}) is None:
            return False
        self.ledger.ack("runs", expected, self.phase)
        return True

    def feedback(self) -> bool:
        fid, m = str(uuid.uuid4()), marker()
        self.n += 1
        run_id = self.world.anchors[self.n % len(self.world.anchors)]
        self.ledger.attempt("feedback", [fid])
        body = {"id": fid, "run_id": run_id, "key": "restart", "score": 1.0, "value": {"marker": m}}
        if self._post("/feedback", body) is None:
            return False
        self.ledger.ack("feedback", {fid: {"marker": m}}, self.phase)
        return True

    def examples(self, n: int = 3) -> bool:
        items, expected = [], {}
        for _ in range(n):
            eid, m = str(uuid.uuid4()), marker()
            items.append({"id": eid, "dataset_id": self.world.dataset_id, "inputs": {"q": m}, "outputs": {"a": m}})
            expected[eid] = {"q": m}
        self.ledger.attempt("examples", list(expected))
        if self._post("/examples/bulk", items) is None:
            return False
        self.ledger.ack("examples", expected, self.phase)
        return True

    def prompt(self) -> bool:
        m = marker()
        self.ledger.attempt("prompts", [m])
        r = self._post(f"/commits/-/{self.world.repo}", {"parent_commit": None, "manifest": dumpd(chat_prompt(m))})
        if r is None:
            return False
        self.ledger.ack("prompts", {m: r.json()["commit"]["commit_hash"]}, self.phase)
        return True


def sdk_writes(make: Callable[..., ls.Client], world: World, ledger: Ledger, phase: str) -> None:
    """Writes as a user makes them with the SDK; each one's acknowledgement is known."""
    tracer = make(project=world.project)

    @traceable(name="matrix_child", run_type="tool")
    def child(m: str) -> str:
        return m

    @traceable(name="matrix_root")
    def root(m: str) -> dict:
        return {"n": child(m)}

    with ls.tracing_context(client=tracer, project_name=world.project, enabled=True):
        for _ in range(3):
            root(marker())
    tracer.flush()
    # What the SDK sent in requests that got a 2xx (zstd multipart, via the recorded exchanges).
    traced = {rid: (r["name"], r.get("outputs")) for rid, r in sent_runs(tracer).items()}
    assert len(traced) == 6, f"{phase}: the SDK's tracing requests were not all acknowledged: {len(traced)} of 6 runs"
    ledger.ack("runs", traced, phase)

    c = make(project=world.project, auto_batch_tracing=False)
    for _ in range(2):
        rid, m = str(uuid.uuid4()), marker()
        ledger.attempt("runs", [rid])
        c.create_run(m, {"q": m}, "chain", id=rid, project_name=world.project, outputs={"a": m}, end_time=utcnow())
        ledger.ack("runs", {rid: (m, {"a": m})}, phase)
    for i in range(3):
        fid, m = str(uuid.uuid4()), marker()
        ledger.attempt("feedback", [fid])
        c.create_feedback(world.anchors[i % len(world.anchors)], key="restart", score=1.0, value={"marker": m}, feedback_id=fid)
        ledger.ack("feedback", {fid: {"marker": m}}, phase)
    examples = {str(uuid.uuid4()): marker() for _ in range(3)}
    ledger.attempt("examples", list(examples))
    c.create_examples(dataset_id=world.dataset_id,
                      examples=[{"id": eid, "inputs": {"q": m}, "outputs": {"a": m}} for eid, m in examples.items()])
    ledger.ack("examples", {eid: {"q": m} for eid, m in examples.items()}, phase)
    m = marker()
    ledger.attempt("prompts", [m])
    url = c.push_prompt(world.repo, object=chat_prompt(m))
    short = re.search(r"/prompts/[^/]+/([0-9a-f]{8})", url)
    assert short, f"push_prompt returned {url!r}: no commit hash in it"
    ledger.ack("prompts", {m: short.group(1)}, phase)


def read_all(c: ls.Client, world: World) -> dict[str, list[tuple[str, Any]]]:
    """Everything readable, by kind, as (key, content) pairs: duplicates are kept."""
    runs = [(str(r.id), (r.name, r.outputs)) for r in c.list_runs(project_name=world.project, select=["id", "name", "outputs"])]
    feedback = [(str(f.id), f.value) for f in c.list_feedback(run_ids=world.anchors)]
    examples = [(str(e.id), e.inputs) for e in c.list_examples(dataset_id=world.dataset_id)]
    # The SDK's listed commits carry no manifest: the manifests (and their markers) are read
    # over the same route the SDK pages, and the SDK's own listing must agree with it.
    prompts, offset = [], 0
    while True:
        page = raw_json(c, "GET", f"/commits/-/{world.repo}", params={"limit": 100, "offset": offset})["commits"]
        for commit in page:
            found = MARKER.findall(json.dumps(commit["manifest"]))
            prompts.append((found[0] if found else f"<no marker: {commit['commit_hash']}>", commit["commit_hash"]))
        offset += len(page)
        if len(page) < 100:
            break
    listed = sorted(str(x.commit_hash) for x in c.list_prompt_commits(world.repo))
    assert listed == sorted(h for _, h in prompts), f"list_prompt_commits {listed} != GET /commits {prompts}"
    return {"runs": runs, "feedback": feedback, "examples": examples, "prompts": prompts}


def counts(c: ls.Client, world: World) -> dict[str, int]:
    """The server's own counts, which a duplicated write would also inflate."""
    return {
        "runs": c.read_project(project_name=world.project, include_stats=True).run_count,
        "examples": c.read_dataset(dataset_id=world.dataset_id).example_count,
        "prompts": c.get_prompt(world.repo).num_commits,
    }


@dataclass
class Check:
    problems: list[str]
    missing: int
    unacked_present: int = 0


def check(c: ls.Client, world: World, ledger: Ledger) -> Check:
    with ledger.lock:
        acked = {k: dict(v) for k, v in ledger.acked.items()}
        attempted = {k: set(v) for k, v in ledger.attempted.items()}
    seen = read_all(c, world)
    problems, missing_total, unacked_present = [], 0, 0
    for kind in KINDS:
        got = seen[kind]
        unacked_present += len({k for k, _ in got} & (attempted[kind] - acked[kind].keys()))
        twice = [k for k, n in Counter(k for k, _ in got).items() if n > 1]
        if twice:
            problems.append(f"{kind}: {len(twice)} read back more than once: {twice[:5]}")
        foreign = sorted({k for k, _ in got} - attempted[kind])
        if foreign:
            problems.append(f"{kind}: {len(foreign)} readable that the test never sent: {foreign[:5]}")
        content = dict(got)
        missing = [k for k in acked[kind] if k not in content]
        if missing:
            missing_total += len(missing)
            by_phase = Counter(acked[kind][k][1] for k in missing)
            problems.append(
                f"{kind}: {len(missing)} of {len(acked[kind])} acknowledged writes are not readable; "
                f"written in: {dict(by_phase)}; e.g. {missing[:3]}"
            )
        wrong = []
        for k, (expected, phase) in acked[kind].items():
            if k not in content:
                continue
            # Prompts: the acknowledgement gave the hash (the SDK's URL only its first 8 chars).
            ok = content[k].startswith(expected) if kind == "prompts" else content[k] == expected
            if not ok:
                wrong.append(f"{k} (from {phase}): read {content[k]!r}, expected {expected!r}")
        if wrong:
            problems.append(f"{kind}: {len(wrong)} read back with other content: {wrong[:3]}")
    if not problems:
        distinct = {k: len({key for key, _ in v}) for k, v in seen.items()}
        for kind, n in counts(c, world).items():
            if n != distinct[kind]:
                problems.append(f"{kind}: the server counts {n} but lists {distinct[kind]} distinct")
    return Check(problems, missing_total, unacked_present)


@dataclass
class Stats:
    restarts: int = 0
    verifications: int = 0
    checked: int = 0
    lost: int = 0
    unacked_present: int = 0
    signals: Counter = field(default_factory=Counter)
    phases: list[str] = field(default_factory=list)


def verify(c: ls.Client, world: World, ledger: Ledger, stats: Stats, when: str) -> None:
    """Poll until every acknowledged write is readable as sent, none twice; fail otherwise."""
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while True:
        try:
            result = check(c, world, ledger)
        except (AssertionError, ls.utils.LangSmithError, requests.RequestException) as e:
            result = Check([f"reading back failed: {type(e).__name__}: {e}"], 0)
        if not result.problems:
            stats.verifications += 1
            stats.checked = ledger.count()
            stats.unacked_present = result.unacked_present
            return
        if time.monotonic() >= deadline:
            stats.lost = result.missing
            history = "\n  ".join(stats.phases)
            raise AssertionError(
                f"{when}: after {VERIFY_TIMEOUT_S:.0f}s of polling, writes the server acknowledged are not "
                f"all readable exactly once:\n  " + "\n  ".join(result.problems)
                + f"\nphases so far (one data directory):\n  {history}"
            )
        time.sleep(0.3)


def load(url: str, world: World, ledger: Ledger, phase: str) -> tuple[threading.Event, list[threading.Thread]]:
    """Writers of every kind from threads, until the returned event is set."""
    stop = threading.Event()

    def loop(write: Callable[[], bool]) -> None:
        while not stop.is_set():
            if not write():
                time.sleep(0.05)  # the server is going away: do not spin

    writers = [RawWriter(url, world, ledger, phase) for _ in range(5)]
    jobs = [writers[0].runs, writers[1].runs, writers[2].feedback, writers[3].examples, writers[4].prompt]
    threads = [threading.Thread(target=loop, args=(j,), daemon=True) for j in jobs]
    for t in threads:
        t.start()
    return stop, threads


def stop_with(control: ServerControl, sig: int, name: str, on_signal: Callable[[], None] = lambda: None) -> None:
    server = control.server
    assert server is not None and server.process is not None
    proc = server.process
    proc.send_signal(sig)
    on_signal()
    try:
        code: Optional[int] = proc.wait(timeout=30)
    except Exception:
        code = None
    control.stop(signal.SIGKILL, timeout=10)  # closes the log; a no-op when it exited
    if sig == signal.SIGTERM:
        assert code == 0, f"sextant did not exit cleanly on SIGTERM (exit code {code}; None: still running after 30 s)"
    else:
        assert code == -signal.SIGKILL, f"kill -9: unexpected exit code {code}"


def test_restart_matrix_on_one_data_directory(server_control: ServerControl, monkeypatch, request, capsys) -> None:
    ledger, stats = Ledger(), Stats()
    started = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    world: Optional[World] = None
    passed = False

    try:
        # Setup on the first server: a project with anchor runs, a dataset, a prompt repository.
        server = server_control.start(name="matrix")
        with client_factory(server, monkeypatch, request.node) as make:
            c = make(auto_batch_tracing=False)
            project, repo = f"py-matrix-{suffix}", f"matrix-{suffix}"
            anchors = [str(uuid.uuid4()) for _ in range(3)]
            world = World(project, str(c.create_dataset(f"matrix-{suffix}").id), repo, anchors)
            for rid in anchors:
                ledger.attempt("runs", [rid])
                c.create_run("anchor", {"q": "anchor"}, "chain", id=rid, project_name=project,
                             outputs={"a": "anchor"}, end_time=utcnow())
                ledger.ack("runs", {rid: ("anchor", {"a": "anchor"})}, "setup")
            # The first push creates the repository, which the raw pushes need.
            m = marker()
            ledger.attempt("prompts", [m])
            url = c.push_prompt(repo, object=chat_prompt(m))
            ledger.ack("prompts", {m: re.search(r"/prompts/[^/]+/([0-9a-f]{8})", url).group(1)}, "setup")
            verify(c, world, ledger, stats, "setup")

        first = True
        for cycle in range(CYCLES):
            for sig_name, sig in SIGNALS:
                for mode in MODES:
                    phase = f"cycle {cycle} {sig_name} {mode}"
                    t0 = time.monotonic()
                    if not first:
                        server = server_control.start(name="matrix")
                        stats.restarts += 1
                    first = False
                    with client_factory(server, monkeypatch, request.node) as make:
                        if mode == "right-after-start":
                            # Signal as soon as one write of each kind is acknowledged; check them
                            # after the next restart.
                            w = RawWriter(server.url, world, ledger, phase)
                            for write in (w.runs, w.feedback, w.examples, w.prompt):
                                assert write(), f"{phase}: a first write right after /readyz was refused"
                            stop_with(server_control, sig, sig_name)
                        elif mode == "idle":
                            reader = make()
                            verify(reader, world, ledger, stats, f"{phase}: after the restart")
                            sdk_writes(make, world, ledger, phase)
                            verify(reader, world, ledger, stats, f"{phase}: writes made after the restart")
                            time.sleep(IDLE_S)  # idle: every consumer caught up, the log is trimmed
                            stop_with(server_control, sig, sig_name)
                        else:
                            reader = make()
                            verify(reader, world, ledger, stats, f"{phase}: after the restart")
                            before = {k: ledger.count(k) for k in KINDS}
                            stop, threads = load(server.url, world, ledger, phase)
                            time.sleep(LOAD_S)
                            quiet = [k for k in KINDS if ledger.count(k) == before[k]]
                            assert not quiet, f"{phase}: no write of {quiet} was acknowledged under load"
                            stop_with(server_control, sig, sig_name, on_signal=stop.set)
                            for t in threads:
                                t.join(timeout=30)
                            assert not any(t.is_alive() for t in threads), f"{phase}: a writer thread hung"
                    stats.signals[sig_name] += 1
                    stats.phases.append(
                        f"{phase}: {time.monotonic() - t0:.1f}s, {ledger.count()} acknowledged so far, "
                        f"{ledger.unacked()} sent without an answer"
                    )

        # The last restart: everything is there, and new writes still land.
        server = server_control.start(name="matrix")
        stats.restarts += 1
        with client_factory(server, monkeypatch, request.node) as make:
            reader = make()
            verify(reader, world, ledger, stats, "final restart")
            sdk_writes(make, world, ledger, "final")
            verify(reader, world, ledger, stats, "final restart: writes made after it")
            stop_with(server_control, signal.SIGTERM, "SIGTERM")
        stats.lost = 0
        passed = True
    finally:
        with capsys.disabled():
            print(
                f"\nrestart matrix {'passed' if passed else 'FAILED'}: {CYCLES} cycles, {stats.restarts} restarts on one data directory "
                f"({dict(stats.signals)}), {stats.verifications} verifications, "
                f"writes acknowledged {ledger.count()} ({', '.join(f'{k} {ledger.count(k)}' for k in KINDS)}), "
                f"writes checked {stats.checked} (all acknowledged ones, at the last passing verification), "
                f"{ledger.unacked()} sent without an answer ({stats.unacked_present} of them stored), "
                f"lost {stats.lost}, "
                f"{time.monotonic() - started:.0f}s"
            )
