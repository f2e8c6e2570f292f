"""GPU busy time per pipeline component: the text encoder(s), the denoiser, the VAE decode, the rest.

Why: a stage's GPU time is one number, and a component that is a small share of it can double
unseen. The VAE decode is about 2 % of an eager ``sd15`` generation on the H200: a decoder 20 %
slower moves the whole GPU time by 0.4 %, far under its 3 % floor, and moves the same
component's own GPU time by 20 %. Judged per component (:mod:`perf.gate`), it fails on its own
line with its name.

How: only in the profiled rounds (:mod:`perf.gpu_time`), which are never timed. Each component
the pipeline holds as an ``nn.Module`` (``text_encoder``, ``text_encoder_2``, ``unet`` or
``transformer``, ...) gets a forward pre-hook and a forward hook, and ``vae.decode`` a wrapper;
each records a CUDA event on the current stream as it enters and leaves. Recording an event is a
runtime call, ``cudaEventRecord``, which the profiler's CUDA trace holds anyway, with the CUPTI
correlation id that orders it among the launches of the same thread. Every kernel, copy and memset
whose launch falls between a component's two marks is that component's, kernels replayed from a
CUDA graph included (they share their ``cudaGraphLaunch``'s id); whatever falls outside every
component (scheduler steps, classifier-free guidance, latents, image postprocessing) is
``other``. No sync is added and no device work: the busy time of the profiled rounds is
unchanged. The hooks sit on the pipeline's own attributes, outside anything ``torch.compile``
traced, so compiled and graph-replayed components are marked the same way.

When the trace holds event records the marks did not make (a pipeline or library that records
its own), the ids cannot be told apart: the round has no components rather than wrong ones.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .gpu_time import busy_seconds

#: Device work outside every component.
OTHER = "other"
#: The runtime call each mark makes, as the CUDA trace names it.
MARK = "cudaEventRecord"
#: The component whose ``decode`` is marked instead of its forward: pipelines call ``vae.decode``.
DECODER = "vae"


def modules(pipe: Any) -> list[tuple[str, Any]]:
    """The pipeline's ``nn.Module`` components, by the names Diffusers gives them, in its order."""
    import torch

    found = getattr(pipe, "components", None)
    if not isinstance(found, dict):
        return []
    return [(name, module) for name, module in found.items() if isinstance(module, torch.nn.Module)]


@contextlib.contextmanager
def marked(pipe: Any) -> Iterator[list[tuple[str, bool]]]:
    """Mark each component's entry and exit while the block runs; yields the marks made, in order,
    as ``(component, entering)``. The hooks and the decoder's wrapper are gone afterwards."""
    import torch

    labels: list[tuple[str, bool]] = []
    events: list[torch.cuda.Event] = []  # kept alive until the round ends

    def mark(name: str, entering: bool) -> None:
        event = torch.cuda.Event()
        event.record()
        events.append(event)
        labels.append((name, entering))

    with contextlib.ExitStack() as undo:
        for name, module in modules(pipe):
            if name == DECODER and callable(getattr(module, "decode", None)):
                undo.enter_context(_wrapped_decode(module, mark))
                continue
            before = module.register_forward_pre_hook(lambda _m, _a, name=name: mark(name, True))
            after = module.register_forward_hook(lambda _m, _a, _o, name=name: mark(name, False))
            undo.callback(before.remove)
            undo.callback(after.remove)
        yield labels


@contextlib.contextmanager
def _wrapped_decode(vae: Any, mark: Callable[[str, bool], None]) -> Iterator[None]:
    """``vae.decode`` replaced on the instance for the block, whatever it was (a bound method, or
    the compiled function a stage put there), and put back as it was."""
    own = "decode" in vars(vae)
    original = vae.decode

    def decode(*args: Any, **kwargs: Any) -> Any:
        mark(DECODER, True)
        try:
            return original(*args, **kwargs)
        finally:
            mark(DECODER, False)

    vae.decode = decode
    try:
        yield
    finally:
        if own:
            vae.decode = original
        else:
            del vae.decode


def attribute(events: Iterable[Any], labels: list[tuple[str, bool]]) -> dict[str, float]:
    """GPU busy seconds per component of one profiled round, from its trace's ``events`` and the
    ``labels`` :func:`marked` gave; {} when the trace's marks are not exactly the ones made."""
    import torch

    cuda = torch.autograd.DeviceType.CUDA
    return split(((event.device_type() == cuda, event.name(), event.correlation_id(), event.start_ns(), event.end_ns())
                  for event in events), labels)


def split(events: Iterable[tuple[bool, str, int, int, int]], labels: list[tuple[str, bool]]) -> dict[str, float]:
    """:func:`attribute` on plain tuples ``(on_device, name, correlation_id, start_ns, end_ns)``."""
    events = list(events)
    marks = sorted(correlation for on_device, name, correlation, _, _ in events
                   if not on_device and name.startswith(MARK))
    if not labels or len(marks) != len(labels):
        return {}
    intervals: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for on_device, _, correlation, start, end in events:
        if not on_device or end <= start:
            continue
        index = bisect.bisect_left(marks, correlation) - 1  # the last mark launched before it
        name, entering = labels[index] if index >= 0 else (OTHER, False)
        intervals[name if entering else OTHER].append((start, end))
    return {name: busy_seconds(spans) for name, spans in intervals.items()}
