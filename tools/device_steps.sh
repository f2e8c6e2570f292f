#!/usr/bin/env bash
# The GPU campaign of the step gate (reports/h200/steps/), from the repository root on a fresh
# machine. Part "stored": sd15 sdpa,cudagraphs recorded with step timing, two unchanged reruns
# (the first saved, as history), then the per-step host fault at 10 % of each stage's fastest
# step. Part "ab": the same fault in A/B, then an A/A. $OUT receives logs, JSON and stored runs.
set -u
out=${OUT:-/tmp/diffusers-perf-out}
mkdir -p "$out"
stages=--perf-stages=sdpa,cudagraphs
common=(--perf-no-flops -p no:cacheprovider)
run() {  # NAME SECONDS ARGS...
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 -m pytest perf "${common[@]}" "$@" > "$out/$name.log" 2>&1
  echo "exit status $?" >> "$out/$name.log"
  echo "$name: $(tail -n 2 "$out/$name.log" | head -n 1)"
}
case "${1:-stored}" in
  stored)
    run record 200 "$stages" --benchmark-save=h200 --perf-report=none
    run rerun1 120 "$stages" --benchmark-compare --benchmark-save=h200 --perf-report=none
    run rerun2 120 "$stages" --benchmark-compare --perf-report="$out/rerun2.md"
    run inject 120 "$stages" --benchmark-compare -p perf.inject --perf-inject-step-delay=0.10 --perf-report=none \
      --benchmark-json="$out/inject.json"
    cp baselines/NVIDIA_H200*/000[3-9]_h200.json "$out/" 2>/dev/null ;;
  ab)  # then the stored fault again, against the runs part "stored" recorded (committed beside the others)
    run ab-inject 260 "$stages" -k test_ab --perf-reference-python=python3 -p perf.inject --perf-inject-step-delay=0.10 \
      --benchmark-json="$out/ab-inject.json" --perf-report=none
    run ab-aa 140 --perf-stages=sdpa -k test_ab --perf-reference-python=python3 --benchmark-json="$out/ab-aa.json" \
      --perf-report=none
    run inject 120 "$stages" --benchmark-compare -p perf.inject --perf-inject-step-delay=0.10 --perf-report=none \
      --benchmark-json="$out/inject.json" ;;
esac
exit 0
