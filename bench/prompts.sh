#!/usr/bin/env bash
# Prompt-hub benchmark: pulls per second (closed loop over N keep-alive connections) by full
# commit hash, by 8-character hash, by tag, and revalidated with If-None-Match (304), against
# a release build of `sextant serve` on embedded defaults with a throw-away data dir.
#
# Usage: bench/prompts.sh
# Knobs: DURATION=10s (per phase) CONNECTIONS=16 PROMPTS=20 COMMITS=10 PHASES=hash,short,tag,etag
#        LOADGEN_THREADS=1 SKIP_BUILD=0 SEXTANT_BIN / LOADGEN_BIN
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-16}"
PROMPTS="${PROMPTS:-20}"
COMMITS="${COMMITS:-10}"
PHASES="${PHASES:-hash,short,tag,etag}"
LOADGEN_THREADS="${LOADGEN_THREADS:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SEXTANT_BIN="${SEXTANT_BIN:-$TARGET_DIR/release/sextant}"
LOADGEN_BIN="${LOADGEN_BIN:-$TARGET_DIR/release/sextant-loadgen}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release -p sextant -p sextant-bench
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sextant-prompt-bench.XXXXXX")"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
HTTP="$(port)"; GRPC="$(port)"
"$SEXTANT_BIN" serve --http "127.0.0.1:$HTTP" --grpc "127.0.0.1:$GRPC" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$LOADGEN_BIN" wait --url "http://127.0.0.1:$HTTP" --pid "$PID" --timeout 60s
"$LOADGEN_BIN" prompts --url "http://127.0.0.1:$HTTP" --connections "$CONNECTIONS" --duration "$DURATION" \
  --prompts "$PROMPTS" --commits "$COMMITS" --phases "$PHASES" --threads "$LOADGEN_THREADS" --server-pid "$PID"
