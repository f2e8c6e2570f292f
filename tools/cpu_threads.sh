#!/usr/bin/env bash
# Unchanged tiny runs with 1 and 2 intra-op threads, alternating, quiet and beside one busy process
# (reports/cpu/threads/). Run from the project root with the venv active.
set -u
out=reports/cpu/threads
run() {  # $1 threads, $2 label
    pytest perf --perf-stages=fp32,bf16 --perf-steps=2 --perf-size=32 --perf-max-time=3 --perf-max-rounds=8 \
        --perf-no-flops -p no:cacheprovider --benchmark-storage=file:///tmp/threads-store --perf-report=none \
        --perf-threads="$1" --benchmark-json="$out/$2-t$1.json" >/dev/null 2>&1
}
for i in 1 2 3 4 5 6 7 8; do run 1 "quiet-$i"; run 2 "quiet-$i"; done
# q64-*: the same quiet pairs with --perf-size=64 (run by hand with the same options)
for i in 1 2 3; do
    python -c "import time; t = time.time()
while time.time() - t < 25: pass" &
    sleep 1; run 1 "busy-$i"; run 2 "busy-$i"; wait
done
