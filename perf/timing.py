"""Timing done once, correctly: synchronize, warm up, size the rounds, track peak memory.

Every stage is timed through :func:`measure`, so the rules below hold for all of them:

* the timed call synchronizes the device before it returns, or a GPU stage would be timed
  by how fast Python queues kernels;
* warm-up rounds are explicit (pytest-benchmark warms up only on PyPy by default): one for
  eager stages, three where ``torch.compile`` must compile and CUDA graphs must record;
* the number of timed rounds is what the time budget affords at the warm-up's pace,
  clamped to ``[min_rounds, max_rounds]``: never fewer than six by default, since a rank test
  cannot reach significance with fewer rounds a side. The gate's threshold is twice the
  measured noise (:mod:`perf.gate`), and for that six rounds already put the median's standard
  error well inside it; extra rounds buy power for the rank test where they are cheap
  (CUDA-graph stages get 20 in the same budget that gives an fp32 stage 6);
* on CUDA, ``gpu_rounds`` more calls run under the profiler after the timed rounds, for the
  GPU busy time that the gate compares beside the wall time (:mod:`perf.gpu_time`);
* one more call runs under the host-work counters (:mod:`perf.counters`): kernels, syncs,
  copies, aten ops and Python calls, which repeat exactly where time does not.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import torch

from . import counters, gpu_time

MIN_ROUNDS_FOR_RANK_TEST = 6

GPU_ROUNDS = gpu_time.GPU_ROUNDS

#: Intra-op threads of a CPU run, as ``torch.utils.benchmark.Timer`` defaults to. With one thread
#: per core every operator waits for its slowest thread, so one other busy process on the 2-core
#: CI machine made ``tiny`` rounds 1.5-2.6x slower (a failed CI run: fp32 +50 % between two
#: unchanged runs seconds apart); with one thread the same competitor changed nothing
#: (``reports/cpu/threads/``).
CPU_THREADS = 1


#: What glibc's malloc may keep of what a round frees, instead of giving it back to the kernel:
#: blocks up to this size come from its heap (not a mapping of their own), and its heap is not
#: trimmed below this. By default glibc maps blocks from 128 KiB up to a threshold it moves as
#: blocks are freed, and gives the top of its heap back beyond 128 KiB: which buffers of a round
#: get fresh pages, and so page faults and zeroing, changes from round to round and from process to
#: process. On the 2-core KVM machine that made ``tiny``'s fp32 steps (classic attention materializes
#: its maps) jump between 16 and 50 ms, and processes settle in a mode of 16 or of 30-36 ms; with
#: both thresholds fixed here they ran at 15-17 ms (``reports/cpu/malloc/``). A serving process
#: with jemalloc or tcmalloc keeps its memory too.
MALLOC_KEEP_BYTES = 1 << 30
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next round (:data:`MALLOC_KEEP_BYTES`), for a
    CPU run, before anything is built. Returns whether it took effect: only with glibc, whose
    ``mallopt`` the process's own symbols hold; elsewhere the allocator is left as it is. Once per
    process: every runner (the quality reference's too) asks, and the setting is the process's."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MALLOC_KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, MALLOC_KEEP_BYTES))


def use_threads(threads: int | None) -> None:
    """Set torch's intra-op threads before anything is built (None: leave torch's default)."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@dataclasses.dataclass(frozen=True)
class Budget:
    warmup_rounds: int | None  # None: 1 for eager stages, 3 for compiled ones
    min_rounds: int
    max_rounds: int
    max_time: float  # seconds of timed rounds per stage
    gpu_rounds: int = GPU_ROUNDS  # profiled rounds for GPU busy time (CUDA only; perf.gate.GPU_TIME_ALPHA)
    count_host_work: bool = True  # one more round under the counters (perf.counters)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synchronized(fn: Callable, device: torch.device) -> Callable:
    def call() -> Any:
        result = fn()
        synchronize(device)
        return result

    return call


def warmup_rounds(budget: Budget, compiled: bool) -> int:
    if budget.warmup_rounds is not None:
        return budget.warmup_rounds
    return 3 if compiled else 1


#: A fresh process is not warm after its declared warm-up rounds: on the 2-core CPU machine the
#: tiny pipeline's first rounds in a new A/B worker took 0.13-0.18 s, then 0.06 s. Warm-up goes on
#: until a round is no more than ``SETTLED`` slower than the one before, at most ``SETTLE_ROUNDS``
#: more rounds.
SETTLED = 0.10
SETTLE_ROUNDS = 8


def warm_up(call: Callable, budget: Budget, compiled: bool, settle: bool = False) -> list[float]:
    """Run the warm-up rounds; with ``settle``, more until consecutive rounds agree. Returns their seconds."""
    seconds = []
    for _ in range(warmup_rounds(budget, compiled)):
        seconds.append(_one_round(call))
    if settle:
        for _ in range(SETTLE_ROUNDS):
            if len(seconds) >= 2 and seconds[-1] <= seconds[-2] * (1 + SETTLED):
                break
            seconds.append(_one_round(call))
    return seconds


def plan_rounds(budget: Budget, seconds_per_round: float) -> int:
    """How many timed rounds the budget affords, clamped to ``[min_rounds, max_rounds]``."""
    affordable = math.floor(budget.max_time / max(seconds_per_round, 1e-9))
    rounds = min(affordable, budget.max_rounds)
    return max(rounds, budget.min_rounds)


@dataclasses.dataclass
class Measurement:
    warmup_seconds: list[float]
    rounds: int
    peak_memory_bytes: int | None
    result: object
    gpu_seconds: list[float] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    gpu_components: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # perf.components
    attention_kernels: dict[str, float] = dataclasses.field(default_factory=dict)  # perf.gpu_time
    kernel_kinds: dict[str, int] = dataclasses.field(default_factory=dict)  # perf.counters.kernel_kinds


def measure(benchmark: Any, generate: Callable, device: torch.device, budget: Budget, *,
            compiled: bool, phase: Callable[..., None] = lambda text, cost=None: None,
            timed: Callable[[Callable], Callable] = lambda call: call, pipe: Any = None) -> Measurement:
    """Warm up, plan the rounds, time ``generate`` through ``benchmark.pedantic``, then profile
    ``budget.gpu_rounds`` more calls for GPU busy time and one under the host-work counters
    (after, so neither profiler ever touches a timed round). ``phase`` hears each step as it
    starts, with what it costs (:mod:`perf.progress`), never inside a timed round; ``timed``
    wraps the timed rounds alone (:meth:`perf.steps.StepClock.timed`); ``pipe``, the pipeline
    ``generate`` runs, lets the profiled rounds split GPU time by component (:mod:`perf.components`)."""
    call = synchronized(generate, device)
    if benchmark.disabled:  # --benchmark-disable: run once, as a smoke test of the stage
        phase("generating once (--benchmark-disable)", "timing")
        return Measurement(warmup_seconds=[], rounds=0, peak_memory_bytes=None, result=benchmark.pedantic(call))
    count = warmup_rounds(budget, compiled)
    phase(f"compiling and warming up ({count} rounds)" if compiled else f"warming up ({count} round"
          f"{'s' if count != 1 else ''})", "warmup")
    warmups = warm_up(call, budget, compiled)
    last = warmups[-1] if warmups else _one_round(call)
    rounds = plan_rounds(budget, last)
    phase(f"timing {rounds} rounds (~{rounds * last:.0f} s)", "timing")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = benchmark.pedantic(timed(call), rounds=rounds, warmup_rounds=0, iterations=1)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    profiled, counted = profile_and_count(call, device, budget, phase, pipe)
    return Measurement(warmup_seconds=warmups, rounds=rounds, peak_memory_bytes=peak, result=result,
                       gpu_seconds=profiled.seconds, counters=counted, gpu_components=profiled.components,
                       attention_kernels=profiled.attention_kernels, kernel_kinds=profiled.kernel_kinds)


def profile_and_count(call: Callable, device: torch.device, budget: Budget,
                      phase: Callable[..., None] = lambda text, cost=None: None,
                      pipe: Any = None) -> tuple[gpu_time.Profiled, dict[str, int]]:
    """After the timed rounds: GPU busy time of ``budget.gpu_rounds`` profiled rounds (per
    component of ``pipe``, when given), then the host-work counters of one more (whose device side
    the first profiled round already read)."""
    if budget.gpu_rounds and device.type == "cuda":
        phase(f"profiling {budget.gpu_rounds} rounds for GPU time", "gpu_time")
    profiled = gpu_time.measure(call, device, budget.gpu_rounds, pipe)
    counted: dict[str, int] = {}
    if budget.count_host_work:
        phase("counting host work (1 round)", "counters")
        counted = counters.count(call, device, profiled.device_counts)
    return profiled, counted


def _one_round(call: Callable) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
