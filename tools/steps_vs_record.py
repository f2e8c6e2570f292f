"""Each run of a campaign against its recording (record.json in the same folder), on the statistics
the stored gate reads: the fastest half of the rounds' fastest steps, of their "first" part, and the
fastest round. reports/cpu/malloc/.

    python tools/steps_vs_record.py reports/cpu/malloc/after
"""
import glob
import json
import os
import statistics
import sys


def fastest_half(values):
    values = sorted(values)
    return statistics.median(values[:(len(values) + 1) // 2])


folder = sys.argv[1]
recorded = {b["name"]: b for b in json.load(open(f"{folder}/record.json"))["benchmarks"]}
for path in sorted(glob.glob(f"{folder}/*.json")):
    row = []
    for bench in json.load(open(path))["benchmarks"]:
        base = recorded[bench["name"]]
        steps, first = (fastest_half(bench["extra_info"]["step_timing"][k]) for k in ("step_fastest", "first"))
        base_steps, base_first = (fastest_half(base["extra_info"]["step_timing"][k]) for k in ("step_fastest", "first"))
        row.append(f"{bench['extra_info']['stage']}: step {steps * 1e3:6.2f} ms ({(steps / base_steps - 1) * 100:+5.1f}%) "
                   f"first {(first / base_first - 1) * 100:+5.1f}% "
                   f"fastest round {(bench['stats']['min'] / base['stats']['min'] - 1) * 100:+5.1f}%")
    print(f"{os.path.basename(path)[:-5]:12s}", " | ".join(row))
