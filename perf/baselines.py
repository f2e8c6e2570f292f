"""Baselines: where they live, what hardware they belong to, how they are read and written.

Baselines are pytest-benchmark's own JSON files (``pytest-benchmark compare`` reads them), in
``baselines/<hardware key>/NNNN_name.json``. The key holds only what makes timings comparable
(GPU model and count, or CPU model and core count), never the torch or diffusers version:
a regression after an upgrade is exactly what users want caught. Software versions are kept
in the file and the report shows what changed.

Writing is atomic and never overwrites; reading never crashes the run: a bad file is reported
in one line and skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import statistics
import tempfile
from pathlib import Path

import torch

#: Run settings that must match for two runs' timings to be compared (besides the hardware).
COMPARED_SETTINGS = ("pipeline", "steps", "size", "batch")

#: Fields of machine_info that decide whether timings are comparable.
HARDWARE_FIELDS = ("accelerator", "gpu", "gpu_count", "gpu_memory_gib", "cpu", "cpu_count", "machine")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def hardware_info() -> dict:
    info = {"cpu": _cpu_model(), "cpu_count": _cpu_count(), "machine": platform.machine()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(accelerator="cuda", gpu=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30))
    else:
        info.update(accelerator="cpu", gpu=None, gpu_count=0, gpu_memory_gib=None)
    return {field: info[field] for field in HARDWARE_FIELDS}


def hardware_key(info: dict | None = None) -> str:
    """Folder name for this hardware, e.g. ``NVIDIA_H100_80GB_HBM3-x1`` or ``cpu-AMD_EPYC_7B13-2cores``."""
    info = info or hardware_info()
    if info["accelerator"] == "cuda":
        key = f"{info['gpu']}-x{info['gpu_count']}"
    else:
        key = f"cpu-{info['cpu']}-{info['cpu_count']}cores"
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.-]+", "_", key)).strip("_")


def hardware_differences(saved: dict, current: dict) -> list[str]:
    return [f"{field}: {saved.get(field)!r} -> {current.get(field)!r}"
            for field in HARDWARE_FIELDS if saved.get(field) != current.get(field)]


def software_info() -> dict:
    import diffusers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "gpu_driver": _driver_version(),
    }


def _driver_version() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        match = re.search(r"Kernel Module\s+([\d.]+)", text)
        return match.group(1) if match else None
    except OSError:
        return None


# -- reading --------------------------------------------------------------------------------------


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message is one line."""


@dataclasses.dataclass
class Baseline:
    path: Path
    data: dict

    @property
    def hardware(self) -> dict:
        return self.data.get("machine_info", {}).get("diffusers_perf_hardware") or self.data.get("machine_info", {})

    @property
    def software(self) -> dict:
        return self.data.get("diffusers_perf", {}).get("software", {})

    def stages(self) -> dict[str, dict]:
        """Benchmarks by stage name (taken from ``extra_info``, else from the test's parameter)."""
        found = {}
        for bench in self.data["benchmarks"]:
            stage = (bench.get("extra_info") or {}).get("stage") or (bench.get("params") or {}).get("stage")
            if stage:
                found[stage] = bench
        return found

    def settings(self) -> dict:
        return self.data.get("diffusers_perf", {}).get("settings", {})


def read(path: Path) -> Baseline:
    """Load and validate one baseline file; raise :class:`BaselineError` with the reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineError(f"baseline {path}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise BaselineError(f"baseline {path}: is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:
        what = "is truncated" if "Expecting" in str(exc) and exc.pos >= len(text.rstrip()) - 1 else "is not valid JSON"
        raise BaselineError(f"baseline {path}: {what} ({exc.msg} at line {exc.lineno}); record a new one") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise BaselineError(f"baseline {path}: not a pytest-benchmark file (no 'benchmarks' list)")
    for bench in data["benchmarks"]:
        if not isinstance(bench, dict) or "fullname" not in bench or not isinstance(bench.get("stats"), dict) \
                or "median" not in bench["stats"]:
            raise BaselineError(f"baseline {path}: a benchmark entry lacks 'fullname' or 'stats.median'")
    return Baseline(path=path, data=data)


def candidates(folder: Path) -> list[Path]:
    """Saved runs in a hardware folder, oldest first (pytest-benchmark's ``NNNN_`` numbering)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("[0-9][0-9][0-9][0-9]_*.json") if p.is_file())


def find(storage: Path, key: str, selector: str | bool) -> tuple[Baseline | None, list[str]]:
    """The baseline ``--benchmark-compare[=NUM|PATH]`` asks for, and one line per problem met.

    With no value: the newest valid file for this hardware; a bad newest file is reported and
    the one before it is used.
    """
    problems: list[str] = []
    if isinstance(selector, str) and Path(selector).is_file():
        paths = [Path(selector)]
    else:
        paths = candidates(storage / key)
        if isinstance(selector, str):
            paths = [p for p in paths if p.name.startswith(selector) or p.stem.split("_", 1)[-1] == selector]
    for path in reversed(paths):
        try:
            return read(path), problems
        except BaselineError as exc:
            problems.append(str(exc))
    return None, problems


def gpu_samples(bench: dict) -> list[float]:
    """A benchmark entry's GPU busy seconds per profiled round (empty on CPU and in older files)."""
    samples = (bench.get("extra_info") or {}).get("gpu_seconds")
    return [float(x) for x in samples] if isinstance(samples, list) else []


def history(storage: Path, key: str, settings: dict) -> dict[str, dict[str, list[float]]]:
    """Each stage's medians in every valid stored run for this hardware with these settings.

    Returns ``{"latency": {stage: [wall medians]}, "gpu_time": {stage: [GPU busy medians]}}``,
    oldest run first. ``settings`` is a run's ``diffusers_perf.settings``; only
    :data:`COMPARED_SETTINGS` matter.
    """
    settings = {k: v for k, v in settings.items() if k in COMPARED_SETTINGS}
    medians: dict[str, dict[str, list[float]]] = {"latency": {}, "gpu_time": {}}
    for path in candidates(storage / key):
        try:
            baseline = read(path)
        except BaselineError:
            continue
        for stage, bench in baseline.stages().items():
            extra = bench.get("extra_info") or {}
            if all(extra.get(k) == v for k, v in settings.items() if k in extra):
                medians["latency"].setdefault(stage, []).append(bench["stats"]["median"])
                gpu = gpu_samples(bench)
                if gpu:
                    medians["gpu_time"].setdefault(stage, []).append(statistics.median(gpu))
    return medians


# -- writing --------------------------------------------------------------------------------------


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` or not at all; never replace an existing file.

    The bytes go to a temporary file in the same folder, are flushed to disk, then hard-linked
    into place (``os.link`` fails if the name exists, unlike ``rename``). An interrupt at any
    point leaves either nothing or the complete file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; the suite never overwrites a baseline") from None
        except OSError:  # file systems without hard links: rename, after checking
            if path.exists():
                raise FileExistsError(f"{path} already exists; the suite never overwrites a baseline") from None
            os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
