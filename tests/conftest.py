"""Tests of the suite itself, on CPU, with the ``tiny`` pipeline shrunk further for speed."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "perf"
FAST = ("--perf-steps=2", "--perf-size=32", "--perf-max-time=3",
        "--perf-max-rounds=8", "--perf-no-flops", "-p", "no:cacheprovider", "-W", "ignore")


class Suite:
    """Runs ``pytest perf`` in a subprocess against a temporary storage.

    In-process runs would be faster, but pytester restores ``sys.modules`` after each run and
    torch's operator registrations do not survive being imported twice.
    """

    def __init__(self, pytester: pytest.Pytester):
        self.pytester = pytester
        self.storage = pytester.path / "baselines"

    def run(self, *args: str, plugins: dict[str, str] | None = None, storage: bool = True) -> pytest.RunResult:
        """``plugins`` maps module names to their source, loaded with ``-p`` (fault injection)."""
        extra = (f"--benchmark-storage=file://{self.storage}",) if storage and not any(
            arg.startswith("--benchmark-storage") for arg in args) else ()
        if not any(arg.startswith("--perf-model") for arg in args):
            extra += ("--perf-pipeline=tiny",)
        for name, source in (plugins or {}).items():
            self.pytester.makepyfile(**{name: source})
            extra += ("-p", name)
        return self.pytester.runpytest_subprocess(str(PERF), *FAST, *extra, *args, timeout=600)

    def saved(self) -> list[Path]:
        return sorted(self.storage.rglob("*.json"))

    def key_folder(self) -> Path:
        [folder] = [p for p in self.storage.iterdir() if p.is_dir()]
        return folder

    @staticmethod
    def last_line(result: pytest.RunResult) -> str:
        """The suite's final line: the last of the output."""
        return [line for line in result.outlines if line.strip()][-1]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Suite:
    return Suite(pytester)
