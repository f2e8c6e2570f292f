#!/usr/bin/env bash
while ! grep -q "^done" /tmp/sr/loop3.log; do sleep 5; done
cd "$(dirname "$0")/.."  # the repository root, with its environment active
A="perf --perf-pipeline=tiny --perf-steps=2 --perf-size=64 --perf-max-time=3 --perf-max-rounds=8 --perf-no-flops --perf-stages=fp32,bf16 -p no:cacheprovider -W ignore --perf-report=none -q"
S=/tmp/sr/store-c; rm -rf $S /tmp/sr/c; mkdir -p /tmp/sr/c
for n in first second; do python -m pytest $A --benchmark-storage=file://$S --benchmark-save=$n > /tmp/sr/c/record-$n.log 2>&1; done
for i in $(seq 1 25); do
  python -m pytest $A --benchmark-storage=file://$S --benchmark-compare --benchmark-json=/tmp/sr/c/run$i.json > /tmp/sr/c/run$i.log 2>&1; echo "c $i rc=$? $(date +%T) $(tail -1 /tmp/sr/c/run$i.log)"
done
echo done
