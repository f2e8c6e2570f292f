"""How far a stage is from the hardware: FLOPs of one generation against a measured peak.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the eager pipeline,
once per run settings. Counting all 50 steps would cost 50 steps under a Python dispatch
mode, so it counts a 1-step and a 2-step generation and extrapolates: the text encoder and
the VAE run once, the UNet once per step.

The peak is *measured*, not looked up: a large matrix product in the stage's dtype (TF32 on
or off as the stage has it) on this very device, so that the fraction means the same thing
on an H100, an H200 or a laptop CPU.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import torch


def count_generation_flops(generate_with_steps: Callable[[int], object], steps: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for n in (1, 2):
        with FlopCounterMode(display=False) as counter:
            generate_with_steps(n)
        counts.append(counter.get_total_flops())
    per_step = counts[1] - counts[0]
    return int(counts[0] + (steps - 1) * per_step)


@functools.lru_cache(maxsize=None)
def peak_flops(device_type: str, device_index: int, dtype: torch.dtype, tf32: bool) -> float:
    """FLOP/s of a large square matmul, best of several, on this device in this dtype."""
    device = torch.device(device_type, device_index) if device_type == "cuda" else torch.device("cpu")
    n = 8192 if device_type == "cuda" else 1024
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        best = float("inf")
        for i in range(6 if device_type == "cuda" else 3):
            if device_type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(5 if device_type == "cuda" else 1):
                a @ b
            if device_type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = (time.perf_counter() - start) / (5 if device_type == "cuda" else 1)
            if i:  # the first is warm-up
                best = min(best, elapsed)
        return 2 * n**3 / best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
