"""Issue 13's open question, at sd15's real size but on CPU: do random weights diverge chaotically?

Builds the embedded ``sd15`` (860M-parameter UNet, random weights) on CPU and generates one image
per recipe at a reduced size, from the same seed: the ``fp32`` reference, ``sdpa`` in float32
(a legitimate change that keeps float32), ``bf16``, and ``fp32`` with one attention's output x1.2
(``--perf-inject-quality=0.2``'s fault). For each, PSNR against the reference of the final image
and of the latents after the first denoising step, where no chaotic divergence can have built up
yet. ``python tools/quality_sd15_probe.py [SIZE] [STEPS]`` printed ``reports/cpu/quality/sd15.txt``.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from perf import inject, optimizations, pipelines, quality, stages


def generate(name: str, stage: str, size: int, steps: int, fault: float = 0.0):
    pipe = pipelines.build(name, "cpu")
    recipe = stages.recipe(stage)
    if stage == "sdpa":  # float32 SDPA: the attention change alone, without float16 on CPU
        recipe = dataclasses.replace(recipe, dtype="float32")
    pipe = optimizations.apply(pipe, recipe, torch.device("cpu"), batch=1, size=size)
    if fault:
        inject.scale_attention(pipe, fault)
    first = {}

    def keep_first(pipe, step, timestep, kwargs):
        if step == 0:
            first["latents"] = kwargs["latents"].float().clone()
        return kwargs

    start = time.perf_counter()
    images = pipe(pipelines.PROMPT, num_inference_steps=steps, height=size, width=size,
                  generator=torch.Generator("cpu").manual_seed(pipelines.SEED), output_type="np",
                  callback_on_step_end=keep_first, **pipelines.SPECS[name].call).images
    return images, first["latents"], time.perf_counter() - start


def latents_psnr(latents, reference) -> float:
    """PSNR of latents over the reference latents' range (they are not in [0, 1])."""
    span = float(reference.max() - reference.min())
    mse = float(torch.mean((latents - reference) ** 2))
    return quality.IDENTICAL_DB if mse == 0 else min(quality.IDENTICAL_DB, 10 * torch.log10(torch.tensor(span**2 / mse)).item())


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    torch.set_num_threads(2)
    reference, reference_latents, seconds = generate("sd15", "fp32", size, steps)
    print(f"sd15 on CPU, random weights, {size} px, {steps} steps; reference fp32 in {seconds:.0f} s")
    print(f"  {'recipe':34s} {'image PSNR':>10s} {'SSIM':>9s} {'step-1 latents PSNR':>20s}")
    for label, stage, fault in (("sdpa (float32)", "sdpa", 0.0), ("bf16", "bf16", 0.0),
                                ("fp32, one attention x1.2", "fp32", 0.2)):
        images, latents, seconds = generate("sd15", stage, size, steps, fault)
        similar = quality.similarity(images, reference, "fp32")
        print(f"  {label:34s} {similar.psnr_db:8.1f} dB {similar.ssim:9.5f} "
              f"{latents_psnr(latents, reference_latents):17.1f} dB   ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
