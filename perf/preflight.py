"""Every path a run reads or writes, checked before the first stage is built.

A ladder takes minutes on a GPU; a storage folder that turns out read-only, a report path
that points at a stored baseline, or a save name too long for the file system must not be
found after it, when the run is lost. Each check here raises :class:`pytest.UsageError`
with one line (exit 4) before anything is measured, whatever the OS says of the path
(``ENAMETOOLONG``, ``ELOOP``, ``EACCES``, a read-only or pseudo file system such as ``/proc``):
folders are tried by creating a file in them, not by ``os.access`` alone.

Nothing under the baseline storage is written by anything but the suite's save: a report,
a JSON or a step summary aimed inside it is refused, so that no file the gate reads back as
a baseline was written by a run that was not a clean recording.
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
        check_path("--benchmark-storage", path)
        return Path(path).absolute()
    if scheme and len(scheme.group(1)) > 1:  # C:\\... is a Windows drive, not a scheme
        name = scheme.group(1)
        if name == "file":
            raise pytest.UsageError(f"--benchmark-storage: {uri!r} is neither file://PATH nor a folder path; "
                                    "write file://PATH (or the folder alone)")
        raise pytest.UsageError(
            f"--benchmark-storage: {name}:// storage is not supported by diffusers-perf, whose gate reads stored "
            "runs from files; use a folder (file://PATH), e.g. a checkout of the repository that keeps baselines/")
    check_path("--benchmark-storage", uri)
    return Path(uri).absolute()


def check_path(option: str, path: str | os.PathLike[str]) -> None:
    """Whatever the OS says of a path the user gave (too long, a loop, no permission), as one line.

    A missing path is no problem here: whether it must exist is the caller's to say."""
    try:
        os.stat(path)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise pytest.UsageError(f"{option}: {storage.short_path(path)}: a part of it is a file, not a folder") from None
    except OSError as exc:
        raise pytest.UsageError(f"{option}: {storage.short_path(path)}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL byte
        raise pytest.UsageError(f"{option}: {storage.short_path(path)!r}: {exc}") from None


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output(option: str, path: Path, storage_root: Path | None) -> None:
    """A file the run will (over)write: a writable place, and never inside the baseline storage."""
    check_path(option, path)
    if path.is_dir():
        raise pytest.UsageError(f"{option}: {storage.short_path(path)} is a folder; give a file path")
    if storage_root is not None and _inside(path, storage_root):
        raise pytest.UsageError(
            f"{option}: {storage.short_path(path)} is inside the baseline storage {storage.short_path(storage_root)}, where only "
            "--benchmark-save writes: write the output elsewhere")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise pytest.UsageError(f"{option}: {storage.short_path(path)} is not writable")
        return
    problem = storage.check_writable_folder(path.parent if str(path.parent) else Path("."), option)
    if problem:
        raise pytest.UsageError(problem)


def check_step_summary(storage_root: Path | None = None) -> None:
    """``$GITHUB_STEP_SUMMARY`` is appended to; its folder must exist (GitHub makes it)."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not summary:
        return
    check_path("GITHUB_STEP_SUMMARY", summary)
    path = Path(summary)
    if storage_root is not None and _inside(path, storage_root):
        raise pytest.UsageError(f"GITHUB_STEP_SUMMARY={storage.short_path(summary)} is inside the baseline storage "
                                f"{storage.short_path(storage_root)}, where only --benchmark-save writes")
    if path.is_dir() or not path.parent.is_dir() or (path.exists() and not os.access(path, os.W_OK)) \
            or (not path.exists() and storage.check_writable_folder(path.parent, "GITHUB_STEP_SUMMARY")):
        raise pytest.UsageError(f"GITHUB_STEP_SUMMARY={storage.short_path(summary)}: cannot append there (its folder is "
                                "missing or read-only); unset it or point it at a writable file")


def check_saving(folder: Path, save_name: str | None) -> None:
    """The hardware folder can take a new file, and the name fits the file system."""
    check_path("--benchmark-storage", folder)
    problem = storage.check_writable_folder(folder, "--benchmark-storage")
    if problem:
        raise pytest.UsageError(problem)
    if save_name:
        problem = storage.check_save_name(save_name)
        if problem:
            raise pytest.UsageError(problem)
