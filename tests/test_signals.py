"""A run told to stop still ends with its verdict (perf/signals.py): SIGTERM is Ctrl-C, a stop that
Python swallowed is raised again as the stage ends, and a signal that arrives while the run ends
waits for the last line.

Before: on the 2-core machine a SIGTERM to ``pytest perf --perf-stages=compile`` during its compile
ended the process at once (exit status -15, the last line the stage's progress line), and so did
a cancelled GitHub job's SIGTERM 2.5-4 s after its SIGINT, while the run was writing its output.
"""

from __future__ import annotations

import json
import signal

import pytest

from perf import signals, storage

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or not hasattr(signal, "raise_signal"),
                                reason="POSIX signals")

RUN = ("--perf-stages=fp32,bf16",)  # a test whose verdict needs fp32 compared unchanged adds suite.TIMED

#: The signal a CI time limit sends, while the second stage is being timed.
SIGTERM_IN_BF16 = """
import os, signal

def pytest_perf_before_timing(stage, runner):
    if stage == "bf16":
        os.kill(os.getpid(), signal.SIGTERM)
"""

#: The second signal of a cancelled job, once every stage has run: the output is being written.
SIGTERM_WHILE_ENDING = """
import os, signal, pytest

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    os.kill(os.getpid(), signal.SIGTERM)
"""


#: A stop that lands where Python ignores exceptions, as ``timeout``'s SIGINT landed in Dynamo's
#: weakref callback on an H200 (reports/h200/flux-compiled/): "Exception ignored", and the run went on.
SIGINT_SWALLOWED_IN_FP32 = """
import signal

class Freed:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)

def pytest_perf_before_timing(stage, runner):
    if stage == "fp32":
        Freed()
"""


@pytest.mark.alone  # its verdict needs fp32 compared unchanged: no other test on the other core
def test_a_stop_swallowed_inside_a_stage_still_stops_the_run_when_that_stage_ends(suite):
    assert suite.run(*RUN, suite.TIMED, "--benchmark-save=base").ret == 0
    result = suite.run(*RUN, suite.TIMED, "--benchmark-compare", "--benchmark-save=again",
                       plugins={"sigint_swallowed": SIGINT_SWALLOWED_IN_FP32})
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    last = suite.last_line(result)
    # fp32 ran to its end after the signal (Python had swallowed it), and the run stopped there
    assert last.startswith("diffusers-perf: INTERRUPTED, 1 of 2 stages compared"), last
    assert "1 not run" in last
    assert "not saved" in last and len(suite.saved()) == 1
    assert "stopped by SIGINT, which code that ignores exceptions" in out and "as fp32's test ended" in out


@pytest.mark.alone  # its verdict needs fp32 compared unchanged: no other test on the other core
def test_sigterm_while_a_stage_is_timed_says_interrupted_and_saves_nothing(suite):
    assert suite.run(*RUN, suite.TIMED, "--benchmark-save=base").ret == 0
    result = suite.run(*RUN, suite.TIMED, "--benchmark-compare", "--benchmark-save=again", "--benchmark-json=term.json",
                       plugins={"sigterm_in_bf16": SIGTERM_IN_BF16})
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    last = suite.last_line(result)
    assert last.startswith("diffusers-perf: INTERRUPTED, 1 of 2 stages compared") and "1 interrupted: bf16" in last
    assert "not saved" in last and len(suite.saved()) == 1
    assert "stopped by SIGTERM" in out
    assert list(storage.read(suite.pytester.path / "term.json").entries()) == ["fp32"]


def test_a_signal_while_the_run_ends_waits_for_the_last_line(suite):
    result = suite.run(*RUN, "--benchmark-json=whole.json", "--perf-report=report.md",
                       plugins={"sigterm_while_ending": SIGTERM_WHILE_ENDING})
    assert result.ret == 0, result.stdout.str()
    assert suite.last_line(result).startswith("diffusers-perf: PASS, 2 of 2 stages measured")
    assert json.loads((suite.pytester.path / "whole.json").read_text())["diffusers_perf"]["finished"]
    assert "| bf16 |" in (suite.pytester.path / "report.md").read_text()


@pytest.fixture
def sigterm_default():
    """SIGTERM as Python starts with it, put back as it was after the test."""
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def test_only_a_stop_that_pytest_never_saw_is_raised_again(sigterm_default):
    guard = signals.Guard()
    signals.watch(guard)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    guard.seen()  # pytest_keyboard_interrupt
    signals.raise_if_swallowed(guard, "here")  # nothing to raise

    class Freed:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGTERM)

    Freed()  # the Terminated is raised inside __del__, and Python drops it
    assert guard.asked == [signal.SIGTERM]
    with pytest.raises(signals.Stopped, match="SIGTERM, which code that ignores exceptions .* raised again here"):
        signals.raise_if_swallowed(guard, "here")
    assert guard.asked == []
    guard.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_first_signal_while_holding_waits_and_a_second_goes_through(sigterm_default):
    guard = signals.Guard()
    signals.watch(guard)
    with pytest.raises(signals.Terminated, match="SIGTERM"):
        signal.raise_signal(signal.SIGTERM)
    signals.hold(guard)
    signal.raise_signal(signal.SIGINT)  # kept: the output is being written
    assert guard.held == [signal.SIGINT]
    with pytest.raises(signals.Terminated):  # the second: the user means it
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is guard.installed[signal.SIGINT]  # the hold is over
    guard.restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_someone_else_installed_is_left_alone(sigterm_default):
    def theirs(signum, frame):
        pass

    signal.signal(signal.SIGTERM, theirs)
    guard = signals.Guard()
    signals.watch(guard)
    signals.hold(guard)
    assert signal.getsignal(signal.SIGTERM) is theirs
    signal.raise_signal(signal.SIGTERM)  # theirs ran; nothing was raised or kept
    assert guard.held == []
    guard.release()
    assert signal.getsignal(signal.SIGINT) is guard.installed[signal.SIGINT]
    guard.restore()
    assert signal.getsignal(signal.SIGTERM) is theirs
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
