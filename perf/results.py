"""What one stage produced, whatever happened to it: the type the gate, the report and the
stored runs share. It imports neither torch nor pytest, so that judging stored runs again
(``python -m perf.compare``) works on a machine that has neither."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, TypedDict


class StageExtra(TypedDict, total=False):
    """A timed stage's ``extra_info``, as pytest-benchmark stores it beside the raw rounds: the one
    place its keys are written down (:meth:`perf.runner.Runner.measure` fills it; the gate, the
    report and :mod:`perf.storage`'s validation read it). Every key may be missing in an older
    stored run, so readers use ``.get``."""

    # what was measured, and how: the identity a baseline must share (perf.baselines)
    stage: str
    summary: str
    pipeline: str
    steps: int
    size: int
    batch: int
    threads: int | None
    malloc_kept: bool  # glibc's malloc kept from trimming freed memory (perf.timing.keep_freed_memory)
    dtype: str
    tf32: bool
    attention: str
    recipe: dict[str, Any]  # perf.stages.Recipe's fields (baselines.RECIPE_FIELDS)
    device: str  # "cuda:0", "cpu"
    gpu: str | None
    torch: str
    cuda: str | None
    diffusers: str
    # wall time (the rounds themselves are pytest-benchmark's stats.data)
    rounds: int
    warmup_seconds: list[float]
    seconds_per_step: float
    robust_cv: float | None
    cost_seconds: dict[str, float]  # the stage's own wall time by phase (perf.progress)
    step_timing: dict[str, list[float]]  # per timed round: perf.steps.FIELDS
    # GPU busy time (perf.gpu_time, perf.components); CUDA only
    gpu_seconds: list[float]
    gpu_median: float
    gpu_seconds_per_step: float
    gpu_busy: float  # GPU busy time over the median round
    gpu_components: dict[str, list[float]]  # per component, per profiled round
    attention_kernels: dict[str, float]  # GPU ms per attention kernel, by name (perf.gpu_time)
    # host work, counted exactly (perf.counters); compiled stages add Dynamo's and the cache's
    counters: dict[str, int]
    kernel_kinds: dict[str, int]  # GPU kernels per kind in one profiled round (perf.counters)
    compile_cache: dict[str, int]
    # memory, images, quality
    peak_memory_bytes: int | None
    peak_memory_gib: float | None
    image_max: float
    image_std: float
    quality: dict[str, Any]  # perf.quality.Similarity.to_json() and min_psnr_db
    # FLOPs (perf.flops), unless --perf-no-flops
    flops: float
    achieved_tflops: float
    peak_tflops: float
    fraction_of_peak: float
    # under pytest-xdist (perf.distribute): the worker that timed the stage, and the GPU it owned
    xdist_worker: str
    cuda_visible_devices: str
    # faults injected on purpose (-p perf.inject): such a run is never saved nor read as a baseline
    injected_seconds_per_unet_call: float
    injected_nan: bool
    injected_sync: bool
    injected_host_work: float
    injected_recompile: bool
    injected_host_delay: float
    injected_quality: float
    injected_step_delay: float
    injected_denoiser_delay: float
    injected_vae_slowdown: float


@dataclasses.dataclass
class StageResult:
    """What the report and the gate need of one stage, whatever happened to it."""

    stage: str
    outcome: str  # "passed" | "failed" | "skipped"
    message: str = ""
    rounds: list[float] = dataclasses.field(default_factory=list)
    extra: StageExtra = dataclasses.field(default_factory=dict)  # type: ignore[assignment]

    @property
    def median(self) -> float | None:
        return statistics.median(self.rounds) if self.rounds else None
