"""The run as it was before perf.compile_workers: the workers are left to torch's own shutdown."""
from perf import compile_workers

compile_workers.end_running_jobs = lambda: 0
