"""How a run that is told to stop still ends with its verdict.

Three ways a stopped run used to end without one, or not stop at all:

* **SIGTERM.** It is how most CI systems stop a job that outlives its limit (``timeout``'s default
  signal, Kubernetes, Slurm, GitLab), and GitHub Actions sends it 7.5 s after the SIGINT of a
  cancelled job. Python dies of it at once: no verdict, no report, no compile cache (on CPU,
  ``reports/cpu/stop/``: exit status -15, the output ending with the stage's progress line).
  :func:`watch` makes it what Ctrl-C is, so pytest ends the session its usual way and
  the last line says ``INTERRUPTED``.
* **A stop that Python swallowed.** A signal's ``KeyboardInterrupt`` is raised wherever the main
  thread is, and where that is a weakref callback or a ``__del__`` (torch's compiler runs many as
  graphs are freed) Python prints "Exception ignored" and carries on: the run went on as if it had
  never been stopped. Seen on an H200: ``timeout``'s SIGINT landed in Dynamo's weakref callback
  during the last stage, and the run ended ``PASS`` and saved after its limit
  (``reports/h200/flux-compiled/``). :func:`watch` notes each stop it raises;
  :func:`raise_if_swallowed`, called as each stage's test ends, raises again one that pytest never saw.
* **A second signal while the run ends.** Between the interrupt and the last line the suite still
  writes the report, the JSON and the compile cache (seconds on CPU, more for a GPU's caches).
  The second signal of a cancelled GitHub job (the SIGTERM after the SIGINT) lands there and
  would cut the output where it stands. :func:`hold` keeps the first such signal until the last
  line is written (:meth:`Guard.release`), then lets the process end as pytest decided; a second one
  during the hold is delivered at once, so a user who presses Ctrl-C twice is never stuck.

Only handlers that are Python's defaults are replaced: a handler that the user's code or another
plugin installed is left as it is. Signal handlers belong to the main thread; elsewhere nothing
here does anything.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from types import FrameType
from collections.abc import Callable
from typing import Any

#: The signals that stop a run, with Python's own handler for each: the only handlers replaced here.
DEFAULTS: dict[int, Any] = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


class Stopped(KeyboardInterrupt):
    """A stop the report names (``stopped by …``): SIGTERM, or a stop raised again after being swallowed."""


class Terminated(Stopped):
    """SIGTERM, raised where the run was, so that pytest ends the session as it does for Ctrl-C."""


def _terminated(signum: int) -> Terminated:
    return Terminated(f"{signal.Signals(signum).name}: the run was told to stop (a CI time limit, a cancelled job)")


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@dataclasses.dataclass
class Guard:
    """What this module changed in the process's signal handling, so that it can be put back."""

    installed: dict[int, Any] = dataclasses.field(default_factory=dict)  # signal -> our handler (Python's was there)
    asked: list[int] = dataclasses.field(default_factory=list)  # stops raised that pytest has not seen yet
    held: list[int] = dataclasses.field(default_factory=list)  # signals received during hold()
    holding: dict[int, Any] = dataclasses.field(default_factory=dict)  # signal -> handler hold() replaced

    def restore(self) -> None:
        """Put back Python's handler wherever this guard installed its own (the end of the run)."""
        self.release()
        if _on_main_thread():
            for signum in self.installed:
                signal.signal(signum, DEFAULTS[signum])
        self.installed.clear()

    def release(self) -> None:
        """End :func:`hold`: the handlers it replaced are back. A signal it kept is dropped: the run it
        asked to stop is ending already."""
        if _on_main_thread():
            for signum, handler in self.holding.items():
                signal.signal(signum, handler)
        self.holding.clear()
        self.held.clear()

    def seen(self) -> None:
        """pytest has the stop (``pytest_keyboard_interrupt``): nothing is left to raise again."""
        self.asked.clear()


def watch(guard: Guard) -> None:
    """Where Python has its defaults, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``)
    and SIGINT its ``KeyboardInterrupt`` as before; both are noted in ``guard.asked`` until pytest
    sees them, so that one swallowed on its way can be raised again (:func:`raise_if_swallowed`)."""
    if not _on_main_thread():
        return
    for signum, default in DEFAULTS.items():
        if signal.getsignal(signum) is default:
            guard.installed[signum] = _stopper(guard)
            signal.signal(signum, guard.installed[signum])


def _stopper(guard: Guard) -> Callable[[int, FrameType | None], None]:
    def stop(received: int, frame: FrameType | None) -> None:
        guard.asked.append(received)
        raise _terminated(received) if received == signal.SIGTERM else KeyboardInterrupt()

    return stop


def raise_if_swallowed(guard: Guard, where: str) -> None:
    """Raise again a stop that was raised and never reached pytest (:func:`watch`)."""
    if guard.asked:
        name = signal.Signals(guard.asked[0]).name
        guard.asked.clear()
        raise Stopped(f"{name}, which code that ignores exceptions (a weakref callback, a __del__) had "
                      f"swallowed; raised again {where}")


def hold(guard: Guard) -> None:
    """From here to :meth:`Guard.release`, the first SIGINT or SIGTERM is kept, not raised: the run is
    already ending, and the output that says what it measured must be written whole."""
    if not _on_main_thread() or guard.holding:
        return
    for signum in DEFAULTS:
        current = signal.getsignal(signum)
        if current not in (signal.default_int_handler, signal.SIG_DFL) and current is not guard.installed.get(signum):
            continue  # someone else's handler: theirs to decide
        guard.holding[signum] = current
        signal.signal(signum, _keeper(guard, signum, current))


def _keeper(guard: Guard, signum: int, original: Any) -> Callable[[int, FrameType | None], None]:
    def keep(received: int, frame: FrameType | None) -> None:
        if guard.held:  # the second one: the user means it
            guard.release()
            if callable(original):
                original(received, frame)
            else:
                signal.raise_signal(received)
            return
        guard.held.append(received)

    return keep
