"""Host-work counters: what one generation does, counted, where wall time can only be timed.

On a shared GPU host the wall time of a stage drifts tens of percent between unchanged runs,
so 2 ms of extra Python per step (+41 % on ``cudagraphs``) or one more CPU-GPU sync per step
passed the wall-time gate. What the host does, though, repeats exactly: the same pipeline with
the same seed launches the same kernels, synchronizes as often, dispatches the same aten ops
and calls the same Python functions in every round (measured on an H100 in November: 56,170 kernels,
302 ``cudaStreamSynchronize``, 2 ``cudaDeviceSynchronize`` per eager fp16 generation, every
round; on CPU 13,469 Python calls and 5,004 aten ops per ``tiny`` generation).

:func:`count` runs one dedicated round, after the timed and profiled ones so no timed round is
touched, under ``torch.profiler`` (CPU activity for aten ops; CUDA activity for kernels, copies
and the CUDA runtime calls) and ``sys.setprofile`` (Python function calls). Compiled stages add
dynamo's own counts since the stage was built: graphs compiled, graph breaks, recompilations.

:data:`SPECS` is the table the gate reads: which counters fail on any increase (a new sync is
never noise), and which on a relative increase beyond a stated tolerance.
"""

from __future__ import annotations

import dataclasses
import gc
import re
import sys
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported where a profile is read: judging stored runs needs none
    import torch


@dataclasses.dataclass(frozen=True)
class CounterSpec:
    name: str  # key in extra_info["counters"]
    label: str  # how a user knows it, e.g. the CUDA runtime call
    tolerance: float | None  # relative increase that fails; None: any increase fails
    meaning: str  # what an increase usually means
    per: str = "per generation"  # dynamo's counts are per stage: compiling happens once


SPECS: tuple[CounterSpec, ...] = (
    CounterSpec("device_syncs", "cudaDeviceSynchronize", None, "a host-device sync was added"),
    CounterSpec("stream_syncs", "cudaStreamSynchronize", None, "a blocking copy or .item() was added"),
    CounterSpec("event_syncs", "cudaEventSynchronize", None, "a wait on a CUDA event was added"),
    CounterSpec("memcpy_dtoh", "device-to-host copies", None, "a tensor is now read back to the host"),
    CounterSpec("graph_breaks", "dynamo graph breaks", None, "torch.compile now splits the model", "per stage"),
    CounterSpec("recompiles", "dynamo recompilations", None, "a guard fails, so torch.compile recompiles",
                "per stage"),
    CounterSpec("compiled_graphs", "compiled graphs", None, "torch.compile builds more graphs", "per stage"),
    CounterSpec("graph_launches", "cudaGraphLaunch", 0.02, "the CUDA graph was split or replays more often"),
    CounterSpec("launches", "kernel launches (cudaLaunchKernel*)", 0.02, "more kernels per step: a lost fusion or an extra op"),
    CounterSpec("kernels", "GPU kernels", 0.02, "more kernels per step: a lost fusion or an extra op"),
    CounterSpec("memcpy_htod", "host-to-device copies", 0.02, "inputs are copied to the GPU more often"),
    CounterSpec("memcpy_dtod", "device-to-device copies", 0.02, "more copies on the GPU"),
    CounterSpec("aten_ops", "aten ops", 0.02, "more operators per step"),
    CounterSpec("python_calls", "Python calls", 0.05, "more Python work per step"),
)
BY_NAME = {spec.name: spec for spec in SPECS}

#: CUDA runtime and driver calls counted, by counter.
_RUNTIME = {
    "cudaDeviceSynchronize": "device_syncs",
    "cudaStreamSynchronize": "stream_syncs",
    "cudaEventSynchronize": "event_syncs",
    "cudaGraphLaunch": "graph_launches",
    "cudaLaunchKernel": "launches",
    "cudaLaunchKernelExC": "launches",
    "cuLaunchKernel": "launches",
    "cuLaunchKernelEx": "launches",
}
_MEMCPY = {"HtoD": "memcpy_htod", "DtoH": "memcpy_dtoh", "DtoD": "memcpy_dtod"}


def _python_calls(call: Callable[[], object]) -> tuple[object, int]:
    """Python calls of one ``call``, with the cyclic garbage collector held off (after a full
    collection), as ``timeit`` holds it off: a collection inside the round runs whatever
    finalizers and weakref callbacks the garbage holds, a number that depends on when it ran
    (two counts of the same tiny round in a fresh test worker differed by 2 of 13,382 calls)."""
    calls = 0

    def profiler(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        result = call()
    finally:
        sys.setprofile(previous)
        if collecting:
            gc.enable()
    return result, calls


def _is_kernel(device_event_name: str) -> bool:
    """Whether a device event is a kernel, not a copy or a memset."""
    return not device_event_name.startswith(("Memcpy", "Memset"))


def device_counts(events: Iterable[Any]) -> dict[str, int]:
    """Kernels, copies by direction and the counted CUDA runtime calls, from a profile's events
    (one made with CUDA activity: the runtime calls are traced with it)."""
    import torch

    counts = {name: 0 for name in set(_RUNTIME.values()) | set(_MEMCPY.values()) | {"kernels"}}
    cuda = torch.autograd.DeviceType.CUDA
    for event in events:
        name = event.name()
        if event.device_type() == cuda:
            if name.startswith("Memcpy"):
                direction = next((d for d in _MEMCPY if d in name), None)
                if direction:
                    counts[_MEMCPY[direction]] += 1
            elif _is_kernel(name):
                counts["kernels"] += 1
        elif name in _RUNTIME:
            counts[_RUNTIME[name]] += 1
    return counts


#: Inductor numbers the kernels it generates (``triton_poi_fused_add_3``); the number says nothing
#: about what the kernel does, and differs between compiles of the same graph.
_SERIAL = re.compile(r"_\d+$")


def kernel_kind(name: str) -> str:
    """A kernel's name without what varies between identical runs or says nothing of its kind:
    C++ template arguments and parameters, Inductor's serial number; cut to 60 characters."""
    if name.startswith("void "):
        name = name[len("void "):]
    for cut in "<(":
        name = name.split(cut, 1)[0]
    return _SERIAL.sub("", name.strip())[:60]


def kernel_kinds(events: Iterable[Any]) -> dict[str, int]:
    """GPU kernels per :func:`kernel_kind` in one profiled generation.

    Why: the ``kernels`` counter says that a generation ran 700 more kernels, not which; stored
    beside it, the verdict can name the kinds that were added (:func:`most_added`): a lost fusion,
    an extra op, or a choice Inductor made by timing kernels on the device (on the H200 one
    unchanged compile ran 14 more kernels per step than the baseline's, ``reports/h200/loop/``)."""
    import torch

    cuda = torch.autograd.DeviceType.CUDA
    found: dict[str, int] = {}
    for event in events:
        name = event.name()
        if event.device_type() == cuda and _is_kernel(name):
            kind = kernel_kind(name)
            found[kind] = found.get(kind, 0) + 1
    return found


def most_added(before: dict[str, int], after: dict[str, int], top: int = 3) -> str:
    """The kernel kinds whose count grew most between two runs, for a verdict: ``+350 triton_poi_…``."""
    grown = sorted(((after[kind] - before.get(kind, 0), kind) for kind in after if after[kind] > before.get(kind, 0)),
                   key=lambda item: (-item[0], item[1]))
    return ", ".join(f"{delta:+d} {kind}" for delta, kind in grown[:top])


def count(call: Callable[[], object], device: torch.device, device_side: dict[str, int] | None = None) -> dict[str, int]:
    """Counters of one call of ``call`` (which must synchronize), per generation.

    ``device_side``: the device counters of another round of the same call (a profiled round,
    :mod:`perf.gpu_time`), which repeat exactly; then this round traces CPU activity only.
    """
    from torch.profiler import ProfilerActivity, profile

    trace_cuda = device.type == "cuda" and not device_side
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trace_cuda else [])
    with profile(activities=activities) as prof:
        _, python_calls = _python_calls(call)
    events = prof.profiler.kineto_results.events()
    counts = {"python_calls": python_calls,
              "aten_ops": sum(1 for event in events if event.name().startswith("aten::"))}
    if trace_cuda:
        counts.update(device_counts(events))
    elif device.type == "cuda" and device_side:
        counts.update(device_side)
    return counts


def dynamo_state() -> dict[str, int]:
    """Dynamo's running totals; the difference across a stage is what compiling it took."""
    try:
        from torch._dynamo import utils
    except Exception:
        return {}
    return {
        "compiled_graphs": int(utils.counters["stats"]["unique_graphs"]),
        "graph_breaks": len(utils.graph_break_reasons),
        "recompiles": sum(len(reasons) for reasons in utils.guard_failures.values()),
    }


#: torch's own counters of its compile caches: where a compiled stage's warm-up time went. Not
#: judged (a fresh machine misses where a warm one hits), only recorded in ``compile_cache``.
_CACHE_COUNTERS = {"fxgraph_cache_hit": "inductor", "fxgraph_cache_miss": "inductor",
                   "autograd_cache_hit": "aot_autograd", "autograd_cache_miss": "aot_autograd"}


def cache_state() -> dict[str, int]:
    try:
        from torch._dynamo import utils
    except Exception:
        return {}
    return {name: int(utils.counters[group][name]) for name, group in _CACHE_COUNTERS.items()}


def cache_delta(before: dict[str, int]) -> dict[str, int]:
    return {name: value - before.get(name, 0) for name, value in cache_state().items()}


def dynamo_delta(before: dict[str, int]) -> dict[str, int]:
    now = dynamo_state()
    return {name: max(0, now[name] - before.get(name, 0)) for name in now}


# -- judging ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
    spec: CounterSpec
    before: int
    after: int

    @property
    def regressed(self) -> bool:
        if self.after <= self.before:
            return False
        if self.spec.tolerance is None:
            return True
        return self.after > self.before * (1 + self.spec.tolerance)

    def describe(self, steps: int | None = None) -> str:
        delta = self.after - self.before
        per_step = (f", {delta // steps} per step" if steps and self.spec.per == "per generation" and delta > 0
                    and delta % steps == 0 else "")
        if self.regressed:
            why = f"{delta:+d}: {self.spec.meaning}{per_step}"
            if self.spec.tolerance is not None:
                why += f"; more than {self.spec.tolerance * 100:g}%"
            return f"{self.spec.label} {self.spec.per} {self.before} -> {self.after} ({why})"
        return f"{self.spec.label} {self.before} -> {self.after} ({delta:+d})"


def compare(saved: dict, current: dict) -> list[Change]:
    """Every counter both runs have that changed, in :data:`SPECS` order."""
    changes = []
    for spec in SPECS:
        before, after = saved.get(spec.name), current.get(spec.name)
        if isinstance(before, int) and isinstance(after, int) and before != after:
            changes.append(Change(spec, before, after))
    return changes
