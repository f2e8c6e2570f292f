"""``pytest perf`` runs forked from a warm process, for the tests' end-to-end runs.

Why: a fresh interpreter spends about 7 s of the 2-core CI machine importing torch, Diffusers,
Transformers and the pipeline classes before ``pytest perf`` does anything, and the tests start
about 80 such runs: more than half of ``pytest tests``. A ``multiprocessing`` fork server imports
them once per xdist worker (:data:`PRELOAD`), and each run is a fork of it: a new process, as
clean as a subprocess for everything the suite does (its own ``pytest.main``, environment,
working directory, file descriptors and exit status), but it starts with those modules loaded.

The server only ever imports: no torch operator runs in it, so no OpenMP pool or other thread
exists to be lost across the fork. Runs that must be separate interpreters (signals sent from
outside, another repository's environment, A/B's reference worker) still use real subprocesses.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest

#: What the fork server imports once: the heavy modules, the classes the pipelines are built from
#: (Diffusers and Transformers load them lazily, at first attribute access), and the suite itself.
PRELOAD = ["forked", "torch", "diffusers", "transformers", "perf.options", "perf.plugin", "perf.fixtures",
           "perf.runner", "perf.pipelines"]

_context: multiprocessing.context.ForkServerContext | None = None


def _warm() -> None:
    """Touch the lazily imported classes, in the server, when this module is preloaded."""
    import diffusers
    import transformers

    for name in ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "FluxPipeline", "UNet2DConditionModel",
                 "AutoencoderKL", "FluxTransformer2DModel", "DDIMScheduler", "EulerDiscreteScheduler",
                 "FlowMatchEulerDiscreteScheduler"):
        getattr(diffusers, name, None)
    for name in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "T5EncoderModel",
                 "T5TokenizerFast"):
        getattr(transformers, name, None)


if multiprocessing.parent_process() is None and os.environ.get("DIFFUSERS_PERF_FORK_SERVER") == "1":
    _warm()


def _child(args: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    """The forked run: ``pytest.main`` in ``cwd`` with ``env``, its output in two files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, cwd)  # as pytester's subprocesses: the test's folder is importable (-p plugins)
    for fd, path in ((1, stdout), (2, stderr)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    code = 1
    try:
        code = int(pytest.main(args))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _server() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        here = str(Path(__file__).parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        saved = dict(os.environ)
        # The server starts now, with this environment (each child gets its test's own): it must
        # find this module (a preload that fails to import is skipped silently) and warm up.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH", "")]))
        os.environ["DIFFUSERS_PERF_FORK_SERVER"] = "1"
        try:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(PRELOAD)
            _context.Process(target=time.sleep, args=(0,)).start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return _context


def runpytest(pytester: pytest.Pytester, args: list[str], timeout: float) -> pytest.RunResult:
    """What ``pytester.runpytest_subprocess(*args)`` returns, from a forked run."""
    basetemp = pytester.path / f"runpytest-{len(list(pytester.path.glob('runpytest-*')))}"
    basetemp.mkdir()
    stdout, stderr = basetemp / "stdout", basetemp / "stderr"
    cwd = str(pytester.path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [cwd, os.environ.get("PYTHONPATH", "")])))
    full = [f"--basetemp={basetemp / 'tmp'}", *map(str, args)]
    start = time.perf_counter()
    process = _server().Process(target=_child, args=(full, cwd, env, str(stdout), str(stderr)))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        raise pytester.TimeoutExpired(f"{timeout} s timeout expired running pytest {' '.join(full)}")
    duration = time.perf_counter() - start
    out, err = stdout.read_text(errors="replace"), stderr.read_text(errors="replace")
    print("forked: pytest", *full, f"(exit {process.exitcode}, {duration:.1f} s)")
    print(out)
    print(err, file=sys.stderr)
    return pytest.RunResult(process.exitcode, out.splitlines(), err.splitlines(), duration)
