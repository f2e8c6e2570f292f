#!/usr/bin/env bash
# (a) 25 unchanged compares against two recordings; (b) 10 autosave+compare in a row. tiny, 2 steps, 64 px.
cd "$(dirname "$0")/.."  # the repository root, with its environment active
A="perf --perf-pipeline=tiny --perf-steps=2 --perf-size=64 --perf-max-time=3 --perf-max-rounds=8 --perf-no-flops --perf-stages=fp32,bf16 -p no:cacheprovider -W ignore --perf-report=none -q"
S=/tmp/sr/store-a; rm -rf $S /tmp/sr/a; mkdir -p /tmp/sr/a
for n in first second; do python -m pytest $A --benchmark-storage=file://$S --benchmark-save=$n > /tmp/sr/a/record-$n.log 2>&1; done
for i in $(seq 1 25); do
  python -m pytest $A --benchmark-storage=file://$S --benchmark-compare --benchmark-json=/tmp/sr/a/run$i.json > /tmp/sr/a/run$i.log 2>&1; echo "a $i rc=$? $(tail -1 /tmp/sr/a/run$i.log)"
done
S=/tmp/sr/store-b; rm -rf $S /tmp/sr/b; mkdir -p /tmp/sr/b
python -m pytest $A --benchmark-storage=file://$S --benchmark-save=first > /tmp/sr/b/record.log 2>&1
for i in $(seq 1 10); do
  python -m pytest $A --benchmark-storage=file://$S --benchmark-compare --benchmark-autosave --benchmark-json=/tmp/sr/b/run$i.json > /tmp/sr/b/run$i.log 2>&1; echo "b $i rc=$? $(tail -1 /tmp/sr/b/run$i.log)"
done
echo done
