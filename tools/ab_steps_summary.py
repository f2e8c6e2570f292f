"""A/B's step statistics in a folder of runs (``--benchmark-json`` of ``pytest perf --perf-reference-python``):
per run and stage, each judged step part's candidate/reference ratio and threshold. reports/cpu/loop/ab/.

    python tools/ab_steps_summary.py reports/cpu/loop/ab
"""
import glob
import json
import os
import sys

for path in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    stages = (json.load(open(path)).get("diffusers_perf") or {}).get("ab", {}).get("stages", {})
    row = []
    for stage, judged in stages.items():
        parts = " ".join(f"{field} {part['ratio']:.3f}/{part['threshold'] * 100:.0f}%"
                         for field, part in (judged.get("steps") or {}).items())
        row.append(f"{stage}: {judged['status']} whole {judged['ratio']:.3f} | {parts}")
    print(f"{os.path.basename(path)[:-5]:10s}", " || ".join(row))
