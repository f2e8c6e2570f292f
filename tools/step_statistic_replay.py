"""Replay the stored gate's step statistic on stored H200 pairs: for each unchanged pair (baseline,
rerun) and stage, how far the fastest step moved on the median over rounds (the statistic before
Dec 2) and on the fastest half of rounds (``perf.gate.STEP_STATISTIC``), with the minimum and the
lower quartile beside them. Unchanged pairs should move little on the statistic the gate uses.

    python tools/step_statistic_replay.py > reports/h200/host-drift/replay.txt
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import gate  # noqa: E402

H200 = "baselines/NVIDIA_H200-x1/"
PAIRS = [(H200 + "0005_h200.json", "reports/h200/ladder/sd15-rerun-eager.json"),
         (H200 + "0005_h200.json", "reports/h200/ladder/sd15-rerun-eager2.json"),
         (H200 + "0006_h200.json", "reports/h200/ladder/sd15-rerun-compiled.json"),
         (H200 + "0009_h200.json", "reports/h200/components/sd15-comp-aa.json"),
         (H200 + "0009_h200.json", "reports/h200/components/sd15-comp-aa2.json"),
         (H200 + "0007_h200.json", "reports/h200/ladder/sdxl-rerun-eager.json"),
         (H200 + "0008_h200.json", "reports/h200/ladder/sdxl-rerun-compiled.json"),
         (H200 + "0009_h200.json", "reports/h200/host-drift/sd15-rerun-half/sd15-rerun-half.json"),
         (H200 + "0005_h200.json", "reports/h200/rerun-dec3/sd15-eager-rerun3.json"),
         (H200 + "0006_h200.json", "reports/h200/rerun-dec3/sd15-compiled-rerun3.json"),
         (H200 + "0011_h200.json", "reports/h200/rerun-dec3/sd15-compiled-rerun3.json"),
         (H200 + "0006_h200.json", "reports/h200/rerun-dec3/sd15-compiled-rerun4.json"),
         (H200 + "0011_h200.json", "reports/h200/rerun-dec3/sd15-compiled-rerun4.json"),
         (H200 + "0009_h200.json", "reports/h200/rerun-dec3/sd15-cudnn-rerun.json"),
         (H200 + "0012_h200.json", "reports/h200/rerun-dec3/sd15-cudnn-rerun.json")]


def fastest_steps(path: str) -> dict[str, list[float]]:
    found = {}
    for bench in json.loads((ROOT / path).read_text())["benchmarks"]:
        timing = (bench.get("extra_info") or {}).get("step_timing")
        if timing:
            found[bench["param"]] = timing["step_fastest"]
    return found


def quartile(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.25 * (len(ordered) - 1))]


def main() -> None:
    print(f"{'baseline vs rerun':58s} {'stage':13s} {'rounds':>6s} {'median':>8s} {'fastest half':>12s} {'min':>8s} {'q25':>8s}")
    for base_path, rerun_path in PAIRS:
        base, rerun = fastest_steps(base_path), fastest_steps(rerun_path)
        for stage, before in base.items():
            if stage not in rerun:
                continue
            now = rerun[stage]
            moves = [f(now) / f(before) - 1 for f in (statistics.median, gate.fastest_half_median, min, quartile)]
            name = f"{Path(base_path).name} vs {Path(rerun_path).name}"
            print(f"{name:58s} {stage:13s} {len(before):2d}/{len(now):<3d} " + " ".join(f"{m:+8.1%}" for m in moves[:1])
                  + f" {moves[1]:+12.1%} " + " ".join(f"{m:+8.1%}" for m in moves[2:]))


if __name__ == "__main__":
    main()
