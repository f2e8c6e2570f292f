"""Live progress: which stage a long run is in, doing what, and about how long is left.

A full ladder takes most of ten minutes on an H100, and pytest shows one dot per finished stage:
a run killed by a job's time limit said nothing of where it was. Each phase of a stage (build,
warm-up and compile, timed rounds, profiling, counting) prints one line as it starts, through
pytest's terminal reporter with output capture suspended, so it shows in the plain default output
and in CI logs alike:

``[3/11] fp16: timing 6 rounds (~12 s); 1 min 40 s so far, ~4 min left``

Nothing is printed inside a timed round. The estimate is the mean time of the finished stages
times the stages still to run.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    def __init__(self, write: Callable[[str], None] | None = None, total: int = 0):
        self._write = write
        self.total = total
        self.index = 0
        self.stage = ""
        self._started = time.perf_counter()
        self._stage_started: float | None = None
        self._finished: list[float] = []

    def start_stage(self, name: str) -> None:
        if self._stage_started is not None:
            self._finished.append(time.perf_counter() - self._stage_started)
        self.index += 1
        self.stage = name
        self._stage_started = time.perf_counter()

    def phase(self, text: str) -> None:
        if self._write is None:
            return
        elapsed = time.perf_counter() - self._started
        left = ""
        if self._finished and self.total:
            remaining = max(0, self.total - self.index + 1) * sum(self._finished) / len(self._finished)
            left = f", ~{_duration(remaining)} left"
        where = f"[{self.index}/{self.total}] " if self.total else ""
        self._write(f"{where}{self.stage}: {text}; {_duration(elapsed)} so far{left}")

    def say(self, line: str) -> None:
        """A line of its own (an A/B stage's verdict, as soon as it is judged)."""
        if self._write is not None:
            self._write(line)


def pytest_writer(config) -> Callable[[str], None] | None:
    """A writer that reaches the terminal while pytest captures the test's output."""
    plugins = config.pluginmanager
    terminal, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if terminal is None:
        return None

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            terminal.ensure_newline()
            terminal.write_line(line)

    return write
