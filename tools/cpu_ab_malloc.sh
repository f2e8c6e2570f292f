#!/usr/bin/env bash
# A/A and a 15 % step fault in A/B on CPU, tiny at its defaults, stages fp32 and bf16 (reports/cpu/malloc/ab/).
# Run from the repository root with its venv active; writes /tmp/camp/ab/.
cd "$(dirname "$0")/.." && mkdir -p /tmp/camp/ab
for i in 1 2 3 4 5 6; do timeout 600 python -m pytest perf -p no:cacheprovider --perf-stages=fp32,bf16 --perf-no-flops --perf-report=none --perf-reference-python=$(which python) --benchmark-json=/tmp/camp/ab/aa-$i.json > /tmp/camp/ab/aa-$i.log 2>&1; done
for i in 1 2; do timeout 600 python -m pytest perf -p no:cacheprovider --perf-stages=fp32,bf16 --perf-no-flops --perf-report=none --perf-reference-python=$(which python) -p perf.inject --perf-inject-step-delay=0.15 --benchmark-json=/tmp/camp/ab/fault-$i.json > /tmp/camp/ab/fault-$i.log 2>&1; done
echo done > /tmp/camp/ab/DONE
