"""``pytest perf -n N`` (:mod:`perf.distribute`): one GPU per xdist worker, one run, one verdict.

This machine has no GPU, so the whole-run test gives the controller two fake ones ("3" and "5")
and a fake GPU model; the workers still time the stages on the CPU. What is proven is the part
that does not depend on the device: which GPU each worker is told to use before anything starts
CUDA, the merge of every worker's stages into one stored run, one report and one last line, the
single-GPU folder as the reference while the run's own is empty, and a worker killed mid-stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from perf import baselines, distribute

pytest.importorskip("xdist")


def _config(**options):
    values = {"numprocesses": None, "dist": "no", **options}
    return types.SimpleNamespace(getoption=lambda name, default=None: values.get(name, default))


@pytest.mark.parametrize("options, gpus, ab, expected", [
    ({"numprocesses": 2, "dist": "load"}, [], False, "has no GPU"),
    ({"numprocesses": 2, "dist": "load"}, ["0", "1"], True, "A/B runs its own two workers"),
    ({"numprocesses": 2, "dist": "each"}, ["0", "1"], False, "--dist each"),
    ({"numprocesses": 3, "dist": "load"}, ["0", "1"], False, "-n 3: this host has 2 GPUs visible"),
    ({"numprocesses": 2, "dist": "worksteal"}, ["0", "1"], False, None),
])
def test_runs_that_would_share_a_device_are_refused_in_one_line(options, gpus, ab, expected):
    problem = distribute.refusal(_config(**options), gpus, ab)
    assert (problem is None) if expected is None else (expected in problem and "\n" not in problem)


def test_each_worker_owns_one_gpu_and_a_replacement_takes_the_crashed_workers():
    class Gateway:
        def __init__(self, ident):
            self.id, self.code = ident, []

        def remote_exec(self, code):
            self.code.append(code)
            return types.SimpleNamespace(waitclose=lambda: None)

    controller = distribute.Controller(["3", "5"], {"key": "K"}, collected=lambda ids: None)
    nodes = {}
    for ident in ("gw0", "gw1"):
        gateway = Gateway(ident)
        controller.pytest_xdist_newgateway(gateway)
        nodes[ident] = types.SimpleNamespace(gateway=gateway, workerinput={})
        controller.pytest_configure_node(nodes[ident])
    assert [nodes[i].workerinput[distribute.WORKER_INPUT] for i in nodes] == [{"key": "K", "gpu": "3"},
                                                                            {"key": "K", "gpu": "5"}]
    # Set in the worker's interpreter before it imports pytest, so before anything starts CUDA.
    assert nodes["gw1"].gateway.code == ["import os; os.environ['CUDA_VISIBLE_DEVICES'] = '5'"]
    controller.pytest_testnodedown(nodes["gw0"], error="crashed")
    replacement = Gateway("gw2")
    controller.pytest_xdist_newgateway(replacement)
    assert controller.owner == {"gw1": "5", "gw2": "3"}


def test_a_run_on_n_gpus_has_its_own_folder_and_keeps_the_single_gpu_kernels():
    host = {"accelerator": "cuda", "gpu": "NVIDIA H200", "gpu_count": 8, "gpu_memory_gib": 140, "cpu": "x",
            "cpu_count": 128, "machine": "x86_64", "cpu_capability": "AVX512"}
    assert baselines.hardware_key(distribute.hardware_of_run(host, 4)) == "NVIDIA_H200-x4"
    assert baselines.hardware_key(baselines.single_gpu(host)) == "NVIDIA_H200-x1"
    cpu = dict(host, accelerator="cpu", gpu=None, gpu_count=0)
    assert distribute.hardware_of_run(cpu, 2) == cpu


def test_a_workers_entry_becomes_pytest_benchmarks_own_record():
    entry = {"group": "g", "name": "test_generate[fp32]", "fullname": "perf/test_ladder.py::test_generate[fp32]",
             "params": {"perf_stage": "fp32"}, "param": "fp32", "extra_info": {"stage": "fp32"},
             "options": {"timer": "perf_counter", "min_rounds": 5}, "stats": {"data": [0.3, 0.1, 0.2], "iterations": 1}}
    meta = distribute.metadata(entry)
    stored = meta.as_dict(include_data=True)
    assert stored["stats"]["data"] == [0.3, 0.1, 0.2] and stored["stats"]["min"] == 0.1
    assert stored["stats"]["median"] == 0.2 and stored["extra_info"] == {"stage": "fp32"} and not meta.has_error
    assert distribute.stage_of("perf/test_ladder.py::test_generate[fp32]", ["fp32"]) == "fp32"
    assert distribute.stage_of("perf/test_ladder.py::test_generate[nope]", ["fp32"]) is None


#: The CPU claims to be a host of Test GPUs, as many as ``COUNT``; the stages still run on the CPU.
FAKE_GPUS = """
from perf import baselines, distribute

COUNT = {count}
_info = baselines.hardware_info
distribute.devices = lambda: ["3", "5"][:COUNT]
baselines.hardware_info = lambda: dict(_info(), accelerator="cuda", gpu="Test GPU", gpu_count=COUNT,
                                       gpu_memory_gib=1)
"""
#: The worker timing bf16 dies as a GPU driver fault would kill it.
KILL_BF16 = """
import os, signal
from perf import runner

_measure = runner.Runner.measure


def _killed(self, benchmark, name, pipe):
    if name == "bf16":
        os.kill(os.getpid(), signal.SIGKILL)
    return _measure(self, benchmark, name, pipe)


runner.Runner.measure = _killed
"""
STAGES = "--perf-stages=fp32,bf16"


@pytest.mark.slow
def test_workers_time_and_the_controller_stores_reports_and_decides(suite):
    single = {"one_gpu": FAKE_GPUS.format(count=1)}
    assert suite.run(STAGES, "--benchmark-save=alone", plugins=single).ret == 0
    [alone] = suite.saved()
    assert alone.parent.name == "Test_GPU-x1"

    # Two workers against the single-GPU folder; bf16's worker is killed: bf16 fails alone, with
    # xdist's own words, the other stage is judged, and the last line says both.
    two = {"two_gpus": FAKE_GPUS.format(count=2), "kill_bf16": KILL_BF16}
    result = suite.run(STAGES, "-n", "2", "--benchmark-compare", "--benchmark-json=run.json", plugins=two)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "each stage is compared with the single-GPU folder" in out and "pytest-xdist: 2 workers" in out
    assert "bf16: failed — worker 'gw" in out and "crashed while running" in out
    line = suite.last_line(result)
    assert line.startswith("diffusers-perf: FAIL") and "failed: bf16" in line and "0001_alone.json" in line
    document = json.loads((suite.pytester.path / "run.json").read_text())
    [fp32] = document["benchmarks"]
    assert fp32["extra_info"]["stage"] == "fp32" and fp32["extra_info"]["cuda_visible_devices"] in ("3", "5")
    assert document["machine_info"]["gpu_count"] == 2
    # The controller's verdict is the suite's rule applied to what the worker timed.
    status = document["diffusers_perf"]["verdicts"]["fp32"]["status"]
    again = subprocess.run([sys.executable, "-m", "perf.compare", str(alone), "run.json"], capture_output=True,
                           text=True, cwd=suite.pytester.path)
    assert f"{status}" in [row.split()[-1] for row in again.stdout.splitlines() if row.startswith("fp32 ")]
    assert suite.saved() == [alone]

    # Recorded on two GPUs: its own folder, every stage from a worker that owned one GPU.
    result = suite.run(STAGES, "-n", "2", "--benchmark-save=pair", plugins={"two_gpus": FAKE_GPUS.format(count=2)})
    assert result.ret == 0, result.stdout.str()
    [pair] = [path for path in suite.saved() if path != alone]
    assert pair.parent.name == "Test_GPU-x2"
    stored = json.loads(pair.read_text())
    owned = {(b["extra_info"]["xdist_worker"], b["extra_info"]["cuda_visible_devices"]) for b in stored["benchmarks"]}
    assert len(stored["benchmarks"]) == 2 and {gpu for _, gpu in owned} <= {"3", "5"}
    assert len({worker for worker, _ in owned}) == len(owned)  # a worker never changed GPU


def test_the_host_part_that_contention_moves_is_reported_against_the_baseline():
    from perf.baselines import StagePlan
    from perf.results import StageResult

    entry = {"stats": {"median": 0.50}, "extra_info": {"gpu_median": 0.30}}
    results = {"sdpa": StageResult("sdpa", "passed", rounds=[0.52, 0.56, 0.54], extra={"gpu_median": 0.30}),
               "fp32": StageResult("fp32", "passed", rounds=[1.0], extra={})}  # CPU: no GPU time, no host part
    line = distribute.host_parts(results, {"sdpa": StagePlan("sdpa", entry=entry), "fp32": StagePlan("fp32")})
    assert line.endswith("sdpa 200.0 -> 240.0 ms (+20%)")
    assert distribute.host_parts({"fp32": results["fp32"]}, {"fp32": StagePlan("fp32", entry=entry)}) is None


@pytest.mark.slow
def test_deselecting_every_stage_under_n_still_says_nothing_was_compared(suite):
    result = suite.run(STAGES, "-n", "2", "--benchmark-compare", "-k", "no_such_stage",
                       plugins={"two_gpus": FAKE_GPUS.format(count=2)})
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert suite.last_line(result) == "diffusers-perf: FAIL, nothing was compared"
