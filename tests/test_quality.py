"""The quality guard: images against the reference stage's, floors per stage, drops against the baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from perf import gate, pipelines, quality, requirements, stages

on_cpu = pytest.mark.skipif(torch.cuda.is_available(), reason="sized for the tiny pipeline on CPU")

#: tiny at its defaults, where its floors were measured (perf/stages.py, MIN_PSNR).
TINY_DEFAULTS = ("--perf-steps=10", "--perf-size=32")


def test_psnr_reads_the_error_energy_and_identical_images_are_identical():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.2, 0.8, size=(1, 32, 32, 3))
    assert quality.similarity(reference, reference.copy(), "fp32").identical
    noisy = reference + rng.normal(0, 1e-3, size=reference.shape)
    measured = quality.similarity(noisy, reference, "fp32")
    expected = 10 * math.log10(1 / np.mean((noisy - reference) ** 2))
    assert measured.psnr_db == pytest.approx(expected, abs=0.01) and 59 < measured.psnr_db < 61
    assert 0.9 < measured.ssim < 1.0
    doubled = quality.similarity(reference + (noisy - reference) * math.sqrt(2), reference, "fp32")
    assert measured.psnr_db - doubled.psnr_db == pytest.approx(3.01, abs=0.01)  # error energy x2 = 3 dB
    with pytest.raises(ValueError, match="reference images of"):
        quality.similarity(noisy[:, :16], reference, "fp32")


def test_floors_are_inherited_down_the_ladder_and_only_where_measured():
    assert stages.min_psnr("channels_last", "sd", "tiny") == stages.MIN_PSNR["fp16"]["tiny"]
    assert stages.min_psnr("bf16", "sd", "tiny") == stages.MIN_PSNR["bf16"]["tiny"]
    assert stages.min_psnr("fused_qkv", "sd", "tiny") == stages.MIN_PSNR["fp16"]["tiny"]  # via sdpa, fp16
    assert stages.min_psnr("fused_qkv", "dit", "tiny-flux") == stages.MIN_PSNR["bf16"]["tiny-flux"]
    assert stages.min_psnr("compile", "dit", "tiny-flux") == stages.MIN_PSNR["compile"]["tiny-flux"]
    assert stages.min_psnr("sdpa", "sd", "sd15") == stages.MIN_PSNR["fp16"]["sd15"]  # on the H100
    assert stages.min_psnr("sdpa", "sd", "sd15", "cuda") == stages.MIN_PSNR["fp16"]["sd15"]
    assert stages.min_psnr("sdpa", "sd", "sd15", "cpu") is None  # not measured there: only the drop is judged
    assert stages.min_psnr("sdpa", "sd", "tiny", "cuda") is None
    assert stages.min_psnr("cudagraphs", "dit", "flux", "cuda") == stages.MIN_PSNR["cudagraphs"]["flux"]  # not bf16's
    assert set(stages.FLOORS_MEASURED_ON) == set(pipelines.SPECS)
    for name, floors in stages.MIN_PSNR.items():
        assert name in stages.BY_NAME and all(pipeline for pipeline in floors)


#: (pipeline, stage) whose floors were read from H200 runs: no H100 run of them is stored.
FIRST_MEASURED_ON_THE_H200 = {("flux", "frontier_fp8"), ("sdxl", "frontier_fp8"), ("sdxl", "frontier_int8"),
                              ("sdxl", "int8"), ("sdxl", "fp8"), ("flux", "int8")}


def test_gpu_floors_sit_under_what_the_suite_stored_on_the_gpus():
    """Each CUDA floor is held to the baselines it was read from (the H100's, and the H200's for the
    stages first measured there): at least 2.5 dB under every stored image of its stage (3 dB was
    the rule), so an unchanged run cannot fall through it. Every other stored GPU image passes it."""
    from pathlib import Path

    judged = set()
    for path in sorted((Path(__file__).resolve().parents[1] / "baselines").glob("NVIDIA_H*-x1/*.json")):
        for bench in json.loads(path.read_text())["benchmarks"]:
            extra = bench["extra_info"]
            spec = pipelines.SPECS.get(extra["pipeline"])
            if "quality" not in extra or spec is None or (extra["steps"], extra["size"]) != (spec.steps, spec.size):
                continue
            if bench["param"] not in stages.BY_NAME:
                continue  # a stage measured once and withdrawn (0016_h200: cudnn_benchmark, conv_1x1_as_mm)
            floor = stages.min_psnr(bench["param"], spec.family, extra["pipeline"], "cuda")
            if floor is not None:
                read_there = "H100" in path.parent.name or (extra["pipeline"], bench["param"]) in FIRST_MEASURED_ON_THE_H200
                assert extra["quality"]["psnr_db"] >= floor + (2.5 if read_there else 0.0), (path.name, bench["param"])
                judged.add((extra["pipeline"], bench["param"]))
    floors = {(pipeline, name) for name, rows in stages.MIN_PSNR.items() for pipeline in rows
              if stages.FLOORS_MEASURED_ON[pipeline] == "cuda"}
    assert floors <= judged  # every declared GPU floor was measured in a stored run


@pytest.mark.parametrize("history, allowed", [
    ([], gate.QUALITY_MIN_DROP_DB),
    ([66.5, 66.5, 66.5], gate.QUALITY_MIN_DROP_DB),  # CPU: repeats exactly
    ([60.0, 64.0, 60.0, 64.0], 2 * 4.0 * 1.4826 / math.sqrt(2)),  # noisy history widens it
])
def test_the_allowed_drop_follows_the_stored_runs_noise(history, allowed):
    assert gate.quality_drop_allowed(history) == pytest.approx(allowed)


@pytest.mark.slow
@on_cpu
def test_unchanged_images_pass_their_floors_and_a_subtle_fault_fails_the_named_stages(suite):
    stages_ = ("--perf-stages=fp32,sdpa,bf16", *TINY_DEFAULTS)
    clean = suite.run(*stages_, "--benchmark-json=clean.json")
    assert clean.ret == 0, clean.stdout.str()
    recorded = {b["extra_info"]["stage"]: b["extra_info"]["quality"]
                for b in json.loads((suite.pytester.path / "clean.json").read_text())["benchmarks"]}
    assert recorded["fp32"]["psnr_db"] == quality.IDENTICAL_DB  # the reference against itself
    assert stages.MIN_PSNR["fp16"]["tiny"] < recorded["sdpa"]["psnr_db"] < quality.IDENTICAL_DB
    assert stages.MIN_PSNR["bf16"]["tiny"] < recorded["bf16"]["psnr_db"] < recorded["sdpa"]["psnr_db"]
    assert all(r["reference"] == "fp32" and r["min_psnr_db"] is not None for r in recorded.values())
    clean.stdout.fnmatch_lines(["*PSNR dB*", "sdpa *6?.? (>63.5)*measured"])

    broken = suite.run(*stages_, "--perf-inject-quality=0.2")
    assert broken.ret == pytest.ExitCode.TESTS_FAILED
    broken.stdout.fnmatch_lines(["*stage 'sdpa': quality PSNR *dB against fp32 is under its floor of 63.5 dB*"])
    assert "stage 'fp32': quality PSNR" in broken.stdout.str()  # the reference is built without the fault
    assert "making the reference images (fp32, untimed)" in broken.stdout.str()
    # The fault's error is smaller than bfloat16's own rounding: it hides under bf16's floor.
    broken.stdout.fnmatch_lines(["bf16 *measured"])
    assert suite.last_line(broken).startswith("diffusers-perf: FAIL")


@pytest.mark.slow
@on_cpu
def test_a_drop_against_the_baseline_fails_where_no_floor_was_measured(suite):
    """At the tests' 2 steps and 32 px no floor applies: the baseline's own PSNR is the bar."""
    stages_ = ("--perf-stages=sdpa",)
    assert suite.run(*stages_, "--benchmark-save=base").ret == 0
    [saved] = suite.saved()
    [bench] = json.loads(saved.read_text())["benchmarks"]
    assert bench["extra_info"]["quality"]["min_psnr_db"] is None
    before = bench["extra_info"]["quality"]["psnr_db"]

    same = suite.run(*stages_, "--benchmark-compare", "--benchmark-json=same.json")
    # Its quality passes; its timing may drift on a loaded 2-core host (the gate's own tests judge that).
    assert same.ret in (0, pytest.ExitCode.TESTS_FAILED) and "quality PSNR" not in same.stdout.str(), same.stdout.str()
    [now] = json.loads((suite.pytester.path / "same.json").read_text())["benchmarks"]
    assert now["extra_info"]["quality"]["psnr_db"] == before  # repeats exactly on CPU
    assert suite.saved() == [saved]  # comparing never writes a stored run
    assert "making the reference images (fp32, untimed)" in same.stdout.str()  # fp32 not selected

    broken = suite.run(*stages_, "--benchmark-compare", "--perf-inject-quality=0.2")
    assert broken.ret == pytest.ExitCode.TESTS_FAILED, broken.stdout.str()
    broken.stdout.fnmatch_lines([f"REGRESSION sdpa: *quality PSNR * dB against fp32, * dB under {before:.1f} dB in "
                                 "0001_base.json (more than 3.0 dB: the error against the reference grew *x)*"])


@on_cpu
@pytest.mark.parametrize("value, expected", [
    ("-1", "--perf-inject-quality: must be a fraction above -1"),
    ("nan", "--perf-inject-quality: must be a finite number"),
])
def test_bad_quality_injections_are_refused(suite, value, expected):
    result = suite.run("--perf-stages=fp32", f"--perf-inject-quality={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str()


@on_cpu
def test_a_quality_fault_is_never_saved(suite):
    result = suite.run("--perf-stages=fp32", "--perf-inject-quality=0.2", "--benchmark-save=x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "never record a baseline with them" in result.stderr.str()


@pytest.mark.slow
@on_cpu
@pytest.mark.skipif(requirements._torchao() is not None, reason=str(requirements._torchao()))
def test_int8_quantizes_the_compiled_unet_and_is_judged_by_its_own_floor(suite):
    result = suite.run("--perf-stages=int8", *TINY_DEFAULTS, "--benchmark-json=int8.json")
    assert result.ret == 0, result.stdout.str()
    [bench] = json.loads((suite.pytester.path / "int8.json").read_text())["benchmarks"]
    assert bench["extra_info"]["recipe"]["quantize"] == "int8" and bench["extra_info"]["recipe"]["compile"]
    measured = bench["extra_info"]["quality"]
    # int8's error is its own: above its floor, below what the float16 stages keep.
    assert stages.MIN_PSNR["int8"]["tiny"] == measured["min_psnr_db"] < measured["psnr_db"] < stages.MIN_PSNR["fp16"]["tiny"]
