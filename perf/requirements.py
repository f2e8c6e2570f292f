"""Why a stage cannot run here: each check returns ``None`` or the exact skip reason.

A stage that cannot run on this machine must skip with a reason a user can act on, never
error: a nightly job on a machine without xFormers is not broken.
"""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from .stages import Recipe


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
    no_cuda = _cuda()
    if no_cuda:
        return no_cuda
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return (f"float8 matmuls need compute capability 8.9 or newer (Ada, Hopper); "
                f"{torch.cuda.get_device_name()} is {major}.{minor}")
    return None


@functools.lru_cache(maxsize=None)
def _cudnn_attention() -> str | None:
    no_cuda = _cuda()
    if no_cuda:
        return no_cuda
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # One small attention with cuDNN's kernel as the only choice: what the stage's UNet attention needs.
    try:
        q = torch.randn((2, 8, 64, 40), device="cuda", dtype=torch.float16)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.cuda.synchronize()
    except Exception as exc:
        return (f"cuDNN attention does not run in torch {torch.__version__} (cuDNN "
                f"{torch.backends.cudnn.version()}) on {torch.cuda.get_device_name()}: {_first_line(exc)}")
    return None


@functools.lru_cache(maxsize=None)
def _flash_attention_3() -> str | None:
    no_cuda = _cuda()
    if no_cuda:
        return no_cuda
    from diffusers.utils import is_flash_attn_3_available

    if not is_flash_attn_3_available():
        return (f"FlashAttention 3 is not installed: Diffusers' _flash_3 attention backend needs the flash_attn_3 "
                f"package, which has no wheel for torch {torch.__version__} (build it from the hopper/ folder of "
                f"Dao-AILab/flash-attention)")
    major, minor = torch.cuda.get_device_capability()
    if major != 9:
        return f"FlashAttention 3 runs on Hopper (compute capability 9.0); this GPU has {major}.{minor}"
    return None


CHECKS: dict[str, Callable[[], str | None]] = {
    "cuda": _cuda,
    "flash_attention_3": _flash_attention_3,
    "cudnn_attention": _cudnn_attention,
    "torchao": _torchao,
    "fp8": _fp8,
    "xformers": _xformers,
    "jit_trace": _jit_trace,
    "compile": _compile,
}


#: Peak GPU memory (GiB) of each stage of the embedded pipelines at their default size and batch:
#: ``torch.cuda.max_memory_allocated`` over the timed generations, as the suite recorded it on an H100
#: (``baselines/NVIDIA_H100_80GB_HBM3-x1/``: sd15 0009, its int8 0014 and fp8 0015, flux 0010 and its
#: fp8 0017, sdxl 0012; ``tests/test_stages.py``
#: holds this table to those files). Building needs less: SDXL's float32 weights peaked at 13.1 GiB
#: (``reports/h100/sdxl/probe-sdxl.log``), and Flux is built in bfloat16.
PEAK_GIB: dict[str, dict[str, float]] = {
    "sd15": {"fp32": 6.13, "tf32": 6.13, "fp16": 3.12, "channels_last": 3.12, "traced_unet": 3.10, "sdpa": 2.66,
             "bf16": 2.66, "fused_qkv": 2.77, "compile": 2.66, "cudagraphs": 2.66, "int8": 2.43, "fp8": 2.43},
    "sdxl": {"fp32": 16.10, "tf32": 17.87, "fp16": 11.54, "channels_last": 11.54, "sdpa": 11.54, "bf16": 9.00,
             "fused_qkv": 12.78, "compile": 11.54, "cudagraphs": 11.54},
    "flux": {"bf16": 33.85, "fused_qkv": 37.86, "compile": 33.85, "cudagraphs": 33.85, "fp8": 25.83},
}
#: The quantized stages the H100 never ran, as the suite recorded them on an H200
#: (``baselines/NVIDIA_H200-x1/``: sdxl int8 0020 and fp8 0022, flux int8 0024; held to them the same
#: way). The allocator's peak is the pipeline's, not the card's: an H100 measured the same as an H200
#: where both ran a stage (flux fp8 25.83 GiB on both).
PEAK_GIB_H200: dict[str, dict[str, float]] = {
    "sdxl": {"int8": 9.52, "fp8": 6.97},
    "flux": {"int8": 25.84},
}
#: What a stage needs beyond its measured peak: the caching allocator holds more than it hands out,
#: and the CUDA context takes about half a GiB before the first tensor.
ALLOCATOR_RESERVE, CONTEXT_GIB = 1.10, 0.5


def card_gib() -> float | None:
    """The GPU's memory in GiB, or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30


def memory_skip(pipeline: str, stage: str, gib: float | None) -> str | None:
    """Why the stage does not fit a GPU of ``gib`` GiB, from its measured peak; None if it fits or
    nothing was measured (then running out of memory fails the stage alone)."""
    for card, table in (("an H100", PEAK_GIB), ("an H200", PEAK_GIB_H200)):
        peak = table.get(pipeline, {}).get(stage)
        if peak is not None:
            break
    if peak is None or gib is None:
        return None
    need = peak * ALLOCATOR_RESERVE + CONTEXT_GIB
    if gib >= need:
        return None
    return (f"needs about {need:.0f} GiB of GPU memory ({pipeline}'s {stage} peaked at {peak:.1f} GiB on {card}), "
            f"and this GPU has {gib:.0f} GiB")


def skip_reason(recipe: Recipe) -> str | None:
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
