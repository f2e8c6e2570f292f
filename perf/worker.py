"""One stage in its own process, for A/B runs: the worker side and the client that drives it.

An A/B run (:mod:`perf.ab`) needs each side's pipeline alive in its own interpreter (the
candidate is this environment, the reference another venv's Python, or a wrapper script that
runs it) and rounds that alternate between them. A worker builds one stage's pipeline once,
warms it up, then answers requests, one JSON object per line, over a pair of pipes of its own
(file descriptors inherited from the parent, named on its command line). Never stdin and
stdout: a wrapper script that echoes a banner, a site hook or a library that prints at import
would write into the protocol.

``{"op": "hello"}``
    the worker's software and hardware (for the report's versions of each side)
``{"op": "build", "stage": NAME, "settings": {...}, "inject": {...}}``
    build and warm up; answers the warm-up seconds and the peak and free device memory
``{"op": "round"}``
    one timed generation (synchronized); answers its seconds, measured inside the worker so the
    pipe between the processes is never timed
``{"op": "finish"}``
    the image guard on the last images, then GPU busy time and the host-work counters of extra
    rounds, as the in-process ladder measures them (:mod:`perf.timing`)

A failure answers ``{"error": "<one line>"}``. A process that dies (a segfault, a sticky CUDA
error that poisons every later call), answers something that is not the protocol, or does not
answer within its request's time limit (:meth:`Worker.request`, scaled from the stage's own
measured time by :mod:`perf.ab`) fails its stage alone: the next stage starts fresh workers.

The worker imports only this package, torch and diffusers, never pytest: it runs under the
reference environment's interpreter with this package on ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # put on the reference's PYTHONPATH
PROBE_MARK = "diffusers-perf-probe: "  # the interpreter check's answer, among whatever else is printed

class WorkerDied(RuntimeError):
    """The worker process ended or answered an error; the message is one line."""


# -- the worker ---------------------------------------------------------------------------------


def serve(requests: Iterable[str], reply: Callable[[dict], None]) -> None:
    """Answer ``requests`` (an iterable of JSON lines) through ``reply(dict)`` until they end."""
    import torch

    from . import baselines, counters, guards, inject, optimizations, timing
    from .runner import Runner
    from .settings import Settings

    state: dict = {}
    with contextlib.ExitStack() as stack:
        for line in requests:
            request = json.loads(line)
            op = request["op"]
            try:
                if op == "hello":
                    reply({"software": baselines.software_info(), "hardware": baselines.hardware_info(),
                           "python": sys.executable})
                elif op == "build":
                    settings = Settings.from_json(request["settings"])
                    name = request["stage"]
                    runner = Runner(settings)
                    stack.enter_context(optimizations.process_flags(settings.recipe(name)))
                    pipe = runner.build(name)
                    runner.watch_denoiser(pipe)
                    pin(settings.affinity)
                    injected = request.get("inject") or {}
                    if injected.get("host_delay"):
                        inject.delay_postprocessing(pipe, injected["host_delay"])
                    device = runner.device

                    call = timing.synchronized(lambda pipe=pipe, runner=runner, steps=settings.steps: runner.generate(pipe, steps),
                                                device)
                    compiled = settings.recipe(name).compile is not None
                    warmups = timing.warm_up(call, settings.budget, compiled, settle=True)
                    if injected.get("step_delay"):  # --perf-inject-step-delay: a fraction of this side's step
                        runner.clock.timed(call)()
                        fastest = runner.clock.rounds.pop().summary()["step_fastest"]
                        inject.burn_every_step(runner.clock, injected["step_delay"] * fastest)
                    state.update(runner=runner, call=call, pipe=pipe, name=name, device=device, settings=settings, rounds=0,
                                 crash_after=injected.get("crash_after_rounds"), last=None)
                    peak = free = None
                    if device.type == "cuda":
                        peak = torch.cuda.max_memory_allocated(device)
                        free = torch.cuda.mem_get_info(device)[0]
                        torch.cuda.reset_peak_memory_stats(device)
                    reply({"warmup_seconds": warmups, "peak_memory_bytes": peak, "free_memory_bytes": free,
                           "device": device.type, "cpus": sorted(os.sched_getaffinity(0))
                           if hasattr(os, "sched_getaffinity") else []})
                elif op == "round":
                    if state["crash_after"] is not None and state["rounds"] >= state["crash_after"]:
                        os.kill(os.getpid(), signal.SIGSEGV)  # --perf-inject-crash: a segfault mid-stage
                    clock = state["runner"].clock
                    kept = len(clock.rounds)
                    timed = clock.timed(state["call"])  # the round's steps (perf.steps), outside its seconds
                    start = time.perf_counter()
                    state["last"] = timed()
                    seconds = time.perf_counter() - start
                    state["rounds"] += 1
                    parts = clock.rounds[kept].summary() if len(clock.rounds) > kept else None
                    reply({"seconds": seconds, "steps": parts})
                elif op == "finish":
                    device, call, settings = state["device"], state["call"], state["settings"]
                    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
                    image_stats = guards.check_images(state["last"], state["name"])
                    profiled, counted = timing.profile_and_count(call, device, settings.budget, pipe=state["pipe"])
                    if counted and settings.recipe(state["name"]).compile is not None:
                        counted.update(counters.dynamo_delta(state["runner"].dynamo_before))
                    reply({"gpu_seconds": profiled.seconds, "gpu_components": profiled.components,
                           "counters": counted, "kernel_kinds": profiled.kernel_kinds, "peak_memory_bytes": peak,
                           "image_max": min(st.max for st in image_stats)})
                else:
                    reply({"error": f"unknown request {op!r}"})
            except Exception as exc:  # one line back to the parent; the worker stays up for "exit"
                from .runner import describe

                reply({"error": describe(request.get("stage") or state.get("name") or "?", f"in the worker ({op})", exc)})


def pin(cpus: Iterable[int] | None) -> None:
    """Pin this thread, the one that runs the pipeline, to ``cpus`` (--perf-affinity), after the
    pipeline is built: the threads CUDA and the libraries started stay where the OS puts them.

    Why: on the H200 host a disturbance slowed one worker, not both, for several rounds at a time
    (``reports/h200/steps/``), which alternating rounds cannot cancel. Both sides' main threads on
    the same CPU meet the same disturbances. Threads the pipeline starts later inherit the CPUs."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))


def main(argv: list[str]) -> None:
    """``python -m perf.worker REQUESTS_FD REPLIES_FD``: the protocol over the two inherited pipes."""
    requests = os.fdopen(int(argv[0]), "r", buffering=1)
    replies = os.fdopen(int(argv[1]), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, never near the protocol
    sys.stdout = sys.stderr

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")

    serve(requests, reply)


# -- the client ---------------------------------------------------------------------------------


#: Linux's personality flag that turns address-space randomization off for a program it execs.
ADDR_NO_RANDOMIZE = 0x0040000


@contextlib.contextmanager
def fixed_layout(enabled: bool = True) -> Iterator[None]:
    """Processes started in the block run without address-space randomization (as ``setarch -R``
    would start them), where Linux allows it; this process's own layout is not touched.

    Why: on the 2-core CPU machine two identical A/B workers differed by up to 28 % for their whole
    life (13 A/A runs, whole-stage ratios 0.79-1.28), and without randomization by at most 15 %
    (15 runs, 0.92-1.15; ``reports/cpu/ab-steps/``): where code and data land in memory decides a
    CPU-bound process's speed, and with it fixed both sides land alike."""
    libc = None
    if enabled and sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
    old = libc.personality(0xFFFFFFFF) if libc is not None else -1
    if libc is not None and old != -1:
        libc.personality(old | ADDR_NO_RANDOMIZE)
    try:
        yield
    finally:
        if libc is not None and old != -1:
            libc.personality(old)


class Worker:
    """A worker process under ``python``, spoken to one request at a time over its own pipes."""

    def __init__(self, python: str, side: str, fixed: bool = False):
        """``fixed``: start it without address-space randomization (:func:`fixed_layout`)."""
        self.side = side
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        env.pop("PYTEST_XDIST_WORKER", None)
        # Idle OpenMP threads of the side that just ran spin for a while (GNU OpenMP, oneDNN) and
        # take cores from the side that runs next: on the 2-core CPU machine the first rounds after
        # each switch were 2x slower. Passive waiting puts them to sleep.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        try:
            with fixed_layout(fixed):
                self.process = subprocess.Popen(
                    [python, "-m", "perf.worker", str(requests_read), str(replies_write)],
                    pass_fds=(requests_read, replies_write), stdin=subprocess.DEVNULL, stdout=2, env=env)
        finally:
            os.close(requests_read)
            os.close(replies_write)
        self._requests = os.fdopen(requests_write, "w", buffering=1)
        self._replies = replies_read
        self._buffer = b""

    def request(self, op: str, timeout: float, **fields: Any) -> dict:
        """Send one request and wait at most ``timeout`` seconds for its answer."""
        try:
            self._requests.write(json.dumps({"op": op, **fields}) + "\n")
            self._requests.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"the {self.side} worker died before {op!r} ({self._exit()})") from None
        line = self._readline(timeout)
        if line is None:
            self.process.kill()
            raise WorkerDied(f"the {self.side} worker did not answer {op!r} within {timeout:.0f} s (killed)")
        if not line:
            raise WorkerDied(f"the {self.side} worker died during {op!r} ({self._exit()})")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise WorkerDied(f"the {self.side} worker answered {op!r} with something that is not the protocol: "
                             f"{line[:80]!r}")
        if "error" in answer:
            raise WorkerDied(f"{self.side}: {answer['error']}")
        return answer

    def _readline(self, timeout: float) -> str | None:
        """The next line of replies; "" at end of file, None when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                return None
            chunk = os.read(self._replies, 65536)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _exit(self) -> str:
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return "no answer, killed"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._requests.close()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self._replies)


def resolve(python: str) -> str:
    """The interpreter's absolute path: a name on PATH (python3) or a path, as the user gave it."""
    found = shutil.which(python) if os.sep not in python else None
    return os.path.abspath(found or python)


def check_python(python: str) -> str | None:
    """Why ``python`` cannot run workers (one line), or None: it must exist, be a Python, and
    import torch, diffusers and this package's worker."""
    path = Path(python)
    found = shutil.which(python) if os.sep not in python else None
    if found:  # a name on PATH, like python3
        path = Path(found)
    if not path.exists():
        return f"{python} does not exist: pass the interpreter of the reference environment, e.g. /path/to/venv/bin/python"
    if path.is_dir() or not os.access(path, os.X_OK):
        return f"{python} is not an executable file: pass the reference environment's bin/python"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    # The answer is one marked line: a wrapper script or a site hook may print around it.
    probe = ("import sys\nfor name in ('torch', 'diffusers', 'perf.worker'):\n"
             "    try:\n        __import__(name)\n"
             f"    except Exception as exc:\n        print('{PROBE_MARK}missing', name, type(exc).__name__); "
             "sys.exit(3)\n"
             f"print('{PROBE_MARK}ok', sys.version.split()[0])")
    try:
        done = subprocess.run([str(path), "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python} is not a Python interpreter ({type(exc).__name__}: {exc})"
    marked = [line[len(PROBE_MARK):] for line in done.stdout.splitlines() if line.startswith(PROBE_MARK)]
    words = marked[-1].split() if marked else []
    if done.returncode == 3 and words[:1] == ["missing"]:
        what = words[1] if len(words) > 1 else "a module"
        hint = "this suite's worker code (perf.worker) does not import there" if what == "perf.worker" else \
            f"install {what} in that environment"
        return f"{python} lacks {what} ({' '.join(words[2:])}): {hint}"
    if done.returncode != 0 or words[:1] != ["ok"]:
        return f"{python} is not a Python interpreter (running it gave exit status {done.returncode})"
    return None


if __name__ == "__main__":
    main(sys.argv[1:])
