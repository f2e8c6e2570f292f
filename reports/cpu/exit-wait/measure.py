"""Time from a run's last line to its exit: ``python measure.py PYTHON [PYTEST ARGS...]``.

Runs ``PYTHON -m pytest perf ARGS`` from the repository root, prints the suite's ``diffusers-perf:``
lines with the second each came at, then the exit status and how long the process outlived its
last line."""
import signal
import subprocess
import sys
import time
from pathlib import Path

python, *args = sys.argv[1:]
root = Path(__file__).resolve().parents[3]
# A shell's background job starts with SIGINT ignored, and the run would inherit that: Python's
# default for it, so that the run can be stopped.
signal.signal(signal.SIGINT, signal.SIG_DFL)
start = time.monotonic()
run = subprocess.Popen([python, "-m", "pytest", str(root / "perf"), *args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
last = 0.0
for line in run.stdout:
    if line.startswith("diffusers-perf: "):
        last = time.monotonic() - start
        print(f"{last:6.1f} s  {line.rstrip()}")
run.wait()
end = time.monotonic() - start
print(f"exit status {run.returncode} at {end:.1f} s: {end - last:.1f} s after the last line")
