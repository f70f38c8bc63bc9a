#!/usr/bin/env bash
# Ingestion + query benchmark for Sextant.
#
# Builds `sextant` and `sextant-loadgen` (release), starts `sextant serve` on free ports with a
# throw-away data dir, waits for GET /readyz, then:
#   1. a timed ingest for each mode (multipart, multipart-zstd, batch), each against a fresh server;
#   2. an ingest of BIG_RUNS (1,000,000) runs against a fresh server, followed by the
#      `POST /runs/query` benchmark on that data;
# prints every figure and kills the server.
#
# Usage: bench/ingest.sh            (from anywhere; paths are relative to the repo)
# Knobs (environment):
#   DURATION=30s  CONNECTIONS=64  RUNS_PER_REQUEST=100  TRACE_SIZE=10  RUN_BYTES=1500
#   MODES="multipart multipart-zstd batch"   (empty: skip the timed runs)
#   BIG_RUNS=1000000  BIG_MODE=multipart-zstd  BIG_CONNECTIONS=$CONNECTIONS   (BIG_RUNS=0: skip)
#   QUERY_ITERATIONS=200  QUERY_LIMIT=100  QUERY_FILTERS=""  (';'-separated; default: built-in set)
#   LOADGEN_THREADS=1  POOL_MB=512  SPLIT_FRACTION=0.2  ERROR_RATE=0.03  API_KEY=bench
#   FRESH_SERVER=1      (0: one server for everything; the modes then share one store)
#   SKIP_BUILD=0        SEXTANT_BIN / LOADGEN_BIN  (use prebuilt binaries)
#   HTTP_PORT / GRPC_PORT (default: free ports)  READY_TIMEOUT=60s  SERVER_ARGS=""  (extra args)
#   KEEP_DATA=0         (1: keep the data dirs and server logs)
#   RESULTS_FILE=       (also append the RESULT JSON lines there)
#   RATE=0              (offered runs/s; 0: closed loop, as fast as CONNECTIONS allow. With a
#                        rate, latency counts from each request's scheduled time)
#   BUS=in_process      (jetstream: each server publishes through a private nats-server with
#                        file storage, started here on a free port; NATS_SERVER=path overrides)
# Each ingest also reports the server's own histograms over its timed phase (two scrapes of
# /metrics, differenced): projection lag of every event (publish -> applied and durable,
# sextant_projection_lag_seconds), bus publish and backpressure waits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-30s}"
CONNECTIONS="${CONNECTIONS:-64}"
RUNS_PER_REQUEST="${RUNS_PER_REQUEST:-100}"
TRACE_SIZE="${TRACE_SIZE:-10}"
RUN_BYTES="${RUN_BYTES:-1500}"
MODES="${MODES-multipart multipart-zstd batch}"
BIG_RUNS="${BIG_RUNS:-1000000}"
BIG_MODE="${BIG_MODE:-multipart-zstd}"
BIG_CONNECTIONS="${BIG_CONNECTIONS:-$CONNECTIONS}"
QUERY_ITERATIONS="${QUERY_ITERATIONS:-200}"
QUERY_LIMIT="${QUERY_LIMIT:-100}"
QUERY_FILTERS="${QUERY_FILTERS:-}"
LOADGEN_THREADS="${LOADGEN_THREADS:-1}"
POOL_MB="${POOL_MB:-512}"
SPLIT_FRACTION="${SPLIT_FRACTION:-0.2}"
ERROR_RATE="${ERROR_RATE:-0.03}"
API_KEY="${API_KEY:-bench}"
FRESH_SERVER="${FRESH_SERVER:-1}"
SKIP_BUILD="${SKIP_BUILD:-0}"
READY_TIMEOUT="${READY_TIMEOUT:-60s}"
SERVER_ARGS="${SERVER_ARGS:-}"
KEEP_DATA="${KEEP_DATA:-0}"
RESULTS_FILE="${RESULTS_FILE:-}"
BUS="${BUS:-in_process}"
NATS_SERVER="${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
NATS_PID=""

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
SEXTANT_BIN="${SEXTANT_BIN:-$TARGET_DIR/release/sextant}"
LOADGEN_BIN="${LOADGEN_BIN:-$TARGET_DIR/release/sextant-loadgen}"

log() { printf '\n=== %s\n' "$*" >&2; }

if [[ "$SKIP_BUILD" != 1 ]]; then
  log "cargo build --release -p sextant -p sextant-bench"
  cargo build --release -p sextant -p sextant-bench
fi
for b in "$SEXTANT_BIN" "$LOADGEN_BIN"; do
  [[ -x "$b" ]] || { echo "missing binary: $b" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sextant-bench.XXXXXX")"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
SERVER_PID=""
SERVER_N=0

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return
    fi
  done
  echo "no free port found" >&2; return 1
}

stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server $SERVER_PID did not stop after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

stop_nats() {
  if [[ -n "$NATS_PID" ]]; then kill -TERM "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; fi
  NATS_PID=""
}

# A private nats-server with JetStream file storage for one server's run.
start_nats() {
  local dir="$1" port
  port="$(free_port)"
  "$NATS_SERVER" -a 127.0.0.1 -p "$port" -js -sd "$dir/nats" -l "$dir/nats.log" &
  NATS_PID=$!
  for _ in $(seq 1 100); do grep -q "Server is ready" "$dir/nats.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "Server is ready" "$dir/nats.log" || { echo "nats-server did not start" >&2; cat "$dir/nats.log" >&2; exit 1; }
  printf '[bus]\nkind = "jetstream"\nservers = ["nats://127.0.0.1:%s"]\n' "$port" >"$dir/sextant.toml"
  log "nats-server pid $NATS_PID on port $port (file storage in $dir/nats)"
}

cleanup() {
  local rc=$?
  stop_server
  stop_nats
  if [[ -s "$RESULTS" && -n "$RESULTS_FILE" ]]; then cat "$RESULTS" >>"$RESULTS_FILE"; fi
  if [[ "$KEEP_DATA" == 1 || $rc -ne 0 ]]; then
    echo "work dir kept: $WORK (server logs: $WORK/server-*.log)" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {
  SERVER_N=$((SERVER_N + 1))
  local data="$WORK/data-$SERVER_N"
  mkdir -p "$data"
  local http_port="${HTTP_PORT:-$(free_port)}"
  local grpc_port="${GRPC_PORT:-$(free_port)}"
  while [[ "$grpc_port" == "$http_port" ]]; do grpc_port="$(free_port)"; done
  URL="http://127.0.0.1:$http_port"
  SERVER_LOG="$WORK/server-$SERVER_N.log"
  local config_args=()
  if [[ "$BUS" == jetstream ]]; then stop_nats; start_nats "$data"; config_args=(--config "$data/sextant.toml"); fi
  # shellcheck disable=SC2086
  "$SEXTANT_BIN" serve --http "127.0.0.1:$http_port" --grpc "127.0.0.1:$grpc_port" \
    --data-dir "$data" "${config_args[@]}" $SERVER_ARGS >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  log "server #$SERVER_N pid $SERVER_PID on $URL (grpc $grpc_port), data $data"
  if ! "$LOADGEN_BIN" wait --url "$URL" --pid "$SERVER_PID" --timeout "$READY_TIMEOUT"; then
    echo "--- server log (tail):" >&2
    tail -n 50 "$SERVER_LOG" >&2 || true
    exit 1
  fi
}

check_server() {
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "server $SERVER_PID died; log tail:" >&2
    tail -n 50 "$SERVER_LOG" >&2 || true
    exit 1
  fi
}

FAILED=()
# Runs the load generator, shows its output, keeps its RESULT line. A failing step is
# recorded (the script exits non-zero at the end) but does not stop the others.
loadgen() {
  local out="$WORK/loadgen.out" rc=0
  "$LOADGEN_BIN" "$@" | tee "$out" || rc=$?
  grep '^RESULT ' "$out" | sed 's/^RESULT //' | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    r["bus"] = sys.argv[1]
    print(json.dumps(r))' "$BUS" >>"$RESULTS" || true
  if [[ $rc -ne 0 ]]; then FAILED+=("$1 ${*:2:4} (exit $rc)"); fi
  check_server
}

common=(--rate "${RATE:-0}" --api-key "$API_KEY" --runs-per-request "$RUNS_PER_REQUEST" --trace-size "$TRACE_SIZE"
        --run-bytes "$RUN_BYTES" --threads "$LOADGEN_THREADS" --pool-mb "$POOL_MB"
        --split-fraction "$SPLIT_FRACTION" --error-rate "$ERROR_RATE")

for mode in $MODES; do
  if [[ "$FRESH_SERVER" == 1 || -z "$SERVER_PID" ]]; then stop_server; start_server; fi
  log "ingest: mode=$mode duration=$DURATION connections=$CONNECTIONS"
  loadgen ingest --url "$URL" --mode "$mode" --duration "$DURATION" --connections "$CONNECTIONS" \
    --server-pid "$SERVER_PID" --project "bench-$mode" "${common[@]}"
done

if [[ "$BIG_RUNS" != 0 ]]; then
  if [[ "$FRESH_SERVER" == 1 || -z "$SERVER_PID" ]]; then stop_server; start_server; fi
  log "ingest: $BIG_RUNS runs, mode=$BIG_MODE connections=$BIG_CONNECTIONS"
  loadgen ingest --url "$URL" --mode "$BIG_MODE" --runs "$BIG_RUNS" --connections "$BIG_CONNECTIONS" \
    --server-pid "$SERVER_PID" --project bench-big "${common[@]}"
  log "data dir size after the big ingest: $(du -sh "$WORK/data-$SERVER_N" 2>/dev/null | cut -f1)"

  qargs=(--url "$URL" --api-key "$API_KEY" --project bench-big --iterations "$QUERY_ITERATIONS" --limit "$QUERY_LIMIT")
  if [[ -n "$QUERY_FILTERS" ]]; then
    IFS=';' read -r -a filters <<<"$QUERY_FILTERS"
    for f in "${filters[@]}"; do qargs+=(--filter "$f"); done
  fi
  log "query benchmark: $QUERY_ITERATIONS iterations per filter, limit $QUERY_LIMIT"
  loadgen query "${qargs[@]}"
fi

stop_server

log "summary"
if command -v python3 >/dev/null 2>&1; then
  python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    if r.get("kind") == "ingest":
        lat = r["ack_latency_ms"]; q = r.get("queryable") or {}
        rss = r.get("server_rss_peak_kb")
        print(f'ingest {r["mode"]:<15} {r["runs_acked"]:>9} runs in {r["elapsed_s"]:>7.1f}s '
              f'{r["runs_per_s"]:>9.0f} runs/s {r["requests_per_s"]:>7.1f} req/s '
              f'{r["wire_bytes_per_s"]/1048576:>7.1f} MiB/s  ack p50/p99/max '
              f'{lat.get("p50", 0):.1f}/{lat.get("p99", 0):.1f}/{lat.get("max", 0):.1f} ms  '
              f'queryable {q.get("ms")} ms  non-2xx {r["non_2xx"] or 0}  '
              f'rss peak {rss/1024 if rss else 0:.0f} MiB  server cpu {r.get("server_cpu_s")}s  bus {r.get("bus")}')
        lag = r.get("projection_lag_s")
        if lag and lag.get("p99") is not None:
            within = lag.get("within", {})
            print(f'       projection lag (publish -> applied and durable; every event of the run) p50 {lag["p50"]*1000:.0f} ms  '
                  f'p99 {lag["p99"]*1000:.0f} ms  within 2 s {within.get("2", 0)*100:.2f}%  ({lag["count"]:.0f} events)')
    elif r.get("kind") == "query":
        for f in r["filters"]:
            lat = f["latency_ms"]
            print(f'query  {f["label"]:<15} p50 {lat.get("p50", float("nan")):>8.2f} ms  p99 {lat.get("p99", float("nan")):>8.2f} ms  '
                  f'results {f["results_min"]}..{f["results_max"]}  non-2xx {f["non_2xx"] or 0}  errors {f["errors"]}')
PY
fi
echo
echo "RESULT lines:"
sed 's/^/RESULT /' "$RESULTS"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf 'FAILED step: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
