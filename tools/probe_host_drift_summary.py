"""Spread between processes of ``tools/probe_host_drift.py``'s lines, per variant (tag): the
processes' median fastest step, raw and divided by the host workload timed before each round.

    python tools/probe_host_drift_summary.py LINES.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def main(path: str) -> None:
    by_tag = defaultdict(list)
    for line in open(path):
        if line.startswith("{"):
            run = json.loads(line)
            by_tag[run["tag"]].append(run)
    print(f"{'variant':14s} {'n':>2s} {'step ms (each process)':48s} {'max/min':>7s} {'step/host max/min':>17s}")
    for tag, runs in by_tag.items():
        steps = [run["step"] for run in runs]
        norm = [statistics.median(r["step"] / r["host"] for r in run["rows"]) for run in runs]
        hosts = [statistics.median(r["host"] for r in run["rows"]) * 1e3 for run in runs]
        print(f"{tag:14s} {len(runs):2d} {' '.join(f'{s * 1e3:.2f}' for s in steps):48s} "
              f"{max(steps) / min(steps):7.3f} {max(norm) / min(norm):17.3f}   host ms {min(hosts):.3f}-{max(hosts):.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
