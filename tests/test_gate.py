"""The gate's statistics on fabricated rounds (inputs to pure functions, not benchmark results)."""

import random

import pytest

from perf import gate
from perf.runner import StageResult


def rounds(center, spread, n, seed):
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def test_rank_test_exact_minimum_for_six_a_side():
    assert gate.mann_whitney_p([2.0 + i for i in range(6)], [float(i) / 10 for i in range(6)]) == pytest.approx(1 / 924)


def test_rank_test_symmetric_when_identical_distributions():
    x, y = [1, 3, 5, 7, 9, 11], [2, 4, 6, 8, 10, 12]
    # U = 15 of 36: P(U >= 15) = 0.7056 and P(U >= 21) = 0.3496 (exact; the values scipy's mannwhitneyu gives).
    assert gate.mann_whitney_p(x, y) == pytest.approx(0.7056, abs=1e-4)
    assert gate.mann_whitney_p(y, x) == pytest.approx(0.3496, abs=1e-4)


def test_rank_test_handles_ties():
    assert gate.mann_whitney_p([1.0] * 6, [1.0] * 6) > 0.4


def test_thirty_percent_slowdown_regresses_and_noise_does_not():
    base = rounds(1.0, 0.03, 10, 1)
    assert gate.compare_latency(base, rounds(1.3, 0.03, 10, 2), 0.10).regressed
    assert not gate.compare_latency(base, rounds(1.0, 0.03, 10, 3), 0.10).regressed


def test_threshold_grows_with_measured_noise():
    quiet, noisy = rounds(1.0, 0.01, 10, 4), rounds(1.0, 0.4, 10, 5)
    assert gate.threshold(0.03, quiet) == pytest.approx(0.03, abs=0.02)
    assert gate.threshold(0.03, noisy) > 0.2
    assert gate.threshold(0.03, quiet, history=[0.43, 0.54]) > 0.25  # run-to-run drift dominates


def test_small_effect_below_threshold_is_ok_even_if_significant():
    base = [1.0 + i * 1e-4 for i in range(10)]
    comparison = gate.compare_latency(base, [x * 1.02 for x in base], 0.03)
    assert comparison.p_slower < 0.01 and not comparison.regressed


def test_memory_growth_beyond_threshold_regresses():
    gib = 2**30
    assert gate.memory_regressed(2 * gib, int(2.5 * gib))
    assert not gate.memory_regressed(2 * gib, 2 * gib + 2**20)
    assert not gate.memory_regressed(None, 3 * gib)


class FakeBaseline:
    def __init__(self, stages):
        self._stages = stages

    def stages(self):
        return self._stages


def bench(data, **extra):
    return {"stats": {"median": sorted(data)[len(data) // 2], "data": data},
            "extra_info": {"pipeline": "tiny", "steps": 2, "size": 32, "batch": 1, **extra}}


def result(name, data, **extra):
    return StageResult(name, "passed", rounds=data, extra={"pipeline": "tiny", "steps": 2, "size": 32, "batch": 1, **extra})


def test_evaluate_names_new_missing_and_mismatched_stages():
    base = FakeBaseline({"fp32": bench(rounds(1, 0.02, 8, 1)), "sdpa": bench(rounds(1, 0.02, 8, 2)),
                         "bf16": bench(rounds(1, 0.02, 8, 3), steps=50)})
    results = {"fp32": result("fp32", rounds(1.5, 0.02, 8, 4)), "compile": result("compile", rounds(1, 0.02, 8, 5)),
               "bf16": result("bf16", rounds(1, 0.02, 8, 6))}
    verdicts, missing = gate.evaluate(results, ["fp32", "bf16", "compile"], base)
    by_stage = {v.stage: v for v in verdicts}
    assert by_stage["fp32"].status == "REGRESSION" and "latency +" in by_stage["fp32"].detail
    assert by_stage["compile"].status == "new"
    assert by_stage["bf16"].status == "not compared" and "steps 50 -> 2" in by_stage["bf16"].detail
    assert missing == ["sdpa"]


def test_evaluate_memory_regression():
    gib = 2**30
    data = rounds(1, 0.02, 8, 1)
    base = FakeBaseline({"fp32": bench(data, peak_memory_bytes=2 * gib)})
    verdicts, _ = gate.evaluate({"fp32": result("fp32", data, peak_memory_bytes=3 * gib)}, ["fp32"], base)
    assert verdicts[0].status == "REGRESSION" and "peak memory" in verdicts[0].detail


def test_cpu_threshold_has_the_device_floor():
    data = [1.0 + i * 1e-3 for i in range(8)]
    slower = [x * 1.12 for x in data]  # significant, above the eager 10 % but within CPU drift
    base = FakeBaseline({"fp32": bench(data)})
    on_cpu, _ = gate.evaluate({"fp32": result("fp32", slower, device="cpu")}, ["fp32"], base)
    on_gpu, _ = gate.evaluate({"fp32": result("fp32", slower, device="cuda")}, ["fp32"], base)
    assert on_cpu[0].status == "ok" and on_cpu[0].latency.threshold == pytest.approx(0.15)
    assert on_gpu[0].status == "REGRESSION"


def test_gpu_time_catches_five_percent_that_wall_time_cannot():
    """The H100 case: wall time drifts with the host, GPU busy time does not."""
    wall = rounds(0.48, 0.10, 8, 7)
    gpu = [0.343 * (1 + k * 1e-4) for k in range(5)]
    base = FakeBaseline({"cudagraphs": bench(wall, gpu_seconds=gpu)})
    history = {"latency": {"cudagraphs": [0.544, 0.444, 0.483]}, "gpu_time": {"cudagraphs": [0.343]}}
    slower = {"cudagraphs": result("cudagraphs", [x * 1.035 for x in wall], device="cuda",
                                   gpu_seconds=[x * 1.05 for x in gpu])}
    same = {"cudagraphs": result("cudagraphs", rounds(0.55, 0.10, 8, 8), device="cuda",
                                 gpu_seconds=[x * 1.004 for x in gpu])}
    failed, _ = gate.evaluate(slower, ["cudagraphs"], base, history)
    passed, _ = gate.evaluate(same, ["cudagraphs"], base, history)
    assert failed[0].status == "REGRESSION" and failed[0].detail.startswith("GPU time +5.0% > threshold 3.0%")
    assert not failed[0].latency.regressed  # the wall time alone would have let it through
    assert passed[0].status == "ok" and "GPU time +0.4% within 3.0%" in passed[0].detail


def test_gpu_time_threshold_grows_with_its_run_to_run_spread():
    gpu = [1.0 + k * 1e-4 for k in range(5)]
    base = FakeBaseline({"fp32": bench([1.0] * 6, gpu_seconds=gpu)})
    current = {"fp32": result("fp32", [1.0] * 6, device="cuda", gpu_seconds=[x * 1.05 for x in gpu])}
    drifting = {"latency": {}, "gpu_time": {"fp32": [1.0, 1.06, 0.95]}}
    verdicts, _ = gate.evaluate(current, ["fp32"], base, drifting)
    assert verdicts[0].status == "ok" and verdicts[0].gpu.threshold > 0.05


def test_no_gpu_time_comparison_when_either_side_lacks_it():
    base = FakeBaseline({"fp32": bench([1.0 + i * 1e-3 for i in range(6)])})  # an older baseline
    current = {"fp32": result("fp32", [1.0 + i * 1e-3 for i in range(6)], device="cuda", gpu_seconds=[0.9] * 5)}
    verdicts, _ = gate.evaluate(current, ["fp32"], base)
    assert verdicts[0].gpu is None and verdicts[0].status == "ok"


@pytest.mark.parametrize("busy, floor", [(0.94, 0.12), (0.71, 0.58), (0.27, 1.46), (None, 0.10)])
def test_wall_floor_grows_with_the_host_share(busy, floor):
    assert gate.wall_min_effect("sdpa", "cuda", busy) == pytest.approx(floor)


def test_wall_floor_ignores_gpu_busy_off_cuda():
    assert gate.wall_min_effect("fp32", "cpu", 0.2) == pytest.approx(0.15)


def test_host_drift_can_be_lowered_for_a_dedicated_runner():
    assert gate.wall_min_effect("sdpa", "cuda", 0.27, host_drift=0.1) == pytest.approx(0.10)
    assert gate.wall_min_effect("sdpa", "cuda", 0.27, host_drift=0.4) == pytest.approx(0.292)
