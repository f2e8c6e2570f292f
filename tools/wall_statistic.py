"""Which wall-time statistic moves least between unchanged runs on the shared H100 host?

Reads the ten unchanged full-ladder runs recorded Nov 23-26 (same torch, diffusers, driver) in the
order they ran, and prints per stage, for the median and the fastest round of each run: the spread
between runs (max/min, SD of log, the consecutive-difference estimate the gate uses) and the host
part (statistic - GPU busy median) and its max/min. Run from the project root:
``python tools/wall_statistic.py``. Its output is ``reports/h100/wall/wall_statistic.txt``.
"""

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = [  # oldest first
    "baselines/NVIDIA_H100_80GB_HBM3-x1/0001_h100.json", "reports/h100/wall-only/rerun.json",
    "baselines/NVIDIA_H100_80GB_HBM3-x1/0002_h100.json", "reports/h100/wall-only/rerun2.json",
    "reports/h100/wall-only/final-rerun.json", "baselines/NVIDIA_H100_80GB_HBM3-x1/0003_h100.json",
    "reports/h100/gpu-time/rerun3-hostdrift1.0.json", "reports/h100/gpu-time/rerun4.json",
    "baselines/NVIDIA_H100_80GB_HBM3-x1/0004_h100.json", "reports/h100/counters/rerun5.json",
]


def load():
    stages = {}
    for path in RUNS:
        for bench in json.loads((ROOT / path).read_text())["benchmarks"]:
            if bench["stats"].get("data"):
                stage = bench["name"].split("[")[-1].rstrip("]")
                stages.setdefault(stage, []).append((np.array(bench["stats"]["data"]),
                                                      bench["extra_info"].get("gpu_median")))
    return stages


def main():
    print(f"{len(RUNS)} unchanged runs; per stage: statistic, spread between runs, host part")
    for stage, runs in load().items():
        gpu = [g for _, g in runs if g]
        for label, statistic in (("median", np.median), ("fastest", np.min)):
            values = np.array([statistic(rounds) for rounds, _ in runs])
            logs = np.log(values)
            consecutive = 1.4826 * np.median(np.abs(np.diff(logs))) / np.sqrt(2)
            line = (f"{stage:14s} {label:8s} {values.min():.3f}-{values.max():.3f} s  max/min {values.max() / values.min() - 1:+5.0%}"
                    f"  SD(log) {np.std(logs, ddof=1):5.1%}  consecutive {consecutive:5.1%}")
            if gpu:
                host = values - np.median(gpu)
                line += (f"  busy {np.median(gpu) / np.median(values):.2f}  host part {host.min():.3f}-{host.max():.3f} s"
                         f" ({host.max() / host.min():.2f}x)")
            print(line)


if __name__ == "__main__":
    main()
