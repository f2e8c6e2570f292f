#!/usr/bin/env bash
# Unchanged reruns of the default CPU run (tiny, fp32 and bf16) beside one busy process.
#   bash run.sh   (from /tmp/busy; writes record-*.log and busy-*.log)
cd /tmp/busy; . /work/main/.venv/bin/activate
common=(/work/main/perf -p no:cacheprovider --rootdir=/work/main --perf-stages=fp32,bf16 --perf-report=none
        --benchmark-storage=/tmp/busy/st)
for i in 1 2; do python -m pytest "${common[@]}" --benchmark-save=base > record-$i.log 2>&1; tail -1 record-$i.log; done
for i in $(seq 1 10); do
  python -c "while True: pass" & busy=$!
  python -m pytest "${common[@]}" --benchmark-compare > busy-$i.log 2>&1
  kill $busy; tail -1 busy-$i.log
done
