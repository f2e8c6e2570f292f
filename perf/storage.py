"""Stored runs on disk: read like user input, written so that nothing stored is ever lost.

A stored run is pytest-benchmark's own JSON (``pytest-benchmark compare`` reads it) in
``<storage>/<hardware key>/NNNN_name.json``. Files are hand-copied, merged, truncated and
edited in real repositories, so :func:`read` is the one validator every reader goes through
(the baseline, the history, ``python -m perf.compare``): a file is used only if every number
the gate or pytest-benchmark's table reads is finite and positive and every field has its
type; any other file is skipped with one line naming the file and the field.

:func:`save` never overwrites and never loses a finished run: it takes the next free number
under a lock on the folder (concurrent saves get different numbers), writes a temporary file
and hard-links it into place, so an interrupt leaves either nothing or the complete file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any, NoReturn, TypeGuard
from pathlib import Path

from .stats import finite_positive

#: ``NNNN_name.json``: pytest-benchmark's numbering, which keeps sorting past 9999 here.
RUN_FILE = re.compile(r"^(?P<number>\d{4,})_(?P<name>.+)\.json$")


def run_name_parts(name: str) -> tuple[int, str] | None:
    """A stored run's file name as (number, name): ``0013_h200.json`` -> ``(13, "h200")``; None if not one."""
    match = RUN_FILE.match(name)
    return (int(match["number"]), match["name"]) if match else None

#: Longest file name most file systems take (ext4, APFS, NTFS: 255 bytes).
NAME_MAX = 255
PARTIAL_SUFFIX = ".partial"

#: Every statistic pytest-benchmark's table, histogram and ``--benchmark-compare-fail`` may read
#: from a stored entry (its ``Stats.as_dict``), by kind: seconds (finite, not negative), counts.
_STATS_NUMBERS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "ops", "total")
_STATS_POSITIVE = ("min", "mean", "median")
_STATS_COUNTS = {"rounds": 1, "iterations": 1, "iqr_outliers": 0, "stddev_outliers": 0}  # name -> least value
_OUTLIERS = re.compile(r"^\d+;\d+$")  # "iqr outliers;stddev outliers", as the table prints it

#: What says how an entry was measured (:data:`perf.baselines.COMPARED_SETTINGS` but threads,
#: which older files lack): an entry without them is never a baseline, whatever it holds.
_IDENTITY_NAMES = ("stage", "pipeline")
_IDENTITY_COUNTS = ("steps", "size", "batch")
#: PSNR is capped at this many dB where images are identical (perf.quality.IDENTICAL_DB).
_MAX_PSNR_DB = 100.0


class StoredRunError(ValueError):
    """A stored run that cannot be used; the message is one line naming the file and the field."""


@dataclasses.dataclass
class StoredRun:
    path: Path
    data: dict

    @property
    def number(self) -> int:
        parts = run_name_parts(self.path.name)
        return parts[0] if parts else 0

    @property
    def hardware(self) -> dict:
        return self.data.get("machine_info") or {}

    @property
    def software(self) -> dict:
        return (self.data.get("diffusers_perf") or {}).get("software") or {}

    @property
    def settings(self) -> dict:
        return (self.data.get("diffusers_perf") or {}).get("settings") or {}

    def entries(self) -> dict[str, dict]:
        """Benchmark entries by stage name (from ``extra_info``, else from the test's parameter)."""
        found = {}
        for bench in self.data["benchmarks"]:
            stage = (bench.get("extra_info") or {}).get("stage") or (bench.get("params") or {}).get("perf_stage")
            if isinstance(stage, str) and stage:
                found[stage] = bench
        return found


# -- reading --------------------------------------------------------------------------------------


def read(path: Path, injected_ok: bool = False) -> StoredRun:
    """Load and validate one stored run; raise :class:`StoredRunError` with the reason. A run with
    faults injected on purpose is refused unless ``injected_ok`` (it is judged, never a baseline)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoredRunError(f"stored run {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if not text.strip():
        raise StoredRunError(f"stored run {path}: is empty")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            what = "is truncated" if exc.pos >= len(text.rstrip()) - 1 else "is not valid JSON"
            raise StoredRunError(f"stored run {path}: {what} ({exc.msg} at line {exc.lineno}); "
                                 "record a new one") from None
        raise StoredRunError(f"stored run {path}: {exc}") from None
    except RecursionError:
        raise StoredRunError(f"stored run {path}: is nested too deeply to be a pytest-benchmark file") from None
    problem = validate(data, injected_ok)
    if problem:
        raise StoredRunError(f"stored run {path}: {problem}; skipped")
    return StoredRun(path=path, data=data)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"holds {name}, which is no number a timing can be")


def validate(data: Any, injected_ok: bool = False) -> str | None:
    """What is wrong with a stored run's content, in a few words naming the field; None if usable."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        return "not a pytest-benchmark file (no 'benchmarks' list)"
    for field in ("machine_info", "diffusers_perf", "commit_info"):
        if field in data and data[field] is not None and not isinstance(data[field], dict):
            return f"'{field}' is {type(data[field]).__name__}, not an object"
    if not isinstance(data.get("machine_info"), dict):
        return "'machine_info' is missing"
    injected = (data.get("diffusers_perf") or {}).get("injected")
    if injected and not injected_ok:
        names = ", ".join(injected) if isinstance(injected, dict) else str(injected)
        return f"a run with faults injected on purpose ({names}), never a baseline"
    if (data.get("diffusers_perf") or {}).get("finished") is False and not injected_ok:
        return "the file a run writes after each stage, from a run that never finished: never a baseline"
    for field in ("software", "settings"):
        value = (data.get("diffusers_perf") or {}).get(field)
        if value is not None and not isinstance(value, dict):
            return f"'diffusers_perf.{field}' is {type(value).__name__}, not an object"
    for index, bench in enumerate(data["benchmarks"]):
        problem = _validate_entry(bench)
        if problem:
            return f"benchmarks[{index}]: {problem}"
    return None


def _validate_entry(bench: Any) -> str | None:
    if not isinstance(bench, dict):
        return "is not an object"
    for field in ("fullname", "name"):
        if not isinstance(bench.get(field), str):
            return f"lacks '{field}'"
    for field in ("group", "param"):
        if bench.get(field) is not None and not isinstance(bench[field], str):
            return f"'{field}' is {bench[field]!r}, not a string"
    stats = bench.get("stats")
    if not isinstance(stats, dict):
        return "lacks 'stats'"
    problem = _validate_stats(stats)
    if problem:
        return problem
    extra = bench.get("extra_info")
    if not isinstance(extra, dict):
        return ("lacks 'extra_info', which says how it was measured" if extra is None
                else f"'extra_info' is {type(extra).__name__}, not an object")
    for field in _IDENTITY_NAMES:
        if not isinstance(extra.get(field), str) or not extra[field]:
            return f"'extra_info.{field}' is {extra.get(field)!r}: it does not say how it was measured"
    for field in _IDENTITY_COUNTS:
        if not _count(extra.get(field), 1):
            return f"'extra_info.{field}' is {extra.get(field)!r}: it does not say how it was measured"
    gpu = extra.get("gpu_seconds")
    if gpu is not None and not (isinstance(gpu, list) and finite_positive(gpu)):
        return "'extra_info.gpu_seconds' holds a value that is not a finite positive number of seconds"
    memory = extra.get("peak_memory_bytes")
    if memory is not None and not _count(memory, 0):
        return f"'extra_info.peak_memory_bytes' is {memory!r}, not a byte count"
    found = extra.get("counters")
    if found is not None and not (isinstance(found, dict) and all(_count(v, 0) for v in found.values())):
        return "'extra_info.counters' is not an object of counts"
    timing = extra.get("step_timing")
    if timing is not None and not (isinstance(timing, dict) and all(
            isinstance(v, list) and v and finite_positive(v) for v in timing.values())):
        return "'extra_info.step_timing' is not an object of finite positive seconds per round"
    parts = extra.get("gpu_components")
    if parts is not None and not (isinstance(parts, dict) and all(
            isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                              and math.isfinite(x) and x >= 0 for x in v) for v in parts.values())):
        return "'extra_info.gpu_components' is not an object of GPU seconds per round"
    problem = _validate_quality(extra.get("quality"))
    if problem:
        return problem
    for field in ("params", "options"):
        if bench.get(field) is not None and not isinstance(bench[field], dict):
            return f"'{field}' is {type(bench[field]).__name__}, not an object"
    return None


def _validate_stats(stats: dict) -> str | None:
    for field in _STATS_NUMBERS:
        if field not in stats:
            return f"lacks 'stats.{field}'"
        if not _number(stats[field], positive=field in _STATS_POSITIVE):
            return f"'stats.{field}' is {stats[field]!r}, not a finite {'positive ' * (field in _STATS_POSITIVE)}number"
    for field, least in _STATS_COUNTS.items():
        if not _count(stats.get(field), least):
            return f"'stats.{field}' is {stats.get(field)!r}, not a count"
    if not isinstance(stats.get("outliers"), str) or not _OUTLIERS.match(stats["outliers"]):
        return f"'stats.outliers' is {stats.get('outliers')!r}, not pytest-benchmark's 'N;M'"
    data = stats.get("data")
    if not isinstance(data, list) or not data:
        return "lacks the raw rounds 'stats.data' the rank test needs"
    if not finite_positive(data):
        return "'stats.data' holds a value that is not a finite positive number of seconds"
    return None


def _validate_quality(quality: Any) -> str | None:
    """``extra_info.quality`` (perf.quality): PSNR and SSIM of real images, or absent (older files)."""
    if quality is None:
        return None
    if not isinstance(quality, dict) or not isinstance(quality.get("reference"), str):
        return "'extra_info.quality' is not an object naming its reference stage"
    psnr, ssim, floor = quality.get("psnr_db"), quality.get("ssim"), quality.get("min_psnr_db")
    if not _number(psnr) or psnr > _MAX_PSNR_DB:
        return f"'extra_info.quality.psnr_db' is {psnr!r}, not a PSNR in dB (0 to {_MAX_PSNR_DB:g})"
    if not isinstance(ssim, (int, float)) or isinstance(ssim, bool) or not -1.0 <= ssim <= 1.0:
        return f"'extra_info.quality.ssim' is {ssim!r}, not an SSIM (-1 to 1)"
    if floor is not None and (not _number(floor) or floor > _MAX_PSNR_DB):
        return f"'extra_info.quality.min_psnr_db' is {floor!r}, not a PSNR in dB"
    return None


def _count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value: Any, positive: bool = False) -> TypeGuard[int | float]:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value > 0 if positive else value >= 0


def run_files(folder: Path) -> list[Path]:
    """Stored runs in a hardware folder, oldest first (pytest-benchmark's ``NNNN_`` numbering)."""
    try:
        files = [p for p in folder.iterdir() if RUN_FILE.match(p.name) and p.is_file()]
    except OSError:
        return []
    return sorted(files, key=lambda p: (run_name_parts(p.name) or (0, ""), p.name))


def read_folder(folder: Path) -> tuple[list[StoredRun], list[str]]:
    """Every usable stored run in ``folder``, oldest first, and one line per file skipped."""
    runs, problems = [], []
    for path in run_files(folder):
        try:
            runs.append(read(path))
        except StoredRunError as exc:
            problems.append(str(exc))
    return runs, problems


# -- writing --------------------------------------------------------------------------------------


def check_save_name(name: str) -> str | None:
    """Why ``--benchmark-save=name`` could not become a file name; None if it can."""
    longest = f"{'9' * 6}_{name}.json"
    if len(longest.encode()) > NAME_MAX:
        return (f"--benchmark-save: the name is {len(name.encode())} bytes; with its number a file name "
                f"may hold at most {NAME_MAX - 12} bytes of it")
    if name.startswith(".") or "\x00" in name:
        return "--benchmark-save: the name must not start with '.' or hold a NUL byte"
    return None


def check_writable_folder(folder: Path, what: str) -> str | None:
    """Why files could not be written into ``folder``; None if they can.

    Tried for real: the folder is made if missing and a file created and removed in it, since
    ``os.access`` says yes to root on a read-only or pseudo file system (``/proc``)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".", suffix=PARTIAL_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        return f"{what} {short_path(folder)}: a part of it is a file, not a folder"
    except OSError as exc:
        return f"{what} {short_path(folder)}: cannot write there ({exc.strerror or exc})"
    return None


def shown(path: str | os.PathLike[str]) -> str:
    """A path as the output and the stored verdicts show it: relative to where pytest runs, as
    pytest shows test paths, so that a report or a stored run read on another machine does not
    name this one's folders."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def short_path(path: object) -> str:
    """A path short enough for one line: a 300-character path is shown by its ends."""
    text = str(path)
    return text if len(text) <= 240 else f"{text[:100]}...{text[-100:]}"


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (no lock file to leave behind); none where flock is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: the hard link below still refuses to overwrite
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def next_number(folder: Path) -> int:
    numbers = [parts[0] for parts in map(run_name_parts, (p.name for p in run_files(folder))) if parts]
    return max(numbers, default=0) + 1


def save(folder: Path, name: str, payload: bytes) -> Path:
    """Write ``payload`` as the next ``NNNN_name.json`` in ``folder`` and return its path.

    Under a lock on the folder: stale ``.partial`` files of killed saves are removed, the next
    free number is taken, the bytes go to a temporary file that is flushed to disk and then
    hard-linked into place (``os.link`` fails if the name exists, unlike ``rename``). A save
    racing a process that does not take the lock retries with the next number.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        for stale in folder.glob(f".*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                stale.unlink()
        for _ in range(100):
            path = folder / f"{next_number(folder):04d}_{name}.json"
            try:
                write_new(path, payload)
                return path
            except FileExistsError:
                continue
    raise FileExistsError(f"{folder}: no free run number after 100 tries")


def write_new(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` or not at all; never replace an existing file.

    The file gets the permissions of any new file (the user's umask), not the 0600 of a
    temporary file, so a CI step running as another user can read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=PARTIAL_SUFFIX)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; the suite never overwrites a stored run") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            if path.exists():  # file systems without hard links: rename, after checking
                raise FileExistsError(f"{path} already exists; the suite never overwrites a stored run") from None
            os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
