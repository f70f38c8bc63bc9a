"""Helpers shared by the Python end-to-end tests (imported by conftest and the test modules)."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, TypeVar
from urllib.parse import urlsplit

import requests
import zstandard

import langsmith

# Any value works: with no keys configured the server accepts every request as one local tenant.
API_KEY = "sextant-python-e2e"

# The server's reads lag its writes a little; reads are polled for this long before failing.
READ_TIMEOUT_S = float(os.environ.get("SEXTANT_TEST_READ_TIMEOUT", "10"))

# What the SDK uses when /info has no batch_ingest_config (langsmith/_internal/_background_thread.py).
DEFAULT_BATCH_INGEST_CONFIG = {
    "use_multipart_endpoint": True,
    "scale_up_qsize_trigger": 1000,
    "scale_up_nthreads_limit": 16,
    "scale_down_nempty_trigger": 4,
    "size_limit": 100,
    "size_limit_bytes": 20 * 1024 * 1024,
}

T = TypeVar("T")


@dataclass
class Exchange:
    method: str
    url: str
    status: int
    request_headers: dict
    request_body: Any
    response_text: str

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def body_bytes(self) -> Optional[bytes]:
        """The request body as sent, zstd-decompressed when it was compressed."""
        body = self.request_body
        if body is None:
            return None
        if hasattr(body, "getvalue"):
            body = body.getvalue()
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            return None
        if self.request_headers.get("Content-Encoding") == "zstd":
            try:
                with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as r:
                    body = r.read()
            except zstandard.ZstdError as e:
                return f"<undecodable zstd body: {e}>".encode()
        return body

    def describe(self, body_chars: int = 1500) -> str:
        body = self.body_bytes()
        ctype = self.request_headers.get("Content-Type", "")
        if body is None:
            shown = "-"
        elif ctype.startswith("multipart/"):
            names = re.findall(rb'name="([^"]+)"', body)
            shown = f"multipart ({len(body)} bytes) parts: " + ", ".join(n.decode() for n in names[:40])
        else:
            shown = body[:body_chars].decode(errors="replace")
        enc = self.request_headers.get("Content-Encoding")
        return (
            f"{self.method} {self.url}{' (Content-Encoding: ' + enc + ')' if enc else ''}\n"
            f"  request body: {shown}\n"
            f"  -> {self.status}: {self.response_text[:body_chars]}"
        )


class Recorder:
    """A requests response hook that keeps every exchange the SDK had with the server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exchanges: list[Exchange] = []

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        req = response.request
        try:
            text = response.text
        except Exception as e:  # pragma: no cover - diagnostics only
            text = f"<unreadable: {e!r}>"
        ex = Exchange(
            method=req.method or "",
            url=req.url or "",
            status=response.status_code,
            request_headers=dict(req.headers),
            request_body=req.body,
            response_text=text,
        )
        with self._lock:
            self.exchanges.append(ex)
        return response

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)

    def matching(self, method: str, path_suffix: str) -> list[Exchange]:
        return [e for e in self.snapshot() if e.method == method and e.path.endswith(path_suffix)]

    def failures(self) -> list[Exchange]:
        return [e for e in self.snapshot() if e.status >= 400]

    def summary(self, limit: int = 25) -> str:
        ex = self.snapshot()
        failed = [e for e in ex if e.status >= 400]
        lines = [f"{len(ex)} exchanges, {len(failed)} failed"]
        lines += [f"  {e.method} {e.path} -> {e.status}" for e in ex[-limit:]]
        if failed:
            lines.append("failed exchanges:")
            lines += [e.describe() for e in failed[:5]]
        return "\n".join(lines)


def reset_sdk_env_caches() -> None:
    """The SDK memoises what it reads from the environment; forget it after changing env vars."""
    import langsmith.utils as ls_utils

    ls_utils.get_env_var.cache_clear()
    ls_utils.get_tracer_project.cache_clear()


def recorder_of(client: langsmith.Client) -> Recorder:
    """The Recorder hooked into a client's session by the `make_client` fixture."""
    for hook in client.session.hooks.get("response", []):
        owner = getattr(hook, "__self__", None)
        if isinstance(owner, Recorder):
            return owner
    raise AssertionError("this client was not built by make_client: no Recorder on its session")


def eventually(check: Callable[[], T], *, timeout: float = READ_TIMEOUT_S, interval: float = 0.25,
               client: Optional[langsmith.Client] = None, what: str = "") -> T:
    """Call `check` until it returns without raising (AssertionError or an SDK error); return
    its value. On timeout re-raise the last failure, with the client's HTTP log appended."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, langsmith.utils.LangSmithError, requests.RequestException) as e:
            if time.monotonic() >= deadline:
                extra = f"\n(polled {timeout:.0f}s{' for ' + what if what else ''})"
                if client is not None:
                    extra += "\n" + recorder_of(client).summary()
                raise AssertionError(f"{type(e).__name__}: {e}{extra}") from e
        time.sleep(interval)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def by_name(runs: Iterable[langsmith.schemas.Run]) -> dict[str, langsmith.schemas.Run]:
    out: dict[str, langsmith.schemas.Run] = {}
    for r in runs:
        assert r.name not in out, f"two runs named {r.name!r}"
        out[r.name] = r
    return out


def wait_for_project_runs(client: langsmith.Client, project: str, expected: int,
                          *, finished: bool = True, timeout: float = READ_TIMEOUT_S) -> list:
    """Poll list_runs until the project holds `expected` runs (all with end_time when
    `finished`), and return them."""

    def check() -> list:
        runs = list(client.list_runs(project_name=project))
        assert len(runs) == expected, f"expected {expected} runs in {project!r}, got {len(runs)}: {[r.name for r in runs]}"
        if finished:
            pending = [r.name for r in runs if r.end_time is None]
            assert not pending, f"runs without end_time yet: {pending}"
        return runs

    return eventually(check, timeout=timeout, client=client, what=f"{expected} runs in {project}")


def wait_for_compression(client: langsmith.Client, timeout: float = 10.0) -> None:
    """The tracing thread turns zstd on once it has read /info; wait for it so the first runs
    of a test really take the compressed path."""
    deadline = time.monotonic() + timeout
    while client.compressed_traces is None:
        if time.monotonic() > deadline:
            raise AssertionError(
                "the SDK did not switch to zstd-compressed multipart; /info was "
                f"{client.info.model_dump(mode='json')!r}\n{recorder_of(client).summary()}"
            )
        time.sleep(0.05)


def batch_info(server_url: str) -> dict:
    """The server's own /info with batch ingestion forced onto POST /runs/batch."""
    r = requests.get(f"{server_url}/info", headers={"x-api-key": API_KEY}, timeout=10)
    r.raise_for_status()
    info = copy.deepcopy(r.json())
    cfg = dict(DEFAULT_BATCH_INGEST_CONFIG)
    cfg.update(info.get("batch_ingest_config") or {})
    cfg["use_multipart_endpoint"] = False
    info["batch_ingest_config"] = cfg
    return info


def raw_json(client: langsmith.Client, method: str, path: str, **kwargs: Any) -> Any:
    """Call the server through the SDK's own session and URL rules; return the parsed JSON."""
    resp = client.request_with_retries(method, path, **kwargs)
    return resp.json()


def _merge_run(into: dict, fields: dict) -> None:
    for key, value in fields.items():
        if value is None:
            continue  # in a patch, null means "unchanged"
        if key == "extra" and isinstance(value, dict):
            extra = into.setdefault("extra", {})
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(extra.get(k), dict):
                    extra[k] = {**extra[k], **v}
                else:
                    extra[k] = v
        else:
            into[key] = value


def sent_runs(client: langsmith.Client) -> dict[str, dict]:
    """Every run the SDK sent through this client, by id, with its posts and patches merged in
    the order they were sent: what the server is expected to hold."""
    from email.parser import BytesParser

    runs: dict[str, dict] = {}
    for ex in recorder_of(client).snapshot():
        if ex.method not in ("POST", "PATCH") or ex.status >= 300:
            continue
        body = ex.body_bytes()
        if body is None:
            continue
        ops: list[tuple[str, dict]] = []
        if ex.path.endswith("/runs/multipart"):
            head = b"Content-Type: " + ex.request_headers["Content-Type"].encode() + b"\r\n\r\n"
            parts: dict[tuple[str, str], dict] = {}
            for part in BytesParser().parsebytes(head + body).get_payload():
                name = re.search(r'name="([^"]+)"', part["Content-Disposition"]).group(1)
                kind, _, rest = name.partition(".")
                if kind not in ("post", "patch"):
                    continue
                run_id, _, field = rest.partition(".")
                key = (kind, run_id)
                if key not in parts:
                    parts[key] = {}
                    ops.append((kind, parts[key]))
                value = json.loads(part.get_payload(decode=True))
                if field:
                    parts[key][field] = value
                else:
                    parts[key].update(value)
        elif ex.path.endswith("/runs/batch"):
            batch = json.loads(body)
            ops += [("post", r) for r in batch.get("post") or []]
            ops += [("patch", r) for r in batch.get("patch") or []]
        elif ex.path.endswith("/runs") and ex.method == "POST":
            ops.append(("post", json.loads(body)))
        elif re.search(r"/runs/[0-9a-f-]{36}$", ex.path) and ex.method == "PATCH":
            ops.append(("patch", json.loads(body)))
        for _, fields in ops:
            _merge_run(runs.setdefault(str(fields["id"]), {}), fields)
    return runs


def parse_time(value: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
