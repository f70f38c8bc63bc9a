#!/usr/bin/env bash
# The project's test command. On a fresh Debian 12 machine (run as root) it installs what the
# suites need, then runs them all:
#
#   1. system packages: nats-server (Rust tests of the bus start a private one), python3-venv
#   2. .venv at the repo root with tests/python/requirements.txt (reinstalled only when that
#      file changes: a hash stamp is kept in .venv)
#   3. cargo build -p sextant
#   4. cargo test --workspace            (extra arguments: CARGO_TEST_ARGS="...")
#   4b. bash tests/fuzz.sh                (cargo-fuzz targets, FUZZ_SECONDS=60 each; SKIP_FUZZ=1 skips)
#   5. pytest tests/python -q            (extra arguments: PYTEST_ARGS="..."; the server binary
#                                         is the one just built, passed as SEXTANT_BIN)
#   6. node --test tests/js               (the npm `langsmith` SDK, pinned by tests/js/package-lock.json
#                                         and installed with `npm ci` when the lockfile changes)
#
# Every step runs even if an earlier test step failed (a failed build skips pytest, which needs
# the binary); the script ends with a summary and exits non-zero if anything failed.
# Re-runs are fast: nothing is installed again, cargo builds incrementally.
#
# Knobs: SKIP_RUST=1 skips step 4, SKIP_PYTHON=1 skips step 5, SKIP_JS=1 skips step 6,
# PYTEST_TIMEOUT (seconds, 1800), JS_TIMEOUT (seconds, 900).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
REQS="$ROOT/tests/python/requirements.txt"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SEXTANT_BIN_BUILT="$TARGET_DIR/debug/sextant"

SUMMARY=()
FAILED=0
LOGDIR="$(mktemp -d)"
trap 'rm -rf "$LOGDIR"' EXIT
# Test counts over both runners, for the closing "total: N passed, N failed" line.
T_PASSED=0
T_FAILED=0
T_SKIPPED=0
count_cargo() { # count_cargo LOG: add up cargo's "test result:" lines
    local p f i
    while read -r p f i; do
        T_PASSED=$((T_PASSED + p)); T_FAILED=$((T_FAILED + f)); T_SKIPPED=$((T_SKIPPED + i))
    done < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$1")
}
count_pytest() { # count_pytest LOG: read pytest's closing line ("3 failed, 52 passed, 1 skipped in 3s")
    local line n
    line="$(grep -E '^=* ?[0-9]+ (passed|failed|error|errors|skipped|deselected)' "$1" | tail -n1)"
    n="$(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1)"; T_PASSED=$((T_PASSED + ${n:-0}))
    n="$(grep -oE '[0-9]+ failed' <<<"$line" | cut -d' ' -f1)"; T_FAILED=$((T_FAILED + ${n:-0}))
    n="$(grep -oE '[0-9]+ errors?' <<<"$line" | cut -d' ' -f1)"; T_FAILED=$((T_FAILED + ${n:-0}))
    n="$(grep -oE '[0-9]+ skipped' <<<"$line" | cut -d' ' -f1)"; T_SKIPPED=$((T_SKIPPED + ${n:-0}))
}
count_node() { # count_node LOG: read node --test's TAP summary ("# pass 5", "# fail 0", "# skipped 1")
    local n
    n="$(sed -nE 's/^# pass ([0-9]+)$/\1/p' "$1" | tail -n1)"; T_PASSED=$((T_PASSED + ${n:-0}))
    n="$(sed -nE 's/^# fail ([0-9]+)$/\1/p' "$1" | tail -n1)"; T_FAILED=$((T_FAILED + ${n:-0}))
    n="$(sed -nE 's/^# skipped ([0-9]+)$/\1/p' "$1" | tail -n1)"; T_SKIPPED=$((T_SKIPPED + ${n:-0}))
}
count_fuzz() { # count_fuzz LOG: read tests/fuzz.sh's closing "fuzz: N passed, N failed" line
    local p f
    read -r p f < <(sed -nE 's/^fuzz: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$1" | tail -n1)
    T_PASSED=$((T_PASSED + ${p:-0})); T_FAILED=$((T_FAILED + ${f:-0}))
}
note() { printf '\n==> %s\n' "$*"; }
record() { # record NAME STATUS
    SUMMARY+=("$(printf '%-14s %s' "$1" "$2")")
    case "$2" in ok* | skipped*) ;; *) FAILED=1 ;; esac
}
finish() {
    printf '\n==================== run-all summary ====================\n'
    for line in "${SUMMARY[@]}"; do printf '  %s\n' "$line"; done
    if [ "$FAILED" -eq 0 ]; then
        printf '  result: all steps passed\n'
    else
        printf '  result: FAILED\n'
    fi
    printf 'total: %d passed, %d failed, %d skipped\n' "$T_PASSED" "$T_FAILED" "$T_SKIPPED"
    exit "$FAILED"
}

# ---------------------------------------------------------------------------------------------
# 1. system packages
# ---------------------------------------------------------------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "apt-get not found: install $* by hand" >&2
        return 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

setup_system() {
    if ! command -v nats-server >/dev/null 2>&1; then
        note "installing nats-server"
        apt_install nats-server || return 1
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        note "installing python3"
        apt_install python3 python3-venv || return 1
    fi
    # `python3 -m venv` needs ensurepip, which Debian ships separately in python3-venv.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        note "installing python3-venv"
        apt_install python3-venv || return 1
    fi
    if [ "${SKIP_JS:-0}" != 1 ] && ! command -v npm >/dev/null 2>&1; then
        note "installing nodejs and npm"
        apt_install nodejs npm || return 1
    fi
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "python3 is $(python3 --version 2>&1); the langsmith SDK needs >= 3.11" >&2
        return 1
    }
}

setup_venv() {
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        note "the existing .venv is broken (its python moved?): recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        note "creating .venv"
        python3 -m venv "$VENV" || return 1
    fi
    local want have stamp="$VENV/.requirements.sha256"
    want="$( (cat "$REQS"; "$VENV/bin/python" --version) | sha256sum | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        note "installing tests/python/requirements.txt into .venv"
        rm -f "$stamp"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQS" || return 1
        echo "$want" >"$stamp"
    fi
}

setup_js() { # npm ci in tests/js when its lockfile (or node's version) changed
    [ "${SKIP_JS:-0}" = 1 ] && return 0
    local dir="$ROOT/tests/js" want have stamp="$ROOT/tests/js/node_modules/.package-lock.sha256"
    want="$( (cat "$dir/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        note "npm ci in tests/js"
        (cd "$dir" && npm ci --no-audit --no-fund) || return 1
        echo "$want" >"$stamp"
    fi
}

note "setup: system packages, .venv and tests/js/node_modules"
if setup_system && setup_venv && setup_js; then
    record "setup" "ok"
else
    record "setup" "FAILED"
    finish
fi
echo "$(nats-server --version 2>&1 | head -n1)"
echo "python: $("$VENV/bin/python" --version 2>&1), langsmith $("$VENV/bin/python" -c 'import langsmith; print(langsmith.__version__)' 2>&1)"

# ---------------------------------------------------------------------------------------------
# 2. Rust: build the server, run the workspace tests
# ---------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found on PATH" >&2
    record "cargo build" "FAILED (no cargo)"
    finish
fi

BUILD_OK=0
note "cargo build -p sextant"
if cargo build -p sextant; then
    BUILD_OK=1
    record "cargo build" "ok"
else
    record "cargo build" "FAILED (exit $?)"
fi

if [ "${SKIP_RUST:-0}" = 1 ]; then
    record "cargo test" "skipped (SKIP_RUST=1)"
else
    note "cargo test --workspace ${CARGO_TEST_ARGS:-}"
    eval "CARGO_EXTRA=(${CARGO_TEST_ARGS:-})" # shell words, quotes allowed
    cargo test --workspace "${CARGO_EXTRA[@]}" 2>&1 | tee "$LOGDIR/cargo-test.log"
    rc=${PIPESTATUS[0]}
    count_cargo "$LOGDIR/cargo-test.log"
    if [ "$rc" -eq 0 ]; then
        record "cargo test" "ok"
    else
        record "cargo test" "FAILED (exit $rc)"
    fi
fi

if [ "${SKIP_FUZZ:-0}" = 1 ]; then
    record "fuzz" "skipped (SKIP_FUZZ=1)"
else
    note "tests/fuzz.sh (FUZZ_SECONDS=${FUZZ_SECONDS:-60} per target)"
    bash "$ROOT/tests/fuzz.sh" 2>&1 | tee "$LOGDIR/fuzz.log"
    rc=${PIPESTATUS[0]}
    count_fuzz "$LOGDIR/fuzz.log"
    if [ "$rc" -eq 0 ]; then record "fuzz" "ok"; else record "fuzz" "FAILED (exit $rc)"; fi
fi

# ---------------------------------------------------------------------------------------------
# 3. Python: the official langsmith SDK against the real server
# ---------------------------------------------------------------------------------------------
if [ "${SKIP_PYTHON:-0}" = 1 ]; then
    record "pytest" "skipped (SKIP_PYTHON=1)"
elif [ "$BUILD_OK" -ne 1 ]; then
    record "pytest" "FAILED (not run: the server did not build)"
elif [ ! -x "$SEXTANT_BIN_BUILT" ]; then
    record "pytest" "FAILED (not run: no server binary at $SEXTANT_BIN_BUILT)"
else
    note "pytest tests/python -q ${PYTEST_ARGS:-}"
    eval "PYTEST_EXTRA=(${PYTEST_ARGS:-})" # shell words, quotes allowed
    SEXTANT_BIN="$SEXTANT_BIN_BUILT" timeout --kill-after=30 "${PYTEST_TIMEOUT:-1800}" \
        "$VENV/bin/python" -m pytest tests/python -q -p no:cacheprovider "${PYTEST_EXTRA[@]}" </dev/null 2>&1 |
        tee "$LOGDIR/pytest.log"
    rc=${PIPESTATUS[0]}
    count_pytest "$LOGDIR/pytest.log"
    case "$rc" in
        0) record "pytest" "ok" ;;
        5) record "pytest" "ok (no tests collected)" ;;
        124) record "pytest" "FAILED (timed out after ${PYTEST_TIMEOUT:-1800}s)" ;;
        *) record "pytest" "FAILED (exit $rc)" ;;
    esac
fi

# ---------------------------------------------------------------------------------------------
# 4. JS/TS: the official langsmith npm package against the real server
# ---------------------------------------------------------------------------------------------
if [ "${SKIP_JS:-0}" = 1 ]; then
    record "node --test" "skipped (SKIP_JS=1)"
elif [ "$BUILD_OK" -ne 1 ] || [ ! -x "$SEXTANT_BIN_BUILT" ]; then
    record "node --test" "FAILED (not run: no server binary)"
else
    note "node --test tests/js ($(node --version), langsmith $(node -p 'require("./tests/js/node_modules/langsmith/package.json").version' 2>&1))"
    (cd "$ROOT/tests/js" && SEXTANT_BIN="$SEXTANT_BIN_BUILT" timeout --kill-after=30 "${JS_TIMEOUT:-900}" \
        node --test --test-reporter=tap --test-concurrency=1 --test-timeout=120000 ./*.test.mjs </dev/null) 2>&1 |
        tee "$LOGDIR/node.log"
    rc=${PIPESTATUS[0]}
    count_node "$LOGDIR/node.log"
    case "$rc" in
        0) record "node --test" "ok" ;;
        124) record "node --test" "FAILED (timed out after ${JS_TIMEOUT:-900}s)" ;;
        *) record "node --test" "FAILED (exit $rc)" ;;
    esac
fi

finish
