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

import dataclasses
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # torch is imported where a trace is read: judging stored runs needs none
    import torch

#: Profiled rounds per stage for GPU busy time: the fewest with which its rank test can fail a stage
#: (:data:`perf.gate.GPU_TIME_ALPHA`). Each costs about two generations of host-bound stages under the
#: profiler: at five they were the largest share of a fresh H100 ladder (3 min of 8 min 21 s,
#: ``reports/h100/cost/ladder-0007.log``).
GPU_ROUNDS = 3


def busy_seconds(intervals: Iterable[tuple[int, int]]) -> float:
    """Length of the union of ``(start_ns, end_ns)`` intervals, in seconds."""
    spans = sorted(intervals)
    if not spans:
        return 0.0
    total = 0
    current_start, current_end = spans[0]
    for start, end in spans[1:]:
        if start > current_end:
            total += current_end - current_start
            current_start, current_end = start, end
        elif end > current_end:
            current_end = end
    total += current_end - current_start
    return total / 1e9


def device_intervals(events: Iterable[Any]) -> list[tuple[int, int]]:
    """``(start_ns, end_ns)`` of every activity that ran on the GPU, from a finished profile's events."""
    import torch

    cuda = torch.autograd.DeviceType.CUDA
    return [(event.start_ns(), event.end_ns()) for event in events
            if event.device_type() == cuda and event.end_ns() > event.start_ns()]


#: What an attention kernel's name holds, whichever SDPA backend ran it: FlashAttention-2
#: (``flash_fwd_kernel``), memory-efficient (``fmha_cutlassF…``), cuDNN (``cudnn_generated_fort_native_sdpa…``).
ATTENTION_KERNEL = re.compile(r"flash|fmha|sdpa|attention", re.IGNORECASE)


def attention_kernels(events: Iterable[Any]) -> dict[str, float]:
    """GPU milliseconds of each attention kernel in one round's trace, by the kernel's name (cut to
    its first 80 characters): which kernel SDPA chose is otherwise invisible, and a stage such as
    ``cudnn_attention`` that only changes SDPA's order can only be shown to work by it."""
    import torch

    cuda = torch.autograd.DeviceType.CUDA
    found: dict[str, float] = {}
    for event in events:
        if event.device_type() == cuda and ATTENTION_KERNEL.search(event.name()):
            name = event.name()[:80]
            found[name] = found.get(name, 0.0) + (event.end_ns() - event.start_ns()) / 1e6
    return found


def _trace(call: Callable[[], object]) -> list[Any]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
    return prof.profiler.kineto_results.events()


@dataclasses.dataclass
class Profiled:
    seconds: list[float]  # GPU busy seconds per profiled round; empty off CUDA or when nothing was traced
    device_counts: dict[str, int]  # kernels, launches, syncs and copies of the first profiled round
    #: GPU busy seconds per pipeline component (perf.components), one per profiled round; empty when
    #: no pipeline was given or a round's marks could not be read
    components: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: GPU ms of each attention kernel in the first profiled round (:func:`attention_kernels`)
    attention_kernels: dict[str, float] = dataclasses.field(default_factory=dict)
    #: GPU kernels per kind in the first profiled round (:func:`perf.counters.kernel_kinds`)
    kernel_kinds: dict[str, int] = dataclasses.field(default_factory=dict)


def measure(call: Callable[[], object], device: torch.device, rounds: int, pipe: Any = None) -> Profiled:
    """GPU busy seconds of ``rounds`` profiled calls (which must synchronize), one trace each,
    the device-side counters of the first, and, given the ``pipe`` that ``call`` runs, the busy
    seconds of each of its components (:mod:`perf.components`).

    The counters come from a trace that is made anyway: reading them here spares the host-work
    round (:func:`perf.counters.count`) a CUDA trace of its own. The seconds are empty where the
    trace holds no device activity (no CUPTI, or no GPU work at all): the gate then has no GPU
    time to compare rather than a wrong one.

    One trace per round, not one for all: tried on the H100 (all rounds in one trace, cut at a
    runtime call made between them), it cost no less (``fused_qkv`` 25.2 s for 5 rounds, 16.8 s
    with a trace each; ``reports/h100/cost/``): the profiler's cost is per traced event, not
    per trace.
    """
    import contextlib

    from . import components, counters

    if device.type != "cuda" or rounds <= 0:
        return Profiled([], {})
    samples, device_counts, parts, attention, kinds = [], {}, [], {}, {}
    for index in range(rounds):
        marks: contextlib.AbstractContextManager[list] = (components.marked(pipe) if pipe is not None
                                                           else contextlib.nullcontext([]))
        with marks as labels:
            events = _trace(call)
        intervals = device_intervals(events)
        if not intervals:
            return Profiled([], {})
        samples.append(busy_seconds(intervals))
        parts.append(components.attribute(events, labels) if labels else {})
        if index == 0:
            device_counts = counters.device_counts(events)
            attention = attention_kernels(events)
            kinds = counters.kernel_kinds(events)
    names = set().union(*parts)
    by_component = {name: [part.get(name, 0.0) for part in parts] for name in sorted(names)} if all(parts) else {}
    return Profiled(samples, device_counts, by_component, attention, kinds)
