"""Where does an eager stage's step time drift between processes? One process of this probe builds
one stage of an embedded pipeline through the suite's own runner, warms it up, then times rounds
with the suite's step clock (:mod:`perf.steps`); before each round it times a fixed CPU workload
that neither torch nor Diffusers touches (SHA-256 of 256 KiB), the host's speed at that moment.
It prints one JSON line: per round, the fastest step, the whole round and the host workload.

Run it in many fresh processes, with and without address-space randomization (``setarch -R``) and
a pinned main thread (``--pin``), and compare the spread of the processes' median fastest step,
raw and divided by the host workload (``tools/probe_host_drift_summary.py``)::

    python tools/probe_host_drift.py --pipeline sd15 --stage sdpa --rounds 8 [--pin 15] [--tag NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from perf import optimizations, pipelines, timing  # noqa: E402
from perf.runner import Runner  # noqa: E402
from perf.settings import Settings  # noqa: E402

BUFFER = bytes(range(256)) * 1024


def host_workload() -> float:
    """Seconds of the fastest of five SHA-256 passes over 256 KiB: CPU speed, not torch's."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        hashlib.sha256(BUFFER).digest()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline", default="sd15")
    parser.add_argument("--stage", default="sdpa")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--pin", type=int, default=None)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    spec = pipelines.SPECS[args.pipeline]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    budget = timing.Budget(warmup_rounds=2, min_rounds=args.rounds, max_rounds=args.rounds, max_time=0)
    settings = Settings(pipeline=args.pipeline, model=None, stages=[args.stage], steps=spec.steps, size=spec.size,
                        batch=1, budget=budget, report=None, count_flops=False, family=spec.family,
                        threads=None if device.type == "cuda" else 1)
    timing.use_threads(settings.threads)
    runner = Runner(settings)
    with optimizations.tf32(settings.recipe(args.stage).tf32):
        pipe = runner.build(args.stage)
        if args.pin is not None:
            os.sched_setaffinity(0, {args.pin})
        call = timing.synchronized(lambda: runner.generate(pipe, settings.steps), device)
        timing.warm_up(call, budget, compiled=False)
        rows = []
        for _ in range(args.rounds):
            host = host_workload()
            start = time.perf_counter()
            runner.clock.timed(call)()
            whole = time.perf_counter() - start
            rows.append({"host": host, "whole": whole, "step": runner.clock.rounds[-1].summary()["step_fastest"]})
    print(json.dumps({"tag": args.tag, "stage": args.stage, "pin": args.pin,
                      "aslr": Path("/proc/self/personality").read_text().strip(),
                      "step": statistics.median(r["step"] for r in rows), "rows": rows}))


if __name__ == "__main__":
    main()
