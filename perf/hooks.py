"""Hooks other code implements to add to the ladder, as pytest-benchmark exposes its own.

A ``conftest.py`` or plugin in the repository that runs the ladder returns what it adds; the
suite registers it before it reads ``--perf-stages`` and ``--perf-pipeline``, so an added stage
is selected, parametrized, judged, reported and stored like a built-in one::

    from perf.stages import Stage

    def pytest_perf_stages() -> list[Stage] | None:
        return [Stage("max_autotune", "cudagraphs", "+ torch.compile(mode='max-autotune')",
                      compile={"mode": "max-autotune", "fullgraph": True}, requires=("cuda", "compile"))]

A stage is made of the fields of :class:`perf.stages.Recipe`; a new kind of change is a new
field there and a few lines in :mod:`perf.optimizations`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .baselines import Plan
    from .pipelines import PipelineSpec
    from .runner import Runner
    from .settings import Settings
    from .stages import Stage


@pytest.hookspec
def pytest_perf_stages() -> list[Stage] | None:
    """Return :class:`perf.stages.Stage` objects to add after the built-in ones, each after its parent."""


@pytest.hookspec
def pytest_perf_pipelines() -> list[PipelineSpec] | None:
    """Return :class:`perf.pipelines.PipelineSpec` objects to add to the embedded pipelines."""


@pytest.hookspec
def pytest_perf_prepare(pipe: Any, stage: str, runner: Runner) -> None:
    """Change stage ``stage``'s pipeline after its recipe's precision, attention and layout, before
    anything captures the denoiser (``torch.jit.trace``, ``torch.compile``), so that the change is
    traced and compiled with it; also called for the quality reference. ``runner`` is the
    :class:`perf.runner.Runner` (its ``settings``, the stage's baseline). The suite's own faults
    (``-p perf.inject``) act through this hook."""


@pytest.hookspec
def pytest_perf_stage_extra(stage: str, runner: Runner) -> dict[str, Any] | None:
    """Return keys to store in stage ``stage``'s ``extra_info``: what a plugin changed, so that the
    stored run says so (the faults of ``-p perf.inject`` are stored as ``injected_*``)."""


@pytest.hookspec
def pytest_perf_before_timing(stage: str, runner: Runner) -> None:
    """Called as stage ``stage``'s timed rounds begin; ``runner.clock`` is its step clock
    (:class:`perf.steps.StepClock`), whose ``on_step`` callbacks run at every step's end."""


@pytest.hookspec
def pytest_perf_plan(settings: Settings, plan: Plan | None) -> None:
    """Called once, after the run's settings (:class:`perf.settings.Settings`) and its baselines
    (``plan``, a :class:`perf.baselines.Plan`, or None without ``--benchmark-compare``) are known,
    before anything is built. Raise :class:`pytest.UsageError` to refuse the run in one line
    (``-p perf.inject`` refuses a fault sized from a baseline that is not there)."""
