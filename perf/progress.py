"""Live progress: which stage a long run is in, doing what, and about how long is left.

A full ladder takes most of ten minutes on an H100, and pytest shows one dot per finished stage:
a run killed by a job's time limit said nothing of where it was. Each phase of a stage (build,
warm-up and compile, timed rounds, profiling, counting) prints one line as it starts, through
pytest's terminal reporter with output capture suspended, so it shows in the plain default output
and in CI logs alike:

``[3/11] fp16: timing 6 rounds (~12 s); 1 min 40 s so far, ~4 min left``

Nothing is printed inside a timed round. The estimate is the mean time of the finished stages
times the stages still to run.

The same clock says where the time goes: each phase belongs to one of :data:`COSTS`, and
:meth:`Progress.costs` gives the seconds a stage spent in each, which the runner stores in
``extra_info["cost_seconds"]``: nightly GPU minutes cost money, and a ladder that grows must
know what to make cheaper.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pytest

#: What a stage's time is spent on, in the order a stage goes through them.
COSTS = ("build", "reference", "flops", "warmup", "timing", "gpu_time", "counters")
_IMPORTED = time.perf_counter()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    def __init__(self, write: Callable[[str, bool], None] | None = None, total: int = 0):
        """``write(line, final)``: ``final`` is False for a phase, True for a line of its own (:meth:`say`)."""
        self._write = write
        self.total = total
        self.index = 0
        self.stage = ""
        self._started = time.perf_counter()
        self._stage_started: float | None = None
        self._finished: list[float] = []
        self._costs: dict[str, float] = {}
        self._cost: tuple[str, float] | None = None  # the phase under way: its cost and when it began

    def start_stage(self, name: str) -> None:
        now = time.perf_counter()
        if self._stage_started is not None:
            self._finished.append(now - self._stage_started)
        self.index += 1
        self.stage = name
        self._stage_started = now
        self._costs, self._cost = {}, None

    def phase(self, text: str, cost: str | None = None) -> None:
        """A phase of the current stage begins; ``cost`` (one of :data:`COSTS`) is what it is spent on."""
        self.charge(cost)
        if self._write is None:
            return
        elapsed = time.perf_counter() - self._started
        left = ""
        if self._finished and self.total:
            remaining = max(0, self.total - self.index + 1) * sum(self._finished) / len(self._finished)
            left = f", ~{_duration(remaining)} left"
        where = f"[{self.index}/{self.total}] " if self.total else ""
        self._write(f"{where}{self.stage}: {text}; {_duration(elapsed)} so far{left}", False)

    def charge(self, cost: str | None) -> None:
        """What follows is spent on ``cost`` (None: on nothing a stage records), without a line of
        its own (a step too short to announce)."""
        now = time.perf_counter()
        self._close_cost(now)
        if cost is not None:
            self._cost = (cost, now)

    def _close_cost(self, now: float) -> None:
        if self._cost is not None:
            name, began = self._cost
            self._costs[name] = self._costs.get(name, 0.0) + now - began
            self._cost = None

    def costs(self) -> dict[str, float]:
        """Seconds the current stage has spent so far, by cost, the phase under way included."""
        self._close_cost(time.perf_counter())
        return {name: round(self._costs[name], 2) for name in COSTS if name in self._costs}

    def say(self, line: str) -> None:
        """A line of its own (an A/B stage's verdict, as soon as it is judged)."""
        if self._write is not None:
            self._write(line, True)


def process_seconds() -> float:
    """Seconds since this process started (importing torch included), where the OS tells; else
    since this module was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


def summarize(session_seconds: float, stage_costs: list[dict[str, float]]) -> str:
    """One line: the session's wall time and what the stages spent it on."""
    totals = {name: sum(costs.get(name, 0.0) for costs in stage_costs) for name in COSTS}
    spent = sum(totals.values())
    parts = [f"{LABELS[name]} {_duration(seconds)}" for name, seconds in totals.items() if seconds >= 0.5]
    rest = session_seconds - spent
    return (f"session: {_duration(session_seconds)}"
            + (f"; stages spent {', '.join(parts)}" if parts else "")
            + (f"; start-up, teardown and the rest {_duration(rest)}" if rest >= 0.5 else ""))


LABELS = {"build": "building", "reference": "reference images", "flops": "FLOPs and the matmul peak", "warmup": "warm-up and compile",
          "timing": "timed rounds", "gpu_time": "profiling GPU time", "counters": "counting host work"}


def pytest_writer(config: pytest.Config) -> Callable[..., None] | None:
    """A writer that reaches the terminal while pytest captures the test's output.

    On an interactive terminal each stage keeps one line, redrawn at every phase, as pytest
    redraws its own "collecting ..." line; the stage's verdict ends it. Elsewhere (CI logs, a
    pipe) every phase is a line of its own: a redrawn line would be a mess of carriage returns.
    """
    plugins = config.pluginmanager
    terminal, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if terminal is None:
        return None
    redraw = bool(terminal.isatty())
    drawing = False

    def write(line: str, final: bool = True) -> None:
        nonlocal drawing
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if redraw and (drawing or not final):
                if not drawing:
                    terminal.ensure_newline()
                terminal.rewrite(line, erase=True)
                drawing = not final
                if final:
                    terminal.write("\n")
                terminal.flush()
            else:
                terminal.ensure_newline()
                terminal.write_line(line)

    return write
