"""The last line tells the truth: it and the exit status are derived together from pytest's own
outcome (perf/outcome.py), and every way found to make them disagree is a test here.

Pure logic first (fabricated reports and verdicts), then the fewest whole runs that prove each
end-to-end promise: a Ctrl-C, nothing timed, outputs that cannot be written, paths the OS
refuses, stored runs that pytest-benchmark's own table would trip on.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perf import gate, outcome, stats, storage
from perf.outcome import Record, Status

# -- settling a stage from pytest's reports ---------------------------------------------------------


def make(stage, status, detail, failing):
    return gate.Verdict(stage, status, detail, failing=failing, headline=f"{stage} {status}")


def record(started=True, **phases):
    found = Record(started=started)
    for phase, (result, message) in phases.items():
        found.add(phase, result, message)
    return found


OK = gate.Verdict("fp32", "ok", "latency +1.0% within 40.0%")


def settle(verdict, found, interrupted=False):
    return outcome.settle("fp32", verdict, found, interrupted, make)


def test_a_stage_interrupted_while_it_ran_is_interrupted_and_one_never_started_is_not_run():
    assert settle(None, record(setup=("passed", "")), interrupted=True).status == Status.INTERRUPTED
    assert settle(None, record(), interrupted=True).status == Status.INTERRUPTED  # stopped while building
    never = settle(None, None, interrupted=True)
    assert never.status == Status.NOT_RUN and not never.failing and "interrupted before it" in never.detail


def test_pytest_failure_wins_over_a_passing_verdict_and_skips_keep_their_reason():
    broken = settle(OK, record(setup=("passed", ""), call=("passed", ""), teardown=("failed", "E   OSError: boom")))
    assert broken.status == Status.FAILED and broken.failing and broken.detail == "OSError: boom"
    skipped = settle(None, record(setup=("skipped", "Skipping benchmark (--benchmark-skip active).")))
    assert skipped.status == Status.SKIPPED and "--benchmark-skip" in skipped.detail
    set_up_only = settle(None, record(setup=("passed", ""), teardown=("passed", "")))
    assert set_up_only.status == Status.NOT_RUN and "--setup-only" in set_up_only.detail
    unmeasured = settle(None, record(setup=("passed", ""), call=("passed", ""), teardown=("passed", "")))
    assert unmeasured.status == Status.FAILED  # a passing test that measured nothing is no result
    assert settle(OK, record(setup=("passed", ""), call=("passed", ""), teardown=("passed", ""))) is OK


STATUSES = [Status.OK, Status.FASTER, Status.REGRESSION, Status.MEASURED, Status.NOT_TIMED, Status.NOT_COMPARED,
            Status.FAILED, Status.SKIPPED, Status.INTERRUPTED, Status.NOT_RUN]
FAILING = {Status.REGRESSION, Status.FAILED, Status.INTERRUPTED}


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STATUSES), st.booleans()), max_size=6),
       st.lists(st.sampled_from(STATUSES), max_size=3), st.booleans(), st.booleans(),
       st.sampled_from([0, 1, 2, 5]), st.booleans(), st.lists(st.just("--perf-report x not written"), max_size=1))
def test_pass_appears_only_with_exit_status_0_and_never_when_nothing_was_judged(
        ladder, ab_statuses, compare, allow, exit_status, interrupted, problems):
    verdicts = [gate.Verdict(f"s{i}", status, failing=status in FAILING or (
        status == Status.NOT_COMPARED and not allow)) for i, (status, _) in enumerate(ladder)]
    ab_verdicts = [gate.Verdict(f"s{i}", status, failing=status in FAILING) for i, status in enumerate(ab_statuses)]
    line, code, colour = outcome.final(outcome.Run(verdicts=verdicts, ab_verdicts=ab_verdicts, compare=compare,
                                                   allow_uncompared=allow, exit_status=exit_status,
                                                   interrupted=interrupted, problems=problems))
    head = line.split(",")[0]
    assert (head == "diffusers-perf: PASS") == (colour == "green")
    if head == "diffusers-perf: PASS":
        assert code == 0 and not interrupted and not problems
        everything = verdicts + ab_verdicts
        assert not any(v.failing for v in everything)
        judged = [v for v in everything if v.status in outcome.COMPARED + (Status.MEASURED, Status.NOT_TIMED)]
        assert judged or (compare and allow and any(v.status == Status.NOT_COMPARED for v in everything))
        if compare:
            assert any(v.status in outcome.COMPARED for v in everything) or allow
    if interrupted:
        assert head == "diffusers-perf: INTERRUPTED" and code != 0
    if exit_status or problems or any(v.failing for v in verdicts + ab_verdicts):
        assert code != 0 and head != "diffusers-perf: PASS"


def test_the_line_names_what_happened_to_each_stage():
    verdicts = [gate.Verdict("fp32", "ok"), make("bf16", Status.INTERRUPTED, "interrupted while it ran", True),
                make("compile", Status.NOT_RUN, "not run", False)]
    line, code, _ = outcome.final(outcome.Run(verdicts=verdicts, compare=True, exit_status=2, interrupted=True,
                                              baselines=["0001_base.json"]))
    assert line == ("diffusers-perf: INTERRUPTED, 1 of 3 stages compared, none regressed; 1 interrupted: bf16; "
                    "1 not run vs 0001_base.json") and code == 2
    untimed = [gate.Verdict("fp32", "not timed")]
    line, code, _ = outcome.final(outcome.Run(verdicts=untimed))
    assert "0 of 1 stages measured" in line and "1 generated and checked, not timed (--benchmark-disable)" in line


# -- stored runs: every field anyone reads, fuzzed through pytest-benchmark's own table -----------

H100 = Path(__file__).resolve().parents[1] / "baselines" / "NVIDIA_H100_80GB_HBM3-x1"


def mutations(data: dict, rng):
    """One random damage of a stored run: a field deleted, retyped or given an absurd value."""
    bench = rng.choice(data["benchmarks"])
    where = rng.choice([bench, bench["stats"], bench["extra_info"], bench["extra_info"].get("quality") or bench,
                        data, data["diffusers_perf"], data["diffusers_perf"]["settings"]])
    key = rng.choice(sorted(where))
    value = rng.choice([None, "x", "inf", 1e400, -1.0, 0, 1.5, True, [], {}, "3;4", 2 ** 70, float("nan")])
    if rng.random() < 0.3:
        del where[key]
    else:
        where[key] = value
    return data


def draw_table(data: dict) -> str:
    """pytest-benchmark's comparison table of this run's first stage against itself from the file."""
    from pytest_benchmark.table import TableResults
    from pytest_benchmark.utils import report_noprogress

    class Terminal:
        def __init__(self):
            self.out = io.StringIO()

        def write(self, text, **_):
            self.out.write(text)

        def write_line(self, text, **_):
            self.out.write(text + "\n")

        def rewrite(self, text, **_):
            self.out.write(text)

        def section(self, title, **_):
            self.out.write(title + "\n")

        def ensure_newline(self):
            pass

    class Logger:
        def warning(self, *_, **__):
            pass

    rows = []
    for bench in data["benchmarks"]:
        flat = {key: value for key, value in bench.items() if key != "stats"}
        flat.update(bench["stats"], path=None, source="0001", has_error=False)
        rows.append(flat)
    table = TableResults(columns=["min", "max", "mean", "stddev", "median", "iqr", "outliers", "ops", "rounds",
                                  "iterations"], sort="min", histogram=False, name_format=lambda b: b["name"],
                         logger=Logger(), scale_unit=lambda **_: ("", 1.0))
    terminal = Terminal()
    table.display(terminal, [(None, rows)], progress_reporter=report_noprogress)
    return terminal.out.getvalue()


def test_a_stored_run_the_validator_accepts_never_breaks_pytest_benchmarks_table_or_the_gate():
    """1,200 random mutations of a real stored run: each is refused with one line naming the file,
    or pytest-benchmark's table draws it and the gate judges a run against it."""
    original = json.loads((H100 / "0009_h100.json").read_text())
    original["benchmarks"] = original["benchmarks"][:2]
    with mock.patch.object(stats, "BOOTSTRAP_RESAMPLES", 50):  # every statistic still runs: 5 s, not 45 s
        _mutate_and_judge(original)


def _mutate_and_judge(original: dict) -> None:
    import random

    from perf import baselines
    from perf.runner import StageResult

    rng = random.Random(23)
    refused = accepted = 0
    for _ in range(1200):
        data = mutations(copy.deepcopy(original), rng)
        text = json.dumps(data)  # NaN and inf are written as JSON constants, as a hand edit might
        problem = storage.validate(json.loads(text, parse_constant=lambda name: float(name)))
        if problem is None:
            try:
                storage.validate(json.loads(text, parse_constant=storage._reject_constant))
            except ValueError:
                problem = "constant"
        if problem is not None:
            refused += 1
            continue
        accepted += 1
        assert not data["benchmarks"] or draw_table(data)
        run = storage.StoredRun(H100 / "0009_h100.json", data)
        for name, bench in run.entries().items():
            plan = baselines.StagePlan(name, baseline=run, entry=bench, history=[bench])
            result = StageResult(name, "passed", rounds=list(bench["stats"]["data"]), extra=bench["extra_info"])
            gate.judge(name, result, plan, gate.Policy(compare=True))
    assert refused > 300 and accepted > 100  # both ways exercised


@pytest.mark.parametrize("damage, expected", [
    (lambda d: d["benchmarks"][0]["stats"].pop("stddev"), "lacks 'stats.stddev'"),
    (lambda d: d["benchmarks"][0]["stats"].update(outliers=3), "'stats.outliers' is 3"),
    (lambda d: d["benchmarks"][0]["stats"].update(iterations="1"), "'stats.iterations' is '1'"),
    (lambda d: d["benchmarks"][0]["extra_info"]["quality"].update(psnr_db="inf"), "quality.psnr_db' is 'inf'"),
    (lambda d: d["benchmarks"][0]["extra_info"]["quality"].update(psnr_db=1e400), "quality.psnr_db' is inf"),
    (lambda d: d["benchmarks"][0].update(extra_info={}), "does not say how it was measured"),
    (lambda d: d["benchmarks"][0]["extra_info"].pop("steps"), "'extra_info.steps' is None"),
    (lambda d: d["diffusers_perf"].update(injected={"inject_slowdown": 1.0}), "faults injected on purpose"),
])
def test_the_cases_found_by_hand_are_refused_with_one_line(damage, expected):
    data = json.loads((H100 / "0009_h100.json").read_text())
    damage(data)
    assert expected in storage.validate(data)


# -- whole runs ---------------------------------------------------------------------------------------

FAST2 = ("--perf-stages=fp32,bf16", "--perf-size=32")


@pytest.mark.slow
def test_nothing_timed_in_compare_mode_fails_and_outputs_not_written_fail_the_run(suite):
    assert suite.run(*FAST2, "--benchmark-save=base").ret == 0
    for how in (["--benchmark-skip"], ["--setup-only"]):
        result = suite.run(*FAST2, "--benchmark-compare", *how)
        assert result.ret == pytest.ExitCode.TESTS_FAILED, (how, result.stdout.str())
        line = suite.last_line(result)
        assert line.startswith("diffusers-perf: FAIL, 0 of 2 stages compared") and "nothing was compared" in line
    nothing = suite.run(*FAST2, "--benchmark-compare", "-k", "no_such_stage")
    assert nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert suite.last_line(nothing) == "diffusers-perf: FAIL, nothing was compared"
    listing = suite.run(*FAST2, "--collect-only")
    assert listing.ret == 0 and "diffusers-perf:" not in listing.stdout.str().splitlines()[-1]
    if Path("/dev/full").exists():
        full = suite.run("--perf-stages=fp32", "--perf-size=32", "--benchmark-json=/dev/full",
                         "--perf-report=/dev/full")
        out = full.stdout.str() + full.stderr.str()
        assert full.ret == pytest.ExitCode.TESTS_FAILED and "Traceback" not in out
        line = suite.last_line(full)
        assert line.startswith("diffusers-perf: FAIL, 1 of 1 stages measured") and \
            "--benchmark-json /dev/full not written" in line and "--perf-report /dev/full not written" in line
        assert "report: /dev/full" not in out


@pytest.mark.slow
def test_ctrl_c_while_a_stage_is_timed_says_interrupted_and_saves_nothing(suite):
    assert suite.run(*FAST2, "--benchmark-save=base").ret == 0
    # 30 rounds a stage: bf16 is still timing seconds after its "timing" line, however loaded the host.
    args = [sys.executable, "-m", "pytest", *suite.arguments(*FAST2, "--benchmark-compare", "--benchmark-save=again",
                                                             "--perf-min-rounds=30", "--perf-max-rounds=40",
                                                             "--perf-max-time=60", "--benchmark-json=ctrl-c.json")]
    process = subprocess.Popen(args, cwd=suite.pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if "[2/2] bf16: timing" in line:
            process.send_signal(signal.SIGINT)
            break
    lines += process.communicate(timeout=300)[0].splitlines()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, "\n".join(lines)
    last = [line for line in lines if line.strip()][-1]
    assert last.startswith("diffusers-perf: INTERRUPTED, ") and "1 interrupted: bf16" in last, last
    assert "not saved" in last and len(suite.saved()) == 1
    # The JSON holds the stage that finished, readable as a stored run (python -m perf.compare).
    assert list(storage.read(suite.pytester.path / "ctrl-c.json").entries()) == ["fp32"]
    from perf import compare  # ... and judged so, it never says PASS

    assert compare.main([str(suite.saved()[0]), str(suite.pytester.path / "ctrl-c.json")]) == 2


#: A process that ends at once after its first stage, as one killed by a signal it cannot handle does.
SUDDEN_DEATH = """
import os

def pytest_runtest_logfinish(nodeid, location):
    if nodeid.endswith("[fp32]"):
        os._exit(7)
"""


#: pytest-benchmark before 5.3 hands ``--benchmark-json`` over as a file it opened (the H200 has 5.2.3).
OPEN_FILE = """
import pytest

def pytest_sessionstart(session):
    bs = session.config._benchmarksession
    bs.json = open(bs.json, "wb")
"""


def test_the_json_written_after_each_stage_ends_whole_into_an_open_file_too(suite):
    result = suite.run(*FAST2, "--benchmark-json=open.json", plugins={"open_file": OPEN_FILE})
    assert result.ret == 0
    data = json.loads((suite.pytester.path / "open.json").read_text())  # one document, not one per stage
    assert data["diffusers_perf"]["finished"] and len(data["benchmarks"]) == 2


def test_a_process_that_dies_mid_run_leaves_the_stages_it_finished_marked_unfinished(suite, capsys):
    from perf import compare

    died = suite.run(*FAST2, "--benchmark-json=died.json", plugins={"sudden_death": SUDDEN_DEATH})
    assert died.ret == 7
    path = suite.pytester.path / "died.json"
    data = json.loads(path.read_text())
    assert [bench["extra_info"]["stage"] for bench in data["benchmarks"]] == ["fp32"]
    assert data["diffusers_perf"]["finished"] is False
    assert "never finished" in storage.validate(data)  # never a baseline
    # Judged against a run that did finish, it never says PASS: the stages it lacks are unknown.
    finished = suite.pytester.path / "finished.json"
    finished.write_text(json.dumps(dict(data, diffusers_perf=dict(data["diffusers_perf"], finished=True))))
    assert compare.main([str(finished), str(path)]) == 2
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("diffusers-perf: INTERRUPTED, 1 of 1 stages compared") and \
        "when its process stopped" in out
    whole = suite.run("--perf-stages=fp32", "--perf-size=32", "--benchmark-json=whole.json")
    assert whole.ret == 0 and json.loads((suite.pytester.path / "whole.json").read_text())["diffusers_perf"]["finished"]
    assert not list(suite.pytester.path.glob("*.partial"))


@pytest.mark.parametrize("option", ["--benchmark-storage", "--perf-report", "--benchmark-json", "--benchmark-compare",
                                    "--perf-model", "--perf-reference-python", "GITHUB_STEP_SUMMARY"])
def test_a_path_the_os_refuses_is_one_line_and_exit_4(suite, option, monkeypatch):
    long = "/tmp/" + "x" * 300
    if option == "GITHUB_STEP_SUMMARY":
        monkeypatch.setenv(option, long)
        result = suite.run("--perf-stages=fp32")
    else:
        result = suite.run("--perf-stages=fp32", f"{option}={long}", storage=option != "--benchmark-storage")
    errors = [line for line in result.errlines if line.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(errors) == 1, result.errlines
    assert errors[0].startswith(f"ERROR: {option}") and "File name too long" in errors[0]


def test_outputs_the_storage_refuses_and_runs_that_could_not_save_are_refused_up_front(suite, tmp_path):
    cases = [
        (["--benchmark-storage=/proc/diffusers-perf", "--benchmark-save=x"], "--benchmark-storage /proc/"),
        (["--benchmark-disable", "--benchmark-save=x"], "nothing to save"),
        ([f"--benchmark-json={suite.storage}/anything/new.json"], "inside the baseline storage"),
    ]
    for args, expected in cases:
        result = suite.run("--perf-stages=fp32", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR and expected in result.stderr.str(), (args, result.errlines)


def test_pyargs_from_another_folder_cannot_bypass_the_xdist_refusal(pytester):
    result = pytester.runpytest_subprocess("-n", "2", "-p", "perf.options", "-p", "perf.plugin", "-p", "perf.fixtures",
                                           "--pyargs", "perf.test_ladder", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "pytest-xdist" in result.stderr.str()


def test_compare_of_a_run_that_holds_no_stage_fails(tmp_path, capsys):
    from perf import compare

    empty = json.loads((H100 / "0009_h100.json").read_text())
    empty["benchmarks"] = []
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    assert compare.main([str(H100 / "0009_h100.json"), str(tmp_path / "empty.json")]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "diffusers-perf: FAIL, nothing was compared"
