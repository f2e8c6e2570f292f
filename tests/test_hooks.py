"""Stages and pipelines added from outside the registry, through the suite's hooks (perf/hooks.py)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from perf import pipelines, stages
from perf.stages import Stage


@pytest.fixture
def registry():
    """Leave the registries as they were."""
    saved = stages.STAGES, stages.BY_NAME, dict(pipelines.SPECS)
    yield
    stages.STAGES, stages.BY_NAME = saved[:2]
    pipelines.SPECS.clear()
    pipelines.SPECS.update(saved[2])


def test_a_registered_stage_inherits_from_its_parent(registry):
    stages.register(Stage("max_autotune", "cudagraphs", "+ max-autotune", compile={"mode": "max-autotune"}))
    assert stages.names("sd")[-1] == "max_autotune" and "max_autotune" not in stages.BUILT_IN
    recipe = stages.recipe("max_autotune", "sd")
    assert recipe.compile == {"mode": "max-autotune"} and recipe.attention == "sdpa" and recipe.dtype == "float16"
    stages.register(Stage("max_autotune", "cudagraphs", "+ max-autotune", compile={"mode": "max-autotune"}))  # no-op
    assert stages.names().count("max_autotune") == 1


@pytest.mark.parametrize("stage, expected", [
    (Stage("fp16", "fp32", "again"), "stage 'fp16' is declared twice"),
    (Stage("orphan", "no_such_parent", "?"), "'no_such_parent', must be declared before it"),
])
def test_a_bad_stage_is_refused_and_the_registry_is_unchanged(registry, stage, expected):
    before = stages.names()
    with pytest.raises(ValueError, match=expected):
        stages.register(stage)
    assert stages.names() == before


def test_a_registered_pipeline_is_checked(registry):
    wide = dataclasses.replace(pipelines.SPECS["tiny"], name="tiny-wide")
    pipelines.register(wide)
    assert pipelines.SPECS["tiny-wide"] is wide and "tiny-wide" not in pipelines.BUILT_IN
    with pytest.raises(ValueError, match="unknown family 'unet3d'"):
        pipelines.register(dataclasses.replace(wide, name="video", family="unet3d"))
    with pytest.raises(ValueError, match="'tiny' is declared twice"):
        pipelines.register(dataclasses.replace(wide, name="tiny", steps=3))


ADDED = """
import dataclasses
from perf import pipelines
from perf.stages import Stage


def pytest_perf_stages():
    return [Stage("sdpa_fused", "sdpa", "+ fuse_qkv_projections(), added by a plugin", fuse_qkv=True,
                  families=("sd", "sdxl"))]


def pytest_perf_pipelines():
    return [dataclasses.replace(pipelines.SPECS["tiny"], name="tiny-added", steps=3)]
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="sized for the tiny pipeline on CPU")
def test_a_plugin_adds_a_stage_and_a_pipeline_that_run_like_built_in_ones(suite):
    result = suite.run("--perf-pipeline=tiny-added", "--perf-stages=sdpa,sdpa_fused", "--benchmark-save=added",
                       plugins={"added": ADDED})
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*pipeline tiny-added*", "sdpa_fused *measured"])
    assert len(suite.saved()) == 1
    refused = suite.run("--perf-pipeline=tiny-added", "--perf-stages=sdpa_fused",
                        f"--perf-reference-python={sys.executable}", plugins={"added": ADDED})
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "A/B workers know the built-in stages and pipelines only, not sdpa_fused, pipeline tiny-added" in \
        refused.stderr.str()
    broken = suite.run("--perf-stages=fp32", plugins={"broken": "from perf.stages import Stage\n\n\n"
                                                        "def pytest_perf_stages():\n"
                                                        "    return [Stage('x', 'nope', 'orphan')]\n"})
    assert broken.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in broken.errlines if line.startswith("ERROR:")] == [
        "ERROR: diffusers-perf: stage 'x': its parent in sd pipelines, 'nope', must be declared before it and apply to them"]


def test_the_fault_plugin_refuses_a_fault_sized_from_a_missing_baseline_through_the_plan_hook():
    """``-p perf.inject`` acts through the hooks a user's plugin has: ``pytest_perf_plan`` refuses
    the run in one line before anything is built; the core holds the faults without reading them."""
    import dataclasses

    from perf import inject
    from perf.settings import Settings
    from perf.timing import Budget

    clean = Settings(pipeline="tiny", model=None, stages=["fp32"], steps=2, size=32, batch=1,
                     budget=Budget(None, 6, 8, 3.0), report=None, count_flops=False)
    faulty = dataclasses.replace(clean, faults={"inject_step_delay": 0.1})
    assert not clean.injecting and faulty.injecting and faulty.injected() == {"inject_step_delay": 0.1}
    assert faulty.without_faults().faults == {}
    inject.pytest_perf_plan(clean, None)  # nothing injected: nothing to refuse
    with pytest.raises(pytest.UsageError, match="size the injected work from a baseline"):
        inject.pytest_perf_plan(faulty, None)
    ab_side = dataclasses.replace(faulty, reference_python="python3")  # A/B sizes it from each side's own step
    inject.pytest_perf_plan(ab_side, None)
    assert inject.worker_faults(ab_side, "candidate", "fp32") == {"step_delay": 0.1}
    assert inject.worker_faults(ab_side, "reference", "fp32") == {}
