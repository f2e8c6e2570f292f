"""How steady is this machine's CPU? A fixed pure-Python loop (300,000 multiply-adds), timed back
to back for SECONDS (default 20); prints the fastest of each block of ten, in ms, one block per
~0.25 s. On a quiet dedicated core the numbers repeat within a few percent; on a shared VM they
show how far the host's own speed moves in seconds, which no statistic of a stored run can undo.

    python tools/cpu_speed_probe.py [SECONDS]
"""

import statistics
import sys
import time


def work() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(300_000):
        total += i * i
    return (time.perf_counter() - start) * 1e3


def main(seconds: float) -> None:
    times = []
    end = time.time() + seconds
    while time.time() < end:
        times.append(work())
    blocks = [min(times[i:i + 10]) for i in range(0, len(times), 10)]
    print(" ".join(f"{b:.1f}" for b in blocks))
    print(f"blocks {len(blocks)}: fastest {min(blocks):.1f} ms, median {statistics.median(blocks):.1f} ms, "
          f"slowest {max(blocks):.1f} ms ({max(blocks) / min(blocks):.2f}x)")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
