#!/usr/bin/env bash
# A/A (4) and the 15 % step fault (1) in A/B on CPU, tiny at its defaults, fp32 and bf16, with the loop
# outside the denoiser recorded (reports/cpu/loop/ab/). Writes /tmp/abloop/; summary: tools/ab_steps_summary.py.
cd "$(dirname "$0")/.." && mkdir -p /tmp/abloop  # run with the venv active
for i in 1 2 3 4; do timeout 600 python -m pytest perf -p no:cacheprovider --perf-stages=fp32,bf16 --perf-no-flops --perf-report=none --perf-reference-python=$(which python) --benchmark-json=/tmp/abloop/aa-$i.json > /tmp/abloop/aa-$i.log 2>&1; echo "aa-$i: $(tail -n1 /tmp/abloop/aa-$i.log)"; done
timeout 600 python -m pytest perf -p no:cacheprovider --perf-stages=fp32,bf16 --perf-no-flops --perf-report=none --perf-reference-python=$(which python) -p perf.inject --perf-inject-step-delay=0.15 --benchmark-json=/tmp/abloop/fault-1.json > /tmp/abloop/fault-1.log 2>&1; echo "fault-1: $(tail -n1 /tmp/abloop/fault-1.log)"
