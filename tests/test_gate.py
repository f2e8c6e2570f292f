"""The gate's statistics on fabricated rounds (inputs to pure functions, not benchmark results)."""

import random
from pathlib import Path

import pytest

from perf import baselines, gate, stats, storage
from perf.runner import StageResult


def rounds(center, spread, n, seed):
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def test_rank_test_exact_minimum_for_six_a_side():
    assert stats.mann_whitney_p([2.0 + i for i in range(6)], [float(i) / 10 for i in range(6)]) == pytest.approx(1 / 924)


def test_rank_test_symmetric_when_identical_distributions():
    x, y = [1, 3, 5, 7, 9, 11], [2, 4, 6, 8, 10, 12]
    # U = 15 of 36: P(U >= 15) = 0.7056 and P(U >= 21) = 0.3496 (exact; the values scipy's mannwhitneyu gives).
    assert stats.mann_whitney_p(x, y) == pytest.approx(0.7056, abs=1e-4)
    assert stats.mann_whitney_p(y, x) == pytest.approx(0.3496, abs=1e-4)


def test_rank_test_handles_ties():
    assert stats.mann_whitney_p([1.0] * 6, [1.0] * 6) > 0.4


def test_thirty_percent_slowdown_regresses_and_noise_does_not():
    base = rounds(1.0, 0.03, 10, 1)
    assert gate.compare_latency(base, rounds(1.3, 0.03, 10, 2), 0.10).regressed
    assert not gate.compare_latency(base, rounds(1.0, 0.03, 10, 3), 0.10).regressed


def test_threshold_grows_with_measured_noise():
    quiet, noisy = rounds(1.0, 0.01, 10, 4), rounds(1.0, 0.4, 10, 5)
    assert gate.threshold(0.03, quiet) == pytest.approx(0.03, abs=0.02)
    assert gate.threshold(0.03, noisy) > 0.2
    assert gate.threshold(0.03, quiet, history=[0.43, 0.54]) > 0.25  # run-to-run drift dominates
    assert gate.threshold(0.03, quiet, history=[1.0, 1.0, 0.5, 0.5]) < 0.05  # a step change is not noise


def test_small_effect_below_threshold_is_ok_even_if_significant():
    base = [1.0 + i * 1e-4 for i in range(10)]
    comparison = gate.compare_latency(base, [x * 1.02 for x in base], 0.03)
    assert comparison.p_slower < 0.01 and not comparison.regressed


def test_memory_growth_beyond_threshold_regresses():
    gib = 2**30
    assert gate.memory_regressed(2 * gib, int(2.5 * gib))
    assert not gate.memory_regressed(2 * gib, 2 * gib + 2**20)
    assert not gate.memory_regressed(None, 3 * gib)


COMPARE = gate.Policy(compare=True)


def bench(data, **extra):
    return {"fullname": "perf/test_ladder.py::test_generate", "stats": {"median": sorted(data)[len(data) // 2], "data": data},
            "extra_info": {"pipeline": "tiny", "steps": 2, "size": 32, "batch": 1, **extra}}


def result(name, data, **extra):
    return StageResult(name, "passed", rounds=data, extra={"pipeline": "tiny", "steps": 2, "size": 32, "batch": 1, **extra})


def plan(name, entry, medians=None, gpu_medians=None):
    """A stage compared with ``entry``, with a history of stored medians (oldest first) ending with it."""
    history = [{"stats": {"median": m}, "extra_info": {}} for m in (medians or [])[:-1]]
    if gpu_medians:
        history = [{"stats": {"median": 1.0}, "extra_info": {"gpu_seconds": [g]}} for g in gpu_medians[:-1]]
    run = storage.StoredRun(Path("0001_base.json"), {"benchmarks": [entry], "machine_info": {}})
    return baselines.StagePlan(name, baseline=run, entry=entry, history=history + [entry])


def judge(name, current, entry, policy=COMPARE, **history):
    return gate.judge(name, current, plan(name, entry, **history) if entry else None, policy)


def test_mismatched_or_missing_baseline_is_not_compared_and_fails():
    missing = gate.judge("compile", result("compile", rounds(1, 0.02, 8, 5)),
                         baselines.StagePlan("compile", reason="no stored run for this hardware holds it"), COMPARE)
    assert missing.status == "not compared" and missing.failing and "holds it" in missing.detail
    allowed = gate.judge("compile", result("compile", rounds(1, 0.02, 8, 5)),
                         baselines.StagePlan("compile", reason="no"), gate.Policy(compare=True, allow_uncompared=True))
    assert allowed.status == "not compared" and not allowed.failing
    regressed = judge("fp32", result("fp32", rounds(1.5, 0.02, 8, 4)), bench(rounds(1, 0.02, 8, 1)))
    assert regressed.status == "REGRESSION" and "latency +" in regressed.detail and regressed.failing


def test_a_baseline_stage_that_now_skips_is_not_compared():
    verdict = judge("xformers", StageResult("xformers", "skipped", "xFormers is not installed"), bench([1.0] * 6))
    assert verdict.status == "not compared" and verdict.failing and "skipped now: xFormers" in verdict.detail
    plain = gate.judge("xformers", StageResult("xformers", "skipped", "no"), None, COMPARE)
    assert plain.status == "skipped" and not plain.failing


@pytest.mark.parametrize("current, saved", [(4, 4), (6, 2), (2, 6), (1, 1)])
def test_too_few_rounds_to_reach_significance_are_not_compared(current, saved):
    verdict = judge("fp32", result("fp32", rounds(1.55, 0.01, current, 1)), bench(rounds(1, 0.01, saved, 2)))
    assert verdict.status == "not compared" and verdict.failing and "cannot reach p <= 0.01" in verdict.detail


def test_a_step_change_in_the_history_is_not_noise():
    # Stored medians 1.0, 1.0, 0.5, 0.5 (a deliberate speed-up): a run at 0.8 is +60 %, not noise.
    base = rounds(0.5, 0.01, 8, 1)
    verdict = judge("fp32", result("fp32", rounds(0.8, 0.01, 8, 2), device="cpu"), bench(base),
                    medians=[1.0, 1.0, 0.5, 0.5])
    assert verdict.status == "REGRESSION" and verdict.latency.threshold == pytest.approx(gate.DEVICE_MIN_EFFECT["cpu"])


def test_evaluate_memory_regression():
    gib = 2**30
    data = rounds(1, 0.02, 8, 1)
    verdict = judge("fp32", result("fp32", data, peak_memory_bytes=3 * gib), bench(data, peak_memory_bytes=2 * gib))
    assert verdict.status == "REGRESSION" and "peak memory" in verdict.detail


def test_cpu_threshold_has_the_device_floor():
    data = [1.0 + i * 1e-3 for i in range(8)]
    slower = [x * 1.12 for x in data]  # significant, above the eager 10 % but within CPU drift
    on_cpu = judge("fp32", result("fp32", slower, device="cpu"), bench(data))
    on_gpu = judge("fp32", result("fp32", slower, device="cuda"), bench(data))
    assert on_cpu.status == "ok" and on_cpu.latency.threshold == pytest.approx(gate.DEVICE_MIN_EFFECT["cpu"])
    assert on_gpu.status == "REGRESSION"


def test_gpu_time_catches_five_percent_that_wall_time_cannot():
    """The H100 case: wall time drifts with the host, GPU busy time does not."""
    wall = rounds(0.48, 0.10, 8, 7)
    gpu = [0.343 * (1 + k * 1e-4) for k in range(5)]
    entry = bench(wall, gpu_seconds=gpu)
    slower = result("cudagraphs", [x * 1.035 for x in wall], device="cuda", gpu_seconds=[x * 1.05 for x in gpu])
    same = result("cudagraphs", rounds(0.55, 0.10, 8, 8), device="cuda", gpu_seconds=[x * 1.004 for x in gpu])
    failed = judge("cudagraphs", slower, entry, medians=[0.544, 0.444, 0.483])
    passed = judge("cudagraphs", same, entry, medians=[0.544, 0.444, 0.483])
    assert failed.status == "REGRESSION" and failed.detail.startswith("GPU time +5.0% > threshold 3.0%")
    assert not failed.latency.regressed  # the wall time alone would have let it through
    assert passed.status == "ok" and "GPU time +0.4% within 3.0%" in passed.detail


@pytest.mark.parametrize("saved", [3, 5])
def test_three_profiled_rounds_judge_gpu_time_both_ways(saved):
    """The default of three: every round +5 % fails; rounds that interleave, or +2 %, pass; two cannot judge."""
    gpu = [0.343 * (1 + k * 1e-3) for k in range(saved)]
    wall = rounds(0.48, 0.02, 8, 7)
    entry = bench(wall, gpu_seconds=gpu)

    def verdict(factor, rounds_now=3, spread=0.0):
        now = [0.343 * factor * (1 + (k - 1) * spread) for k in range(rounds_now)]
        return judge("cudagraphs", result("cudagraphs", wall, device="cuda", gpu_seconds=now), entry)

    assert verdict(1.05).status == "REGRESSION" and verdict(1.05).gpu.p_slower <= gate.GPU_TIME_ALPHA
    assert verdict(1.02).status == "ok"
    mixed = verdict(1.035, spread=0.04)  # one round below the baseline's: the rounds do not separate
    assert mixed.status == "ok" and mixed.gpu.p_slower > gate.GPU_TIME_ALPHA
    too_few = verdict(1.05, rounds_now=2) if saved == 3 else None
    if too_few is not None:
        assert too_few.status == "not compared" and "cannot reach p <= 0.05" in too_few.detail


def test_gpu_time_threshold_grows_with_its_run_to_run_spread():
    gpu = [1.0 + k * 1e-4 for k in range(5)]
    current = result("fp32", [1.0 + i * 1e-4 for i in range(6)], device="cuda", gpu_seconds=[x * 1.05 for x in gpu])
    verdict = judge("fp32", current, bench([1.0 + i * 1e-4 for i in range(6)], gpu_seconds=gpu),
                    gpu_medians=[1.0, 1.08, 0.95, 1.0])
    assert verdict.status == "ok" and verdict.gpu.threshold > 0.05


def test_no_gpu_time_comparison_when_the_baseline_lacks_it():
    current = result("fp32", [1.0 + i * 1e-3 for i in range(6)], device="cuda", gpu_seconds=[0.9] * 5)
    verdict = judge("fp32", current, bench([1.0 + i * 1e-3 for i in range(6)]))  # an older baseline
    assert verdict.gpu is None and verdict.status == "ok"


@pytest.mark.parametrize("busy, floor", [(0.94, 0.18), (0.71, 0.87), (0.27, 2.19), (None, 0.10)])
def test_wall_floor_grows_with_the_host_share(busy, floor):
    assert gate.wall_min_effect("sdpa", "cuda", busy) == pytest.approx(floor)  # 3.0 x (1 - busy)


def test_wall_floor_ignores_gpu_busy_off_cuda():
    assert gate.wall_min_effect("fp32", "cpu", 0.2) == pytest.approx(gate.DEVICE_MIN_EFFECT["cpu"])


def test_host_drift_can_be_lowered_for_a_dedicated_runner():
    assert gate.wall_min_effect("sdpa", "cuda", 0.27, host_drift=0.1) == pytest.approx(0.10)
    assert gate.wall_min_effect("sdpa", "cuda", 0.27, host_drift=0.4) == pytest.approx(0.292)


def test_report_says_where_wall_time_cannot_judge_and_shows_thresholds():
    from perf import report

    wide = judge("sdpa", result("sdpa", rounds(1.0, 0.01, 8, 2), device="cuda", gpu_seconds=[0.3] * 5),
                 bench(rounds(1.0, 0.01, 8, 1), gpu_seconds=[0.3] * 5))
    assert wide.status == "ok" and wide.latency.threshold > report.WALL_TIME_HOPELESS  # 3.0 x (1 - 30 % busy)
    [row] = report.rows([wide], {"sdpa": result("sdpa", rounds(1.0, 0.01, 8, 2))})
    assert row[report.HEADERS.index("threshold")] == f"{wide.latency.threshold * 100:.1f}% / 3.0%"
    notes = report._notes([wide], [], [])
    assert any(note.startswith(f"wall time cannot judge sdpa ({wide.latency.threshold * 100:.0f}%) on this host")
               for note in notes)


GRAPHS_GPU = [0.341] * 5  # cudagraphs on the H100: GPU busy about 79 % of its fastest round


def test_graph_stage_fails_a_host_side_shift_of_every_round_beyond_its_host_drift():
    """A fresh H200 ran frontier's host part at 2.5x its baseline's (+40.2 % on the fastest round, GPU
    time +0.6 %, reports/h200/rerun-dec3/): graph stages' wall floor is 2.0 x (1 - busy), so such a
    drift passes and a host-side slowdown of every round beyond it fails."""
    base = rounds(0.45, 0.03, 20, 1)
    shifted = judge("cudagraphs", result("cudagraphs", rounds(0.45 * 1.7, 0.03, 20, 2), device="cuda",
                                         gpu_seconds=GRAPHS_GPU), bench(base, gpu_seconds=GRAPHS_GPU))
    assert shifted.status == "REGRESSION" and "(fastest round;" in shifted.detail
    assert shifted.latency.threshold < 0.60  # 2.0 x (1 - busy of the fastest round)
    drifted = judge("cudagraphs", result("cudagraphs", rounds(0.45 * 1.40, 0.03, 20, 3), device="cuda",
                                         gpu_seconds=GRAPHS_GPU), bench(base, gpu_seconds=GRAPHS_GPU))
    assert drifted.status == "ok"  # unchanged runs moved the fastest round up to +40 % on that host


def test_a_regression_in_some_rounds_fails_on_the_median_where_the_fastest_round_did_not_move():
    base = rounds(0.45, 0.03, 20, 1)
    some = [x * 1.9 for x in rounds(0.45, 0.03, 12, 4)] + rounds(0.45, 0.03, 8, 5)  # 12 of 20 rounds slower
    verdict = judge("cudagraphs", result("cudagraphs", some, device="cuda", gpu_seconds=GRAPHS_GPU),
                    bench(base, gpu_seconds=GRAPHS_GPU))
    assert verdict.status == "REGRESSION" and "(median;" in verdict.detail
    assert abs(verdict.latency_median.ratio - 1.9) < 0.1 and not verdict.latency_median.statistic == "fastest round"
    assert gate.wall_min_effect("cudagraphs", "cuda", 0.76, statistic="median") == pytest.approx(2.5 * 0.24)


def test_eager_stages_keep_the_wider_host_drift_on_both_statistics():
    for label in gate.WALL_STATISTICS:
        assert gate.wall_min_effect("sdpa", "cuda", 0.3, statistic=label) == pytest.approx(3.0 * 0.7)
    assert gate.replays_graphs("cudagraphs") and not gate.replays_graphs("compile")
