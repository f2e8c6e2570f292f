"""Command-line options (``--perf-*``) and their validation into one :class:`Settings`.

Bad input is a usage error with one line that says what was wrong and what is valid, raised
at configure time, before anything is built.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from . import compile_cache, gate, inject, pipelines, stages, timing
from .settings import Settings
from .timing import MIN_ROUNDS_FOR_RANK_TEST, Budget

#: Whole-number options: (lowest, highest) value taken; beyond the highest a run could not fit in
#: memory or a night (one line, exit 4).
LIMITS = {"--perf-steps": (1, 1000), "--perf-size": (1, 4096), "--perf-batch": (1, 64),
          "--perf-min-rounds": (1, 10_000), "--perf-max-rounds": (1, 10_000), "--perf-warmup": (0, 1000),
          "--perf-gpu-rounds": (0, 1000), "--perf-threads": (1, 1024)}
#: Pixels of one batch (batch x size^2) beyond which latents and activations cannot fit a GPU.
MAX_PIXELS = 4096 * 4096


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """A fault's option without its plugin would end in argparse's ``unrecognized arguments`` and the
    whole usage text; name the plugin instead. This hook sees the command line before it is parsed
    only in a plugin loaded that early: the installed entry point, or ``-p perf.options`` in this
    repository's ``addopts`` (a checkout on ``PYTHONPATH``, as on the GPU machine)."""
    if early_config.pluginmanager.has_plugin("perf.inject"):
        return
    fault = next((arg.partition("=")[0] for arg in args if arg.startswith("--perf-inject-")), None)
    if fault is not None:
        raise pytest.UsageError(f"{fault} injects a fault on purpose, from the plugin perf.inject, which this run "
                                f"did not load: add -p perf.inject")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diffusers-perf", "diffusers-perf: Diffusers inference benchmarks")
    group.addoption("--perf-pipeline", metavar="NAME", default=None,
                    help=f"embedded pipeline: {', '.join(pipelines.SPECS)} (default: sd15 with CUDA, tiny without)")
    group.addoption("--perf-model", metavar="PATH_OR_ID", default=None,
                    help="a real diffusers pipeline (folder or hub id) loaded with from_pretrained; safetensors only")
    group.addoption("--perf-stages", metavar="a,b,c", default="all",
                    help=f"stages to run, in ladder order: {', '.join(stages.names())} (default: all)")
    group.addoption("--perf-steps", metavar="N", type=int, default=None,
                    help="denoising steps (default: 50 for sd15, 10 for tiny)")
    group.addoption("--perf-size", metavar="PX", type=int, default=None,
                    help="image height and width in pixels (default: 512 for sd15, 64 for tiny)")
    group.addoption("--perf-batch", metavar="N", type=int, default=1, help="images per prompt (default: 1)")
    group.addoption("--perf-warmup", metavar="N", type=int, default=None,
                    help="warm-up rounds per stage (default: 1 eager, 3 for torch.compile stages)")
    group.addoption("--perf-min-rounds", metavar="N", type=int, default=MIN_ROUNDS_FOR_RANK_TEST,
                    help=f"fewest timed rounds per stage (default: {MIN_ROUNDS_FOR_RANK_TEST}, what a rank test needs)")
    group.addoption("--perf-max-rounds", metavar="N", type=int, default=20,
                    help="most timed rounds per stage (default: 20)")
    group.addoption("--perf-max-time", metavar="SECONDS", type=float, default=15.0,
                    help="time budget of one stage's timed rounds; rounds stop growing past it (default: 15)")
    group.addoption("--perf-gpu-rounds", metavar="N", type=int, default=timing.GPU_ROUNDS,
                    help="profiled rounds per stage that measure GPU busy time, which the gate compares "
                         f"beside wall time (CUDA only; default: {timing.GPU_ROUNDS}, the fewest its rank test "
                         "can use; 0: off)")
    group.addoption("--perf-host-drift", metavar="FACTOR", type=float, default=None,
                    help="how much the host's share of a GPU stage's latency may grow between unchanged runs "
                         "before wall time fails it (default, measured on a shared H100 host: 2.0 for eager "
                         "stages, 0.8 on the fastest round and 1.5 on the median for CUDA-graph stages; one "
                         "value replaces them all; lower it on a dedicated runner)")
    group.addoption("--perf-threads", metavar="N", type=int, default=None,
                    help=f"torch intra-op threads of the timed process (default: {timing.CPU_THREADS} on CPU, as "
                         "torch.utils.benchmark.Timer, so another process on the machine does not stall every "
                         "operator; torch's own default with CUDA). A/B workers use it only when given")
    group.addoption("--perf-report", metavar="PATH", default="perf-report.md",
                    help="Markdown report written at the end of the run (default: perf-report.md; "
                         "'none' or empty: no report file); also appended to $GITHUB_STEP_SUMMARY when set")
    group.addoption("--perf-allow-uncompared", action="store_true",
                    help="with --benchmark-compare, let stages that could not be compared (no baseline entry, "
                         "another recipe, a stage that now skips, ...) pass; the final line still counts them")
    group.addoption("--perf-no-flops", action="store_true",
                    help="skip counting FLOPs and measuring the device's peak (saves a few seconds)")
    group.addoption("--perf-compile-cache", metavar="DIR", default=None,
                    help="folder of the compiled kernels that torch.compile stages load before compiling and add "
                         "to (CUDA; one subfolder per hardware key; default: $XDG_CACHE_HOME/diffusers-perf/"
                         "compile-cache, i.e. ~/.cache/diffusers-perf/compile-cache)")
    group.addoption("--perf-no-compile-cache", action="store_true",
                    help="compile every torch.compile stage from scratch: neither load the compile cache nor add to it")
    group.addoption("--perf-no-counters", action="store_true",
                    help="skip the round that counts host work (kernels, syncs, copies, aten ops, Python calls), "
                         "which the gate compares exactly")
    group.addoption("--perf-reference-python", metavar="PATH", default=None,
                    help="A/B in one job: also run every selected stage as test_ab[stage], alternating rounds "
                         "between this environment and the Python interpreter at PATH (another venv: "
                         "Diffusers main, the previous torch) on the same device, judged on the paired ratios")
    group.addoption("--perf-worker-timeout", metavar="SECONDS", type=float, default=60.0,
                    help="A/B runs: the least time a worker is given to answer one request (default 60); "
                         "start-up gets 5x, building and compiling 30x, a round 10x the stage's own round "
                         "when that is longer. A worker that does not answer fails its stage alone")
    group.addoption("--perf-affinity", metavar="CPU_LIST", default=None,
                    help="A/B runs: the CPUs both workers' main threads run on, as pyperf's --affinity "
                         "(e.g. 3 or 2-3 or 0,2; 'none': let the OS place them). Default: with CUDA, both on "
                         "the last CPU this process may use, so a disturbance of that CPU slows both sides "
                         "alike; on CPU none (each side uses every core while the other waits)")


def settings_from(config: pytest.Config) -> Settings:
    """Validate the options; raises :class:`pytest.UsageError` with one line on bad input."""
    get = config.getoption
    model = None
    name = get("perf_pipeline")
    if get("perf_model"):
        if name:
            raise pytest.UsageError("--perf-model and --perf-pipeline are exclusive: pass one of them")
        try:
            model = pipelines.resolve_model(get("perf_model"))
        except pipelines.ModelError as exc:
            raise pytest.UsageError(str(exc)) from None
        name = "model"
        family = pipelines.family_of_model(model)
        scale = pipelines.size_multiple(pipelines.model_scale_factor(model), family)
        default_steps, default_size = 50, pipelines.model_sample_size(model) or 512
    else:
        name = name or pipelines.default_pipeline()
        if name not in pipelines.SPECS:
            raise pytest.UsageError(
                f"--perf-pipeline: unknown pipeline {name!r}; valid pipelines: {', '.join(pipelines.SPECS)} "
                "(or --perf-model PATH_OR_ID for a real checkpoint)"
            )
        spec = pipelines.SPECS[name]
        if spec.needs_cuda and not torch.cuda.is_available():
            raise pytest.UsageError(f"--perf-pipeline: {name} needs CUDA: {spec.needs_cuda}")
        family, scale, default_steps, default_size = spec.family, spec.size_multiple, spec.steps, spec.size
    try:
        selected = stages.parse(get("perf_stages"), family)
    except ValueError as exc:
        raise pytest.UsageError(f"--perf-stages: {exc}") from None

    steps = get("perf_steps") or default_steps
    size = get("perf_size") or default_size
    _check_numbers(get)
    if get("perf_batch") * size * size > MAX_PIXELS:
        raise pytest.UsageError(
            f"--perf-batch {get('perf_batch')} x --perf-size {size}: {get('perf_batch') * size * size / 1e6:.0f} "
            f"megapixels a batch, more than the {MAX_PIXELS / 1e6:.1f} that fit a GPU's memory; lower one of them"
        )
    multiple = max(8, scale)
    if size % multiple:
        raise pytest.UsageError(
            f"--perf-size: {size} is not a multiple of {multiple}, which this pipeline's VAE and UNet need; "
            f"try {max(multiple, size // multiple * multiple)} or {(size // multiple + 1) * multiple}"
        )
    if get("perf_max_rounds") < get("perf_min_rounds"):
        raise pytest.UsageError(
            f"--perf-max-rounds ({get('perf_max_rounds')}) is below --perf-min-rounds ({get('perf_min_rounds')})"
        )
    for option, rounds, alpha in (("--perf-min-rounds", get("perf_min_rounds"), gate.ALPHA),
                                  ("--perf-gpu-rounds", get("perf_gpu_rounds"), gate.GPU_TIME_ALPHA)):
        if rounds and not gate.comparable(rounds, rounds, alpha):
            raise pytest.UsageError(
                f"{option}={rounds}: with {rounds} rounds a side the rank test cannot reach p <= {alpha}, so no "
                f"regression could ever fail; use at least {gate.fewest_rounds(alpha=alpha)}"
                + (" (or 0 to turn GPU time off)" if option == "--perf-gpu-rounds" else "")
            )
    report = (get("perf_report") or "").strip()
    reference = get("perf_reference_python")
    if reference is not None and not reference.strip():
        raise pytest.UsageError("--perf-reference-python: empty; pass the reference environment's bin/python")

    return Settings(
        pipeline=name,
        family=family,
        model=model,
        stages=selected,
        steps=steps,
        size=size,
        batch=get("perf_batch"),
        budget=Budget(
            warmup_rounds=get("perf_warmup"),
            min_rounds=get("perf_min_rounds"),
            max_rounds=get("perf_max_rounds"),
            max_time=get("perf_max_time"),
            gpu_rounds=get("perf_gpu_rounds"),
            count_host_work=not get("perf_no_counters"),
        ),
        report=None if report.lower() in ("", "none") else Path(report),
        count_flops=not get("perf_no_flops"),
        **inject.settings_fields(config, selected, family),
        reference_python=reference,
        worker_timeout=get("perf_worker_timeout"),
        affinity=affinity(get("perf_affinity"), cuda=torch.cuda.is_available()),
        host_drift=get("perf_host_drift"),
        allow_uncompared=get("perf_allow_uncompared"),
        threads=get("perf_threads") or (None if torch.cuda.is_available() else timing.CPU_THREADS),
        threads_given=get("perf_threads") is not None,
        compile_cache=None if get("perf_no_compile_cache") else compile_cache.root(get("perf_compile_cache")),
    )


def affinity(text: str | None, cuda: bool) -> tuple[int, ...]:
    """``--perf-affinity`` as the CPUs to pin A/B workers' main threads to; () leaves them unpinned."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if text is None:
        return (allowed[-1],) if cuda and allowed else ()
    if text.strip().lower() == "none":
        return ()
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise pytest.UsageError(f"--perf-affinity: {text!r} is not a CPU list; use e.g. 3, 2-3 or 0,2 "
                                "(or none)") from None
    outside = sorted(cpus - set(allowed)) if allowed else []
    if not cpus or outside:
        raise pytest.UsageError(f"--perf-affinity: CPU {','.join(map(str, outside)) or text} is not one this process may "
                                f"use; choose among {_ranges(allowed)}")
    return tuple(sorted(cpus))


def _ranges(cpus: list[int]) -> str:
    spans: list[list[int]] = []
    for cpu in cpus:
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _check_numbers(get: Callable[[str], Any]) -> None:
    """Every number option: a whole number in its range, or finite seconds and factors."""
    for option, (lowest, highest) in LIMITS.items():
        value = get(option[2:].replace("-", "_"))
        if value is not None and value < lowest:
            raise pytest.UsageError(f"{option}: must be {'a positive integer' if lowest else '0 or more'}, got {value}")
        if value is not None and value > highest:
            raise pytest.UsageError(f"{option}: {value} is more than the suite takes (at most {highest})")
    for option, value, low in (("--perf-max-time", get("perf_max_time"), "positive seconds"),
                               ("--perf-worker-timeout", get("perf_worker_timeout"), "positive seconds"),
                               ("--perf-host-drift", get("perf_host_drift"), "0 or more")):
        if value is not None and not math.isfinite(value):
            raise pytest.UsageError(f"{option}: must be a finite number ({low}), got {value}")
    if get("perf_host_drift") is not None and get("perf_host_drift") < 0:
        raise pytest.UsageError(f"--perf-host-drift: must be 0 or more, got {get('perf_host_drift')}")
    if get("perf_worker_timeout") <= 0:
        raise pytest.UsageError(f"--perf-worker-timeout: must be positive seconds, got {get('perf_worker_timeout')}")
    if get("perf_max_time") <= 0:
        raise pytest.UsageError(f"--perf-max-time: must be positive seconds, got {get('perf_max_time')}")
