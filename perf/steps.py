"""Per-step timing: where each timed round's time goes, from the pipeline's own step callback.

Why: a generation is one sample of wall time, but it holds ``steps`` samples of the denoiser's
pace. On an eager GPU stage the host *is* the latency, and the host drifts: on an H200 whole
generations of ``sdpa`` spread with a robust CV of 4.8 % and a fault that added host time per
step widened that spread until it hid the fault (16.3 %), while each round's fastest step moved
+7.9 % against a 2.2 % spread (a probe of Dec 1, 16 rounds of 50 steps). Judging each round's
fastest step (:mod:`perf.gate`) sees what the whole generation cannot.

How: Diffusers calls ``callback_on_step_end(pipe, step, timestep, kwargs)`` after every
denoising step of every pipeline the suite runs (SD, SDXL, Flux and most others); the callback
takes one ``time.perf_counter()``. No sync is added and nothing else changes in the timed round:
each round is split at those host timestamps into

* ``first``: from the call to the first step's end (prompt encoding, latents, timesteps, step 1),
* the steps between (steps 2..N, one sample each),
* ``after``: from the last step's end to the synchronized images (VAE decode, postprocessing).

Each step is split once more, at the host timestamps of the denoiser's own call (a forward
pre-hook and hook on the pipeline's ``unet`` or ``transformer``, the compiled wrapper where there
is one, never inside a graph): ``loop_median`` is each round's median over its steps of the time
*outside* the denoiser's call: the scheduler's step, guidance, the latents' preparation, callbacks.
Why: a whole process can run 10 % faster or slower than the one that recorded its baseline (CPU,
``reports/cpu/malloc/``; H200 hosts, ``reports/h200/rerun-dec4/``), which hides a per-step
slowdown of the same size; the loop outside the denoiser is a small part of each step, so a
slower scheduler, a heavier pipeline loop or a callback that burns time moves it by several times
its size, far beyond what the process's own speed does to it. A slowdown inside the denoiser
moves the step, not this part.

A pipeline whose ``__call__`` takes no ``callback_on_step_end`` (a custom ``--perf-model``) is
timed as before, with no components.
"""

from __future__ import annotations

import dataclasses
import inspect
import statistics
import time
from collections.abc import Callable
from typing import Any

#: The per-round statistics stored in ``extra_info.step_timing`` (seconds, one value per timed round);
#: ``loop_median`` only where the denoiser's calls were timed, with two steps or more.
FIELDS = ("first", "step_fastest", "step_median", "after", "loop_median")


@dataclasses.dataclass
class Round:
    """One timed round split at its steps' ends (and, where timed, at its denoiser's calls)."""

    first: float
    steps: list[float]  # steps 2..N
    after: float
    loop: list[float] | None = None  # steps 2..N: each step's time outside the denoiser's calls

    @classmethod
    def of(cls, start: float, marks: list[float], end: float,
           calls: list[tuple[float, float]] | None = None) -> Round:
        steps = [b - a for a, b in zip(marks, marks[1:])]
        loop = None
        if calls is not None:
            inside = [sum(t1 - t0 for t0, t1 in calls if a <= t0 and t1 <= b) for a, b in zip(marks, marks[1:])]
            loop = [step - denoiser for step, denoiser in zip(steps, inside)]
        return cls(first=marks[0] - start, steps=steps, after=end - marks[-1], loop=loop)

    def summary(self) -> dict[str, float]:
        steps = self.steps or [self.first]  # one step: its only sample includes the prompt
        found = {"first": self.first, "step_fastest": min(steps), "step_median": statistics.median(steps),
                 "after": self.after}
        if self.loop:
            found["loop_median"] = statistics.median(self.loop)
        return found


def supports(pipe: Any) -> bool:
    """Whether the pipeline calls back at each step's end (Diffusers' ``callback_on_step_end``)."""
    try:
        return "callback_on_step_end" in inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False


class StepClock:
    """Host timestamps at each step's end, kept only for the rounds wrapped by :meth:`timed`."""

    def __init__(self) -> None:
        self.rounds: list[Round] = []
        self._marks: list[float] = []
        self._calls: list[list[float]] = []
        self.burn: Callable[[], object] | None = None  # --perf-inject-step-delay (perf.inject)
        #: The pipeline's denoiser (as the pipeline calls it: a compiled wrapper where compiled), whose
        #: calls the timed rounds split each step at; None: steps are not split.
        self.denoiser = None

    def on_step_end(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        if self.burn is not None:
            self.burn()
        self._marks.append(time.perf_counter())
        return {}  # nothing replaced: the pipeline keeps its latents

    def timed(self, call: Callable[[], object]) -> Callable[[], object]:
        """``call`` recording its round's components; what is timed around it is unchanged."""

        def round_with_steps() -> object:
            self._marks, self._calls = [], []
            hooks = self._watch()
            try:
                start = time.perf_counter()
                result = call()
                end = time.perf_counter()
            finally:
                for hook in hooks:
                    hook.remove()
            if self._marks:
                calls = [(t0, t1) for t0, t1 in self._calls if t1 is not None] if hooks else None
                self.rounds.append(Round.of(start, self._marks, end, calls))
            return result

        return round_with_steps

    def _watch(self) -> list:
        """Hooks on the denoiser for one timed round only: the counting and profiled rounds, and
        every other stage, run as they did."""
        module = self.denoiser
        if module is None:
            return []

        def enter(_module, _args):
            self._calls.append([time.perf_counter(), None])

        def leave(_module, _args, _output):
            if self._calls:
                self._calls[-1][1] = time.perf_counter()

        try:
            return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        except (AttributeError, RuntimeError):  # not an nn.Module, or one that takes no hooks
            return []

    def summary(self) -> dict[str, list[float]] | None:
        """Per timed round, each of :data:`FIELDS` that every round has, compact enough to store."""
        if not self.rounds:
            return None
        rows = [r.summary() for r in self.rounds]
        return {field: [round(row[field], 7) for row in rows] for field in FIELDS if all(field in row for row in rows)}
