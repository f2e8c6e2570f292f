"""Does a CPU stage's step differ between fresh processes, and does the machine's speed explain it?
One process builds tiny in float32 and bfloat16 (one thread), warms up, then times 12 rounds with
the suite's step clock; before each round it times three small workloads: SHA-256 (C, no torch),
a pure-Python dict loop, and 200 tiny torch ops. Writes one JSON file. reports/cpu/process-drift/.

    python tools/cpu_process_probe.py OUT.json      (or: setarch -R python tools/cpu_process_probe.py ...)
"""
import hashlib, json, statistics, sys, time
import torch
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), ".."))
from perf import pipelines, steps as S
torch.set_num_threads(1)
BUF = bytes(range(256)) * 1024  # 256 KB

def cal_sha():
    t = time.perf_counter(); hashlib.sha256(BUF).digest(); hashlib.sha256(BUF).digest(); return time.perf_counter() - t

def _py(n=3000):
    d = {}
    for i in range(n):
        d[i & 63] = d.get(i & 63, 0) + i
    return d
def cal_py():
    t = time.perf_counter(); _py(); return time.perf_counter() - t

X = torch.zeros(8)
def cal_torch():
    t = time.perf_counter()
    for _ in range(200): X.add_(1.0)
    return time.perf_counter() - t

def best(f, k=5): return min(f() for _ in range(k))

out = {}
for dtype in (torch.float32, torch.bfloat16):
    pipe = pipelines.build("tiny", "cpu")
    pipe.to(dtype=dtype)
    clock = S.StepClock()
    spec = pipelines.SPECS["tiny"]
    def gen():
        g = torch.Generator("cpu").manual_seed(0)
        return pipe(pipelines.PROMPT, num_inference_steps=spec.steps, height=spec.size, width=spec.size, generator=g,
                    output_type="np", callback_on_step_end=clock.on_step_end, **dict(spec.call)).images
    for _ in range(3): gen()
    rows = []
    for r in range(12):
        c = {"sha": best(cal_sha), "py": best(cal_py), "torch": best(cal_torch)}
        t0 = time.perf_counter(); clock.timed(gen)(); t = time.perf_counter() - t0
        rows.append(dict(c, step=clock.rounds[-1].summary()["step_fastest"], whole=t))
    out[str(dtype)] = rows
json.dump(out, open(sys.argv[1], "w"))
