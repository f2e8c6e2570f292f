"""Faults injected on purpose, to prove that the guard and the gate catch what they claim to.

``--perf-inject-nan`` puts a NaN into the VAE's output: the black/NaN guard must fail the stage.
``--perf-inject-sync`` reads one value of the latents back to the host in every scheduler step
(``.item()``, the usual way a sync sneaks into a pipeline): one more ``cudaStreamSynchronize``
and device-to-host copy per step on CUDA, more aten ops on CPU; the counters must fail it.
``--perf-inject-host-work=F`` runs Python calls worth ``F`` times the baseline's wall seconds
per step in every scheduler step: the Python-call counter, and on a GPU-bound stage wall time,
must fail it. ``--perf-inject-recompile`` makes a guard of the compiled UNet fail once (a Python value it
reads changes), so ``torch.compile`` recompiles: the counters must fail it.
``--perf-inject-slowdown=F`` adds work to every UNet call worth ``F`` times the baseline's
GPU busy seconds per denoising step (wall seconds where the baseline has no GPU time), so
0.05 is 5 % more GPU work. The work is a custom operator that spins (a GPU spin kernel on
CUDA, a busy loop on CPU) so it survives ``torch.jit.trace``, ``torch.compile`` and CUDA graphs:
a Python ``time.sleep`` would vanish from a captured graph and prove nothing.
``--perf-inject-vae-slowdown=F`` spins the same way at the end of every VAE decode, worth ``F``
times the baseline's VAE GPU time (:mod:`perf.components`): a component a few percent of the
stage, which must fail on its own line while the whole GPU time hardly moves.
``--perf-inject-host-delay=SECONDS`` spins on the host in every generation's image
post-processing: host time no counter sees, which only a clock can catch (the A/B gate of
:mod:`perf.ab` at a few percent; the stored-baseline gate only beyond the host's drift).
``--perf-inject-crash`` kills an A/B worker with SIGSEGV mid-stage: that stage must fail alone.
``--perf-inject-quality=F`` scales the output of the denoiser's first attention by ``1 + F``: the
kind of bug (a wrong softmax scale, a dropped bias) that leaves an image neither black nor flat,
which only the quality guard (:mod:`perf.quality`) can catch.

This module is also the pytest plugin that adds those options, opt-in as a fault should be:
``pytest perf -p perf.inject --perf-inject-…``. Without it a run has no fault to inject, and its
``--help`` lists only what users measure with.
"""

from __future__ import annotations

import functools
import math
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import torch

if TYPE_CHECKING:
    from .baselines import Plan
    from .runner import Runner
    from .settings import Settings
    from .steps import StepClock


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diffusers-perf")
    group.addoption("--perf-inject-nan", action="store_true",
                    help="(proves the guard) put a NaN into the VAE's output: every stage must fail")
    group.addoption("--perf-inject-sync", action="store_true",
                    help="(proves the counters) read one latent value back to the host in every scheduler step")
    group.addoption("--perf-inject-host-work", metavar="FRACTION", type=float, default=0.0,
                    help="(proves the counters and the wall-time gate) Python calls worth FRACTION of the "
                         "baseline's wall seconds per step, in every scheduler step; needs --benchmark-compare")
    group.addoption("--perf-inject-step-delay", metavar="FRACTION", type=float, default=0.0,
                    help="(proves the step gate) burn host CPU in one C call (hashlib) at every denoising step's "
                         "end, worth FRACTION of the baseline's fastest step: no Python calls, no ops, only "
                         "time; needs --benchmark-compare")
    group.addoption("--perf-inject-denoiser-delay", metavar="FRACTION", type=float, default=0.0,
                    help="(proves the step gate inside the denoiser) burn host CPU in one C call at the start of "
                         "every eager denoiser call, inside it, worth FRACTION of the baseline's fastest step: "
                         "what heavier module code costs; eager stages only; needs --benchmark-compare")
    group.addoption("--perf-inject-recompile", action="store_true",
                    help="(proves the counters) make the compiled UNet recompile once: a guard it reads changes")
    group.addoption("--perf-inject-host-delay", metavar="SECONDS", type=float, default=0.0,
                    help="(proves the clocks) spin SECONDS on the host in every generation's image "
                         "post-processing: host time that no counter sees")
    group.addoption("--perf-inject-quality", metavar="FRACTION", type=float, default=0.0,
                    help="fault on purpose: scale the output of the denoiser's first attention by 1 + FRACTION "
                         "(0.2: x1.2), a numeric fault that leaves the image neither black nor flat; the quality "
                         "guard must fail the stage")
    group.addoption("--perf-inject-side", choices=("candidate", "reference"), default="candidate",
                    help="A/B runs: which side --perf-inject-host-delay and --perf-inject-crash act on "
                         "(default: candidate, this environment)")
    group.addoption("--perf-inject-crash", action="store_true",
                    help="(proves worker isolation) A/B runs: the injected side's worker of the first selected "
                         "stage dies of SIGSEGV after two rounds; that stage must fail alone")
    group.addoption("--perf-inject-vae-slowdown", metavar="FRACTION", type=float, default=0.0,
                    help="(proves GPU time per component) add GPU/CPU work to each VAE decode worth FRACTION of "
                         "the baseline's VAE GPU time (its after-the-last-step time where it has none); needs "
                         "--benchmark-compare")
    group.addoption("--perf-inject-slowdown", metavar="FRACTION", type=float, default=0.0,
                    help="(proves the gate) add GPU/CPU work to each UNet call worth FRACTION of the "
                         "baseline's GPU busy time per step (its wall time per step where it has none); "
                         "needs --benchmark-compare")


#: Every fault this plugin injects, with its off value: the keys of ``Settings.faults`` that it fills
#: from the option of the same name (``inject_step_delay`` from ``--perf-inject-step-delay``) and reads.
FAULTS = {"inject_nan": False, "inject_slowdown": 0.0, "inject_vae_slowdown": 0.0, "inject_sync": False,
          "inject_host_work": 0.0, "inject_step_delay": 0.0, "inject_denoiser_delay": 0.0, "inject_recompile": False,
          "inject_host_delay": 0.0, "inject_side": "candidate", "inject_crash": False, "inject_quality": 0.0}


def faults_of(settings: Settings) -> types.SimpleNamespace:
    """The run's faults, each one an attribute, off where the run does not inject it."""
    return types.SimpleNamespace(**{**FAULTS, **settings.faults})


def pytest_perf_plan(settings: Settings, plan: Plan | None) -> None:
    """Refuse, in one line, a fault sized from a baseline where this hardware has none."""
    s = faults_of(settings)
    sized_from_baseline = (s.inject_slowdown or s.inject_host_work or s.inject_vae_slowdown or s.inject_denoiser_delay
                           or (s.inject_step_delay and settings.reference_python is None))  # A/B: each side's step
    if sized_from_baseline and (plan is None or not plan.baselines()):
        raise pytest.UsageError("--perf-inject-slowdown, --perf-inject-vae-slowdown, --perf-inject-host-work, "
                                "--perf-inject-step-delay and --perf-inject-denoiser-delay size the injected work "
                                "from a baseline, and none was "
                                "found for this hardware; record one first with "
                                "`pytest perf --benchmark-save=baseline`")


def worker_faults(settings: Settings, side: str, name: str) -> dict:
    """What an A/B worker of stage ``name`` on ``side`` injects (:mod:`perf.worker` applies them)."""
    s = faults_of(settings)
    if side != s.inject_side:
        return {}
    found = {}
    if s.inject_host_delay:
        found["host_delay"] = s.inject_host_delay
    if s.inject_step_delay:
        found["step_delay"] = s.inject_step_delay  # a fraction of that side's own fastest step
    if s.inject_crash and name == settings.stages[0]:
        found["crash_after_rounds"] = 2
    return found


def pytest_perf_prepare(pipe: Any, stage: str, runner: Runner) -> None:
    """The faults that change the pipeline, each sized from the stage's baseline where it says so,
    through the hook any plugin's change to a stage uses (:mod:`perf.hooks`)."""
    s = faults_of(runner.settings)
    if s.inject_slowdown:
        slow_down_unet(pipe, seconds_per_unet_call(runner, stage))
    if s.inject_vae_slowdown:
        slow_down_vae(pipe, s.inject_vae_slowdown * runner.baseline_vae_seconds(stage))
    if s.inject_nan:
        nan_in_vae(pipe)
    if s.inject_sync:
        sync_every_step(pipe)
    if s.inject_host_work:
        host_work_every_step(pipe, s.inject_host_work * runner.baseline_seconds_per_step(stage))
    if s.inject_denoiser_delay:
        burn_inside_denoiser(pipe, s.inject_denoiser_delay * runner.baseline_step_seconds(stage))
    if s.inject_recompile and runner.settings.recipe(stage).compile is not None:
        recompile_once(pipe)
    if s.inject_host_delay:
        delay_postprocessing(pipe, s.inject_host_delay)
    if s.inject_quality:
        scale_attention(pipe, s.inject_quality)


def pytest_perf_stage_extra(stage: str, runner: Runner) -> dict:
    """Every fault injected, stored with the stage (such a run is never saved as a baseline)."""
    s, extra = faults_of(runner.settings), {}
    if s.inject_slowdown:
        extra["injected_seconds_per_unet_call"] = seconds_per_unet_call(runner, stage)
    for fault in ("inject_nan", "inject_sync", "inject_host_work", "inject_recompile", "inject_host_delay",
                  "inject_quality", "inject_step_delay", "inject_denoiser_delay", "inject_vae_slowdown"):
        if getattr(s, fault):
            extra[f"injected_{fault[len('inject_'):]}"] = getattr(s, fault)
    return extra


def seconds_per_unet_call(runner: Runner, stage: str) -> float:
    """``--perf-inject-slowdown`` as seconds of spin per UNet call.

    Sized from the baseline's GPU busy time per step, so 0.05 adds 5 % more GPU work to the
    stage; baselines without GPU time (CPU, older files) fall back to wall time per step.
    """
    stage_plan = runner.plans.get(stage)
    bench = stage_plan.entry if stage_plan is not None else None
    if bench is None:
        return 0.0
    extra = bench.get("extra_info") or {}
    per_step = (extra.get("gpu_seconds_per_step") or extra.get("seconds_per_step")
                or bench["stats"]["median"] / runner.settings.steps)
    return faults_of(runner.settings).inject_slowdown * per_step


def pytest_perf_before_timing(stage: str, runner: Runner) -> None:
    """``--perf-inject-step-delay``: host time at every step's end, a fraction of the baseline's step."""
    s = faults_of(runner.settings)
    if s.inject_step_delay:
        burn_every_step(runner.clock, s.inject_step_delay * runner.baseline_step_seconds(stage))


def settings_fields(config: pytest.Config, selected: list[str], family: str) -> dict:
    """The faults this run injects, as the ``Settings.faults`` field (:data:`FAULTS`, each filled by
    the option of the same name, only where it is on); none where this plugin is not loaded.
    Raises :class:`pytest.UsageError` with one line on bad input."""
    if not hasattr(config.option, "perf_inject_nan"):
        return {}
    get = config.getoption
    from . import stages

    for option in ("--perf-inject-slowdown", "--perf-inject-host-work", "--perf-inject-step-delay",
                   "--perf-inject-denoiser-delay", "--perf-inject-host-delay", "--perf-inject-quality",
                   "--perf-inject-vae-slowdown"):
        value = get(option[2:].replace("-", "_"))
        if not math.isfinite(value):
            raise pytest.UsageError(f"{option}: must be a finite number, got {value}")
    for option in ("--perf-inject-slowdown", "--perf-inject-host-work", "--perf-inject-step-delay",
                   "--perf-inject-denoiser-delay", "--perf-inject-vae-slowdown"):
        fraction = get(option[2:].replace("-", "_"))
        if fraction < 0:
            raise pytest.UsageError(f"{option}: must be a fraction >= 0, got {fraction}")
        if fraction > 10:
            raise pytest.UsageError(f"{option}: {fraction} would make each stage {fraction + 1:.0f}x slower; "
                                    "a fraction such as 0.05 proves the gate")
        ab_sized = option == "--perf-inject-step-delay" and get("perf_reference_python")  # from each side's own step
        if fraction and not get("benchmark_compare") and not ab_sized:
            raise pytest.UsageError(f"{option} sizes the injected work from a baseline: add --benchmark-compare"
                                    + (" (or A/B: --perf-reference-python)" if option == "--perf-inject-step-delay"
                                       else ""))
    if not -1 < get("perf_inject_quality") <= 10:
        raise pytest.UsageError(f"--perf-inject-quality: must be a fraction above -1 (the output x 1 + FRACTION), "
                                f"got {get('perf_inject_quality')}; 0.2 proves the quality guard")
    delay = get("perf_inject_host_delay")
    if delay < 0 or delay > 60:
        raise pytest.UsageError(f"--perf-inject-host-delay: must be seconds from 0 to 60, got {delay}")
    if get("perf_inject_sync") and not torch.cuda.is_available():
        raise pytest.UsageError("--perf-inject-sync adds a host-device sync, which needs CUDA; "
                                "on CPU prove the counters with --perf-inject-host-work")
    if get("perf_inject_denoiser_delay"):
        recipes = {name: stages.recipe(name, family) for name in selected}
        captured = [name for name, recipe in recipes.items() if recipe.compile or recipe.trace_unet]
        if captured:
            raise pytest.UsageError(f"--perf-inject-denoiser-delay burns inside an eager denoiser's call, and "
                                    f"{', '.join(captured)} trace or compile it (a hook there would break the "
                                    "graph); select eager stages such as sdpa, bf16")
    if get("perf_inject_recompile") and not any(stages.recipe(name, family).compile for name in selected):
        raise pytest.UsageError("--perf-inject-recompile acts on torch.compile stages (compile, cudagraphs); "
                                "none of the selected stages compiles")
    if get("perf_reference_python") is None and (get("perf_inject_crash") or get("perf_inject_side") == "reference"):
        raise pytest.UsageError("--perf-inject-crash and --perf-inject-side=reference act on A/B workers: "
                                "pass --perf-reference-python too")
    given = {name: get(f"perf_{name}") for name in FAULTS}
    return {"faults": {name: value for name, value in given.items() if value != FAULTS[name]}}


@torch.library.custom_op("diffusers_perf::spin", mutates_args=())
def spin(x: torch.Tensor, seconds: float) -> torch.Tensor:
    if x.is_cuda:
        torch.cuda._sleep(int(seconds * _cycles_per_second(x.device.index or 0)))
    else:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    return x.clone()


@spin.register_fake
def _(x: torch.Tensor, seconds: float) -> torch.Tensor:
    return torch.empty_like(x)


@functools.lru_cache(maxsize=None)
def _cycles_per_second(index: int) -> float:
    """Calibrate ``torch.cuda._sleep``: it spins for a number of clock cycles, not seconds."""
    cycles = 50_000_000
    torch.cuda._sleep(cycles)  # warm-up
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / (start.elapsed_time(end) / 1e3)


def time_embedding(pipe: Any) -> torch.nn.Module:
    """The denoiser's small time embedding, run once per call: a UNet's, or a DiT's (Flux's
    ``time_text_embed``). Faults hook here, inside whatever traces or compiles the denoiser."""
    if getattr(pipe, "unet", None) is not None:
        return pipe.unet.time_embedding
    return pipe.transformer.time_text_embed


def first_attention(pipe: Any) -> torch.nn.Module:
    """The denoiser's first attention module: a UNet's first self-attention, a DiT's first block's."""
    from diffusers.models.attention_processor import Attention

    try:  # a DiT's attention classes (FluxAttention) share this mixin since diffusers 0.35
        from diffusers.models.attention import AttentionModuleMixin
    except ImportError:
        AttentionModuleMixin = Attention
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    return next(module for module in denoiser.modules() if isinstance(module, (Attention, AttentionModuleMixin)))


def scale_attention(pipe: Any, fraction: float) -> None:
    """Scale the first attention's output by ``1 + fraction`` (a forward hook, so traced and compiled
    denoisers carry it too)."""
    factor = 1.0 + fraction

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):  # a joint (DiT) attention returns image and text streams
            return tuple(part * factor for part in output)
        return output * factor

    first_attention(pipe).register_forward_hook(hook)


def _spin_after(module: torch.nn.Module, seconds: float) -> None:
    """Spin for ``seconds`` on ``module``'s output at the end of every call (nothing when 0)."""
    if seconds <= 0:
        return
    device = next(module.parameters()).device
    if device.type == "cuda":
        _cycles_per_second(device.index or 0)  # calibrate before any graph capture

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        return torch.ops.diffusers_perf.spin(output, seconds)

    module.register_forward_hook(hook)


def slow_down_unet(pipe: Any, seconds_per_call: float) -> None:
    """Spin for ``seconds_per_call`` inside every denoiser call (on the small time embedding)."""
    _spin_after(time_embedding(pipe), seconds_per_call)


def slow_down_vae(pipe: Any, seconds_per_decode: float) -> None:
    """Spin for ``seconds_per_decode`` at the end of every VAE decode (on the decoder's output):
    device work inside one component, which the whole GPU time hardly sees."""
    _spin_after(pipe.vae.decoder, seconds_per_decode)


def nan_in_vae(pipe: Any) -> None:
    """Make the decoded image NaN, as a broken fp16 VAE does."""

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        return output * float("nan")

    pipe.vae.decoder.register_forward_hook(hook)


def sync_every_step(pipe: Any) -> None:
    """Read one latent value back to the host after every scheduler step."""
    step = pipe.scheduler.step

    def stepped(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = step(model_output, timestep, sample, *args, **kwargs)
        latents = out[0] if isinstance(out, tuple) else out.prev_sample
        latents.flatten()[0].item()
        return out

    pipe.scheduler.step = stepped


def _noop() -> None:
    pass


def python_work(calls: int) -> None:
    for _ in range(calls):
        _noop()


@functools.lru_cache(maxsize=None)
def python_calls_per_second() -> float:
    """How many trivial Python calls this host makes in a second (calibrated once)."""
    calls = 200_000
    start = time.perf_counter()
    python_work(calls)
    return calls / (time.perf_counter() - start)


def host_work_every_step(pipe: Any, seconds_per_step: float) -> int:
    """Python calls worth ``seconds_per_step`` before every scheduler step; returns the calls per step."""
    calls = int(seconds_per_step * python_calls_per_second())
    if calls <= 0:
        return 0
    step = pipe.scheduler.step

    def stepped(*args: Any, **kwargs: Any) -> Any:
        python_work(calls)
        return step(*args, **kwargs)

    pipe.scheduler.step = stepped
    return calls


#: The C call that burns host time for --perf-inject-step-delay: PBKDF2's iterations run inside
#: OpenSSL on a few bytes, so the burn costs time and nothing else. (Hashing a buffer of the same
#: duration reads megabytes and evicts the caches the next step needs: on the H200 a burn worth
#: 10 % of ``sdpa``'s step slowed the step by 51 %.)
_BURN_SALT = b"diffusers-perf"


def _burn(iterations: int) -> bytes:
    import hashlib

    return hashlib.pbkdf2_hmac("sha256", b"step", _BURN_SALT, iterations)


@functools.lru_cache(maxsize=None)
def burn_iterations_per_second() -> float:
    """PBKDF2 iterations per second on this host (calibrated once, best of five)."""
    iterations, best = 20_000, math.inf
    for _ in range(5):
        start = time.perf_counter()
        _burn(iterations)
        best = min(best, time.perf_counter() - start)
    return iterations / best


def _burner(seconds: float) -> tuple[int, Callable[[], bytes] | None]:
    """One C call (``hashlib.pbkdf2_hmac``) sized to take ``seconds``, with its iterations; no call
    where ``seconds`` is too short for one iteration. The partial is called as it is, so the burn
    adds no Python frame that the host-work counters would see."""
    import hashlib

    iterations = int(seconds * burn_iterations_per_second())
    if iterations <= 0:
        return 0, None
    return iterations, functools.partial(hashlib.pbkdf2_hmac, "sha256", b"step", _BURN_SALT, iterations)


def burn_every_step(clock: StepClock, seconds_per_step: float) -> int:
    """Host time and nothing else at each step's end: one C call, so no Python call, no op and no
    sync is added, as a slower dispatcher or a heavier C function body would be. Returns the
    iterations per step."""
    iterations, burn = _burner(seconds_per_step)
    if burn is not None:
        clock.burn = burn
    return iterations


def burn_inside_denoiser(pipe: Any, seconds_per_call: float) -> int:
    """Host time inside every denoiser call, and nothing else: the same one C call as
    :func:`burn_every_step`, from a forward pre-hook on the denoiser's time embedding, which runs
    within the denoiser's own call (the step clock's hooks sit on the denoiser itself). It stands for
    heavier module code or a slower hook: the loop outside the denoiser must not see it, the step
    must. Returns the iterations per call."""
    iterations, burn = _burner(seconds_per_call)
    if burn is not None:
        time_embedding(pipe).register_forward_pre_hook(lambda _module, _args: burn() and None)
    return iterations


def recompile_once(pipe: Any) -> None:
    """A guard of the compiled UNet fails once: a hook inside it reads a flag the scheduler flips.

    The first UNet call compiles with the flag off; the first scheduler step turns it on, so the
    second call fails the guard and recompiles; after that the flag stays on. One recompilation
    (and one more compiled graph) per stage, where the baseline has none: cheap enough for a
    ladder, where a guard failing on every call would recompile up to dynamo's limit.
    """
    embedding = time_embedding(pipe)
    embedding.perf_flipped = False

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        return output * 1.0 if module.perf_flipped else output

    embedding.register_forward_hook(hook)
    step = pipe.scheduler.step

    def stepped(*args: Any, **kwargs: Any) -> Any:
        embedding.perf_flipped = True
        return step(*args, **kwargs)

    pipe.scheduler.step = stepped


def delay_postprocessing(pipe: Any, seconds: float) -> None:
    """Spin ``seconds`` on the host in the image post-processing of every generation.

    Host time that no counter sees (one more Python call, no op, no sync), after the images are
    on the host so nothing hides it behind the GPU: a slower post-processing in a Diffusers
    change looks like this. A busy loop, not ``time.sleep``, so the core stays busy as real
    work would keep it.
    """
    if seconds <= 0:
        return
    postprocess = pipe.image_processor.postprocess

    def delayed(*args: Any, **kwargs: Any) -> Any:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return postprocess(*args, **kwargs)

    pipe.image_processor.postprocess = delayed
