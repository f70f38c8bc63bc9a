"""The README's Python quick start, run as written against a fresh server of its own.

The snippet is read from README.md (the ```sh block after "Python:" in "Quick start"); only the
port in `LANGSMITH_ENDPOINT` is changed to the test server's, and the `pip install` line is
skipped (the suite's venv already has that exact version, which this test checks). Run ten
times in a row on the same server: the run must show up every time, not most of the time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import langsmith
import pytest

REPO = Path(__file__).resolve().parents[2]


def quick_start_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start") :]
    m = re.search(r"Python:\s*\n\s*```sh\n(.*?)```", section, re.S)
    assert m, "README quick start has no Python ```sh block"
    return m.group(1)


def test_readme_names_the_tested_sdk_versions() -> None:
    block = quick_start_block()
    pinned = re.search(r"pip install langsmith==([0-9.]+)", block)
    assert pinned and pinned.group(1) == langsmith.__version__, (pinned, langsmith.__version__)
    readme = (REPO / "README.md").read_text()
    lock = (REPO / "tests" / "js" / "package.json").read_text()
    js = re.search(r'"langsmith": "([0-9.]+)"', lock)
    assert js and f"`langsmith` {js.group(1)} (npm)" in readme


def test_quick_start_prints_the_traced_run(private_server, tmp_path: Path) -> None:
    block = quick_start_block()
    with private_server() as (server, _make):
        port = server.url.rsplit(":", 1)[1]
        script = "\n".join(l for l in block.splitlines() if not l.startswith("pip install"))
        script = script.replace("http://127.0.0.1:1984", f"http://127.0.0.1:{port}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        for attempt in range(10):
            out = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, env=env, timeout=60)
            assert out.returncode == 0, out.stderr
            names = eval(out.stdout.strip().splitlines()[-1])  # the snippet prints a list literal
            assert names == ["answer"] * (attempt + 1), (attempt, out.stdout, out.stderr)
