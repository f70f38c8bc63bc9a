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
from typing import IO, Any, Callable, Iterator, Optional

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
_HARNESS_ENV = {"SEXTANT_BIN", "SEXTANT_URL", "SEXTANT_READY_TIMEOUT", "SEXTANT_TEST_READ_TIMEOUT", "SEXTANT_MATRIX_CYCLES"}


@dataclass
class Server:
    url: str
    log_path: Optional[Path]
    process: Optional[subprocess.Popen]
    log_file: Optional[IO[bytes]] = None
    # host:port of the gRPC listener (None for an external SEXTANT_URL server).
    grpc_target: Optional[str] = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server log: SEXTANT_URL points at an external server)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> Optional[int]:
    """Send `sig` and wait up to `timeout` for the process to exit; SIGKILL it past that.
    Returns the exit code it had on its own (a negative signal number when a signal ended it),
    or None when it had to be killed after the timeout."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


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


def start_server(
    data_dir: Path,
    log_path: Path,
    *,
    config: Optional[str] = None,
    env: Optional[dict[str, str]] = None,
) -> Server:
    """Start `sextant serve` on free loopback ports over `data_dir` and return once GET /readyz
    answers 200. Its output is appended to `log_path`. `config` is TOML text passed with
    `--config`; `env` adds environment variables. Stop it with `stop_server`."""
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
    if config is not None:
        config_path = log_path.with_name(log_path.stem + ".config.toml")
        config_path.write_text(config)
        cmd += ["--config", str(config_path)]
    # The suite's own knobs share the SEXTANT_ prefix with the server's configuration, which
    # rejects keys it does not know: keep them out of the server's environment.
    proc_env = {k: v for k, v in os.environ.items() if k not in _HARNESS_ENV}
    proc_env.setdefault("RUST_BACKTRACE", "1")
    proc_env.setdefault("NO_COLOR", "1")  # plain text in the log that failing reports quote
    proc_env.update(env or {})
    log_file = open(log_path, "ab")
    log_file.write(("$ " + " ".join(cmd) + "\n").encode())
    log_file.flush()
    proc = subprocess.Popen(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=proc_env,
        start_new_session=True,
    )
    server = Server(
        url=f"http://127.0.0.1:{http_port}",
        log_path=log_path,
        process=proc,
        log_file=log_file,
        grpc_target=f"127.0.0.1:{grpc_port}",
    )
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
            time.sleep(0.05)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server, sig: int = signal.SIGTERM, timeout: float = 10) -> Optional[int]:
    """Stop a server that `start_server` started with `sig` (SIGTERM: a graceful shutdown,
    SIGKILL: a crash); see `_stop` for the return value. Idempotent."""
    code = _stop(server.process, sig, timeout) if server.process is not None else None
    if server.log_file is not None:
        server.log_file.close()
        server.log_file = None
    return code


@contextmanager
def run_server(data_dir: Path, log_path: Path, **kwargs: Any) -> Iterator[Server]:
    """`start_server` as a context manager: stopped (SIGTERM, then SIGKILL) on exit."""
    server = start_server(data_dir, log_path, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


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
    setattr(item, f"_sextant_rep_{report.when}", report)  # fixtures read how the test went
    if not report.failed:
        return
    if _SERVER is not None:
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


class ServerControl:
    """Starts and stops servers of one test over ONE data directory, each stop with the signal
    the test asks for (SIGTERM: graceful; SIGKILL: a crash, as `kill -9`). Every server it
    started and did not stop is stopped (SIGTERM, then SIGKILL) when the test ends."""

    def __init__(self, data_dir: Path, log_dir: Path, item: Any) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.item = item
        self.server: Optional[Server] = None
        self.starts = 0
        if not hasattr(item, "_sextant_private_logs"):
            item._sextant_private_logs = []

    def start(self, *, name: str = "server", data_dir: Optional[Path] = None, **kwargs: Any) -> Server:
        """Start a server (waits for /readyz 200). `kwargs` go to `start_server` (config, env)."""
        assert self.server is None, "a server of this test is still running: stop it first"
        log_path = self.log_dir / f"{name}.log"
        if log_path not in self.item._sextant_private_logs:
            self.item._sextant_private_logs.append(log_path)
        self.server = start_server(data_dir or self.data_dir, log_path, **kwargs)
        self.starts += 1
        return self.server

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> Optional[int]:
        """Send `sig` to the running server and wait for it to exit; see `_stop`."""
        assert self.server is not None, "no server of this test is running"
        server, self.server = self.server, None
        return stop_server(server, sig, timeout)

    def close(self) -> None:
        if self.server is not None:
            self.stop(signal.SIGTERM, timeout=10)


@pytest.fixture
def server_control(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerControl]:
    """A `ServerControl` over `<tmp_path>/data`, its logs in `tmp_path` (attached to a failing
    test's report)."""
    if os.environ.get("SEXTANT_URL"):
        pytest.skip("needs to start its own server (SEXTANT_URL points at an external one)")
    control = ServerControl(tmp_path / "data", tmp_path, request.node)
    try:
        yield control
    finally:
        control.close()
