"""A/B in one job (--perf-reference-python): the paired statistics, then whole runs on CPU where
the reference is this same interpreter, with faults injected into one side on purpose."""

import json
import re
import sys

import pytest

from perf import ab, gate, stats
from perf.ab import ABResult, Side

# -- statistics and verdicts on fabricated pairs (pure functions) --------------------------------


def test_signed_rank_exact_values():
    # scipy.stats.wilcoxon(d, alternative="greater", method="exact").pvalue
    assert stats.signed_rank_p([1, 2, 3, 4, 5, 6, 7]) == pytest.approx(1 / 128)
    assert stats.signed_rank_p([1, -2, 3, 4, 5]) == pytest.approx(3 / 32)
    assert stats.signed_rank_p([0.5, -0.1, 0.2, -0.3]) == pytest.approx(7 / 16)
    assert stats.signed_rank_p([-1, -2, -3]) == 1.0


def test_pairs_alternate_so_each_side_goes_first_half_the_time():
    order = ab.pair_order(4)
    assert order == [("candidate", "reference"), ("reference", "candidate")] * 2
    fewest = ab.fewest_pairs(gate.ALPHA)
    assert ab.plan_pairs(ab.timing.Budget(None, 6, 20, 1.0), 1.0, fewest) == fewest == 10
    # Enough for the signed-rank test of the pairs and for the rank test of each side's fastest half.
    assert 0.5 ** fewest < gate.ALPHA and gate.comparable(fewest // 2, fewest // 2)
    assert not gate.comparable(fewest // 2 - 1, fewest // 2 - 1)


def pairs(candidate, reference, device="cuda"):
    result = ABResult("cudagraphs", "passed", candidate=Side("a", rounds=candidate), reference=Side("b", rounds=reference),
                      device_type=device, steps=50)
    return gate.judge_ab("cudagraphs", result, gate.Policy(compare=True))


def test_a_passed_pair_with_a_side_missing_is_not_compared_never_judged_on_one_side():
    result = ABResult("sdpa", "passed", candidate=Side("a", rounds=[0.5] * 12), device_type="cuda", steps=50)
    verdict = gate.judge_ab("sdpa", result, gate.Policy(compare=True))
    assert verdict.status == gate.Status.NOT_COMPARED
    assert verdict.detail == f"0 pairs: the signed-rank test cannot reach p <= {gate.ALPHA}"
    assert verdict.failing  # not compared fails unless --perf-allow-uncompared


def drifting(n, scale=1.0, seed=0):
    """Rounds on a host whose speed drifts by 40 % over the stage: what pairs must cancel."""
    import random

    rng = random.Random(seed)
    return [scale * (0.45 + 0.18 * i / n) * (1 + rng.uniform(-0.01, 0.01)) for i in range(n)]


def test_a_small_slowdown_under_host_drift_fails_and_identical_sides_pass():
    reference = drifting(14, seed=1)
    assert pairs(drifting(14, seed=2), reference).status == "ok"
    slower = pairs(drifting(14, 1.05, seed=3), reference)
    assert slower.status == "REGRESSION" and "candidate/reference +5." in slower.detail
    # The same rounds unpaired: the host's drift (40 %) hides 5 % from the rank test's effect size.
    assert gate.compare_latency(reference, drifting(14, 1.05, seed=3), 0.10).ratio < 1.10


def test_a_faster_candidate_is_reported_not_failed():
    verdict = pairs(drifting(14, 0.8, seed=4), drifting(14, seed=5))
    assert verdict.status == "faster" and not verdict.failing


def test_cpu_floor_and_too_few_pairs():
    verdict = pairs(drifting(14, 1.08, seed=6), drifting(14, seed=7), device="cpu")
    assert verdict.status == "ok" and verdict.latency.threshold == pytest.approx(gate.AB_DEVICE_MIN_EFFECT["cpu"])
    slower = pairs(drifting(14, 1.2, seed=6), drifting(14, seed=7), device="cpu")  # a 15 % CPU fault gave 1.13-1.19
    assert slower.status == "REGRESSION"
    few = pairs(drifting(6, 2.0), drifting(6))
    assert few.status == "not compared" and few.failing and "6 pairs" in few.detail


# Each round's fastest step (ms) in an A/A on the H200, where a disturbance slowed one worker for
# several rounds at a time (reports/h200/steps/ab-aa.json, two rounds a side added in its pattern).
AA_CANDIDATE = [42.5, 49.5, 53.8, 26.0, 26.5, 27.8, 26.9, 29.8, 26.3, 27.0]
AA_REFERENCE = [36.5, 27.4, 26.7, 25.6, 26.3, 25.9, 44.9, 45.8, 26.2, 26.9]


def stepped(candidate_ms, reference_ms):
    def side(name, ms):
        return Side(name, rounds=[1.4 + m / 20 for m in ms], step_timing={"step_fastest": [m / 1e3 for m in ms]})

    result = ABResult("sdpa", "passed", candidate=side("a", candidate_ms), reference=side("b", reference_ms),
                      device_type="cuda", steps=50)
    return gate.judge_ab("sdpa", result, gate.Policy(compare=True))


def test_steps_are_judged_on_each_sides_fastest_half_where_disturbances_hit_one_worker():
    unchanged = stepped(AA_CANDIDATE, AA_REFERENCE)
    assert unchanged.status == "ok", unchanged.detail
    assert unchanged.steps["step_fastest"].statistic == gate.FASTEST_HALF
    assert unchanged.steps["step_fastest"].ratio == pytest.approx(1.02, abs=0.01)
    # The pairs' ratios spread too widely to see a 10 % step fault; the fastest halves see it.
    slower = [m * 1.10 for m in AA_CANDIDATE]
    paired = gate.paired([c / r for c, r in zip(slower, AA_REFERENCE)], 0.03)
    assert not paired.regressed
    verdict = stepped(slower, AA_REFERENCE)
    assert verdict.status == "REGRESSION", verdict.detail
    assert "denoising step +11." in verdict.detail and gate.FASTEST_HALF in verdict.detail
    # Too few rounds for the halves' rank test: the steps are not judged (the whole generation is).
    assert "step_fastest" not in stepped(slower[:8], AA_REFERENCE[:8]).steps


def test_counters_and_gpu_time_are_compared_side_by_side():
    result = ABResult("sdpa", "passed", steps=50,
                      candidate=Side("a", rounds=drifting(8), gpu_seconds=[0.55] * 5,
                                     counters={"stream_syncs": 352, "python_calls": 369_550}),
                      reference=Side("b", rounds=drifting(8), gpu_seconds=[0.55] * 5,
                                     counters={"stream_syncs": 302, "python_calls": 369_500}),
                      device_type="cuda")
    verdict = gate.judge_ab("sdpa", result, gate.Policy(compare=True))
    assert verdict.status == "REGRESSION" and "302 -> 352" in verdict.detail and "1 per step" in verdict.detail


def test_a_kernel_count_that_grew_in_a_b_names_the_kernels_it_added():
    result = ABResult("compile", "passed", steps=50,
                      candidate=Side("a", rounds=drifting(8), counters={"kernels": 34470},
                                     kernel_kinds={"triton_poi_fused_add": 33770, "triton_poi_fused_pad": 700}),
                      reference=Side("b", rounds=drifting(8), counters={"kernels": 33770},
                                     kernel_kinds={"triton_poi_fused_add": 33770}),
                      device_type="cuda")
    verdict = gate.judge_ab("compile", result, gate.Policy(compare=True))
    assert verdict.status == "REGRESSION" and "most added: +700 triton_poi_fused_pad" in verdict.detail


# -- whole runs: the reference is this interpreter -----------------------------------------------

AB = ("-k", "test_ab", "--perf-max-rounds=12", "--perf-report=none")


def ab_json(path):
    return json.loads(path.read_text())["diffusers_perf"]["ab"]["stages"]


#: fp32 at 32 px: rounds of about 0.1 s on any x86 CPU. bfloat16 runs ten times slower on a CPU
#: without AVX-512 (2.9 s a round at 64 px, Dec 1), where the delay below fell under the CPU floor.
AA = ("--perf-stages=fp32", "--perf-size=32", f"--perf-reference-python={sys.executable}", *AB)


@pytest.mark.slow
@pytest.mark.alone
def test_a_a_passes(suite):
    """One stage, the same interpreter on both sides: nothing changed, nothing fails. Alone: another
    test's load beside one side's rounds and not the other's is what A/B cannot pair away."""
    same = suite.run(*AA, "--benchmark-json=aa.json", counters=True)
    assert same.ret == 0, same.stdout.str()
    assert "A/B: 1 of 1 stages compared, none regressed" in suite.last_line(same)
    stage = ab_json(suite.pytester.path / "aa.json")["fp32"]
    assert len(stage["ratios"]) >= 8 and stage["candidate"]["counters"] == stage["reference"]["counters"]


@pytest.mark.slow
def test_a_slower_candidate_fails(suite):
    """A host delay in the candidate, over half a round: above the CPU floor even beside another
    test's load (not alone). That a faster candidate is reported, and that a fault reaches only the
    side it names, is proven on fabricated pairs and settings (test_a_faster_candidate_is_reported_not_failed,
    test_faults_reach_only_the_injected_side)."""
    slower = suite.run(*AA, "--perf-inject-host-delay=0.15")
    assert slower.ret == 1
    # The delay lands after the last step: the whole generation or its "after" part (or both) fails.
    slower.stdout.fnmatch_lines(["REGRESSION fp32 (A/B): *"])
    assert suite.last_line(slower).startswith("diffusers-perf: FAIL, A/B: 1 of 1 stages regressed")


@pytest.mark.slow
def test_a_worker_killed_mid_stage_fails_that_stage_alone(suite):
    result = suite.run("--perf-stages=fp32,bf16", "--perf-size=32", f"--perf-reference-python={sys.executable}", *AB,
                       "--perf-inject-crash", "--benchmark-json=crash.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*fp32: failed — A/B fp32: the candidate worker died during 'round' "
                                 "(killed by SIGSEGV), at round *"])
    stages = ab_json(suite.pytester.path / "crash.json")
    # bf16 is still judged (ok, faster, or a regression where the other test's load skews its pairs).
    assert stages["fp32"]["status"] == "failed" and stages["bf16"]["status"] in ("ok", "faster", "REGRESSION")
    assert "1 failed: fp32" in suite.last_line(result)


@pytest.mark.slow
def test_stored_gate_and_a_b_in_one_job(suite):
    """Both gates judge the stage in one run, and the line speaks for both. Whether each passes
    is the promise of the tests that run alone (an unchanged run timed beside another test may
    drift past the CPU floors)."""
    assert suite.run("--perf-stages=fp32", "--benchmark-save=base").ret == 0
    both = suite.run("--perf-stages=fp32", "--benchmark-compare", f"--perf-reference-python={sys.executable}",
                     "--perf-max-rounds=12", "--perf-report=none")
    line = suite.last_line(both)
    assert re.search(r"diffusers-perf: (PASS|FAIL), 1 of 1 stages (compared|regressed).*; A/B: 1 of 1 stages "
                     r"(compared|regressed)", line), line
    assert both.ret == (0 if line.startswith("diffusers-perf: PASS") else pytest.ExitCode.TESTS_FAILED)


@pytest.mark.parametrize("reference, expected", [
    ("/nonexistent/bin/python", "does not exist"),
    (".", "is not an executable file"),
    ("{fake}", "is not a Python interpreter"),
    ("{no_diffusers}", "lacks diffusers"),
])
def test_bad_reference_is_one_line_and_exit_4(suite, reference, expected, tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "diffusers.py").write_text("raise ImportError('not installed here')\n")
    no_diffusers = tmp_path / "python-without-diffusers"
    no_diffusers.write_text(f'#!/bin/sh\nPYTHONPATH={blocker}:$PYTHONPATH exec {sys.executable} "$@"\n')
    no_diffusers.chmod(0o755)
    result = suite.run(f"--perf-reference-python={reference.format(fake=fake, no_diffusers=no_diffusers)}")
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: --perf-reference-python: ") and expected in errors[0]
    assert "Traceback" not in result.stderr.str()


def test_worker_options_need_a_reference(suite):
    result = suite.run("--perf-inject-crash")
    assert result.ret == 4 and "pass --perf-reference-python too" in result.stderr.str()


def test_faults_reach_only_the_injected_side():
    from perf.settings import Settings
    from perf.timing import Budget

    settings = Settings(pipeline="tiny", model=None, stages=["fp32", "bf16"], steps=2, size=32, batch=1,
                        budget=Budget(None, 6, 8, 3.0), report=None, count_flops=True,
                        faults={"inject_host_delay": 0.1, "inject_crash": True, "inject_side": "reference"})
    session = ab.Session(settings, sys.executable)
    sent = session.worker_settings()
    assert sent["faults"] == {} and not sent["count_flops"]
    assert session.injected("candidate", "fp32") == {}
    assert session.injected("reference", "fp32") == {"host_delay": 0.1, "crash_after_rounds": 2}
    assert session.injected("reference", "bf16") == {"host_delay": 0.1}  # the crash: first stage only


def wrapper(tmp_path, body: str) -> str:
    """A reference given as a shell script that runs this interpreter, as CI setups do."""
    script = tmp_path / "reference-python"
    script.write_text(f"#!/bin/sh\n{body}\nexec {sys.executable} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.slow
def test_a_reference_that_prints_at_start_or_runs_through_a_wrapper_still_speaks_the_protocol(suite, tmp_path):
    """A banner from the wrapper script and a print from a site hook at every start-up: neither
    reaches the worker's protocol, and the interpreter check accepts the wrapper. (The stage is
    judged; whether an A/A passes is test_a_a_passes_and_faults_in_either_side_are_seen's promise,
    which runs alone.)"""
    hooks = tmp_path / "site-hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text("print('site hook says hello')\n")
    reference = wrapper(tmp_path, f"echo 'welcome to the reference venv'\nexport PYTHONPATH={hooks}:$PYTHONPATH")
    result = suite.run("--perf-stages=fp32", "--perf-size=32", f"--perf-reference-python={reference}", *AB)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert re.match(r"diffusers-perf: (PASS|FAIL), A/B: 1 of 1 stages (compared|regressed)", suite.last_line(result))
    assert "failed" not in suite.last_line(result), result.stdout.str()


@pytest.mark.slow
def test_a_reference_that_never_answers_fails_its_stage_alone_in_one_line(suite, tmp_path):
    # The interpreter check (python -c) passes; the worker (python -m perf.worker) hangs.
    reference = wrapper(tmp_path, 'if [ "$1" = "-m" ]; then exec sleep 600; fi')
    # 20 s to start: the candidate, which does answer, imports torch and Diffusers within it on a loaded machine.
    result = suite.run("--perf-stages=fp32", "--perf-size=32", f"--perf-reference-python={reference}", *AB,
                       "--perf-worker-timeout=4")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*fp32: failed — A/B fp32: the reference worker did not answer 'hello' within 20 s "
                                 "(killed), at starting the reference*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert suite.last_line(result).startswith("diffusers-perf: FAIL, A/B: 0 of 1 stages compared")


def test_affinity_pins_both_workers_alike_and_bad_lists_are_one_line():
    import os

    from perf import options

    allowed = sorted(os.sched_getaffinity(0))
    assert options.affinity(None, cuda=True) == (allowed[-1],)
    assert options.affinity(None, cuda=False) == () and options.affinity("none", cuda=True) == ()
    assert options.affinity(f"{allowed[0]}-{allowed[-1]}", cuda=False) == tuple(allowed)
    for bad, said in (("x", "is not a CPU list"), ("4096", "is not one this process may use")):
        with pytest.raises(pytest.UsageError, match=said):
            options.affinity(bad, cuda=True)
    # The worker pins the thread that runs the pipeline, and says where it ran.
    from perf import worker

    before = os.sched_getaffinity(0)
    try:
        worker.pin((allowed[0],))
        assert os.sched_getaffinity(0) == {allowed[0]}
    finally:
        os.sched_setaffinity(0, before)


def test_workers_start_without_address_randomization_when_asked_and_this_process_keeps_its_own():
    """On CPU both sides' workers start with a fixed layout (worker.fixed_layout): two identical
    workers differed by up to 28 % with randomization, 15 % without (reports/cpu/ab-steps/)."""
    import os
    from pathlib import Path

    from perf import worker

    def personality(pid):
        return int(Path(f"/proc/{pid}/personality").read_text(), 16)

    before = personality(os.getpid())
    for fixed in (True, False):
        started = worker.Worker(sys.executable, "candidate", fixed=fixed)
        try:
            assert bool(personality(started.process.pid) & worker.ADDR_NO_RANDOMIZE) is fixed
        finally:
            started.close()
    assert personality(os.getpid()) == before
