"""GPU busy time of one generation: the share of latency that the host cannot move.

Wall time on a shared GPU host drifts between runs far more than within one: on the H100 the
eager stages moved 26-56 % (max/min over five unchanged runs) and even the CUDA-graph stage
25 %, while ``fp32``, whose GPU is busy 94-96 % of the time, stayed within 2 %. What drifts
is the host (CPU speed, other tenants), which decides how long the GPU waits for the next
kernel. The time the
GPU spends executing kernels does not wait on the host, so a regression in GPU work (a slower
kernel from a new torch, an extra op in the UNet) shows there at a few percent even when the
wall time of the same stage is too noisy to tell.

Busy time is read from the profiler's device trace (CUPTI, through ``torch.profiler``): the
union of every kernel, copy and memset interval on the device, so kernels that overlap on
several streams count once and idle gaps count not at all. CUPTI traces kernels replayed from
CUDA graphs too, so the ``cudagraphs`` stage is measured like the others. Profiled rounds are
run after the timed rounds and never mixed with them: the profiler slows the host side.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Callable, Iterable

import torch


def busy_seconds(intervals: Iterable[tuple[int, int]]) -> float:
    """Length of the union of ``(start_ns, end_ns)`` intervals, in seconds."""
    total = 0
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        elif end > current_end:
            current_end = end
    if current_end is not None:
        total += current_end - current_start
    return total / 1e9


def device_intervals(events) -> list[tuple[int, int]]:
    """``(start_ns, end_ns)`` of every activity that ran on the GPU, from a finished profile's events."""
    cuda = torch.autograd.DeviceType.CUDA
    return [(event.start_ns(), event.end_ns()) for event in events
            if event.device_type() == cuda and event.end_ns() > event.start_ns()]


#: The runtime call that marks where each profiled round begins: one the pipeline never makes.
MARK = "cudaMemGetInfo"


def split_rounds(intervals: list[tuple[int, int]], marks: list[int], rounds: int) -> list[list[tuple[int, int]]] | None:
    """The device intervals of each round of one trace, cut at the ``marks`` (start times of
    :data:`MARK`, one before each round and one after the last); None where they do not cut
    cleanly (another count of marks, activity outside them, a round with none)."""
    marks = sorted(marks)
    if len(marks) != rounds + 1:
        return None
    split: list[list[tuple[int, int]]] = [[] for _ in range(rounds)]
    for interval in intervals:
        index = bisect.bisect_right(marks, interval[0]) - 1
        if not 0 <= index < rounds or interval[1] > marks[index + 1]:
            return None
        split[index].append(interval)
    return split if all(split) else None


def _trace(call: Callable[[], object], rounds: int, device: torch.device):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(rounds):
            torch.cuda.mem_get_info(device)
            call()
        torch.cuda.mem_get_info(device)
    return prof.profiler.kineto_results.events()


@dataclasses.dataclass
class Profiled:
    seconds: list[float]  # GPU busy seconds per profiled round; empty off CUDA or when nothing was traced
    device_counts: dict[str, int]  # kernels, launches, syncs and copies of the first profiled round


_one_trace_works: bool | None = None  # learnt on the first stage: do the marks cut the trace cleanly here?


def measure(call: Callable[[], object], device: torch.device, rounds: int) -> Profiled:
    """GPU busy seconds of ``rounds`` profiled calls (which must synchronize), and the
    device-side counters of one of them.

    All rounds run in one trace, cut into rounds at a runtime call made between them
    (:data:`MARK`): starting and stopping the profiler once instead of per round. Where the
    marks do not cut the trace cleanly, each round gets a trace of its own, as before.

    The counters come from a trace that is made anyway: reading them here spares the host-work
    round (:func:`perf.counters.count`) a CUDA trace of its own, 60,000-130,000 events and about
    a second and a half per eager ``sd15`` stage. The seconds are empty where the trace holds
    no device activity (no CUPTI, or no GPU work at all): the gate then has no GPU time to
    compare rather than a wrong one.
    """
    global _one_trace_works
    from . import counters

    if device.type != "cuda" or rounds <= 0:
        return Profiled([], {})
    if _one_trace_works is not False:
        events = _trace(call, rounds, device)
        cuda = torch.autograd.DeviceType.CUDA
        marks = [event.start_ns() for event in events if event.device_type() != cuda and event.name() == MARK]
        split = split_rounds(device_intervals(events), marks, rounds)
        _one_trace_works = split is not None
        if split is not None:
            first, second = sorted(marks)[:2]
            counted = counters.device_counts([event for event in events if first <= event.start_ns() < second])
            return Profiled([busy_seconds(part) for part in split], counted)
    samples, device_counts = [], {}
    for index in range(rounds):
        events = _trace(call, 1, device)
        intervals = device_intervals(events)
        if not intervals:
            return Profiled([], {})
        samples.append(busy_seconds(intervals))
        if index == 0:
            device_counts = counters.device_counts(events)
    return Profiled(samples, device_counts)
