"""Inductor's compile workers, ended with the run when a stop leaves them a job.

``torch.compile`` hands Triton and C++ compiles (and max-autotune's benchmarks) to a pool of worker
processes behind a sidecar process (``torch._inductor.compile_worker.subproc_pool``). A run stopped
during a first compile leaves jobs running there. At exit torch shuts the pool down and waits up to
300 s for the sidecar, and on torch 2.11 (the H200's) the sidecar lets ``concurrent.futures`` wait for
its running jobs before it exits; torch 2.13 terminates its workers instead. So on the H200 every run
that a time limit stopped inside a compile printed its ``INTERRUPTED`` line and then sat there until
``timeout -k 20`` killed it: the kill's exit status 137 instead of the run's own, and a CI job's time
spent waiting for compiles nobody will use (``docs/limits.md``).

Reproduced on CPU with torch 2.11.0+cu130 (``reports/cpu/exit-wait/``): a 60 s job in the pool when
the run was stopped kept the process 61.6-62.8 s after its last line; torch 2.13 exited in 2.4-2.9 s.
:func:`end_running_jobs`, called after the last line, shuts down every pool that still has a job and
kills its workers, so that the sidecar has nothing to wait for: the same run then exited 2.8-3.4 s
after its last line. Nothing is lost: a job still running when the run ends is one whose result
nobody will read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def end_running_jobs(patience: float = 10.0) -> int:
    """End each of Inductor's pools that still has a job: torch's own shutdown of it (in a thread: it
    waits for the sidecar), while its workers are killed as they appear, until the sidecar exits; after
    ``patience`` seconds the sidecar itself. Returns how many processes were killed.

    Why workers "as they appear": a job submitted just before the stop can still be queued in a
    sidecar that is importing torch, which forks its workers and starts the job only then (on CPU
    with torch 2.11, killing the workers once missed them in 3 of 7 runs stopped 2 s after
    submitting). Torch's shutdown sets the pool as closed first, so the sidecar's end is not logged
    as an unclean exit, and its own call at exit finds nothing left to do.

    A no-op where torch's compiler was never imported and where every job has finished (a run that
    was not stopped). Only the sidecar pool, torch's default, is handled: with
    ``TORCHINDUCTOR_WORKER_START=fork`` or ``spawn`` the pool is ``concurrent.futures``' own, in this
    process, and its exit still waits for a running job. Off Linux the workers cannot be listed
    (``/proc``): the sidecar is killed after ``patience``, and its workers end themselves within a
    minute (torch's watchdog sees their parent gone)."""
    async_compile = sys.modules.get("torch._inductor.async_compile")
    if async_compile is None:
        return 0
    killed: set[int] = set()
    for pool in list(getattr(async_compile, "_pool_set", ())):
        sidecar = getattr(pool, "process", None)
        if not isinstance(sidecar, subprocess.Popen) or not getattr(pool, "pending_futures", None):
            continue
        closing = threading.Thread(target=pool.shutdown, name="diffusers-perf compile pool", daemon=True)
        closing.start()
        deadline = time.monotonic() + patience
        while sidecar.poll() is None:
            if time.monotonic() > deadline:
                _kill(sidecar.pid, killed)
            for pid in _children(sidecar.pid):
                _kill(pid, killed)
            time.sleep(0.05)
        closing.join(patience)
    return len(killed)


def _kill(pid: int, killed: set[int]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)


def _children(pid: int) -> set[int]:
    """The processes ``pid`` started (Linux's ``/proc/PID/task/TID/children``); empty elsewhere."""
    found: set[int] = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            found.update(int(child) for child in listing.read_text().split())
    return found
