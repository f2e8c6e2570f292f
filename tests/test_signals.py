"""A run told to stop still ends with its verdict (perf/signals.py): SIGTERM is Ctrl-C, and a
signal that arrives while the run ends waits for the last line.

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

RUN = ("--perf-stages=fp32,bf16", "--perf-size=32")

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


def test_sigterm_while_a_stage_is_timed_says_interrupted_and_saves_nothing(suite):
    assert suite.run(*RUN, "--benchmark-save=base").ret == 0
    result = suite.run(*RUN, "--benchmark-compare", "--benchmark-save=again", "--benchmark-json=term.json",
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


def test_the_first_signal_while_holding_waits_and_a_second_goes_through(sigterm_default):
    guard = signals.Guard()
    signals.stop_on_sigterm(guard)
    with pytest.raises(signals.Terminated, match="SIGTERM"):
        signal.raise_signal(signal.SIGTERM)
    signals.hold(guard)
    signal.raise_signal(signal.SIGINT)  # kept: the output is being written
    assert guard.held == [signal.SIGINT]
    with pytest.raises(signals.Terminated):  # the second: the user means it
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the hold is over
    guard.restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_handler_someone_else_installed_is_left_alone(sigterm_default):
    def theirs(signum, frame):
        pass

    signal.signal(signal.SIGTERM, theirs)
    guard = signals.Guard()
    signals.stop_on_sigterm(guard)
    signals.hold(guard)
    assert signal.getsignal(signal.SIGTERM) is theirs
    signal.raise_signal(signal.SIGTERM)  # theirs ran; nothing was raised or kept
    assert guard.held == []
    guard.release()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    guard.restore()
    assert signal.getsignal(signal.SIGTERM) is theirs
