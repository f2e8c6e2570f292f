"""One stage in its own process, for A/B runs: the worker side and the client that drives it.

An A/B run (:mod:`perf.ab`) needs each side's pipeline alive in its own interpreter (the
candidate is this environment, the reference another venv's Python) and rounds that alternate
between them. A worker builds one stage's pipeline once, warms it up, then answers requests, one
JSON object per line on stdin, one per line on its own copy of stdout:

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

Anything the libraries print goes to stderr, so stdout carries only the protocol. A failure
answers ``{"error": "<one line>"}``. A process that dies (a segfault, a sticky CUDA error that
poisons every later call) fails its stage alone: the next stage starts fresh workers.

The worker imports only this package, torch and diffusers, never pytest: it runs under the
reference environment's interpreter with this package on ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # put on the reference's PYTHONPATH

class WorkerDied(RuntimeError):
    """The worker process ended or answered an error; the message is one line."""


# -- the worker ---------------------------------------------------------------------------------


def serve(requests, reply) -> None:
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
                    stack.enter_context(optimizations.tf32(settings.recipe(name).tf32))
                    pipe = runner.build(name)
                    injected = request.get("inject") or {}
                    if injected.get("host_delay"):
                        inject.delay_postprocessing(pipe, injected["host_delay"])
                    device = runner.device

                    call = timing.synchronized(lambda pipe=pipe, runner=runner, steps=settings.steps: runner.generate(pipe, steps),
                                                device)
                    compiled = settings.recipe(name).compile is not None
                    warmups = timing.warm_up(call, settings.budget, compiled, settle=True)
                    state.update(runner=runner, call=call, name=name, device=device, settings=settings, rounds=0,
                                 crash_after=injected.get("crash_after_rounds"), last=None)
                    peak = free = None
                    if device.type == "cuda":
                        peak = torch.cuda.max_memory_allocated(device)
                        free = torch.cuda.mem_get_info(device)[0]
                        torch.cuda.reset_peak_memory_stats(device)
                    reply({"warmup_seconds": warmups, "peak_memory_bytes": peak, "free_memory_bytes": free,
                           "device": device.type})
                elif op == "round":
                    if state["crash_after"] is not None and state["rounds"] >= state["crash_after"]:
                        os.kill(os.getpid(), signal.SIGSEGV)  # --perf-inject-crash: a segfault mid-stage
                    start = time.perf_counter()
                    state["last"] = state["call"]()
                    seconds = time.perf_counter() - start
                    state["rounds"] += 1
                    reply({"seconds": seconds})
                elif op == "finish":
                    device, call, settings = state["device"], state["call"], state["settings"]
                    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
                    image_stats = guards.check_images(state["last"], state["name"])
                    gpu, counted = timing.profile_and_count(call, device, settings.budget)
                    if counted and settings.recipe(state["name"]).compile is not None:
                        counted.update(counters.dynamo_delta(state["runner"].dynamo_before))
                    reply({"gpu_seconds": gpu, "counters": counted, "peak_memory_bytes": peak,
                           "image_max": min(st.max for st in image_stats)})
                else:
                    reply({"error": f"unknown request {op!r}"})
            except Exception as exc:  # one line back to the parent; the worker stays up for "exit"
                from .runner import describe

                reply({"error": describe(request.get("stage") or state.get("name") or "?", f"in the worker ({op})", exc)})


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # print() of the libraries goes to stderr from here on
    sys.stdout = sys.stderr

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    serve(sys.stdin, reply)


# -- the client ---------------------------------------------------------------------------------


class Worker:
    """A worker process under ``python``, spoken to one request at a time."""

    def __init__(self, python: str, side: str):
        self.side = side
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        env.pop("PYTEST_XDIST_WORKER", None)
        # Idle OpenMP threads of the side that just ran spin for a while (GNU OpenMP, oneDNN) and
        # take cores from the side that runs next: on the 2-core CPU machine the first rounds after
        # each switch were 2x slower. Passive waiting puts them to sleep.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.process = subprocess.Popen([python, "-m", "perf.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=env, text=True, bufsize=1)

    def request(self, op: str, **fields) -> dict:
        try:
            self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise WorkerDied(f"the {self.side} worker died during {op!r} ({self._exit()})")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerDied(f"{self.side}: {answer['error']}")
        return answer

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
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def resolve(python: str) -> str:
    """The interpreter's absolute path: a name on PATH (python3) or a path, as the user gave it."""
    found = shutil.which(python) if os.sep not in python else None
    return os.path.abspath(found or python)


def check_python(python: str) -> str | None:
    """Why ``python`` cannot run workers (one line), or None: it must exist, be a Python, and
    import torch, diffusers and this package's worker."""
    path = Path(python)
    if os.sep not in python and shutil.which(python):  # a name on PATH, like python3
        path = Path(shutil.which(python))
    if not path.exists():
        return f"{python} does not exist: pass the interpreter of the reference environment, e.g. /path/to/venv/bin/python"
    if path.is_dir() or not os.access(path, os.X_OK):
        return f"{python} is not an executable file: pass the reference environment's bin/python"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    probe = ("import sys\nfor name in ('torch', 'diffusers', 'perf.worker'):\n"
             "    try:\n        __import__(name)\n"
             "    except Exception as exc:\n        print('missing', name, type(exc).__name__); sys.exit(3)\n"
             "print('ok', sys.version.split()[0])")
    try:
        done = subprocess.run([str(path), "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python} is not a Python interpreter ({type(exc).__name__}: {exc})"
    words = done.stdout.split()
    if done.returncode == 3 and words[:1] == ["missing"]:
        what = words[1] if len(words) > 1 else "a module"
        hint = "this suite's worker code (perf.worker) does not import there" if what == "perf.worker" else \
            f"install {what} in that environment"
        return f"{python} lacks {what} ({' '.join(words[2:])}): {hint}"
    if done.returncode != 0 or words[:1] != ["ok"]:
        return f"{python} is not a Python interpreter (running it gave exit status {done.returncode})"
    return None


if __name__ == "__main__":
    main()
