#!/usr/bin/env bash
# Feedback benchmark: POST /feedback throughput (closed loop) and the time until every
# acknowledged entry counts in the project's feedback_stats, against `sextant serve` on
# embedded defaults with a throw-away data dir.
#
# Usage: bench/feedback.sh
# Knobs: DURATION=20s CONNECTIONS=16 RUNS=1000 SKIP_BUILD=0 SEXTANT_BIN / LOADGEN_BIN
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-20s}"
CONNECTIONS="${CONNECTIONS:-16}"
RUNS="${RUNS:-1000}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SEXTANT_BIN="${SEXTANT_BIN:-$TARGET_DIR/release/sextant}"
LOADGEN_BIN="${LOADGEN_BIN:-$TARGET_DIR/release/sextant-loadgen}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release -p sextant -p sextant-bench
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sextant-fb-bench.XXXXXX")"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
HTTP="$(port)"; GRPC="$(port)"
"$SEXTANT_BIN" serve --http "127.0.0.1:$HTTP" --grpc "127.0.0.1:$GRPC" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$LOADGEN_BIN" wait --url "http://127.0.0.1:$HTTP" --pid "$PID" --timeout 60s
"$LOADGEN_BIN" feedback --url "http://127.0.0.1:$HTTP" --connections "$CONNECTIONS" --duration "$DURATION" --runs "$RUNS" --server-pid "$PID"
