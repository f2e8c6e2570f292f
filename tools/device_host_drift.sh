#!/usr/bin/env bash
# The host-drift probe on a GPU machine (reports/h200/host-drift/): tools/probe_host_drift.py in
# fresh processes, three variants interleaved: as the suite runs today (unpinned, randomized
# layout), the main thread pinned to the last allowed CPU, and pinned without address-space
# randomization (setarch -R). Usage: tools/device_host_drift.sh PIPELINE STAGE ROUNDS REPEATS
set -u
out=${OUT:-/tmp/diffusers-perf-out}
mkdir -p "$out"
pipeline=${1:-sd15}; stage=${2:-sdpa}; rounds=${3:-6}; repeats=${4:-3}
last=$(python3 -c "import os; print(max(os.sched_getaffinity(0)))")
probe=(python3 tools/probe_host_drift.py --pipeline "$pipeline" --stage "$stage" --rounds "$rounds")
for i in $(seq 1 "$repeats"); do
  "${probe[@]}" --tag default 2>>"$out/host-drift.err"
  "${probe[@]}" --tag pinned --pin "$last" 2>>"$out/host-drift.err"
  setarch -R "${probe[@]}" --tag pinned-fixed --pin "$last" 2>>"$out/host-drift.err"
done | tee "$out/host-drift.jsonl"
python3 tools/probe_host_drift_summary.py "$out/host-drift.jsonl" | tee "$out/host-drift.txt"
