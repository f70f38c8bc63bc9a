#!/usr/bin/env bash
# Datasets benchmark: bulk example writes (POST /examples/bulk), then a streamed JSONL export
# of the whole dataset with the server's RSS sampled (flat memory), then an atomic import of
# that export into a new dataset; against `sextant serve` on embedded defaults with a
# throw-away data dir.
#
# Usage: bench/datasets.sh
# Knobs: EXAMPLES=1000000 BATCH=1000 CONNECTIONS=4 SKIP_BUILD=0 SEXTANT_BIN / LOADGEN_BIN
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXAMPLES="${EXAMPLES:-1000000}"
BATCH="${BATCH:-1000}"
CONNECTIONS="${CONNECTIONS:-4}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SEXTANT_BIN="${SEXTANT_BIN:-$TARGET_DIR/release/sextant}"
LOADGEN_BIN="${LOADGEN_BIN:-$TARGET_DIR/release/sextant-loadgen}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release -p sextant -p sextant-bench
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sextant-ds-bench.XXXXXX")"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
HTTP="$(port)"; GRPC="$(port)"
"$SEXTANT_BIN" serve --http "127.0.0.1:$HTTP" --grpc "127.0.0.1:$GRPC" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$LOADGEN_BIN" wait --url "http://127.0.0.1:$HTTP" --pid "$PID" --timeout 60s
"$LOADGEN_BIN" datasets --url "http://127.0.0.1:$HTTP" --examples "$EXAMPLES" --batch "$BATCH" --connections "$CONNECTIONS" --server-pid "$PID"
