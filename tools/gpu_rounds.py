"""Replay the GPU-time gate on stored H100 ladders with fewer profiled rounds.

Every stored run profiled five rounds per stage. Taking the first ``k`` of them is what a run with
``--perf-gpu-rounds=k`` would have recorded (the rounds run back to back, after the timed ones),
so the gate's decision with three rounds a side at ``GPU_TIME_ALPHA`` can be set against the one
with five at ``ALPHA`` on the same data: every ordered pair of unchanged ladders (false alarms),
and the +5 % GPU-side injection against the baseline it was compared with (detections). No
history is passed, so each threshold is the floor or twice the rounds' own spread: the smallest,
the harshest case for false alarms.

    python tools/gpu_rounds.py > reports/h100/cost/gpu_rounds.txt
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import gate  # noqa: E402

#: Unchanged full sd15 ladders on the H100 with five profiled rounds (a baseline and the report of
#: the same run are one run: listed once).
UNCHANGED = ["baselines/NVIDIA_H100_80GB_HBM3-x1/0003_h100.json", "reports/h100/gpu-time/rerun3-hostdrift1.0.json",
             "reports/h100/gpu-time/rerun4.json", "baselines/NVIDIA_H100_80GB_HBM3-x1/0004_h100.json",
             "reports/h100/counters/rerun5.json", "baselines/NVIDIA_H100_80GB_HBM3-x1/0005_h100.json",
             "baselines/NVIDIA_H100_80GB_HBM3-x1/0006_h100.json", "baselines/NVIDIA_H100_80GB_HBM3-x1/0007_h100.json",
             "baselines/NVIDIA_H100_80GB_HBM3-x1/0008_h100.json"]
#: ``--perf-inject-slowdown=0.05`` (GPU work worth 5 % of each stage's GPU time), compared with 0003.
INJECTED = ("reports/h100/gpu-time/inject3.json", "baselines/NVIDIA_H100_80GB_HBM3-x1/0003_h100.json")


def gpu_rounds(path: str) -> dict[str, list[float]]:
    data = json.loads((ROOT / path).read_text())
    return {bench["param"]: list(bench["extra_info"]["gpu_seconds"]) for bench in data["benchmarks"]
            if (bench.get("extra_info") or {}).get("gpu_seconds")}


def verdict(base: list[float], now: list[float], k: int, alpha: float) -> gate.LatencyComparison:
    return gate.compare_latency(base[:k], now[:k], gate.GPU_TIME_MIN_EFFECT, alpha=alpha)


RULES = {"5 rounds, alpha 0.01 (before)": (5, gate.ALPHA), "3 rounds, alpha 0.05 (now)": (3, gate.GPU_TIME_ALPHA)}


def main() -> None:
    runs = {path: gpu_rounds(path) for path in UNCHANGED}
    stages = list(next(iter(runs.values())))
    print(f"GPU-time gate replayed on {len(runs)} unchanged H100 sd15 ladders ({len(runs) * (len(runs) - 1)} "
          f"ordered pairs per stage) and one +5 % injection\n")
    print("within-run spread of the profiled rounds (max/min - 1), worst run; spread of run medians (max/min - 1):")
    for stage in stages:
        within = max(max(r[stage]) / min(r[stage]) - 1 for r in runs.values() if stage in r)
        medians = [statistics.median(r[stage]) for r in runs.values() if stage in r]
        within3 = max(max(r[stage][:3]) / min(r[stage][:3]) - 1 for r in runs.values() if stage in r)
        print(f"  {stage:14s} rounds {within * 100:5.2f} % (first 3: {within3 * 100:5.2f} %)   "
              f"medians {(max(medians) / min(medians) - 1) * 100:5.2f} %")
    for label, (k, alpha) in RULES.items():
        print(f"\n{label}")
        print(f"  {'stage':14s} {'false alarms':>14s} {'largest ratio':>14s} {'inject +5 %':>28s}")
        injected, injected_base = gpu_rounds(INJECTED[0]), gpu_rounds(INJECTED[1])
        total = 0
        for stage in stages:
            pairs = [(a[stage], b[stage]) for a, b in itertools.permutations(runs.values(), 2)
                     if stage in a and stage in b]
            comparisons = [verdict(base, now, k, alpha) for base, now in pairs]
            alarms = sum(c.regressed for c in comparisons)
            total += alarms
            worst = max(c.ratio for c in comparisons)
            shown = "-"
            if stage in injected and stage in injected_base:
                c = verdict(injected_base[stage], injected[stage], k, alpha)
                shown = f"{'REGRESSION' if c.regressed else 'passed'} x{c.ratio:.3f} p={c.p_slower:.3g}"
            print(f"  {stage:14s} {alarms:>6d} of {len(pairs):<5d} {worst:>14.4f} {shown:>28s}")
        print(f"  false alarms in all: {total}")


if __name__ == "__main__":
    main()
