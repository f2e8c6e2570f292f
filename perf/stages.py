"""The optimization ladder: every stage the suite measures, declared in one place.

A stage names its parent and only what it changes; everything else is inherited, so the
registry reads like the table of Diffusers' "Speed up inference" guide. To add a stage,
add one ``Stage(...)`` to ``STAGES`` below: the fixtures, the report and the gate pick it up.

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
    attention: str = "classic"  # "classic" (AttnProcessor) | "sdpa" (AttnProcessor2_0) | "xformers"
    channels_last: bool = False  # UNet weights in torch.channels_last
    fuse_qkv: bool = False  # pipe.fuse_qkv_projections()
    trace_unet: bool = False  # torch.jit.trace of the UNet, as in the guide
    compile: dict | None = None  # kwargs of torch.compile for the UNet, or None
    requires: tuple[str, ...] = ()  # see perf.requirements.CHECKS


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    parent: str | None
    summary: str
    dtype: Any = INHERIT
    tf32: Any = INHERIT
    attention: Any = INHERIT
    channels_last: Any = INHERIT
    fuse_qkv: Any = INHERIT
    trace_unet: Any = INHERIT
    compile: Any = INHERIT
    #: Needs of this stage alone (not inherited: a CUDA-only parent flag such as TF32 is a no-op on CPU).
    requires: tuple[str, ...] = ()
    #: Smallest median slowdown the gate treats as real for this stage, whatever the noise says.
    #: Eager pipelines are CPU-bound and drift between runs (CV 13-17 % on an H100): 10 %.
    min_effect: float = 0.10


STAGES: tuple[Stage, ...] = (
    # -- the guide's ladder: each row adds one thing to the row above -------------------------
    Stage("fp32", None, "the guide's original: float32, TF32 off, classic attention",
          dtype="float32", tf32=False, attention="classic", channels_last=False,
          fuse_qkv=False, trace_unet=False, compile=None),
    Stage("tf32", "fp32", "+ TF32 matmuls and convolutions", tf32=True, requires=("cuda",)),
    Stage("fp16", "tf32", "float16 weights and activations (never torch.autocast)", dtype="float16"),
    Stage("channels_last", "fp16", "+ UNet in channels_last memory format", channels_last=True),
    Stage("traced_unet", "channels_last", "+ UNet traced with torch.jit.trace",
          trace_unet=True, requires=("jit_trace",)),
    # -- memory-efficient attention, instead of tracing ----------------------------------------
    Stage("sdpa", "channels_last", "memory-efficient attention: F.scaled_dot_product_attention",
          attention="sdpa"),
    Stage("xformers", "channels_last", "memory-efficient attention: xFormers",
          attention="xformers", requires=("cuda", "xformers")),
    # -- after the guide ------------------------------------------------------------------------
    Stage("bf16", "sdpa", "bfloat16 instead of float16", dtype="bfloat16"),
    Stage("fused_qkv", "sdpa", "+ fuse_qkv_projections()", fuse_qkv=True),
    Stage("compile", "sdpa", "+ torch.compile(unet, fullgraph=True)",
          compile={"fullgraph": True}, requires=("compile",)),
    Stage("cudagraphs", "sdpa", "+ torch.compile(unet, mode='reduce-overhead'): CUDA graphs",
          compile={"mode": "reduce-overhead", "fullgraph": True}, requires=("cuda", "compile"),
          min_effect=0.03),
)

BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}


def names() -> list[str]:
    return [stage.name for stage in STAGES]


def lineage(name: str) -> list[Stage]:
    """The stage and its ancestors, root first."""
    chain = []
    while name is not None:
        stage = BY_NAME[name]
        chain.append(stage)
        name = stage.parent
    return chain[::-1]


def recipe(name: str) -> Recipe:
    """Flatten a stage and its ancestors into the settings that build its pipeline."""
    values: dict[str, Any] = {}
    for stage in lineage(name):
        for field in dataclasses.fields(Recipe):
            if field.name == "requires":
                continue
            value = getattr(stage, field.name)
            if value is not INHERIT:
                values[field.name] = value
    return Recipe(**values, requires=BY_NAME[name].requires)


def origin(name: str, field: str) -> str:
    """The stage (``name`` or an ancestor) that sets ``field`` of ``name``'s recipe."""
    for stage in reversed(lineage(name)):
        if getattr(stage, field) is not INHERIT:
            return stage.name
    return name


def parse(text: str | None) -> list[str]:
    """``--perf-stages`` value to stage names, in ladder order; raises ValueError naming the valid ones."""
    if text is None or text.strip() in ("", "all"):
        return names()
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    if not wanted:
        raise ValueError(f"{text!r} names no stage; valid stages: {', '.join(names())} (or 'all')")
    unknown = [name for name in wanted if name not in BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown stage{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid stages: {', '.join(names())} (or 'all')"
        )
    return [name for name in names() if name in wanted]


def _check_registry() -> None:
    seen: set[str] = set()
    for stage in STAGES:
        if stage.parent is not None and stage.parent not in seen:
            raise RuntimeError(f"stage {stage.name!r}: parent {stage.parent!r} must be declared before it")
        seen.add(stage.name)
    root = STAGES[0]
    missing = [f.name for f in dataclasses.fields(Recipe) if f.name != "requires" and getattr(root, f.name) is INHERIT]
    if missing:
        raise RuntimeError(f"root stage {root.name!r} must set {missing}")


_check_registry()
