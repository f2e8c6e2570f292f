"""The plugin as others install it (the ``pytest11`` entry point): inert in a repository's own
test run, and the ladder reachable there through ``pytest --pyargs perf``."""

from __future__ import annotations

import importlib.metadata

import pytest

pytestmark = pytest.mark.skipif(
    not any(ep.value == "perf.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11")),
    reason="diffusers-perf is not installed (pip install -e .): its pytest11 entry point is what is tested")


def test_another_repositorys_tests_run_unchanged_and_the_suite_writes_nothing(pytester: pytest.Pytester):
    pytester.makepyfile(test_theirs="def test_one():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0
    result.assert_outcomes(passed=1)
    assert "plugins: diffusers-perf" in result.stdout.str()  # loaded, as pytest-benchmark is
    assert not [line for line in result.outlines if line.startswith("diffusers-perf")]  # and silent
    # pytest-benchmark itself makes .benchmarks/ in every run; pytester its runpytest-* folders and logs
    made = [p.name for p in pytester.path.iterdir() if p.name not in (".benchmarks", "stdout", "stderr")
            and not p.name.startswith("runpytest-")]
    assert made == ["test_theirs.py"]


def test_the_ladder_runs_from_another_folder_through_pyargs(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess("--pyargs", "perf", "--perf-pipeline=tiny",
                                           "--perf-stages=fp32", "--perf-steps=2", "--perf-no-flops",
                                           "--perf-report=none", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    assert result.outlines[-1].startswith("diffusers-perf: PASS, 1 of 1 stages measured")


def test_compile_trace_stays_out_of_captured_logs_unless_asked_for(monkeypatch):
    import logging

    from perf import plugin

    trace = logging.getLogger("torch.__trace")
    monkeypatch.setattr(trace, "disabled", False)
    monkeypatch.setenv("TORCH_TRACE", "/tmp/trace")
    plugin.quiet_compile_trace()
    assert not trace.disabled  # the user asked for the trace: left alone
    monkeypatch.delenv("TORCH_TRACE")
    monkeypatch.delenv("TORCH_COMPILE_DEBUG", raising=False)
    plugin.quiet_compile_trace()
    assert trace.disabled
