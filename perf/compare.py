"""Judge a saved run against a baseline again, without the GPU: ``python -m perf.compare BASELINE RUN``.

Both files are pytest-benchmark JSON written by the suite (``--benchmark-save`` or
``--benchmark-json``). Useful to see what a change to the gate's rules does to past runs,
and to re-check a nightly artifact by hand. The rule is the suite's own (:mod:`perf.baselines`):
each stage of RUN is compared with BASELINE's entry if it was measured the same way, and the
run-to-run noise comes from the runs stored beside BASELINE up to BASELINE itself, so RUN never
counts as its own history even when it was copied into the same folder. Exit status: 0 when
every stage was compared and none regressed, 1 otherwise (a RUN that holds no stage
judges nothing, and fails), 2 for a file that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from . import baselines, gate, outcome, report, stages, storage
from .results import StageExtra, StageResult


def results_of(run: storage.StoredRun) -> dict[str, StageResult]:
    return {name: StageResult(stage=name, outcome="passed", rounds=list(bench["stats"]["data"]),
                              extra=cast(StageExtra, bench.get("extra_info") or {}))
            for name, bench in run.entries().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.compare", description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--allow-uncompared", action="store_true",
                        help="exit 0 even when some stage of RUN could not be compared")
    args = parser.parse_args(argv)
    try:
        base, run = storage.read(args.baseline), storage.read(args.run, injected_ok=True)
    except storage.StoredRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = results_of(run)
    order = {name: i for i, name in enumerate(stages.names())}
    selected = sorted(results, key=lambda name: order.get(name, len(order)))
    hardware = {field: run.hardware.get(field) for field in baselines.HARDWARE_FIELDS}
    if base.hardware.get("gpu_count") == 1 and (hardware.get("gpu_count") or 0) > 1:
        hardware = baselines.single_gpu(hardware)  # a run on several GPUs (-n), against the same GPU alone
    identities = {name: baselines.stored_identity(bench) for name, bench in run.entries().items()}
    folder = args.baseline.parent
    runs, problems = storage.read_folder(folder)
    plan = baselines.plan(runs, folder, hardware, identities, chosen=base)
    policy = gate.Policy(compare=True, allow_uncompared=args.allow_uncompared,
                         gpu_rounds=run.settings.get("gpu_rounds", 5))
    verdicts = [gate.judge(name, results[name], plan.stages[name], policy) for name in selected]
    described = run.data.get("diffusers_perf") or {}
    injected = described.get("injected")
    context = [f"{args.run} has faults injected on purpose ({', '.join(injected)}): judged, never a baseline"
               ] if isinstance(injected, dict) and injected else []
    stopped = [stage for stage, verdict in (described.get("verdicts") or {}).items()
               if isinstance(verdict, dict) and verdict.get("status") == "interrupted"]
    unfinished = described.get("finished") is False or bool(stopped)  # its process ended, or was interrupted
    if unfinished:
        context.append(f"{args.run} is what its run had written when its process stopped"
                       f"{' (interrupted in ' + ', '.join(stopped) + ')' if stopped else ''}: the stages it holds "
                       "finished, the rest are unknown")
    report.terminal(verdicts, results, plan.not_selected(selected),
                    problems + context + [f"compared with {args.baseline}"], print)
    for verdict in verdicts:
        if verdict.failing:
            print(f"{verdict.status.upper()} {verdict.stage}: {verdict.detail}")
    line, code, _ = outcome.final(outcome.Run(verdicts=verdicts, compare=True, allow_uncompared=args.allow_uncompared,
                                              interrupted=unfinished, baselines=[args.baseline.name]))
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
