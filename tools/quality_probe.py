"""Issue 13's first question, on CPU: do random-weight images separate unchanged stages from broken ones?

For each pipeline and stage that runs on CPU, PSNR (dB) of its images against the family's root
stage from the same seed; then the root with one attention's output scaled by 1.2 (a subtle
numeric fault: the image is neither black nor flat). ``python tools/quality_probe.py`` prints
the table kept in ``reports/cpu/quality/psnr.txt``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from perf import optimizations, pipelines, stages


def generate(pipe, spec) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(pipelines.SEED)
    return pipe(pipelines.PROMPT, num_inference_steps=spec.steps, height=spec.size, width=spec.size,
                generator=generator, output_type="np", **spec.call).images.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def build(name: str, family: str, stage: str):
    pipe = pipelines.build(name, "cpu")
    return optimizations.apply(pipe, stages.recipe(stage, family), torch.device("cpu"), batch=1,
                               size=pipelines.SPECS[name].size)


def main() -> None:
    for name in ("tiny", "tiny-sdxl", "tiny-flux"):
        spec = pipelines.SPECS[name]
        root = stages.root(spec.family)
        reference = generate(build(name, spec.family, root), spec)
        rows = []
        for stage in stages.names(spec.family):
            if stages.BY_NAME[stage].requires and ("cuda" in stages.BY_NAME[stage].requires
                                                   or "compile" in stages.BY_NAME[stage].requires):
                continue
            images = generate(build(name, spec.family, stage), spec)
            rows.append((stage, psnr(images, reference), float(images.std())))
        pipe = build(name, spec.family, root)
        denoiser = getattr(pipe, optimizations.denoiser_name(pipe))
        attention = next(m for n, m in denoiser.named_modules() if n.endswith("attn1") or n.endswith(".attn"))
        attention.register_forward_hook(lambda module, args, output: (output[0] * 1.2,) + tuple(output[1:])
                                        if isinstance(output, tuple) else output * 1.2)
        broken = generate(pipe, spec)
        rows.append((f"{root} with one attention x1.2", psnr(broken, reference), float(broken.std())))
        print(f"{name} ({spec.size}px, {spec.steps} steps), PSNR against {root}:")
        for stage, value, std in rows:
            print(f"  {stage:32s} {value:6.1f} dB   image std {std:.3f}")


if __name__ == "__main__":
    main()
