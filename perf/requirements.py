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


@functools.lru_cache(maxsize=None)
def _torchao() -> str | None:
    try:
        import torchao  # noqa: F401
        from torchao.quantization import quantize_  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install 'diffusers-perf[torchao]')"
    except Exception as exc:  # built for another torch: anything at import
        return f"torchao is installed but does not import: {_first_line(exc)}"
    return None


def _fp8() -> str | None:
    if _cuda():
        return _cuda()
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return (f"float8 matmuls need compute capability 8.9 or newer (Ada, Hopper); "
                f"{torch.cuda.get_device_name()} is {major}.{minor}")
    return None


CHECKS = {
    "cuda": _cuda,
    "torchao": _torchao,
    "fp8": _fp8,
    "xformers": _xformers,
    "jit_trace": _jit_trace,
    "compile": _compile,
}


def skip_reason(recipe) -> str | None:
    """Why a recipe cannot run here (its stage's own needs: a CUDA-only parent flag such as TF32
    is a no-op on CPU, so needs are not inherited).

    float16 is no need: on CPU it runs, through slower kernels than float32 (``tiny``: about 6x),
    which is not the guide's speed-up but still exercises every fp16 recipe on every pull request.
    """
    for need in recipe.requires:
        reason = CHECKS[need]()
        if reason:
            return reason
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
