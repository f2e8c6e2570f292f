"""The ``perf_stage`` fixture: one freshly built pipeline per stage, torn down after it.

Only one stage's pipeline is alive at a time, so the whole ladder fits on a 24 GB card. A
stage that raises (out of memory, a broken kernel, the image guard) fails alone with one
line; its memory is freed before the next stage is built.
"""

from __future__ import annotations

import pytest

from . import optimizations, runner, stages


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perf_stage" in metafunc.fixturenames:
        metafunc.parametrize("perf_stage", metafunc.config._perf.settings.stages, indirect=True)


class BuiltStage:
    def __init__(self, name: str, pipe, run: runner.Runner):
        self.name, self.pipe, self._runner = name, pipe, run

    def measure(self, benchmark) -> runner.StageResult:
        """Time the stage and check its images."""
        message = None
        try:
            result = self._runner.measure(benchmark, self.name, self.pipe)
        except Exception as exc:
            benchmark.has_error = True
            message = runner.describe(self.name, "while generating", exc)
        if message is not None:
            self.pipe = None
            self._runner.results[self.name] = runner.StageResult(self.name, "failed", message)
            pytest.fail(message, pytrace=False)
        self._runner.results[self.name] = result
        return result


@pytest.fixture
def perf_stage(request: pytest.FixtureRequest):
    run: runner.Runner = request.config._perf.runner
    name: str = request.param
    reason = run.skip_reason(name)
    if reason:
        run.results[name] = runner.StageResult(name, "skipped", reason)
        pytest.skip(f"{name}: {reason}")
    built = message = None
    with optimizations.tf32(stages.recipe(name).tf32):
        try:
            built = BuiltStage(name, run.build(name), run)
        except Exception as exc:
            message = runner.describe(name, "while building", exc)
        if built is not None:
            yield built
            built.pipe = None
    built = None
    run.free()
    if message is not None:
        run.results[name] = runner.StageResult(name, "failed", message)
        pytest.fail(message, pytrace=False)
