"""What the host-work counters see on the GPU machine (one-off probe; output in probe_counters.log).

python3 tools/probe_counters.py
"""
import collections

import torch
from torch.profiler import ProfilerActivity, profile

from perf import counters

x = torch.ones(1024, device="cuda")


def call():
    y = x * 2
    y.sum().item()  # one stream sync and one device-to-host copy
    torch.cuda.synchronize()


call()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    call()
names = collections.Counter((str(e.device_type()), e.name()) for e in prof.profiler.kineto_results.events())
for (device, name), n in sorted(names.items()):
    print(f"{device:22s} {n:4d}  {name}")
print("counters:", counters.count(call, torch.device("cuda")))
print("counters again:", counters.count(call, torch.device("cuda")))
