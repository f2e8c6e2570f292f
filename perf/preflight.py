"""Every output a run will write, checked before the first stage is built.

A ladder takes minutes on a GPU; a storage folder that turns out read-only, a report path
that points at a stored baseline, or a save name too long for the file system must not be
found after it, when the run is lost. Each check here raises :class:`pytest.UsageError`
with one line (exit 4) before anything is measured.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from . import storage

#: pytest-benchmark's default storage; the suite keeps baselines in the repository instead.
DEFAULT_BENCHMARK_STORAGE = "file://./.benchmarks"


def storage_folder(uri: str, rootpath: Path) -> Path:
    """The folder ``--benchmark-storage`` names; refuses what the gate could not read back."""
    if uri == DEFAULT_BENCHMARK_STORAGE:
        return rootpath / "baselines"
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if uri.startswith("file://"):
        path = uri[len("file://"):]
        if not path:
            raise pytest.UsageError("--benchmark-storage: 'file://' names no folder; write file://PATH or a folder path")
        return Path(path).absolute()
    if scheme and len(scheme.group(1)) > 1:  # C:\\... is a Windows drive, not a scheme
        name = scheme.group(1)
        if name == "file":
            raise pytest.UsageError(f"--benchmark-storage: {uri!r} is neither file://PATH nor a folder path; "
                                    "write file://PATH (or the folder alone)")
        raise pytest.UsageError(
            f"--benchmark-storage: {name}:// storage is not supported by diffusers-perf, whose gate reads stored "
            "runs from files; use a folder (file://PATH), e.g. a checkout of the repository that keeps baselines/")
    return Path(uri).absolute()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output(option: str, path: Path, storage_root: Path | None) -> None:
    """A file the run will (over)write: a writable place, and never a stored run."""
    if path.is_dir():
        raise pytest.UsageError(f"{option}: {path} is a folder; give a file path")
    if storage_root is not None and _inside(path, storage_root) and path.exists():
        raise pytest.UsageError(
            f"{option}: {path} already exists inside the baseline storage {storage_root}; the suite never "
            "overwrites a stored file: write the output elsewhere")
    problem = storage.check_writable_folder(path.parent if str(path.parent) else Path("."), option)
    if problem:
        raise pytest.UsageError(problem)
    if path.exists() and not os.access(path, os.W_OK):
        raise pytest.UsageError(f"{option}: {path} is not writable")


def check_step_summary() -> None:
    """``$GITHUB_STEP_SUMMARY`` is appended to; its folder must exist (GitHub makes it)."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not summary:
        return
    path = Path(summary)
    if path.is_dir() or not path.parent.is_dir() or (path.exists() and not os.access(path, os.W_OK)) \
            or (not path.exists() and not os.access(path.parent, os.W_OK)):
        raise pytest.UsageError(f"GITHUB_STEP_SUMMARY={summary}: cannot append there (its folder is missing or "
                                "read-only); unset it or point it at a writable file")


def check_saving(folder: Path, save_name: str | None) -> None:
    """The hardware folder can take a new file, and the name fits the file system."""
    problem = storage.check_writable_folder(folder, "--benchmark-storage")
    if problem:
        raise pytest.UsageError(problem)
    if save_name:
        problem = storage.check_save_name(save_name)
        if problem:
            raise pytest.UsageError(problem)
