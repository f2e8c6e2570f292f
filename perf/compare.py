"""Judge a saved run against a baseline again, without the GPU: ``python -m perf.compare BASELINE RUN``.

Both files are pytest-benchmark JSON written by the suite (``--benchmark-save`` or
``--benchmark-json``). Useful to see what a change to the gate's rules does to past runs,
and to re-check a nightly artifact by hand. The run-to-run noise comes from every baseline
stored beside BASELINE (same hardware folder), as in the suite itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import baselines, gate, report, stages
from .runner import StageResult


def results_of(run: baselines.Baseline) -> dict[str, StageResult]:
    return {name: StageResult(stage=name, outcome="passed", rounds=list(bench["stats"].get("data") or []),
                              extra=bench.get("extra_info") or {})
            for name, bench in run.stages().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.compare", description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    try:
        base, run = baselines.read(args.baseline), baselines.read(args.run)
    except baselines.BaselineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = results_of(run)
    selected = [name for name in stages.names() if name in results]
    history = baselines.history(args.baseline.parent.parent, args.baseline.parent.name, run.settings())
    verdicts, missing = gate.evaluate(results, selected, base, history)
    report.terminal(verdicts, results, missing, [f"compared with {args.baseline}"], print)
    return 1 if any(v.failing for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
