#!/usr/bin/env bash
# `pytest perf -n 1` against a serial run of the same stages, on one GPU, in one device command
# (reports/h200/xdist/). Run from the repository root after installing the carried wheels
# (diffusers, pytest-xdist, execnet); $OUT receives one archive with every log and JSON.
#
#   tools/device_xdist.sh NAME STAGES [PYTEST-ARGS...]
#
# Order: serial, then -n 1, both with --benchmark-compare and the same compile cache (the serial run
# fills it on a fresh machine), then the refusal of -n 2. With SAVE=NAME the serial run is also
# saved (--benchmark-save, kept only if it passes), so the -n 1 run compares with it too.
set -u
name=$1; stages=$2; shift 2
out=${OUT:-/tmp/diffusers-perf-out}
work=/tmp/$name
mkdir -p "$out" "$work" compile-cache
before=$(ls baselines/*/ 2>/dev/null | sort)
for mode in serial n1; do
  start=$(date +%s)
  args=(); [ "$mode" = n1 ] && args=(-n 1)
  [ "$mode" = serial ] && [ -n "${SAVE:-}" ] && args=(--benchmark-save="$SAVE")
  python3 -m pytest perf "${args[@]}" -p no:cacheprovider --perf-pipeline=sd15 --perf-stages="$stages" \
    --perf-compile-cache=compile-cache --benchmark-compare --benchmark-json="$work/$mode.json" \
    --perf-report="$work/$mode.md" "$@" > "$work/$mode.log" 2>&1
  echo "exit status $? after $(( $(date +%s) - start )) s" >> "$work/$mode.log"
  tail -2 "$work/$mode.log"
done
python3 -m pytest perf -n 2 -p no:cacheprovider --perf-pipeline=sd15 > "$work/n2.log" 2>&1
echo "exit status $?" >> "$work/n2.log"
for f in baselines/*/*.json; do
  grep -qxF "$(basename "$f")" <<<"$before" || cp "$f" "$work/"
done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$work/gpu.csv" 2>&1
tar -czf - -C /tmp "$name" | split -b 15M - "$out/$name.tgz.part-"
tail -3 "$work/n2.log"
