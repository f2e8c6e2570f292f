#!/usr/bin/env bash
# usage: run.sh TAG AFFINITY [extra args]
cd /tmp/cpuab; . /work/main/.venv/bin/activate
tag=$1; aff=$2; shift 2
python -m pytest /work/main/perf -p no:cacheprovider --rootdir=/work/main -k test_ab --perf-stages=fp32 --perf-size=32 \
  --perf-reference-python=$(which python) --perf-report=none --perf-no-flops --benchmark-storage=/tmp/cpuab/st \
  --perf-affinity=$aff --benchmark-json=/tmp/cpuab/$tag.json "$@" > /tmp/cpuab/$tag.log 2>&1
python - "$tag" <<'PY'
import json,sys
d=json.load(open(f"/tmp/cpuab/{sys.argv[1]}.json"))["diffusers_perf"]["ab"]["stages"]["fp32"]
s=d.get("steps",{}).get("step_fastest",{})
print(sys.argv[1], d["status"], "whole", round(d["ratio"],3), "step", round(s.get("ratio",0),3), "thr", round(s.get("threshold",0),3), "p", round(s.get("p_slower",1),4))
PY
