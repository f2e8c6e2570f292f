"""The optimization ladder: every stage the suite measures, declared in one place.

A stage names its parent and only what it changes; everything else is inherited, so the
registry reads like the table of Diffusers' "Speed up inference" guide. To add a stage,
add one ``Stage(...)`` to ``STAGES`` below: the fixtures, the report and the gate pick it up.

One registry serves every model family (:data:`FAMILIES`). A stage says which families it
applies to (``channels_last`` and ``traced_unet`` optimize a UNet; a DiT such as Flux brings its
own attention processors), and where its parent differs in a family (``parent_in``): Flux's
ladder starts at ``bf16``, since no one runs Flux in float32, and ``fused_qkv``, ``compile`` and
``cudagraphs`` build on it there. A family's root takes what its stage does not set from
:data:`FAMILY_BASE`.

What a recipe *means* (how fp16 or SDPA is applied to a pipeline) lives in
:mod:`perf.optimizations`; what a stage *needs* to run lives in :mod:`perf.requirements`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: Marks a field the stage takes from its parent.
INHERIT: Any = type("Inherit", (), {"__repr__": lambda self: "INHERIT"})()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that decides how a pipeline is prepared: the resolved, flat form of a stage."""

    dtype: str = "float32"  # "float32" | "float16" | "bfloat16"
    tf32: bool = False  # torch.backends.cuda.matmul.allow_tf32 / cudnn.allow_tf32
    #: "classic" (AttnProcessor) | "sdpa" (AttnProcessor2_0) | "xformers" | "cudnn" (SDPA, cuDNN's kernel first)
    #: | "flash3" (a DiT's attention through Diffusers' dispatcher, backend ``_flash_3``: FlashAttention 3)
    attention: str = "classic"
    channels_last: bool = False  # UNet weights in torch.channels_last
    fuse_qkv: bool = False  # pipe.fuse_qkv_projections()
    trace_unet: bool = False  # torch.jit.trace of the UNet, as in the guide
    compile: dict | None = None  # kwargs of torch.compile for the UNet, or None
    compile_vae: dict | None = None  # kwargs of torch.compile for the VAE's decode (channels_last first), or None
    compile_text_encoder: dict | None = None  # kwargs of torch.compile for the text encoder, or None
    quantize: str | None = None  # torchao on the denoiser's linears: "int8" | "fp8" (dynamic activations)
    #: Which linears ``quantize`` takes (:data:`perf.optimizations.QUANTIZE_FILTERS`): "token_wise", every
    #: linear with a row per token; "diffusion_fast", only those diffusion-fast measured faster in int8.
    quantize_filter: str = "token_wise"
    host_timesteps: bool = False  # scheduler on host timesteps, denoiser on device copies: no sync per step
    #: torch.backends.cudnn.benchmark (cuDNN times its convolution algorithms per shape). No built-in stage
    #: sets it: on sd15's best stage it bought nothing on the H200 (``reports/h200/frontier-fp8/``).
    cudnn_benchmark: bool = False
    requires: tuple[str, ...] = ()  # see perf.requirements.CHECKS


#: Model families: Stable Diffusion 1.x/2.x UNets, SDXL's UNet (added text-time conditioning, two
#: text encoders), and DiT pipelines (Flux: a transformer denoiser with its own attention).
FAMILIES = ("sd", "sdxl", "dit")
UNET = ("sd", "sdxl")

#: What a family's root stage does not set itself, where that root is not the registry's root.
FAMILY_BASE: dict[str, dict[str, Any]] = {
    "dit": dict(tf32=True, attention="sdpa", channels_last=False, fuse_qkv=False, trace_unet=False, compile=None,
                compile_vae=None, compile_text_encoder=None, quantize=None, quantize_filter="token_wise",
                host_timesteps=False, cudnn_benchmark=False),
}

@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    parent: str | None
    summary: str
    #: The model families this stage applies to; elsewhere it skips with the reason.
    families: tuple[str, ...] = FAMILIES
    #: Another parent in some families (None: the stage is that family's root).
    parent_in: dict[str, str | None] = dataclasses.field(default_factory=dict)
    dtype: Any = INHERIT
    tf32: Any = INHERIT
    attention: Any = INHERIT
    channels_last: Any = INHERIT
    fuse_qkv: Any = INHERIT
    trace_unet: Any = INHERIT
    compile: Any = INHERIT
    compile_vae: Any = INHERIT
    compile_text_encoder: Any = INHERIT
    quantize: Any = INHERIT
    quantize_filter: Any = INHERIT
    host_timesteps: Any = INHERIT
    cudnn_benchmark: Any = INHERIT
    #: Needs of this stage alone (not inherited: a CUDA-only parent flag such as TF32 is a no-op on CPU).
    requires: tuple[str, ...] = ()
    #: Smallest median slowdown the gate treats as real for this stage, whatever the noise says.
    #: Eager pipelines are CPU-bound and drift between runs (CV 13-17 % on an H100): 10 %.
    min_effect: float = 0.10
    #: Why the stage is left out of ``--perf-stages=all`` (its first compile does not fit the one
    #: 10-minute command a full ladder gets); it runs where ``--perf-stages`` names it.
    opt_in: str | None = None


#: CUDA graphs (``mode="reduce-overhead"`` is exactly ``triton.cudagraphs``; torch.compile takes a mode or
#: options, not both) with diffusion-fast's one int8 flag: Inductor fuses ``torch._int_mm`` with the
#: scaling after it into one kernel, where by default it keeps them two.
GRAPHS_INT_MM_WITH_MUL = {"fullgraph": True, "options": {"triton.cudagraphs": True, "force_fuse_int_mm_with_mul": True}}


#: flux-fast's compile of the transformer: ``mode="max-autotune"`` (Inductor times its Triton templates
#: against cuBLAS for every matmul shape and tunes every generated kernel, with CUDA graphs; spelled
#: as its options, since torch.compile takes a mode or options, not both) and its four Inductor flags.
MAX_AUTOTUNE_FLUX_FAST = {"fullgraph": True, "options": {
    "max_autotune": True, "triton.cudagraphs": True, "coordinate_descent_tuning": True,
    "conv_1x1_as_mm": True, "epilogue_fusion": False, "coordinate_descent_check_all_directions": True}}


STAGES: tuple[Stage, ...] = (
    # -- the guide's ladder: each row adds one thing to the row above -------------------------
    Stage("fp32", None, "the guide's original: float32, TF32 off, classic attention",
          dtype="float32", tf32=False, attention="classic", channels_last=False,
          fuse_qkv=False, trace_unet=False, compile=None, compile_vae=None, compile_text_encoder=None, quantize=None,
          quantize_filter="token_wise", host_timesteps=False, cudnn_benchmark=False, families=UNET),
    Stage("tf32", "fp32", "+ TF32 matmuls and convolutions", tf32=True, requires=("cuda",), families=UNET),
    Stage("fp16", "tf32", "float16 weights and activations (never torch.autocast)", dtype="float16",
          families=UNET),
    Stage("channels_last", "fp16", "+ UNet in channels_last memory format", channels_last=True, families=UNET),
    Stage("traced_unet", "channels_last", "+ UNet traced with torch.jit.trace",
          trace_unet=True, requires=("jit_trace",), families=("sd",)),
    # -- memory-efficient attention, instead of tracing ----------------------------------------
    Stage("sdpa", "channels_last", "memory-efficient attention: F.scaled_dot_product_attention",
          attention="sdpa", families=UNET),
    Stage("xformers", "channels_last", "memory-efficient attention: xFormers",
          attention="xformers", requires=("cuda", "xformers"), families=UNET),
    # -- after the guide; a DiT's ladder starts here --------------------------------------------
    Stage("bf16", "sdpa", "bfloat16 instead of float16 (a DiT's root: bfloat16, its own SDPA attention)",
          dtype="bfloat16", parent_in={"dit": None}),
    Stage("fused_qkv", "sdpa", "+ fuse_qkv_projections()", fuse_qkv=True, parent_in={"dit": "bf16"}),
    Stage("compile", "sdpa", "+ torch.compile(denoiser, fullgraph=True)",
          compile={"fullgraph": True}, requires=("compile",), parent_in={"dit": "bf16"}),
    Stage("cudagraphs", "sdpa", "+ torch.compile(denoiser, mode='reduce-overhead'): CUDA graphs",
          compile={"mode": "reduce-overhead", "fullgraph": True}, requires=("cuda", "compile"),
          min_effect=0.03, parent_in={"dit": "bf16"}),
    # -- the published full recipes (diffusion-fast, flux-fast), without quantization ----------------
    Stage("compile_vae", "cudagraphs", "+ VAE decoder in channels_last, compiled with CUDA graphs",
          compile_vae={"mode": "reduce-overhead", "fullgraph": True}, requires=("cuda", "compile"), min_effect=0.03),
    Stage("frontier", "compile_vae", "+ fuse_qkv_projections(): every step above that pays, in one stage",
          fuse_qkv=True, requires=("cuda", "compile"), min_effect=0.03),
    Stage("sync_free", "frontier", "+ DDIM on host timesteps, the UNet on device copies: no device-to-host sync a step",
          host_timesteps=True, requires=("cuda", "compile"), min_effect=0.03, families=("sd",)),
    Stage("cudnn_attention", "frontier",
          "+ SDPA on cuDNN's fused attention kernel first (Hopper), not FlashAttention-2",
          attention="cudnn", requires=("cuda", "compile", "cudnn_attention"), min_effect=0.03,
          parent_in={"sd": "sync_free"}),
    Stage("flash_attention_3", "frontier",
          "+ FlashAttention 3 through Diffusers' attention dispatcher (backend _flash_3; Hopper), in bfloat16",
          attention="flash3", requires=("cuda", "compile", "flash_attention_3"), min_effect=0.03, families=("dit",)),
    Stage("compile_text_encoder", "cudnn_attention", "+ the text encoder compiled with CUDA graphs",
          compile_text_encoder={"mode": "reduce-overhead", "fullgraph": True}, requires=("cuda", "compile"),
          min_effect=0.03, families=("sd",)),
    # -- quantized, as served today (torchao: pip install 'diffusers-perf[torchao]') ----------------
    Stage("int8", "compile", "+ torchao dynamic int8 activations and int8 weights (diffusion-fast)",
          quantize="int8", requires=("compile", "torchao")),
    Stage("fp8", "compile", "+ torchao dynamic float8 activations and weights, row-wise, in bfloat16",
          dtype="bfloat16", quantize="fp8", requires=("cuda", "fp8", "compile", "torchao")),
    Stage("frontier_fp8", "frontier",
          "+ torchao float8 dynamic row-wise on the denoiser's linears, in bfloat16 (flux-fast's recipe, "
          "without FlashAttention 3 and max-autotune)",
          dtype="bfloat16", quantize="fp8", requires=("cuda", "fp8", "compile", "torchao"), min_effect=0.03,
          families=("sdxl", "dit")),
    Stage("frontier_autotune", "frontier_fp8",
          "+ the transformer compiled in max-autotune with flux-fast's Inductor flags (flux-fast's recipe "
          "without FlashAttention 3)",
          compile=MAX_AUTOTUNE_FLUX_FAST, requires=("cuda", "fp8", "compile", "torchao"), min_effect=0.03,
          families=("dit",),
          opt_in="its first compile on Flux ran 8 min 48 s on an H200 without ending; warm its compile cache "
                 "once with --perf-stages=frontier_autotune --benchmark-disable"),
    Stage("frontier_int8", "frontier",
          "+ torchao dynamic int8 on the linears diffusion-fast's shape filter keeps, int_mm fused with its "
          "scaling (diffusion-fast's SDXL recipe, without max-autotune)",
          quantize="int8", quantize_filter="diffusion_fast", compile=GRAPHS_INT_MM_WITH_MUL,
          requires=("cuda", "compile", "torchao"), min_effect=0.03, families=("sdxl",)),
)

#: Quality floors: the lowest PSNR (dB, :mod:`perf.quality`) a stage's images may have against its
#: family's reference stage, per embedded pipeline at its default steps and size, on the device that
#: pipeline was measured on (:data:`FLOORS_MEASURED_ON`): the tiny pipelines on CPU, the full-size
#: ones on CUDA (CUDA kernels and TF32 round differently from CPU ones). A stage without a row takes
#: the floor of the ancestor whose numerics it keeps; one that changes dtype or quantization has its
#: own or none. Each floor sits about 3 dB (the error doubling) under what the stage measured;
#: elsewhere (other sizes, steps or devices) no floor is declared, and only the drop against the
#: stage's own baseline is judged. A fault smaller than a stage's own rounding (bf16's, compile's on
#: a DiT) hides under it.
#:
#: * CPU, the 2-core CI machine, ``pytest perf --perf-pipeline=NAME`` (``reports/cpu/quality/``):
#:   float16-class stages 66.5-66.7 dB (tiny) and 70.9-72.7 dB (tiny-sdxl), bf16 48.2 and 51.8 dB,
#:   the references and tiny-flux's fused_qkv identical; int8 59.4, 58.0 and 47.8 dB. One attention's
#:   output scaled by 1.2 (``--perf-inject-quality=0.2``) gave 59.7-61.4 dB on tiny's float16 stages;
#:   bf16 went 48.2 -> 47.9 dB with it, within any floor.
#: * H100, the suite's baselines (``baselines/NVIDIA_H100_80GB_HBM3-x1/``, 0009-0017), repeating to 0.01
#:   dB between runs and machines: sd15 tf32 76.0, float16-class 63.6-63.8, bf16 46.8, int8 59.0, fp8
#:   43.7 (59.0 and 43.8 on the H200, ``0019_h200``); sdxl tf32 76.1, float16-class 71.1-71.7, bf16 50.1;
#:   flux fused_qkv identical, compile 39.4, fp8 38.5 (38.5 on the H200, ``frontier_fp8`` 38.6 twice:
#:   ``baselines/NVIDIA_H200-x1/0015``, ``reports/h200/frontier-fp8/``); sdxl ``frontier_fp8`` 46.4 twice
#:   on the H200 (``0017_h200``, ``reports/h200/sdxl-quantized/``), ``frontier_int8`` 66.0 on two H200s
#:   (``0018_h200``, ``reports/h200/sdxl-int8/``), ``int8`` 61.3 and 61.4 on one (``0020_h200``,
#:   ``reports/h200/quantized/``); sdxl ``fp8`` 46.2 and 46.3, flux ``int8`` 39.4 twice, on one H200
#:   (``0022_h200``, ``0024_h200``, ``reports/h200/ladders-complete/``). The same fault on sd15
#:   (``reports/h100/quality/``) gave fp32 62.6, fp16 59.9, sdpa 60.0 dB, and bf16 46.6. Measured on
#:   an H100 or, where said, an H200; another GPU that rounds differently may need rows of its own.
MIN_PSNR: dict[str, dict[str, float]] = {
    "fp32": {"tiny": 80.0, "tiny-sdxl": 80.0, "sd15": 80.0, "sdxl": 80.0},
    "tf32": {"sd15": 73.0, "sdxl": 73.0},
    "fp16": {"tiny": 63.5, "tiny-sdxl": 68.0, "sd15": 60.5, "sdxl": 68.0},
    "bf16": {"tiny": 45.0, "tiny-sdxl": 48.5, "tiny-flux": 80.0, "sd15": 43.8, "sdxl": 47.0, "flux": 80.0},
    "compile": {"tiny-flux": 44.5, "flux": 36.4},  # Inductor's fused bf16 kernels round differently
    "cudagraphs": {"flux": 36.4},  # the same kernels; on a DiT its parent is bf16, whose floor is "identical"
    "int8": {"tiny": 56.5, "tiny-sdxl": 55.0, "tiny-flux": 44.5, "sd15": 56.0, "sdxl": 58.3, "flux": 36.4},
    "fp8": {"sd15": 40.7, "sdxl": 43.2, "flux": 35.5},
    "frontier_fp8": {"sdxl": 43.4, "flux": 35.5},
    "frontier_int8": {"sdxl": 63.0},
}

#: Where each embedded pipeline's floors were measured: its floors apply on that device type only.
FLOORS_MEASURED_ON = {"tiny": "cpu", "tiny-sdxl": "cpu", "tiny-flux": "cpu",
                      "sd15": "cuda", "sdxl": "cuda", "flux": "cuda"}

#: Why a stage does not apply to a family, by the families it is limited to.
_NOT_FOR = {UNET: "it optimizes a UNet, and {family} pipelines have a transformer (DiT) denoiser",
            ("sd",): "the guide's torch.jit.trace passes the UNet only (sample, timestep, text); {family}'s UNet "
                     "also takes added conditioning (text_embeds, time_ids)",
            "sync_free": "the per-step syncs it removes are DDIM's; {family}'s scheduler steps by a host-side index "
                         "and has none",
            "compile_text_encoder": "it is declared for Stable Diffusion 1.x/2.x, whose encode_prompt copies each "
                                    "output before the encoder's next call; SDXL's keeps its pooled embedding across "
                                    "that call, which replaying a CUDA graph overwrites",
            "flash_attention_3": "it sets the backend of Diffusers' attention dispatcher, which a DiT's attention "
                                 "runs through; {family}'s UNet attention processors call SDPA themselves",
            "frontier_int8": "diffusion-fast's shape filter names SDXL's UNet's linears; {family}'s need shapes "
                             "measured on their own (a plugin stage can set quantize=\"int8\" and its own filter)"}

BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
#: The stages declared here; others come from the ``pytest_perf_stages`` hook (:func:`register`).
BUILT_IN = frozenset(BY_NAME)


def register(*added: Stage) -> None:
    """Add stages after the ladder's own (what ``pytest_perf_stages`` returns). Raises ValueError,
    one line, for a name taken by another stage or a parent that is not declared before it; the
    registry is then left as it was. Registering the same stage again is a no-op."""
    global STAGES, BY_NAME
    new = tuple(stage for stage in added if BY_NAME.get(stage.name) != stage)
    for stage in new:
        if not isinstance(stage, Stage):
            raise ValueError(f"pytest_perf_stages returned {stage!r}, not a perf.stages.Stage")
        if stage.name in BY_NAME or [s.name for s in new].count(stage.name) > 1:
            raise ValueError(f"stage {stage.name!r} is declared twice: give the added stage a name of its own")
    saved = STAGES, BY_NAME
    STAGES, BY_NAME = STAGES + new, {**BY_NAME, **{stage.name: stage for stage in new}}
    try:
        _check_registry()
    except RuntimeError as exc:
        STAGES, BY_NAME = saved
        raise ValueError(str(exc)) from None


def names(family: str | None = None) -> list[str]:
    """Every stage, or those that apply to ``family``, in ladder order."""
    return [stage.name for stage in STAGES if family is None or family in stage.families]


def opted_out(family: str | None = None) -> list[str]:
    """The stages of ``family`` that ``all`` leaves out (:attr:`Stage.opt_in`), in ladder order."""
    return [name for name in names(family) if BY_NAME[name].opt_in]


def parent(name: str, family: str = "sd") -> str | None:
    stage = BY_NAME[name]
    return stage.parent_in.get(family, stage.parent)


def root(family: str = "sd") -> str:
    """The family's first stage: what its speed-ups are measured against."""
    return next(name for name in names(family) if parent(name, family) is None)


def not_applicable(name: str, family: str) -> str | None:
    """Why the stage does not apply to ``family``, or None."""
    stage = BY_NAME[name]
    if family in stage.families:
        return None
    why = _NOT_FOR.get(stage.name) or _NOT_FOR.get(stage.families, "it applies to {families} pipelines only")
    return f"not for {family} pipelines: " + why.format(family=family, families=", ".join(stage.families))


def min_psnr(name: str, family: str, pipeline: str, device: str | None = None) -> float | None:
    """The stage's quality floor for an embedded pipeline (:data:`MIN_PSNR`): its own, or that of the
    ancestor whose numerics it keeps. A stage that changes dtype or quantization has its own floor or none.
    With ``device`` (a device type), none unless the pipeline's floors were measured there."""
    if device is not None and FLOORS_MEASURED_ON.get(pipeline) != device:
        return None
    for stage in reversed(lineage(name, family)):
        floor = MIN_PSNR.get(stage.name, {}).get(pipeline)
        if floor is not None:
            return floor
        if stage.dtype is not INHERIT or stage.quantize is not INHERIT:
            return None
    return None


def lineage(name: str, family: str = "sd") -> list[Stage]:
    """The stage and its ancestors in ``family``, root first."""
    chain = []
    current: str | None = name
    while current is not None:
        chain.append(BY_NAME[current])
        current = parent(current, family)
    return chain[::-1]


def recipe(name: str, family: str = "sd") -> Recipe:
    """Flatten a stage and its ancestors into the settings that build its pipeline."""
    values: dict[str, Any] = dict(FAMILY_BASE.get(family, {}))
    for stage in lineage(name, family):
        for field in dataclasses.fields(Recipe):
            if field.name == "requires":
                continue
            value = getattr(stage, field.name)
            if value is not INHERIT:
                values[field.name] = value
    return Recipe(**values, requires=BY_NAME[name].requires)


def origin(name: str, field: str, family: str = "sd") -> str:
    """The stage (``name`` or an ancestor) that sets ``field`` of ``name``'s recipe."""
    for stage in reversed(lineage(name, family)):
        if getattr(stage, field) is not INHERIT:
            return stage.name
    return name


def parse(text: str | None, family: str | None = None) -> list[str]:
    """``--perf-stages`` value to stage names, in ladder order; raises ValueError naming the valid ones.

    ``all`` (the default) is every stage that applies to ``family`` except the opt-in ones
    (:func:`opted_out`), which run where named: ``all,frontier_autotune``. A stage named explicitly
    is kept even where it does not apply, and skips with the reason.
    """
    text = text if text and text.strip() else "all"
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    if not wanted:
        raise ValueError(f"{text!r} names no stage; valid stages: {', '.join(names())} (or 'all')")
    unknown = [name for name in wanted if name != "all" and name not in BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown stage{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid stages: {', '.join(names())} (or 'all')"
        )
    ladder = set(names(family)) - set(opted_out(family)) if "all" in wanted else set()
    return [name for name in names() if name in wanted or name in ladder]


def _check_registry() -> None:
    for family in FAMILIES:
        seen: set[str] = set()
        for stage in STAGES:
            if family not in stage.families:
                continue
            up = parent(stage.name, family)
            if up is not None and up not in seen:  # also an unknown parent
                raise RuntimeError(f"stage {stage.name!r}: its parent in {family} pipelines, {up!r}, must be "
                                   "declared before it and apply to them")
            seen.add(stage.name)
            if up is None:
                values = dict(FAMILY_BASE.get(family, {}))
                values.update({f.name: getattr(stage, f.name) for f in dataclasses.fields(Recipe)
                               if f.name != "requires" and getattr(stage, f.name) is not INHERIT})
                missing = [f.name for f in dataclasses.fields(Recipe) if f.name != "requires" and f.name not in values]
                if missing:
                    raise RuntimeError(f"stage {stage.name!r}, the root of {family} pipelines, must set {missing}")


_check_registry()
