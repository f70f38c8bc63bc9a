"""Fixtures for the Python end-to-end suite.

The suite drives a real `sextant` binary with the official `langsmith` SDK, unchanged:

* `sextant` (session scope) starts `sextant serve` on free loopback ports with a fresh data
  directory, waits for `GET /readyz` to answer 200, yields a `Server` (its base URL and log) and
  stops it at the end (SIGTERM, then SIGKILL). The server's stdout/stderr go to a log file whose
  tail is attached to every failing test's report.
  - `SEXTANT_BIN` overrides the binary (default `<repo>/target/debug/sextant`).
  - `SEXTANT_URL` points the suite at a server that is already running instead.
* `make_client` (function scope) builds a fresh `langsmith.Client` for a test, with the
  environment a user would set (`LANGSMITH_ENDPOINT`, `LANGSMITH_API_KEY`,
  `LANGSMITH_TRACING=true`) applied through monkeypatch, and a recording `requests.Session`
  so a test can assert which endpoints the SDK really used and report what the server said.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import requests

import langsmith

from sextant_helpers import API_KEY, Recorder, reset_sdk_env_caches

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = float(os.environ.get("SEXTANT_READY_TIMEOUT", "60"))
LOG_TAIL_LINES = 60

# Every LANGSMITH_* / LANGCHAIN_* variable the SDK reads; the suite clears them all so that
# nothing from the developer's shell (a real API key, a hosted endpoint, OTEL mode, sampling)
# leaks in, and nothing is ever sent anywhere but the local server.
_SDK_ENV_PREFIXES = ("LANGSMITH_", "LANGCHAIN_")
_HARNESS_ENV = {"SEXTANT_BIN", "SEXTANT_URL", "SEXTANT_READY_TIMEOUT", "SEXTANT_TEST_READ_TIMEOUT"}


@dataclass
class Server:
    url: str
    log_path: Optional[Path]
    process: Optional[subprocess.Popen]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server log: SEXTANT_URL points at an external server)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


_SERVER: Optional[Server] = None


def pytest_configure(config: pytest.Config) -> None:
    # list_runs/read_run are deprecated in favour of the v2 API but remain what users call.
    config.addinivalue_line(
        "filterwarnings", "ignore::langsmith._internal._beta_decorator.LangSmithDeprecationWarning"
    )


def sextant_binary() -> Path:
    binary = Path(os.environ.get("SEXTANT_BIN", REPO / "target" / "debug" / "sextant"))
    if not binary.is_file():
        pytest.fail(
            f"sextant binary not found at {binary}: build it with `cargo build -p sextant` "
            "or set SEXTANT_BIN (tests/run-all.sh does both)",
            pytrace=False,
        )
    return binary


@contextmanager
def run_server(data_dir: Path, log_path: Path) -> Iterator[Server]:
    """Start `sextant serve` on free loopback ports over `data_dir`, wait until GET /readyz
    answers 200, and stop it (SIGTERM, then SIGKILL) on exit. Its output is appended to
    `log_path`."""
    binary = sextant_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = _free_port(), _free_port()
    while grpc_port == http_port:
        grpc_port = _free_port()
    cmd = [
        str(binary),
        "serve",
        "--http",
        f"127.0.0.1:{http_port}",
        "--grpc",
        f"127.0.0.1:{grpc_port}",
        "--data-dir",
        str(data_dir),
    ]
    # The suite's own knobs share the SEXTANT_ prefix with the server's configuration, which
    # rejects keys it does not know: keep them out of the server's environment.
    env = {k: v for k, v in os.environ.items() if k not in _HARNESS_ENV}
    env.setdefault("RUST_BACKTRACE", "1")
    env.setdefault("NO_COLOR", "1")  # plain text in the log that failing reports quote
    log_file = open(log_path, "ab")
    log_file.write(("$ " + " ".join(cmd) + "\n").encode())
    log_file.flush()
    proc = subprocess.Popen(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    server = Server(url=f"http://127.0.0.1:{http_port}", log_path=log_path, process=proc)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"sextant exited with code {proc.returncode} before it was ready.\n"
                    f"--- server log ({log_path}) ---\n{server.log_tail()}",
                    pytrace=False,
                )
            try:
                r = requests.get(f"{server.url}/readyz", timeout=2)
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"sextant did not answer GET /readyz with 200 within {READY_TIMEOUT_S:.0f}s "
                    f"(last: {last}).\n--- server log ({log_path}) ---\n{server.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc)
        log_file.close()


@pytest.fixture(scope="session")
def sextant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    global _SERVER
    external = os.environ.get("SEXTANT_URL")
    if external:
        _SERVER = Server(url=external.rstrip("/"), log_path=None, process=None)
        yield _SERVER
        return
    workdir = tmp_path_factory.mktemp("sextant")
    with run_server(workdir / "data", workdir / "server.log") as server:
        _SERVER = server
        try:
            yield server
        finally:
            _SERVER = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVER is not None:
        report.sections.append(
            (f"sextant server log (last {LOG_TAIL_LINES} lines)", _SERVER.log_tail())
        )
        for log_path in getattr(item, "_sextant_private_logs", []):
            private = Server(url="", log_path=log_path, process=None)
            report.sections.append((f"private sextant server log {log_path}", private.log_tail()))
        recorders: list[Recorder] = getattr(item, "_sextant_recorders", [])
        if recorders:
            report.sections.append(("HTTP exchanges with the server", "\n\n".join(r.summary() for r in recorders)))


def clear_sdk_env(mp: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(_SDK_ENV_PREFIXES):
            mp.delenv(key, raising=False)
    # Loopback only, whatever proxy the machine may have configured.
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        mp.delenv(key, raising=False)
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
    mp.setenv("no_proxy", "127.0.0.1,localhost")
    reset_sdk_env_caches()


@pytest.fixture(autouse=True)
def _isolated_sdk_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_sdk_env(monkeypatch)
    yield
    reset_sdk_env_caches()


ClientFactory = Callable[..., langsmith.Client]


@contextmanager
def client_factory(server: Server, mp: pytest.MonkeyPatch, item: Any = None) -> Iterator[ClientFactory]:
    """Yield a function that builds SDK clients the way a user would, and clean them up."""
    clients: list[langsmith.Client] = []

    def make(
        *,
        api_v1: bool = False,
        compression: bool = True,
        info: Optional[dict] = None,
        project: Optional[str] = None,
        **kwargs: Any,
    ) -> langsmith.Client:
        endpoint = server.url + ("/api/v1" if api_v1 else "")
        mp.setenv("LANGSMITH_ENDPOINT", endpoint)
        mp.setenv("LANGSMITH_API_KEY", API_KEY)
        mp.setenv("LANGSMITH_TRACING", "true")
        mp.setenv("LANGSMITH_PROJECT", project or f"py-default-{uuid.uuid4().hex[:8]}")
        if compression:
            mp.delenv("LANGSMITH_DISABLE_RUN_COMPRESSION", raising=False)
        else:
            # Read by the tracing thread that the Client constructor starts: set it first.
            mp.setenv("LANGSMITH_DISABLE_RUN_COMPRESSION", "true")
        reset_sdk_env_caches()
        recorder = Recorder()
        session = requests.Session()
        session.hooks["response"].append(recorder.hook)
        client = langsmith.Client(api_url=endpoint, api_key=API_KEY, session=session, info=info, **kwargs)
        clients.append(client)
        if item is not None:
            if not hasattr(item, "_sextant_recorders"):
                item._sextant_recorders = []
            item._sextant_recorders.append(recorder)
        return client

    try:
        yield make
    finally:
        for c in clients:
            try:
                c.flush(timeout=30)
            finally:
                c.cleanup(timeout=0)


@pytest.fixture
def make_client(sextant: Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[ClientFactory]:
    with client_factory(sextant, monkeypatch, request.node) as make:
        yield make


@pytest.fixture
def project_name(request: pytest.FixtureRequest) -> str:
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40].strip("-")
    return f"py-{readable}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def module_make_client(sextant: Server) -> Iterator[ClientFactory]:
    """Like `make_client`, for data that a whole module's tests read."""
    with pytest.MonkeyPatch.context() as mp:
        clear_sdk_env(mp)
        with client_factory(sextant, mp) as make:
            yield make


@pytest.fixture
def private_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Callable[[], Any]:
    """For tests that stop and restart a server: `with private_server() as (server, make):`
    runs a server of the test's own over the same data directory each time."""
    if os.environ.get("SEXTANT_URL"):
        pytest.skip("needs to start its own server (SEXTANT_URL points at an external one)")
    log_path = tmp_path / "server.log"
    request.node._sextant_private_logs = [log_path]

    @contextmanager
    def start() -> Iterator[tuple[Server, ClientFactory]]:
        with run_server(tmp_path / "data", log_path) as server:
            with client_factory(server, monkeypatch, request.node) as make:
                yield server, make

    return start
