#!/usr/bin/env bash
# The series in README.md: each case three times, in turn. $1: a Python with torch 2.11, $2: one with 2.13.
cd "$(dirname "$0")"
export PYTHONPATH=$PWD
for i in 1 2 3; do
  for py in "$1" "$2"; do
    for keep in "-p keep_compile_workers" ""; do
      echo "== run $i, torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null), ${keep:-with perf.compile_workers}"
      rm -rf /tmp/exit-wait-baselines
      "$py" measure.py "$py" --perf-pipeline=tiny --perf-stages=fp32 -p long_compile_job $keep -p no:cacheprovider \
        --benchmark-storage=file:///tmp/exit-wait-baselines
    done
  done
done
