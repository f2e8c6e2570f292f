"""Summarize tools/cpu_threads.sh: per thread count and condition, each run's fastest round and median."""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/cpu/threads")
table = defaultdict(list)
for path in sorted(folder.glob("*.json")):
    condition, threads = path.stem.rsplit("-t", 1)
    for bench in json.loads(path.read_text())["benchmarks"]:
        data = bench["stats"]["data"]
        table[(condition.split("-")[0], threads, bench["extra_info"]["stage"])].append((min(data), statistics.median(data)))
for (condition, threads, stage), runs in sorted(table.items()):
    fastest, medians = [r[0] * 1e3 for r in runs], [r[1] * 1e3 for r in runs]
    print(f"{condition:5} threads={threads} {stage:5} runs={len(runs)} fastest {min(fastest):6.1f}-{max(fastest):6.1f} ms "
          f"(max/min {max(fastest) / min(fastest):.2f})  median {min(medians):6.1f}-{max(medians):6.1f} ms "
          f"(max/min {max(medians) / min(medians):.2f})")
