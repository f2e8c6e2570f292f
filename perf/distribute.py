"""``pytest perf -n N``: pytest-xdist spreads the stages over a host's GPUs, one worker per GPU.

Why xdist and not a scheduler of our own: it is the engine users already run their tests with,
and its controller already forwards every worker's reports, reschedules a crashed worker's
pending tests and derives the exit status. What the suite adds, and why:

* **One GPU per worker, chosen before CUDA starts.** A CUDA runtime reads ``CUDA_VISIBLE_DEVICES``
  once, the first time anything asks for a device (Diffusers' import may), so the controller sets
  it in each worker's interpreter as soon as xdist starts it (:func:`pytest_xdist_newgateway`),
  before the worker has imported pytest. A worker that replaces a crashed one gets the GPU that
  worker left.
* **Workers time, the controller stores and decides.** pytest-benchmark turns itself off under
  xdist and saves only in the controller, where nothing was timed. Each worker therefore times as a
  serial run does (:func:`enable_timing`) and puts each stage's entry, exactly as it would be
  stored, into the stage's test report (``user_properties``, which xdist carries to the
  controller); the controller judges it with the same rule and baseline (:func:`entries`),
  appends it to pytest-benchmark's session (:func:`metadata`) and writes one stored run, one report
  and one last line, as a serial run would. A stage whose worker died never reports an entry: its
  test's report is xdist's "worker crashed" failure, and the stage fails with it.
* **Its own hardware folder.** A run on N GPUs is stored under ``baselines/<gpu>-xN/``; while that
  folder is empty each stage is compared with the same GPU's single-GPU folder, and the report
  says so.

On CPU ``-n`` is refused: the workers would share the cores that are the device.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from . import baselines

#: ``workerinput`` key: what the controller tells each worker (hardware, key, its GPU).
WORKER_INPUT = "diffusers_perf"
#: ``user_properties`` keys of a stage's stored entry and of the worker's verdict on it, carried
#: from the worker to the controller (a stage that was not timed has a verdict and no entry).
ENTRY, VERDICT = "diffusers_perf_entry", "diffusers_perf_verdict"


def role(config: pytest.Config) -> str:
    """Which process this is: "serial", "controller" (xdist's main process, which times nothing) or "worker"."""
    if hasattr(config, "workerinput"):
        return "worker"
    if config.getoption("dist", "no") not in (None, "no") or config.getoption("numprocesses", None):
        return "controller"
    return "serial"


def devices() -> list[str]:
    """The GPUs a worker may own: ``CUDA_VISIBLE_DEVICES``'s entries, else every CUDA device.

    Asked in the controller only, which never runs a kernel."""
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [part.strip() for part in visible.split(",") if part.strip()][:torch.cuda.device_count()]
    return [str(index) for index in range(torch.cuda.device_count())]


def refusal(config: pytest.Config, gpus: list[str], ab: bool) -> str | None:
    """Why this ``-n`` run cannot give honest timings, in one line; None when it can."""
    workers = config.getoption("numprocesses", None)
    if not gpus:
        return ("benchmarks cannot run under pytest-xdist (-n/--dist) on this machine: it has no GPU, and workers "
                "would share its cores and make every timing wrong; run `pytest perf` without -n "
                "(the tests may use -n)")
    if ab:
        return "--perf-reference-python: A/B runs its own two workers; run it without -n"
    if config.getoption("dist", "no") == "each":
        return "--dist each would time every stage on every GPU; use -n N (or --dist load/worksteal/loadgroup)"
    if isinstance(workers, int) and workers > len(gpus):
        return (f"-n {workers}: this host has {len(gpus)} GPU{'s' * (len(gpus) != 1)} visible, and two workers on "
                f"one GPU would make every timing wrong; use -n auto (one worker per GPU) or at most -n {len(gpus)}")
    return None


def worker_count(config: pytest.Config, gpus: list[str]) -> int:
    workers = config.getoption("numprocesses", None)
    return workers if isinstance(workers, int) and workers > 0 else len(gpus)


def hardware_of_run(hardware: dict, workers: int) -> dict:
    """The hardware a run on ``workers`` GPUs is stored as: its key ends in ``-x<workers>``."""
    return dict(hardware, gpu_count=workers) if hardware.get("accelerator") == "cuda" else dict(hardware)


class Controller:
    """The controller's side (xdist hooks, registered by the plugin): which GPU each worker owns,
    and which stage each collected test is."""

    def __init__(self, gpus: list[str], shared: dict, collected: Callable[[list[str]], None]):
        self.gpus = gpus
        self.shared = shared  # what every worker is told: the run's hardware and key
        self.owner: dict[str, str] = {}  # gateway id -> GPU
        self.collected = collected  # called with each worker's collected test ids

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.collected(ids)

    def _free_gpu(self) -> str:
        held = set(self.owner.values())
        return next((gpu for gpu in self.gpus if gpu not in held), self.gpus[len(self.owner) % len(self.gpus)])

    def pytest_xdist_newgateway(self, gateway: Any) -> None:
        gpu = self.owner[gateway.id] = self._free_gpu()
        gateway.remote_exec(f"import os; os.environ['CUDA_VISIBLE_DEVICES'] = {gpu!r}").waitclose()

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_INPUT] = dict(self.shared, gpu=self.owner.get(node.gateway.id))

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        self.owner.pop(node.gateway.id, None)  # its replacement takes this GPU


def from_controller(config: pytest.Config) -> dict | None:
    """In a worker: what the controller said (hardware, key, GPU); None anywhere else."""
    shared = getattr(config, "workerinput", {}).get(WORKER_INPUT)
    if shared is None:
        return None
    if shared.get("gpu") is None or os.environ.get("CUDA_VISIBLE_DEVICES") != shared["gpu"]:
        # Never time on a GPU another worker may share: without its own, a worker refuses.
        raise pytest.UsageError(f"diffusers-perf: this xdist worker was not given a GPU of its own before it "
                                f"started (GPU {shared.get('gpu')}, CUDA_VISIBLE_DEVICES "
                                f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); start workers with -n only")
    return shared


def enable_timing(bs: Any) -> None:  # pytest-benchmark's BenchmarkSession
    """pytest-benchmark disables itself in xdist workers; the suite's worker owns its GPU and times."""
    bs.disabled = bool(bs.config.getoption("benchmark_disable") and not bs.config.getoption("benchmark_enable"))
    bs.xdist_warning = False


def entry_of(item: pytest.Item) -> dict | None:
    """The stage's entry as a stored run holds it, or None (not timed, failed to build, broken)."""
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(fixture, "stats", None)
    if fixture is None or stats is None or fixture.has_error or not stats or not (fixture.extra_info or {}).get("stage"):
        return None
    from pytest_benchmark.utils import safe_dumps

    entry = json.loads(safe_dumps(stats.as_dict(include_data=True)))  # plain JSON types: execnet carries them
    # Which worker and GPU timed it: stored, so that contention between workers can be traced.
    entry["extra_info"]["xdist_worker"] = os.environ.get("PYTEST_XDIST_WORKER")
    entry["extra_info"]["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return entry


def entries(report: pytest.TestReport) -> list[dict]:
    return [value for name, value in report.user_properties if name == ENTRY] if report.when == "call" else []


def verdict_of(report: pytest.TestReport) -> dict | None:
    found = [value for name, value in report.user_properties if name == VERDICT]
    return found[-1] if found and report.when == "call" else None


def metadata(entry: dict) -> Any:  # pytest_benchmark.stats.Metadata
    """A worker's entry as pytest-benchmark's own record of a timed test, so that its table, its
    saving and ``--benchmark-json`` treat the controller's merged stages as if timed there."""
    from types import SimpleNamespace

    from pytest_benchmark.stats import Metadata

    fixture = SimpleNamespace(name=entry["name"], fullname=entry["fullname"], group=entry.get("group"),
                              param=entry.get("param"), params=entry.get("params"),
                              extra_info=entry.get("extra_info") or {}, cprofile_stats=None, has_error=False)
    meta = Metadata(fixture, iterations=entry["stats"].get("iterations", 1), options=entry.get("options") or {})
    for value in entry["stats"]["data"]:
        meta.stats.update(value)
    return meta


def host_parts(results: dict, plans: dict) -> str | None:
    """Each compared stage's host part (median round minus median GPU busy time) against its
    baseline's: where workers share a host's cores and PCIe, this is the part that contention
    moves, while GPU time should not. None where no stage has GPU time on both sides."""
    import statistics

    moved = []
    for name, result in results.items():
        plan = plans.get(name)
        entry = plan.entry if plan is not None else None
        gpu = (result.extra or {}).get("gpu_median")
        if entry is None or not result.rounds or not gpu:
            continue
        base_gpu = (entry.get("extra_info") or {}).get("gpu_median")
        if not base_gpu:
            continue
        now, before = statistics.median(result.rounds) - gpu, entry["stats"]["median"] - base_gpu
        if before > 0:
            moved.append(f"{name} {before * 1e3:.1f} -> {now * 1e3:.1f} ms ({now / before - 1:+.0%})")
    if not moved:
        return None
    return ("host part (median round - GPU time) against the baseline, what contention between workers "
            "moves: " + ", ".join(moved))


def stage_of(nodeid: str, names: list[str]) -> str | None:
    """``perf/test_ladder.py::test_generate[sdpa]`` -> ``sdpa``: the controller collects nothing
    itself, so it knows each stage's test by the id its workers collected."""
    if "::test_generate[" not in nodeid or not nodeid.endswith("]"):
        return None
    name = nodeid.rsplit("[", 1)[1][:-1]
    return name if name in names else None
