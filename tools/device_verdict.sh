#!/usr/bin/env bash
# The GPU campaign of the verdict issue (reports/h200/verdict/): on a fresh machine, an A/A A/B
# of sd15 `sdpa` through a reference that prints at start-up (a wrapper script's banner and a
# site hook's print: what broke the old stdout protocol on the H200), then a recording of
# `sdpa,cudagraphs` and an unchanged rerun against it. Run from the repository root; $OUT
# receives the logs, the JSON and the stored runs.
set -u
out=${OUT:-/tmp/diffusers-perf-out}
mkdir -p "$out" /tmp/hooks
printf "print('site hook says hello')\n" > /tmp/hooks/sitecustomize.py
cat > /tmp/reference-python <<WRAPPER
#!/bin/sh
echo 'welcome to the reference environment'
export PYTHONPATH=/tmp/hooks:\$PYTHONPATH
exec $(command -v python3) "\$@"
WRAPPER
chmod +x /tmp/reference-python
common=(--perf-no-flops -p no:cacheprovider)
timeout 180 python3 -m pytest perf --perf-stages=sdpa -k test_ab --perf-reference-python=/tmp/reference-python \
  --benchmark-json="$out/ab.json" --perf-report="$out/ab.md" "${common[@]}" > "$out/ab.log" 2>&1
echo "exit status $?" >> "$out/ab.log"
timeout 240 python3 -m pytest perf --perf-stages=sdpa,cudagraphs --benchmark-save=h200 --perf-report=none \
  "${common[@]}" > "$out/record.log" 2>&1
echo "exit status $?" >> "$out/record.log"
timeout 150 python3 -m pytest perf --perf-stages=sdpa,cudagraphs --benchmark-compare --benchmark-save=h200 \
  --perf-report="$out/rerun.md" "${common[@]}" > "$out/rerun.log" 2>&1
echo "exit status $?" >> "$out/rerun.log"
cp baselines/NVIDIA_H200*/0*.json "$out/" 2>/dev/null
exit 0
