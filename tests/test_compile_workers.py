"""A run stopped inside a compile ends with its last line, not minutes later (perf/compile_workers.py).

Before: on torch 2.11 (the H200's) a job still running in Inductor's worker pool kept the process
alive after its ``INTERRUPTED`` line until the job ended (a 60 s job: 61.6-62.8 s, ``reports/cpu/exit-wait/``);
on the H200 ``timeout -k 20`` killed such runs, exit status 137. CI has torch 2.13, whose own shutdown
ends running jobs, so these tests hold the suite's part: the pool is shut down and its sidecar gone
before anything else of torch's runs at exit. ``reports/cpu/exit-wait/`` ran them on torch 2.11 too.
"""

from __future__ import annotations

import sys
import time

import pytest

from perf import compile_workers


def _sidecar_pool():
    """Inductor's worker pool as ``torch.compile`` gets it, or a skip saying why there is none."""
    async_compile = pytest.importorskip("torch._inductor.async_compile")
    from torch._inductor import config

    if not sys.platform.startswith("linux"):
        pytest.skip("the workers are found through Linux's /proc")
    if async_compile.get_compile_threads() <= 1 or config.worker_start_method != "subprocess":
        pytest.skip("Inductor compiles in this process here: no worker pool")
    return async_compile, async_compile.AsyncCompile.process_pool()


@pytest.mark.parametrize("started", [True, False], ids=["running", "still-queued"])
def test_a_job_left_in_the_pool_is_ended_with_its_sidecar(started):
    """``still-queued``: the stop came before the sidecar (still importing torch) forked its workers,
    which then start the job; on torch 2.11 a fix that killed the workers only once missed 3 of 7 runs."""
    async_compile, pool = _sidecar_pool()
    try:
        job = pool.submit(time.sleep, 120)
        deadline = time.monotonic() + 60
        while started and not compile_workers._children(pool.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        begun = time.monotonic()
        compile_workers.end_running_jobs()
        assert time.monotonic() - begun < 15
        assert pool.process.poll() is not None  # the sidecar is gone
        assert job.done()  # failed or cancelled: nobody waits for it
        assert not compile_workers._children(pool.process.pid)
    finally:
        async_compile.shutdown_compile_workers()


def test_a_pool_with_nothing_to_do_is_left_to_torch():
    """A run that was not stopped: its idle pool keeps its workers, and torch shuts it down as usual."""
    async_compile, pool = _sidecar_pool()
    try:
        assert pool.submit(sum, (1, 2)).result(timeout=120) == 3
        assert compile_workers.end_running_jobs() == 0
        assert pool.process.poll() is None
    finally:
        async_compile.shutdown_compile_workers()
