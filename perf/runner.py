"""One runner that builds and measures every stage: the test body of the whole ladder.

A stage's life: check it can run here, build its pipeline (embedded or ``from_pretrained``),
apply its recipe, warm up, time through ``benchmark.pedantic``, check the images, record
what a reader of the JSON needs in ``extra_info``, tear down before the next stage.
"""

from __future__ import annotations

import gc
import statistics
from typing import Any, Callable

import torch

from . import (baselines, counters, flops, guards, optimizations, pipelines, progress, quality,
               stages, timing)
from . import steps as steps_module
from .results import StageExtra, StageResult
from .settings import Settings
from .stats import robust_cv


class StageFailure(Exception):
    """A stage failed; its message is one line naming the stage and the error's first line."""


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


class Runner:
    """Session-wide state the stages share: settings, device, baseline, FLOP counts."""

    def __init__(self, settings: Settings, plans: dict[str, baselines.StagePlan] | None = None):
        self.settings = settings
        self.plans = plans or {}  # stage -> what it is compared with (--benchmark-compare)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        timing.use_threads(settings.threads)
        #: glibc keeps freed memory for the next round (CPU runs; perf.timing.keep_freed_memory)
        self.malloc_kept = self.device.type == "cpu" and timing.keep_freed_memory()
        self.results: dict[str, StageResult] = {}
        self._flops: int | None = None
        self.dynamo_before: dict[str, int] = {}  # dynamo's totals when the current stage was built
        self.cache_before: dict[str, int] = {}  # the compile caches' hits and misses, likewise
        self._software: dict | None = None
        self.progress = progress.Progress()  # the plugin gives it a writer
        self._hardware: dict | None = None
        self._reference: Any = None  # the reference stage's images (perf.quality), once made
        self.reference_problem: str | None = None  # why there are none
        self.clock = steps_module.StepClock()  # the current stage's per-step timestamps (perf.steps)
        #: What plugins do to a stage (perf.hooks): set by the pytest plugin; nothing elsewhere.
        self.prepare: Callable[[Runner, Any, str], None] = lambda runner, pipe, name: None
        self.before_timing: Callable[[Runner, str], None] = lambda runner, name: None
        self.describe: Callable[[Runner, str], list[dict]] = lambda runner, name: []

    # -- building ----------------------------------------------------------------------------

    def skip_reason(self, name: str) -> str | None:
        return self.settings.skip_reason(name)

    def build(self, name: str) -> Any:
        """The stage's pipeline, ready to time. Call inside ``optimizations.process_flags(recipe)``."""
        s = self.settings
        recipe = s.recipe(name)
        self.dynamo_before = counters.dynamo_state()
        self.cache_before = counters.cache_state()
        if s.model is not None:
            pipe = pipelines.load(s.model, self.device)
        else:
            pipe = pipelines.build(s.pipeline, self.device)
        if optimizations.denoiser_name(pipe) is None and (recipe.channels_last or recipe.trace_unet or recipe.compile):
            raise StageFailure(f"stage {name!r}: this pipeline has no UNet or transformer, which the stage optimizes")

        def before_quantize(pipe: Any) -> None:  # the model's own FLOPs, whichever stage comes first
            if s.count_flops and self._flops is None:
                self.progress.phase("counting FLOPs (a 1- and a 2-step generation)", "flops")
                try:
                    self._flops = flops.count_generation_flops(lambda n: self.generate(pipe, n), s.steps)
                except Exception as exc:  # FLOPs only say "% of peak": a model the counter cannot read is still timed
                    self._flops = 0
                    self.progress.say(f"FLOPs not counted ({first_line(exc)}): no '% of peak' in this "
                                      "run; --perf-no-flops skips counting")
                self.progress.phase("applying the recipe", "build")

        def before_capture(pipe: Any) -> None:
            self.prepare(self, pipe, name)  # pytest_perf_prepare: a plugin's changes (and -p perf.inject's faults)

        return optimizations.apply(pipe, recipe, self.device, batch=s.batch, size=s.size,
                                   before_quantize=before_quantize, before_capture=before_capture)

    def baseline_vae_seconds(self, name: str) -> float:
        """The baseline's median VAE GPU time per generation (``--perf-inject-vae-slowdown`` is a
        fraction of it); its time after the last step where it did not split GPU time."""
        stage_plan = self.plans.get(name)
        if stage_plan is None or stage_plan.entry is None:
            return 0.0
        extra = stage_plan.entry.get("extra_info") or {}
        vae = (extra.get("gpu_components") or {}).get("vae") or (extra.get("step_timing") or {}).get("after")
        return statistics.median(vae) if vae else 0.0

    def baseline_step_seconds(self, name: str) -> float:
        """The baseline's median of each round's fastest step (``--perf-inject-step-delay`` is a fraction
        of it); its wall time per step where it has no step timing."""
        stage_plan = self.plans.get(name)
        if stage_plan is None or stage_plan.entry is None:
            return 0.0
        fastest = ((stage_plan.entry.get("extra_info") or {}).get("step_timing") or {}).get("step_fastest")
        return statistics.median(fastest) if fastest else self.baseline_seconds_per_step(name)

    def baseline_seconds_per_step(self, name: str) -> float:
        stage_plan = self.plans.get(name)
        if stage_plan is None or stage_plan.entry is None:
            return 0.0
        return stage_plan.entry["stats"]["median"] / self.settings.steps

    # -- the reference images (perf.quality) -----------------------------------------------------

    def prepare_reference(self, name: str) -> None:
        """Make the family's reference images before ``name`` is built, unless ``name`` makes them.

        The reference stage's own timed images serve when it runs first, as it does in a ladder,
        and nothing injected can have changed them; otherwise (a subset such as ``--perf-stages=sdpa``,
        or a run with a fault injected) the reference is built once from the settings without faults,
        generates once untimed, and is freed before the stage is built. Where that fails (the
        reference stage runs out of memory), stages run on without a quality verdict, and
        :attr:`reference_problem` says why: a failing stage fails alone.
        """
        s = self.settings
        root = stages.root(s.family)
        if self._reference is not None or (name == root and not s.injecting):
            return
        if s.skip_reason(root):
            self._reference = (root, None)
            return
        self.progress.phase(f"making the reference images ({root}, untimed)", "reference")
        clean = Runner(s.without_faults())
        # A plugin's changes, yes; its faults, no: they read clean's fault-free settings.
        clean.prepare = self.prepare
        pipe = images = None
        try:
            with optimizations.process_flags(s.recipe(root)):
                pipe = clean.build(root)
                images = timing.synchronized(lambda: clean.generate(pipe, s.steps), self.device)()
        except Exception as exc:
            self.reference_problem = (f"no quality verdicts: {describe(root, 'while making the reference images', exc)}")
            self.progress.say(self.reference_problem)
        finally:
            del pipe
            clean.free()
        self._reference = (root, images)

    def similarity(self, name: str, images: Any) -> quality.Similarity | None:
        """The stage's images against the reference (None where the reference stage cannot run here)."""
        root = stages.root(self.settings.family)
        if self._reference is None and name == root and not self.settings.injecting:
            self._reference = (root, images)
        if self._reference is None or self._reference[1] is None:
            return None
        return quality.similarity(images, self._reference[1], self._reference[0])

    def quality_floor(self, name: str) -> float | None:
        """The stage's declared PSNR floor, where it was measured: an embedded pipeline at its default
        steps and size, on the device type of its measurements (:data:`perf.stages.MIN_PSNR`)."""
        s = self.settings
        spec = pipelines.SPECS.get(s.pipeline)
        if s.model is not None or spec is None or (s.steps, s.size) != (spec.steps, spec.size):
            return None
        return stages.min_psnr(name, s.family, s.pipeline, self.device.type)

    # -- measuring ----------------------------------------------------------------------------

    def generate(self, pipe: Any, steps: int) -> Any:
        s = self.settings
        generator = torch.Generator(self.device).manual_seed(pipelines.SEED)
        extra = dict(pipelines.SPECS[s.pipeline].call) if s.model is None else {}
        if steps_module.supports(pipe):
            extra["callback_on_step_end"] = self.clock.on_step_end
        return pipe(pipelines.PROMPT, num_inference_steps=steps, height=s.size, width=s.size,
                    num_images_per_prompt=s.batch, generator=generator, output_type="np", **extra).images

    def watch_denoiser(self, pipe: Any) -> None:
        """Split each timed round's steps at the denoiser's call (``loop_median``, :mod:`perf.steps`)."""
        denoiser = optimizations.denoiser_name(pipe)
        self.clock.denoiser = getattr(pipe, denoiser, None) if denoiser else None

    def measure(self, benchmark: Any, name: str, pipe: Any) -> StageResult:
        s = self.settings
        recipe = s.recipe(name)
        benchmark.group = f"{s.label} {s.size}px {s.steps} steps batch {s.batch}"
        self.clock = steps_module.StepClock()
        self.watch_denoiser(pipe)
        self.before_timing(self, name)  # pytest_perf_before_timing (-p perf.inject's step delay)
        measured = timing.measure(benchmark, lambda: self.generate(pipe, s.steps), self.device, s.budget,
                                  compiled=recipe.compile is not None, phase=self.progress.phase,
                                  timed=self.clock.timed, pipe=pipe)
        rounds = list(benchmark.stats.stats.data) if benchmark.stats is not None else []
        try:
            image_stats = guards.check_images(measured.result, name)
            similar, floor = self.similarity(name, measured.result), self.quality_floor(name)
            guards.check_quality(name, similar, floor)
        except guards.GuardError:
            benchmark.has_error = True  # a broken stage must never become a baseline
            raise
        if not rounds:  # --benchmark-disable: generated once and checked, nothing timed
            return StageResult(stage=name, outcome="passed", extra={"stage": name, "device": str(self.device)})
        extra = self._extra_info(name, recipe, rounds, measured, image_stats)
        if similar is not None:
            extra["quality"] = dict(similar.to_json(), min_psnr_db=floor)
        benchmark.extra_info.update(extra)
        return StageResult(stage=name, outcome="passed", rounds=rounds, extra=extra)

    def _extra_info(self, name: str, recipe: stages.Recipe, rounds: list[float], measured: timing.Measurement,
                    image_stats: list[guards.ImageStats]) -> StageExtra:
        s = self.settings
        peak = None
        if self._flops:
            self.progress.charge("flops")  # the matmul peak, measured once per dtype
            peak = flops.peak_flops(self.device.type, self.device.index or 0,
                                    optimizations.DTYPES[recipe.dtype], recipe.tf32)
        median = statistics.median(rounds)
        if self._software is None or self._hardware is None:
            self._software, self._hardware = baselines.software_info(), baselines.hardware_info()
        extra: StageExtra = {
            "stage": name,
            "summary": stages.BY_NAME[name].summary,
            "pipeline": s.label,
            "steps": s.steps,
            "size": s.size,
            "batch": s.batch,
            "threads": s.threads,
            "malloc_kept": self.malloc_kept,
            "dtype": recipe.dtype,
            "tf32": recipe.tf32,
            "attention": recipe.attention,
            "recipe": {field: getattr(recipe, field) for field in baselines.RECIPE_FIELDS},
            "device": str(self.device),
            "gpu": self._hardware["gpu"],
            "torch": self._software["torch"],
            "cuda": self._software["cuda"],
            "diffusers": self._software["diffusers"],
            "rounds": len(rounds),
            "warmup_seconds": [round(x, 4) for x in measured.warmup_seconds],
            "seconds_per_step": median / s.steps,
            "robust_cv": robust_cv(rounds),
            "peak_memory_bytes": measured.peak_memory_bytes,
            "peak_memory_gib": None if measured.peak_memory_bytes is None else round(measured.peak_memory_bytes / 2**30, 3),
            "image_max": round(min(st.max for st in image_stats), 4),
            "image_std": round(min(st.std for st in image_stats), 4),
            "cost_seconds": self.progress.costs(),
        }
        step_timing = self.clock.summary()
        if step_timing is not None:
            extra["step_timing"] = step_timing
        if measured.counters:
            extra["counters"] = dict(measured.counters)
            if recipe.compile is not None:
                extra["counters"].update(counters.dynamo_delta(self.dynamo_before))
        if recipe.compile is not None:
            extra["compile_cache"] = counters.cache_delta(self.cache_before)
        if measured.gpu_seconds:
            gpu_median = statistics.median(measured.gpu_seconds)
            extra["gpu_seconds"], extra["gpu_median"] = measured.gpu_seconds, gpu_median
            extra["gpu_seconds_per_step"], extra["gpu_busy"] = gpu_median / s.steps, gpu_median / median
        if measured.gpu_components:
            extra["gpu_components"] = measured.gpu_components
        if measured.attention_kernels:  # which kernel SDPA ran, ms per generation (perf.gpu_time)
            extra["attention_kernels"] = measured.attention_kernels
        if measured.kernel_kinds:  # which kernels a change in the kernel count added (perf.counters)
            extra["kernel_kinds"] = measured.kernel_kinds
        if self._flops and peak:
            extra["flops"], extra["achieved_tflops"] = self._flops, self._flops / median / 1e12
            extra["peak_tflops"] = peak / 1e12
            if self._flops / median <= peak:  # float16 on CPU: the "peak" matmul is a slow fallback, no peak
                extra["fraction_of_peak"] = self._flops / median / peak
        for part in self.describe(self, name):  # pytest_perf_stage_extra: what plugins changed (faults too)
            extra.update(part)  # type: ignore[typeddict-item]  # a plugin's keys are its own
        return extra

    # -- teardown -----------------------------------------------------------------------------

    def free(self) -> None:
        """Give the stage's memory back before the next stage is built."""
        gc.collect()
        try:
            import torch._dynamo

            torch._dynamo.reset()
        except Exception:
            pass
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def describe(name: str, when: str, exc: BaseException) -> str:
    """One line for a failed stage: its name and the error's first line.

    Callers keep this string and drop the exception, whose traceback holds the frames (and
    the GPU tensors) of the failed stage: memory must be free before the next stage is built.
    """
    if isinstance(exc, (StageFailure, guards.GuardError)):
        return str(exc)
    return f"stage {name!r} failed {when}: {first_line(exc)}"
