"""Does glibc's malloc decide how fast a CPU step runs? One process builds tiny, optionally with the
guide's classic attention (which materializes its attention maps) and with glibc's thresholds fixed
through mallopt, warms up three rounds, times ROUNDS rounds, and prints every round's steps (host
timestamps at each step's end, as the suite's step clock takes them). reports/cpu/malloc/.

    python tools/cpu_malloc_probe.py fp32|bf16 ROUNDS [classic]
    KEEP=both python tools/cpu_malloc_probe.py fp32 12 classic     # mmap and trim thresholds at 1 GiB
    KEEP=trim python tools/cpu_malloc_probe.py fp32 12 classic     # trim threshold alone
    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 python tools/cpu_malloc_probe.py ...
"""
import ctypes
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from perf import pipelines  # noqa: E402

torch.set_num_threads(1)
if os.environ.get("KEEP"):
    libc = ctypes.CDLL(None)
    both = libc.mallopt(-3, 1 << 30) if os.environ["KEEP"] == "both" else 0  # M_MMAP_THRESHOLD
    print("mallopt", both, libc.mallopt(-1, 1 << 30), file=sys.stderr)  # M_TRIM_THRESHOLD
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[sys.argv[1]]
pipe = pipelines.build("tiny", "cpu")
pipe.to(dtype=dtype)
if len(sys.argv) > 3:
    from diffusers.models.attention_processor import AttnProcessor

    pipe.unet.set_attn_processor(AttnProcessor())
    pipe.vae.set_attn_processor(AttnProcessor())
spec = pipelines.SPECS["tiny"]
marks = []


def on_step_end(pipe, step, timestep, kwargs):
    marks.append(time.perf_counter())
    return kwargs


def generate():
    generator = torch.Generator("cpu").manual_seed(0)
    return pipe("a photo", num_inference_steps=spec.steps, height=spec.size, width=spec.size,
                generator=generator, callback_on_step_end=on_step_end, output_type="np")


for _ in range(3):
    generate()
for _ in range(int(sys.argv[2])):
    marks.clear()
    start = time.perf_counter()
    generate()
    total = time.perf_counter() - start
    steps = [b - a for a, b in zip(marks, marks[1:])]
    print(f"{total * 1e3:7.1f} ms  steps " + " ".join(f"{x * 1e3:5.1f}" for x in steps))
