#!/usr/bin/env bash
# CPU campaign of the step gate (reports/cpu/steps/): tiny at the default settings, stages fp32 and
# bf16: one recording, unchanged reruns on a quiet machine and beside one busy process, then the
# per-step host fault (--perf-inject-step-delay) at 15 % of a step. Each run's JSON is kept, so the
# step statistics can be read back (tools/steps_summary.py). FAULT, the injection's option, may instead be
# --perf-inject-denoiser-delay (the same burn inside the denoiser's call; reports/cpu/denoiser/).
# Usage: tools/cpu_steps_noise.sh OUT QUIET BUSY [FAULT]
set -u
out=$1; quiet=${2:-5}; busy=${3:-3}; fault=${4:---perf-inject-step-delay}
store=$(mktemp -d)
mkdir -p "$out"
args=(perf --perf-stages=fp32,bf16 --perf-no-flops -p no:cacheprovider --benchmark-storage="file://$store" --perf-report=none)
run() {  # NAME ARGS...
  local name=$1; shift
  python -m pytest "${args[@]}" --benchmark-json="$out/$name.json" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? | $(tail -n 1 "$out/$name.log")"
}
run record --benchmark-save=base
for i in $(seq 1 "$quiet"); do run "quiet-$i" --benchmark-compare; done
for i in $(seq 1 "$busy"); do
  python -c "while True: pass" & hog=$!
  run "busy-$i" --benchmark-compare
  kill "$hog"
done
run inject-0.15 --benchmark-compare -p perf.inject "$fault=0.15"
rm -rf "$store"
