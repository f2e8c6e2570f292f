"""Compiled kernels kept between runs, so that a machine that ran a ladder once does not compile again.

After the profiled rounds, ``torch.compile`` is the largest cost of a fresh GPU ladder: on the H100
the sd15 ``compile`` and ``cudagraphs`` stages spent most of their 88 and 64 s compiling
(``reports/h100/cost/``), and every new pipeline brings a larger graph. PyTorch's portable
caches ("Mega-Cache": :func:`torch.compiler.save_cache_artifacts` and
:func:`torch.compiler.load_cache_artifacts`) hold what Inductor generated, the Triton binaries,
AOTAutograd's graphs and autotuning results, each keyed by torch version, device and graph. Loaded
before anything compiles, a graph that did not change skips Inductor; a graph that did (a new
Diffusers, another recipe) misses and compiles as it always did. A hit runs the code the cache's
writer compiled; a fresh compile usually makes the same, but not always: Inductor times some
choices on the device (whether to pad a matmul), and one fresh H200 compiled sd15's UNet into 14
more kernels a step than the machines before it, at the same GPU time (``reports/h200/loop/``).
Carrying the cache keeps the code of the run that wrote it. Each stage records its cache hits
and misses in ``extra_info["compile_cache"]``.

Files live in ``<cache>/<hardware key>/`` and are named for the torch version that wrote them
(another torch never reads them). ``<cache>`` is ``--perf-compile-cache`` or, by default, the
user's cache folder (``$XDG_CACHE_HOME/diffusers-perf/compile-cache``): compiled binaries are not
source, they grow by one set per torch release, and a CI job keeps them with its cache (keyed by
torch version and hardware), not in the repository. A run adds one only when it had to compile something
the cache did not hold, no stage failed and no fault was injected; nothing stored is ever replaced.
Delete the folder to start afresh. CUDA only: on CPU the compile stage of ``tiny`` takes seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path

import torch

from . import counters

FOLDER = "compile-cache"


def root(option: str | None) -> Path:
    """The cache's folder: ``--perf-compile-cache``, else the user's cache folder."""
    if option:
        return Path(option).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffusers-perf" / FOLDER


def folder(cache: Path, key: str) -> Path:
    """Where this hardware's files are: a cache may be shared by several machines."""
    return cache / key


def _prefix() -> str:
    return "torch-" + re.sub(r"[^A-Za-z0-9.]+", "_", torch.__version__)


def files(where: Path) -> list[Path]:
    """This torch version's cache files in ``where`` (:func:`folder`), oldest name first."""
    try:
        return sorted(p for p in where.iterdir() if p.name.startswith(_prefix() + "-") and p.name.endswith(".bin.gz"))
    except OSError:
        return []


def load(paths: list[Path]) -> list[str]:
    """Load cache files (:func:`files`); one line per file that could not be read."""
    problems = []
    for path in paths:
        try:
            torch.compiler.load_cache_artifacts(gzip.decompress(path.read_bytes()))
        except Exception as exc:  # a damaged or foreign file costs a compile, never the run
            problems.append(f"compile cache {path.name} not loaded ({type(exc).__name__}: {exc}); "
                            "stages compile as on a fresh machine")
    return problems


def misses_since(before: dict[str, int]) -> int:
    """How many graphs Inductor had to compile since ``before`` (:func:`perf.counters.cache_state`)."""
    return counters.cache_delta(before).get("fxgraph_cache_miss", 0)


def save(where: Path) -> Path | None:
    """Write what this process compiled as a new file; None when there is nothing new to write."""
    saved = torch.compiler.save_cache_artifacts()
    if not saved:
        return None
    data = saved[0]
    name = f"{_prefix()}-{hashlib.sha256(data).hexdigest()[:12]}.bin.gz"
    path = where / name
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name("." + name + ".partial")
    partial.write_bytes(gzip.compress(data, compresslevel=6))
    partial.replace(path)
    return path
