"""How long one generation of an embedded pipeline takes per stage, and what torch.compile costs.

Sizes a ladder before it is run: the suite's own builder and recipes, one pipeline at a time,
generation seconds per step eager, float32 and compiled, the first compiled call (compilation),
and peak memory. Stops at ``--budget`` seconds so it fits beside another job in one device command.

    python tools/probe_big_pipelines.py sdxl --stages fp32,sdpa,compile --budget 150
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from perf import optimizations, pipelines, stages  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pipeline")
    parser.add_argument("--stages", default="sdpa,compile")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--budget", type=float, default=150.0)
    args = parser.parse_args()
    spec = pipelines.SPECS[args.pipeline]
    steps, start = args.steps or spec.steps, time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{args.pipeline}: {spec.size}px, {steps} steps, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}", flush=True)
    for name in args.stages.split(","):
        recipe = stages.recipe(name, spec.family)
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with optimizations.tf32(recipe.tf32):
            pipe = pipelines.build(args.pipeline, device)
            built_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            pipe = optimizations.apply(pipe, recipe, device, batch=1, size=spec.size)
            built = time.perf_counter() - t0
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times = []
            while len(times) < (3 if recipe.compile else 2) and time.perf_counter() - start < args.budget:
                generator = torch.Generator(device).manual_seed(pipelines.SEED)
                t = time.perf_counter()
                pipe(pipelines.PROMPT, num_inference_steps=steps, height=spec.size, width=spec.size,
                     generator=generator, output_type="np", **spec.call)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        print(f"  {name:12s} built in {built:5.1f} s (build peak {built_peak:5.1f} GiB); generations "
              + ", ".join(f"{x:.2f}" for x in times) + f" s; {times[-1] / steps * 1e3 if times else 0:.0f} ms/step; "
              f"peak {torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0:.1f} GiB; {time.perf_counter() - start:.0f} s so far",
              flush=True)
        del pipe
        torch._dynamo.reset()
        if time.perf_counter() - start > args.budget:
            print(f"  budget of {args.budget:.0f} s spent", flush=True)
            break


if __name__ == "__main__":
    main()
