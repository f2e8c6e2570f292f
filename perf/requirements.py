"""Why a stage cannot run here: each check returns ``None`` or the exact skip reason.

A stage that cannot run on this machine must skip with a reason a user can act on, never
error: a nightly job on a machine without xFormers is not broken.
"""

from __future__ import annotations

import functools
import shutil

import torch


def _cuda() -> str | None:
    if not torch.cuda.is_available():
        return "needs CUDA: torch.cuda.is_available() is False on this machine"
    return None


@functools.lru_cache(maxsize=None)
def _xformers() -> str | None:
    try:
        import xformers  # noqa: F401
        import xformers.ops
    except ImportError:
        return "xFormers is not installed (pip install 'diffusers-perf[xformers]')"
    except Exception as exc:  # a broken install raises anything at import
        return f"xFormers is installed but does not import: {_first_line(exc)}"
    if not torch.cuda.is_available():
        return "needs CUDA: torch.cuda.is_available() is False on this machine"
    # Diffusers' own probe: run one tiny attention through xFormers' kernels.
    try:
        q = torch.randn((1, 2, 40), device="cuda", dtype=torch.float16)
        xformers.ops.memory_efficient_attention(q, q, q)
    except Exception as exc:
        return (
            f"xFormers {getattr(xformers, '__version__', '?')} is installed but its kernels do not load "
            f"for torch {torch.__version__}: {_first_line(exc)}"
        )
    return None


def _jit_trace() -> str | None:
    if not hasattr(torch, "jit") or not hasattr(torch.jit, "trace"):
        return f"tracing unavailable: torch {torch.__version__} has no torch.jit.trace"
    return None


@functools.lru_cache(maxsize=None)
def _compile() -> str | None:
    try:
        import torch._dynamo
    except Exception as exc:
        return f"torch.compile unsupported: {_first_line(exc)}"
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile unsupported on this Python/platform (torch {torch.__version__})"
    if not torch.cuda.is_available() and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH"
    return None


def _fp16_device() -> str | None:
    if not torch.cuda.is_available():
        return ("float16 needs CUDA: on CPU it runs through slow fallback kernels (tiny: ~6x slower than "
                "float32), which is not what the guide's fp16 measures")
    return None


CHECKS = {
    "cuda": _cuda,
    "fp16_device": _fp16_device,
    "xformers": _xformers,
    "jit_trace": _jit_trace,
    "compile": _compile,
}


#: Needs a recipe implies, and the recipe field they come from.
IMPLIED = {"fp16_device": "dtype"}


def needs(recipe) -> tuple[str, ...]:
    """A stage's own needs, plus those its resolved recipe implies (float16 wants a GPU)."""
    implied = ("fp16_device",) if recipe.dtype == "float16" else ()
    return tuple(recipe.requires) + implied


def skip_reason(recipe, stage: str | None = None) -> str | None:
    """Why a recipe cannot run here; with ``stage``, an inherited need names the stage it comes from."""
    from . import stages

    for need in needs(recipe):
        reason = CHECKS[need]()
        if reason:
            field = IMPLIED.get(need)
            if stage is not None and field is not None and stages.origin(stage, field) != stage:
                reason += f" (its {field} {getattr(recipe, field)} comes from stage {stages.origin(stage, field)!r})"
            return reason
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
