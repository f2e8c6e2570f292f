"""Host-work counters: exact where wall time is noise, proven with faults made on purpose."""

from __future__ import annotations

import json

import pytest
import torch

from perf import counters, pipelines

on_cpu = pytest.mark.skipif(torch.cuda.is_available(), reason="sized for the tiny pipeline on CPU")


def test_counts_repeat_exactly_from_round_to_round():
    pipe = pipelines.build("tiny", "cpu")

    def call():
        return pipe(pipelines.PROMPT, num_inference_steps=2, height=32, width=32,
                    generator=torch.Generator("cpu").manual_seed(0), output_type="np").images

    call()
    first, second = counters.count(call, torch.device("cpu")), counters.count(call, torch.device("cpu"))
    assert first == second
    assert first["aten_ops"] > 1000 and first["python_calls"] > 1000


@pytest.mark.parametrize("name, before, after, regressed", [
    ("device_syncs", 2, 3, True),  # any new sync fails
    ("device_syncs", 2, 1, False),  # lighter: reported, not failed
    ("graph_breaks", 0, 1, True),
    ("launches", 1000, 1020, False),  # within 2 %
    ("launches", 1000, 1021, True),
    ("python_calls", 10_000, 10_500, False),  # within 5 %
    ("python_calls", 10_000, 10_501, True),
])
def test_which_changes_fail(name, before, after, regressed):
    [change] = counters.compare({name: before}, {name: after})
    assert change.regressed is regressed


def test_failure_line_says_before_after_and_what_it_means():
    [change] = counters.compare({"device_syncs": 2}, {"device_syncs": 52})
    assert change.describe(steps=50) == ("cudaDeviceSynchronize per generation 2 -> 52 "
                                         "(+50: a host-device sync was added, 1 per step)")
    assert counters.compare({"kernels": 5}, {"kernels": 5}) == []
    assert counters.compare({}, {"kernels": 5}) == []  # an older baseline without counters


EXTRA_OPS = """
from perf import runner

_build = runner.Runner.build


def build(self, name):
    pipe = _build(self, name)
    step = pipe.scheduler.step

    def stepped(model_output, *args, **kwargs):
        for _ in range(200):  # 200 more additions per step: far more than 2 % of tiny's 2,500 ops
            model_output = model_output + 0
        return step(model_output, *args, **kwargs)

    pipe.scheduler.step = stepped
    return pipe


runner.Runner.build = build
"""


@pytest.mark.slow
@on_cpu
def test_unchanged_runs_count_the_same_and_more_work_fails_whatever_the_wall_time(suite):
    stages = ("--perf-stages=fp32",)  # the counters repeat exactly on any stage: one is enough
    assert suite.run(*stages, "--benchmark-save=base", counters=True).ret == 0
    same = suite.run(*stages, "--benchmark-compare", counters=True)
    # Counted the same. Its timing may still drift past the CPU floors on a loaded 2-core host (one
    # run beside another test: step +82 %): that the wall and step gates pass unchanged runs is
    # test_gate_records_passes_unchanged_and_fails_on_slowdown_saving_or_not's promise, which runs alone.
    assert "aten ops" not in same.stdout.str() and "Python calls" not in same.stdout.str(), same.stdout.str()
    assert same.ret in (0, pytest.ExitCode.TESTS_FAILED)
    [saved] = suite.saved()
    recorded = {b["extra_info"]["stage"]: b["extra_info"]["counters"] for b in json.loads(saved.read_text())["benchmarks"]}
    assert recorded["fp32"]["aten_ops"] > 0 and recorded["fp32"]["python_calls"] > 0

    python = suite.run(*stages, "--benchmark-compare", "--perf-inject-host-work=0.05", counters=True)
    assert python.ret == pytest.ExitCode.TESTS_FAILED
    python.stdout.fnmatch_lines(["REGRESSION fp32: *Python calls per generation * -> * (+*: more Python work per step, "
                                 "* per step; more than 5%)*"])

    ops = suite.run(*stages, "--benchmark-compare", plugins={"extra_ops": EXTRA_OPS}, counters=True)
    assert ops.ret == pytest.ExitCode.TESTS_FAILED
    ops.stdout.fnmatch_lines(["REGRESSION fp32: *aten ops per generation * -> * (+*: more operators per step, "
                              "* per step; more than 2%)*"])


@on_cpu
@pytest.mark.parametrize("args, expected", [
    (["--perf-inject-sync"], "--perf-inject-sync adds a host-device sync, which needs CUDA"),
    (["--perf-inject-recompile"], "none of the selected stages compiles"),
    (["--perf-inject-host-work=0.1"], "--perf-inject-host-work sizes the injected work from a baseline"),
    (["--benchmark-compare", "--perf-inject-host-work=nan"], "--perf-inject-host-work: must be a finite number"),
])
def test_injections_that_cannot_act_here_are_refused(suite, args, expected):
    result = suite.run("--perf-stages=fp32", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str()


@pytest.mark.parametrize("name, kind", [
    ("triton_poi_fused_add_convolution_3", "triton_poi_fused_add_convolution"),  # Inductor's serial dropped
    ("void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl<...>>(int, ...)",
     "at::native::elementwise_kernel"),
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopB_NNT", "nvjet_hsh_128x256_64x4_2x1_v_bz_coopB_NNT"),
])
def test_kernel_kinds_keep_what_a_kernel_is(name, kind):
    assert counters.kernel_kind(name) == kind


def test_a_failing_kernel_count_names_the_kinds_it_added():
    from perf import gate
    from perf.gate import _counter_lines

    before = {"counters": {"kernels": 31079}, "kernel_kinds": {"triton_poi_fused_add": 1000, "gemm": 500}}
    after = {"counters": {"kernels": 31779},
             "kernel_kinds": {"triton_poi_fused_add": 1000, "gemm": 500, "triton_poi_fused_constant_pad_nd": 700}}
    changes = counters.compare(before["counters"], after["counters"])
    [failing], reported = _counter_lines(changes, 50, before["kernel_kinds"], after["kernel_kinds"])
    assert failing.endswith("most added: +700 triton_poi_fused_constant_pad_nd") and reported == []
    [plain], _ = _counter_lines(changes, 50, None, after["kernel_kinds"])  # an older baseline
    assert "most added" not in plain
    assert gate.KERNEL_COUNTERS == ("kernels", "launches")
    assert counters.most_added({"a": 3, "b": 1}, {"a": 5, "b": 9, "c": 2}) == "+8 b, +2 a, +2 c"


def test_kernel_kinds_count_device_kernels_only():
    class Event:
        def __init__(self, name, device):
            self._name, self._device = name, device

        def name(self):
            return self._name

        def device_type(self):
            return self._device

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [Event("triton_poi_fused_add_0", cuda), Event("triton_poi_fused_add_7", cuda),
              Event("Memcpy HtoD (Pageable -> Device)", cuda), Event("Memset (Device)", cuda),
              Event("aten::add", cpu), Event("cudaLaunchKernel", cpu)]
    assert counters.kernel_kinds(events) == {"triton_poi_fused_add": 2}
    assert sum(counters.kernel_kinds(events).values()) == counters.device_counts(events)["kernels"]
