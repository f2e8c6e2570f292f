"""Summary of tools/cpu_process_probe.py files in a folder: per process, the median fastest step and
the three workloads; the spread (max/min) of the step raw and divided by each workload.

    python tools/cpu_process_probe_summary.py reports/cpu/process-drift
"""
import json, glob, statistics as s, sys
runs = {f.split('/')[-1][:-5]: json.load(open(f)) for f in sorted(glob.glob(sys.argv[1] + '/[qbrs]*.json'))}
for dt in ("torch.float32", "torch.bfloat16"):
    print(dt)
    print("run    step_ms  sha_ms py_ms torch_ms  step/sha step/py step/torch")
    cols = {k: [] for k in ("step", "n_sha", "n_py", "n_torch")}
    for name, d in runs.items():
        rows = d[dt]
        st = s.median(r["step"] for r in rows)
        norm = {c: s.median(r["step"] / r[c] for r in rows) for c in ("sha", "py", "torch")}
        cols["step"].append(st)
        for c in norm: cols["n_" + c].append(norm[c])
        print(f"{name:5s} {st*1e3:8.2f} {s.median(r['sha'] for r in rows)*1e3:7.3f} {s.median(r['py'] for r in rows)*1e3:6.3f} {s.median(r['torch'] for r in rows)*1e3:6.3f}   {norm['sha']:7.1f} {norm['py']:7.1f} {norm['torch']:7.1f}")
    for k, v in cols.items():
        print(f"  {k:8s} max/min {max(v)/min(v):.3f}")
