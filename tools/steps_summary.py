"""Per run and stage: the median round and the medians of each step component, from --benchmark-json files.

    python tools/steps_summary.py reports/cpu/steps/*.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    print(f"{'run':<14} {'stage':<11} {'rounds':>6} {'median ms':>10} {'first ms':>9} {'fastest step':>12} "
          f"{'median step':>11} {'after ms':>9} {'step rCV':>8}")
    for path in paths:
        data = json.loads(Path(path).read_text())
        for bench in data.get("benchmarks", []):
            extra = bench.get("extra_info") or {}
            timing = extra.get("step_timing") or {}
            if not timing:
                continue
            med = {k: statistics.median(v) * 1000 for k, v in timing.items()}
            fastest = timing["step_fastest"]
            q1, q3 = statistics.quantiles(fastest, n=4)[0], statistics.quantiles(fastest, n=4)[2]
            print(f"{Path(path).stem:<14} {extra['stage']:<11} {len(bench['stats']['data']):>6} "
                  f"{bench['stats']['median'] * 1000:>10.1f} {med['first']:>9.2f} {med['step_fastest']:>12.3f} "
                  f"{med['step_median']:>11.3f} {med['after']:>9.2f} {(q3 - q1) / 1.349 / statistics.median(fastest):>8.1%}")


if __name__ == "__main__":
    main(sys.argv[1:])
