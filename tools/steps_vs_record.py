"""Each run of a campaign against its recording (record.json in the same folder), on the statistics
the stored gate reads: the fastest half of the rounds' fastest steps, of their "first" part, of the
loop outside the denoiser where recorded, and the fastest round. reports/cpu/malloc/, reports/cpu/loop/.

    python tools/steps_vs_record.py reports/cpu/malloc/after
    python tools/steps_vs_record.py reports/h200/loop baselines/NVIDIA_H200-x1/0013_h200.json

A second argument names the recording elsewhere; stages it does not hold are left out.
"""
import glob
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from perf.gate import fastest_half_median as fastest_half, with_derived  # noqa: E402  the stored gate's own

folder = sys.argv[1]
record = sys.argv[2] if len(sys.argv) > 2 else f"{folder}/record.json"
recorded = {b["name"]: b for b in json.load(open(record))["benchmarks"]}
for path in sorted(glob.glob(f"{folder}/*.json")):
    row = []
    for bench in json.load(open(path))["benchmarks"]:
        base = recorded.get(bench["name"])
        if base is None or os.path.abspath(path) == os.path.abspath(record):
            continue
        steps, first = (fastest_half(bench["extra_info"]["step_timing"][k]) for k in ("step_fastest", "first"))
        base_steps, base_first = (fastest_half(base["extra_info"]["step_timing"][k]) for k in ("step_fastest", "first"))
        row.append(f"{bench['extra_info']['stage']}: step {steps * 1e3:6.2f} ms "
                   f"({(steps / base_steps - 1) * 100:+5.1f}%) "
                   f"first {(first / base_first - 1) * 100:+5.1f}% "
                   f"fastest round {(bench['stats']['min'] / base['stats']['min'] - 1) * 100:+5.1f}%")
        loops = bench["extra_info"]["step_timing"].get("loop_median"), base["extra_info"]["step_timing"].get("loop_median")
        if all(loops):  # each step's time outside the denoiser (perf.steps), where both runs have it
            loop, base_loop = (fastest_half(values) for values in loops)
            row[-1] += f" loop {loop * 1e3:5.3f} ms ({(loop / base_loop - 1) * 100:+6.1f}%)"
            # the denoiser's call over the loop of the same rounds, as the gate judges it (gate.with_derived)
            ratio = [statistics.median(with_derived(e["extra_info"]["step_timing"])["denoiser_over_loop"])
                     for e in (bench, base)]
            row[-1] += f" denoiser/loop {(ratio[0] / ratio[1] - 1) * 100:+6.1f}%"
    if row:
        print(f"{os.path.basename(path)[:-5]:12s}", " | ".join(row))
