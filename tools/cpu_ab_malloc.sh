#!/usr/bin/env bash
# A/A and a 15 % step fault in A/B on CPU, tiny at its defaults, stages fp32 and bf16.
#   tools/cpu_ab_malloc.sh [OUT [AA [FAULTS]]]   (defaults: /tmp/camp/ab 6 2, reports/cpu/malloc/ab/;
#   reports/cpu/loop/ab/ is `tools/cpu_ab_malloc.sh /tmp/abloop 4 1`)
# Run from the repository root with its venv active; prints each run's last line, writes OUT/DONE.
out=${1:-/tmp/camp/ab}; aa=${2:-6}; faults=${3:-2}
cd "$(dirname "$0")/.." && mkdir -p "$out"
run() {  # NAME ARGS...
  local name=$1; shift
  timeout 600 python -m pytest perf -p no:cacheprovider --perf-stages=fp32,bf16 --perf-no-flops --perf-report=none \
    --perf-reference-python="$(which python)" --benchmark-json="$out/$name.json" "$@" > "$out/$name.log" 2>&1
  echo "$name: $(tail -n 1 "$out/$name.log")"
}
for i in $(seq 1 "$aa"); do run "aa-$i"; done
for i in $(seq 1 "$faults"); do run "fault-$i" -p perf.inject --perf-inject-step-delay=0.15; done
echo done > "$out/DONE"
