"""A/B in one job: this environment (the candidate) against another (the reference), per stage,
on the same device, in the same minutes.

Stored baselines compare tonight with a run made on another day, on a host whose speed drifts
more between runs than most regressions (eager stages on the shared H100: CV 15 % over 86
back-to-back rounds, lag-1 autocorrelation 0.54). Alternating the two sides round by round,
A B B A A B B A ..., each pair sees the same host, so the drift cancels in the pair's ratio and
what is left is the difference between the environments. The verdict comes from the paired
ratios (:func:`perf.gate.judge_ab`).

Each side runs in its own worker process (:mod:`perf.worker`) that builds the stage's pipeline
once and answers "one round" requests; the rounds are timed inside the workers. A worker that
dies fails its stage alone, and every stage starts with fresh workers. Both sides' pipelines
of a stage are alive at once: on CUDA a stage whose candidate already leaves too little device
memory for a second copy is skipped with the numbers.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time

from . import stats, timing
from .settings import Settings
from .worker import Worker, WorkerDied

SIDES = ("candidate", "reference")

#: Head-room asked of the device beyond a second copy of the candidate's peak memory.
MEMORY_HEADROOM = 1.10


@dataclasses.dataclass
class Side:
    """What one environment measured for one stage."""

    python: str
    software: dict = dataclasses.field(default_factory=dict)
    rounds: list[float] = dataclasses.field(default_factory=list)  # in the order they ran
    step_timing: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # perf.steps.FIELDS, per round
    warmup_seconds: list[float] = dataclasses.field(default_factory=list)
    gpu_seconds: list[float] = dataclasses.field(default_factory=list)
    gpu_components: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # perf.components
    counters: dict = dataclasses.field(default_factory=dict)
    kernel_kinds: dict[str, int] = dataclasses.field(default_factory=dict)  # perf.counters.kernel_kinds
    peak_memory_bytes: int | None = None
    startup_seconds: float | None = None  # process start to the first answer
    cpus: list[int] = dataclasses.field(default_factory=list)  # where its main thread ran (--perf-affinity)

    @property
    def median(self) -> float | None:
        return statistics.median(self.rounds) if self.rounds else None


@dataclasses.dataclass
class ABResult:
    stage: str
    outcome: str  # "passed" | "failed" | "skipped" | "not compared"
    message: str = ""
    candidate: Side | None = None
    reference: Side | None = None
    device: str = ""  # the GPU's or CPU's name
    device_type: str = ""  # "cuda" | "cpu"
    steps: int | None = None  # denoising steps per generation, to say "1 per step" of a counter change

    @property
    def ratios(self) -> list[float]:
        """Candidate over reference, one per pair of adjacent rounds."""
        if not self.candidate or not self.reference:
            return []
        return [c / r for c, r in zip(self.candidate.rounds, self.reference.rounds)]


def pair_order(pairs: int) -> list[tuple[str, str]]:
    """A B, B A, A B, B A ...: each side goes first in half the pairs, so a drift within the
    stage (a host slowing down, a GPU warming up) adds to both sides alike."""
    return [SIDES if i % 2 == 0 else SIDES[::-1] for i in range(pairs)]


#: A request's time limit, in multiples of --perf-worker-timeout: start-up imports torch and
#: Diffusers; building includes the first compile (minutes on a GPU).
STARTUP_TIMEOUTS, BUILD_TIMEOUTS = 5, 30
#: A round, or the profiled and counted rounds of "finish", may take this many times the stage's own round.
ROUND_TIMEOUT_FACTOR = 10


def plan_pairs(budget: timing.Budget, seconds_per_pair: float, fewest: int) -> int:
    """Pairs the stage's time budget affords, at least ``fewest``, rounded up to an even number."""
    pairs = max(timing.plan_rounds(budget, seconds_per_pair), fewest)
    return pairs + pairs % 2


class Session:
    """The A/B part of a pytest session: one reference interpreter, a result per stage."""

    def __init__(self, settings: Settings, reference_python: str, fixed_layout: bool = False):
        """``fixed_layout``: start both sides' workers without address-space randomization
        (:func:`perf.worker.fixed_layout`): on CPU, where the layout decides a worker's speed."""
        self.settings = settings
        self.fixed_layout = fixed_layout
        self.pythons = {"candidate": sys.executable, "reference": reference_python}
        self.software: dict[str, dict] = {}  # side -> versions, from the first stage's workers
        self.results: dict[str, ABResult] = {}

    def worker_settings(self) -> dict:
        """The settings each worker builds with: the faults go only through :meth:`injected`.

        Workers keep torch's own threads unless --perf-threads was typed: two workers with one
        thread each differed by up to 1.46x for a whole stage on the 2-core machine, against
        0.77-1.06 with the default (``reports/cpu/ab/``), and pairing already cancels what a busy
        neighbour does to both sides."""
        clean = dataclasses.replace(self.settings.without_faults(),
                                    threads=self.settings.threads if self.settings.threads_given else None)
        return clean.to_json()

    def injected(self, side: str, name: str) -> dict:
        """What the ``side`` worker of stage ``name`` injects (``-p perf.inject``; nothing without it)."""
        if not self.settings.injecting:
            return {}
        from . import inject

        return inject.worker_faults(self.settings, side, name)

    def run(self, name: str, fewest_pairs: int) -> ABResult:
        """Build both sides, alternate their rounds, then profile and count each."""
        result = self.results[name] = ABResult(name, "passed", steps=self.settings.steps)
        reason = self.settings.skip_reason(name)
        if reason:
            result.outcome, result.message = "skipped", reason
            return result
        workers: dict[str, Worker] = {}
        sides = {side: Side(self.pythons[side]) for side in SIDES}
        result.candidate, result.reference = sides["candidate"], sides["reference"]
        step = "starting"
        try:
            built = {}
            start = time.perf_counter()
            for side in SIDES:  # both interpreters start (import torch, diffusers) at once
                workers[side] = Worker(self.pythons[side], side, fixed=self.fixed_layout)
            floor = self.settings.worker_timeout
            for side in SIDES:
                step = f"starting the {side}"
                hello = workers[side].request("hello", timeout=STARTUP_TIMEOUTS * floor)
                sides[side].startup_seconds = time.perf_counter() - start
                sides[side].software = self.software.setdefault(side, hello["software"])
                result.device = hello["hardware"].get("gpu") or hello["hardware"].get("cpu") or ""
            for side in SIDES:  # the candidate first: its memory tells whether a second copy fits
                step = f"building the {side}"
                try:
                    built[side] = workers[side].request("build", timeout=BUILD_TIMEOUTS * floor, stage=name,
                                                        settings=self.worker_settings(),
                                                        inject=self.injected(side, name))
                except WorkerDied as exc:
                    if side == "reference":  # the reference cannot build it: nothing to compare with
                        result.outcome, result.message = "not compared", f"the reference could not build it: {exc}"
                        return result
                    raise
                sides[side].warmup_seconds = built[side]["warmup_seconds"]
                sides[side].cpus = built[side].get("cpus") or []
                result.device_type = built[side]["device"]
                if side == "candidate" and not self._fits(built[side], result):
                    return result
            round_seconds = {side: (built[side]["warmup_seconds"] or [0.0])[-1] for side in SIDES}
            pairs = plan_pairs(self.settings.budget, sum(round_seconds.values()), fewest_pairs)
            for i, order in enumerate(pair_order(pairs)):
                for side in order:
                    step = f"round {i * 2 + order.index(side) + 1} of {pairs * 2} ({side})"
                    limit = max(floor, ROUND_TIMEOUT_FACTOR * round_seconds[side])
                    answer = workers[side].request("round", timeout=limit)
                    sides[side].rounds.append(answer["seconds"])
                    for field, value in (answer.get("steps") or {}).items():
                        sides[side].step_timing.setdefault(field, []).append(value)
            for side in SIDES:
                step = f"profiling the {side}"
                extra_rounds = self.settings.budget.gpu_rounds + 2  # profiled, then counted
                limit = max(floor, ROUND_TIMEOUT_FACTOR * extra_rounds * max(sides[side].rounds))
                done = workers[side].request("finish", timeout=limit)
                sides[side].gpu_seconds = done["gpu_seconds"]
                sides[side].gpu_components = done.get("gpu_components") or {}
                sides[side].counters = done["counters"]
                sides[side].kernel_kinds = done.get("kernel_kinds") or {}
                sides[side].peak_memory_bytes = done["peak_memory_bytes"]
        except WorkerDied as exc:
            result.outcome, result.message = "failed", f"A/B {name}: {exc}, at {step}"
        finally:
            for worker in workers.values():
                worker.close()
        return result

    def _fits(self, built: dict, result: ABResult) -> bool:
        peak, free = built.get("peak_memory_bytes"), built.get("free_memory_bytes")
        if peak is None or free is None or peak * MEMORY_HEADROOM <= free:
            return True
        result.outcome = "skipped"
        result.message = (f"both sides' pipelines must be alive at once: the reference needs about "
                          f"{peak / 2**30:.1f} GiB more, and {free / 2**30:.1f} GiB of device memory is free")
        return False


def fewest_pairs(alpha: float) -> int:
    """The fewest pairs whose tests can reach ``p < alpha``: the signed-rank test of the paired
    ratios (its smallest p is 1/2^n), and the rank test of each side's fastest half of rounds that
    judges the steps (:func:`perf.gate.fastest_halves`; 5 against 5 reach 1/252)."""
    paired = max(1, math.floor(math.log2(1 / alpha)) + 1)
    half = next(n for n in range(1, 1000) if stats.smallest_p(n, n) <= alpha)
    return max(paired, 2 * half)
