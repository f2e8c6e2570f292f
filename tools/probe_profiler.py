"""Where the profiler's time goes in a profiled round (one-off probe; output in probe_profiler.log).

python3 tools/probe_profiler.py
"""
import time

import torch
from torch.profiler import ProfilerActivity, profile

from perf import gpu_time, optimizations, pipelines, stages

SYNC = torch.cuda.synchronize


def gen(pipe, steps=50):
    g = torch.Generator("cuda").manual_seed(0)
    out = pipe("a photo", num_inference_steps=steps, height=512, width=512, generator=g, output_type="np").images
    SYNC()
    return out


for name in ("sdpa", "fp32"):
    recipe = stages.recipe(name)
    with optimizations.tf32(recipe.tf32):
        pipe = optimizations.apply(pipelines.build("sd15", "cuda"), recipe, torch.device("cuda"), batch=1, size=512)
        gen(pipe)
        t = time.perf_counter(); gen(pipe); plain = time.perf_counter() - t
        for i in range(3):
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                t1 = time.perf_counter(); gen(pipe); t2 = time.perf_counter()
            t3 = time.perf_counter()
            iv = gpu_time.device_intervals(prof)
            t4 = time.perf_counter()
            print(f"{name} plain {plain:.3f}  profiled: enter {t1-t0:.3f} call {t2-t1:.3f} exit {t3-t2:.3f} "
                  f"parse {t4-t3:.3f} events {len(iv)} busy {gpu_time.busy_seconds(iv):.4f}", flush=True)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                gen(pipe); time.sleep(0.2)
        t1 = time.perf_counter()
        iv = sorted(gpu_time.device_intervals(prof))
        gaps, reach = [], iv[0][1]
        for (start, end) in iv[1:]:
            gaps.append((start - reach) / 1e9)
            reach = max(reach, end)
        gaps = sorted(gaps)[-6:]
        print(f"{name} one session of 5: {t1-t0:.3f} s, events {len(iv)}, largest gaps {[round(g, 3) for g in gaps]}", flush=True)
        del pipe
        torch.cuda.empty_cache()
