"""Faults injected on purpose, to prove that the guard and the gate catch what they claim to.

``--perf-inject-nan`` puts a NaN into the VAE's output: the black/NaN guard must fail the stage.
``--perf-inject-slowdown=F`` adds work to every UNet call worth ``F`` times the baseline's
GPU busy seconds per denoising step (wall seconds where the baseline has no GPU time), so
0.05 is 5 % more GPU work. The work is a custom operator that spins (a GPU spin kernel on
CUDA, a busy loop on CPU) so it survives ``torch.jit.trace``, ``torch.compile`` and CUDA graphs:
a Python ``time.sleep`` would vanish from a captured graph and prove nothing.
"""

from __future__ import annotations

import functools
import time

import torch


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


def slow_down_unet(pipe, seconds_per_call: float) -> None:
    """Spin for ``seconds_per_call`` inside every UNet call (on the small time embedding)."""
    if seconds_per_call <= 0:
        return
    if pipe.unet.device.type == "cuda":
        _cycles_per_second(pipe.unet.device.index or 0)  # calibrate before any graph capture

    def hook(module, args, output):
        return torch.ops.diffusers_perf.spin(output, seconds_per_call)

    pipe.unet.time_embedding.register_forward_hook(hook)


def nan_in_vae(pipe) -> None:
    """Make the decoded image NaN, as a broken fp16 VAE does."""

    def hook(module, args, output):
        return output * float("nan")

    pipe.vae.decoder.register_forward_hook(hook)
