"""The ``perf_stage`` fixture: one freshly built pipeline per stage, torn down after it.

Only one stage's pipeline is alive at a time, so the whole ladder fits on a 24 GB card. A
stage that raises (out of memory, a broken kernel, the image guard) fails alone with one
line; its memory is freed before the next stage is built. Each stage is judged as soon as it
is measured, so a regression fails that stage's own test, and pytest's summary counts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import ab, gate, optimizations, runner, stages


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    perf = getattr(metafunc.config, "_perf", None)  # None: the run does not reach the ladder (perf.plugin)
    for fixture in ("perf_stage", "perf_ab_stage"):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, perf.settings.stages if perf is not None else [], indirect=True)


class BuiltStage:
    def __init__(self, name: str, pipe: Any, run: runner.Runner,
                 judge: Callable[[str, runner.StageResult], gate.Verdict]):
        self.name, self.pipe, self._runner, self._judge = name, pipe, run, judge

    def measure(self, benchmark: Any) -> runner.StageResult:
        """Time the stage, check its images, and judge it against its baseline."""
        message = None
        try:
            result = self._runner.measure(benchmark, self.name, self.pipe)
        except Exception as exc:
            benchmark.has_error = True
            message = runner.describe(self.name, "while generating", exc)
        if message is not None:
            self.pipe = None
            result = runner.StageResult(self.name, "failed", message)
        verdict = self._judge(self.name, result)
        # At once, as A/B does: a job killed by its time limit still says what failed and why.
        self._runner.progress.say(f"{self.name}: {verdict.status}" + (f" — {verdict.detail}" if verdict.failing else ""))
        if verdict.failing:
            pytest.fail(message or f"{verdict.status.upper()} {self.name}: {verdict.detail}", pytrace=False)
        return result


@pytest.fixture
def perf_stage(request: pytest.FixtureRequest) -> Iterator[BuiltStage]:
    perf = request.config._perf
    run: runner.Runner = perf.runner
    name: str = request.param
    run.progress.start_stage(name)
    reason = run.skip_reason(name)
    if reason:
        verdict = perf.judge(name, runner.StageResult(name, "skipped", reason))
        if verdict.failing:
            pytest.fail(f"NOT COMPARED {name}: {verdict.detail}", pytrace=False)
        pytest.skip(f"{name}: {reason}")
    built = message = None
    run.prepare_reference(name)  # never raises: without a reference, stages run without quality verdicts
    run.progress.phase("building", "build")
    with optimizations.process_flags(perf.settings.recipe(name)):
        try:
            built = BuiltStage(name, run.build(name), run, perf.judge)
        except Exception as exc:
            message = runner.describe(name, "while building", exc)
        if built is not None:
            yield built
            built.pipe = None
    built = None
    run.free()
    if message is not None:
        perf.judge(name, runner.StageResult(name, "failed", message))
        pytest.fail(message, pytrace=False)


class ABStage:
    """One stage of an A/B run (:mod:`perf.ab`): both sides in their own workers."""

    def __init__(self, name: str, perf: Any):  # perf.plugin.PerfSession
        self.name, self._perf = name, perf

    def compare(self) -> None:
        perf = self._perf
        start = time.perf_counter()
        perf.runner.progress.start_stage(f"A/B {self.name}")
        perf.runner.progress.phase("starting both workers, building, then alternating rounds")
        result = perf.ab.run(self.name, ab.fewest_pairs(gate.ALPHA))
        verdict = perf.judge_ab(self.name, result)
        # At once: a job killed by its time limit keeps what was judged.
        perf.runner.progress.say(f"A/B {self.name}: {verdict.status} ({len(result.ratios)} pairs, "
                                 f"{time.perf_counter() - start:.0f} s) {verdict.detail}")
        if result.outcome == "skipped":
            pytest.skip(f"{self.name} (A/B): {result.message}")
        if verdict.failing:
            pytest.fail(verdict.detail if verdict.status == "failed"
                        else f"{verdict.status.upper()} {self.name} (A/B): {verdict.detail}", pytrace=False)


@pytest.fixture
def perf_ab_stage(request: pytest.FixtureRequest) -> ABStage:
    return ABStage(request.param, request.config._perf)
