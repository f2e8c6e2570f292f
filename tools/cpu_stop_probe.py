"""How a ``pytest perf`` run ends when it is told to stop while a stage compiles (reports/cpu/stop/).

Runs ``pytest perf --perf-stages=fp32,compile`` (``tiny`` on CPU) in a session of its own, waits for
``compile``'s "compiling and warming up" line, sleeps OFFSET seconds, then signals the whole
process group as ``timeout`` and CI runners do: SIGTERM alone, or SIGINT and, GAP seconds later,
SIGTERM (a cancelled GitHub Actions job: 7.5 s there, shorter here so that it lands while the run
is still writing its output). Prints, per run, when each signal went, the exit status, when the
last line came and what it was.

    python tools/cpu_stop_probe.py OFFSET term            # SIGTERM alone
    python tools/cpu_stop_probe.py OFFSET int+term GAP    # SIGINT, then SIGTERM GAP s later
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


def main() -> None:
    offset, mode = float(sys.argv[1]), sys.argv[2]
    gap = float(sys.argv[3]) if mode == "int+term" else 0.0
    work = tempfile.mkdtemp(prefix="stop-probe-")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TORCHINDUCTOR_CACHE_DIR=f"{work}/inductor")  # a cold compile
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "perf", "-p", "no:cacheprovider", "--perf-stages=fp32,compile",
         f"--benchmark-storage={work}/baselines", f"--perf-compile-cache={work}/compile-cache",
         f"--benchmark-json={work}/run.json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True)
    start = time.time()
    lines: list[tuple[float, str]] = []
    compiling = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.time() - start, line.rstrip()))
            if "compile: compiling and warming up" in line:
                compiling.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    compiling.wait(300)
    time.sleep(offset)
    sent = []
    if mode == "int+term":
        os.killpg(process.pid, signal.SIGINT)
        sent.append(f"SIGINT at {time.time() - start:.1f} s")
        time.sleep(gap)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        sent.append(f"SIGTERM at {time.time() - start:.1f} s")
    code = process.wait(timeout=120)
    ended = time.time() - start
    reader.join(5)
    said = [(t, line) for t, line in lines if line.strip()]
    verdicts = [(t, line) for t, line in said if line.startswith("diffusers-perf: ") and "pipeline" not in line]
    print(f"{', '.join(sent)}; exit status {code} at {ended:.1f} s; JSON written: {os.path.exists(work + '/run.json')}")
    if verdicts:
        print(f"  last line at {verdicts[-1][0]:.1f} s: {verdicts[-1][1][:160]}")
    print(f"  the output's last line: {said[-1][1][:160] if said else '(none)'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
