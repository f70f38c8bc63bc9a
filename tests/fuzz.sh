#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each (issue #16). Exits non-zero if
# a target crashes (panics), times out on one input, runs out of memory or does not build.
#
#   bash tests/fuzz.sh                  # every target, FUZZ_SECONDS each
#   bash tests/fuzz.sh filter events    # some targets
#
# 1. installs cargo-fuzz $CARGO_FUZZ_VERSION with `cargo install --locked` if it is missing
# 2. builds every target once (fuzz/target, its own target directory: the main build's lock is
#    never taken). Stable Rust: cargo-fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1 lets a
#    stable toolchain accept.
# 3. runs each target on its seeds (fuzz/corpus/<target>) and past crashes
#    (fuzz/regressions/<target>) for FUZZ_SECONDS; new inputs go to a scratch corpus, so the
#    committed corpus does not change. FUZZ_JOBS targets run at once (default: the cores).
# A crash is saved as fuzz/artifacts/<target>/crash-<sha1>; fuzz/README.md says how to
# minimise it and make it a regression test.
#
# Knobs: FUZZ_SECONDS (60), FUZZ_JOBS (nproc), FUZZ_SANITIZER (none; "address" for ASan, which
# builds and runs slower and only matters for unsafe and C code), FUZZ_CODEGEN_UNITS (16:
# faster builds, slightly slower runs), CARGO_FUZZ_VERSION.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_JOBS="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
FUZZ_CODEGEN_UNITS="${FUZZ_CODEGEN_UNITS:-16}"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ_DIR/target/$TRIPLE/release"
ALL_TARGETS=(multipart filter wire_run events)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

# The longest input each target is given: a little above its largest seed, small enough that
# the fuzzer spends its time on structure rather than on length.
max_len() {
    case "$1" in
        multipart) echo 16384 ;;
        filter) echo 2048 ;;
        wire_run) echo 8192 ;;
        events) echo 4096 ;;
        *) echo 4096 ;;
    esac
}

export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" || {
        echo "fuzz: cannot install cargo-fuzz" >&2
        echo "fuzz: 0 passed, ${#TARGETS[@]} failed"
        exit 1
    }
fi

echo "==> cargo fuzz build (sanitizer: $FUZZ_SANITIZER, codegen units: $FUZZ_CODEGEN_UNITS)"
start=$SECONDS
if ! (cd "$FUZZ_DIR" && cargo fuzz build --sanitizer "$FUZZ_SANITIZER" --codegen-units "$FUZZ_CODEGEN_UNITS"); then
    echo "fuzz: the targets do not build" >&2
    echo "fuzz: 0 passed, ${#TARGETS[@]} failed"
    exit 1
fi
echo "built in $((SECONDS - start)) s"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

run_target() { # run_target NAME: fuzzes one target; its exit code goes to $WORK/NAME.rc
    local t="$1" rc
    mkdir -p "$WORK/corpus-$t" "$FUZZ_DIR/artifacts/$t"
    local dirs=("$WORK/corpus-$t" "$FUZZ_DIR/corpus/$t")
    [ -d "$FUZZ_DIR/regressions/$t" ] && dirs+=("$FUZZ_DIR/regressions/$t")
    # The outer timeout only catches a fuzzer that hangs outside an input (libFuzzer's own
    # -timeout catches slow inputs).
    ASAN_OPTIONS="detect_odr_violation=0:${ASAN_OPTIONS:-}" timeout --kill-after=10 "$((FUZZ_SECONDS + 120))" \
        "$BIN_DIR/$t" -max_total_time="$FUZZ_SECONDS" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/artifacts/$t/" "${dirs[@]}" >"$WORK/$t.log" 2>&1
    rc=$?
    echo "$rc" >"$WORK/$t.rc"
}

echo "==> fuzzing ${TARGETS[*]} for ${FUZZ_SECONDS} s each, $FUZZ_JOBS at a time"
running=0
for t in "${TARGETS[@]}"; do
    if [ ! -x "$BIN_DIR/$t" ]; then
        echo "no fuzz target $t" >"$WORK/$t.log"
        echo 1 >"$WORK/$t.rc"
        continue
    fi
    run_target "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$FUZZ_JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

passed=0
failed=0
for t in "${TARGETS[@]}"; do
    rc="$(cat "$WORK/$t.rc" 2>/dev/null || echo 1)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$t.log" | tail -n1)"
    corpus="$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$WORK/$t.log" | tail -n1)"
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        printf '  %-10s ok      %s executions in %s s (%s)\n' "$t" "${execs:-?}" "$FUZZ_SECONDS" "${corpus:-?}"
    else
        failed=$((failed + 1))
        printf '  %-10s FAILED  exit %s after %s executions\n' "$t" "$rc" "${execs:-?}"
        # The panic and its message, libFuzzer's verdict and where the input was saved.
        grep -m1 -A3 "panicked at" "$WORK/$t.log" | sed 's/^/      /'
        grep -E "^==[0-9]+== ERROR|^SUMMARY|Test unit written|^Base64" "$WORK/$t.log" | head -n 6 | sed 's/^/      /'
        cp "$WORK/$t.log" "$FUZZ_DIR/artifacts/$t/last-run.log" 2>/dev/null
        echo "      --- end of the log (all of it: fuzz/artifacts/$t/last-run.log) ---"
        tail -n 25 "$WORK/$t.log" | sed 's/^/      /'
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
