#!/usr/bin/env bash
# Evaluators benchmark: rule evaluations per second for each rule type (one task), then LLM-judge
# calls per second at a given concurrency against the fake chat-completions endpoint of the
# evaluator's tests (a mock answering after a fixed latency, in the benchmark's process).
#
# Usage: bench/evaluators.sh
# Knobs: RULES=200000 JUDGE_CALLS=2000 CONCURRENCY=32 LATENCY_MS=20
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec cargo run --release -p sextant-evaluator --example bench_scorers -- \
  --rules "${RULES:-200000}" --judge-calls "${JUDGE_CALLS:-2000}" \
  --concurrency "${CONCURRENCY:-32}" --latency-ms "${LATENCY_MS:-20}"
