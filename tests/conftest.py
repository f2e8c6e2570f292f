"""Tests of the suite itself, on CPU, with the ``tiny`` pipeline shrunk further for speed."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from pathlib import Path

import forked
import pytest

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "perf"
FAST = ("--perf-steps=2", "--perf-max-time=3", "--perf-max-rounds=8", "--perf-no-flops",
        "-p", "no:cacheprovider", "-W", "ignore")
#: The counting round (Python calls under ``sys.setprofile``) costs about 2 s a stage on the 2-core
#: machine: only the tests of the counters and of A/B's side-by-side counts keep it.
NO_COUNTERS = ("--perf-no-counters",)
#: Every pipeline runs at 32 px unless a test asks for more: at 32 px a ``tiny`` round is about
#: 0.1 s, mostly Python overhead, and unchanged runs on the 2-core machine moved 1.3-1.6x between
#: runs (``reports/cpu/threads/``). A test whose verdict needs an unchanged timing comparison to
#: pass passes :data:`TIMED`: 64 px, the size the CPU floor of the wall gate was measured at
#: (``perf/gate.py``, ``DEVICE_MIN_EFFECT``), where runs moved 1.1x.
TIMED = "--perf-size=64"

#: Every generation four times as slow, whatever the size and the machine: the image is made four
#: times. Not twice: in a clean-clone CI run (Dec 3) the 2-core machine made fp32's image 1.6x faster
#: in the faulted run than in the recordings minutes before it, and an image made twice measured
#: +24 % against a 66 % threshold. Four times is +150 % after such a drift.
SLOWER = """
from perf import runner

_generate = runner.Runner.generate


def _slower(self, pipe, steps):
    for _ in range(3):
        _generate(self, pipe, steps)
    return _generate(self, pipe, steps)


runner.Runner.generate = _slower
"""


class Suite:
    """Runs ``pytest perf`` in a process of its own against a temporary storage.

    Not in-process: pytester restores ``sys.modules`` after each run, and torch's operator
    registrations do not survive being imported twice. Each run is forked from a process that
    has imported torch and Diffusers already (:mod:`forked`), which saves about 7 s a run.
    """

    TIMED = TIMED
    SLOWER = SLOWER

    def __init__(self, pytester: pytest.Pytester):
        self.pytester = pytester
        self.storage = pytester.path / "baselines"

    def run(self, *args: str, plugins: dict[str, str] | None = None, storage: bool = True,
            counters: bool = False) -> pytest.RunResult:
        """``plugins`` maps module names to their source, loaded with ``-p`` (fault injection);
        ``counters`` keeps the host-work counting round."""
        return forked.runpytest(self.pytester, self.arguments(*args, plugins=plugins, storage=storage,
                                                             counters=counters), timeout=600)

    def arguments(self, *args: str, plugins: dict[str, str] | None = None, storage: bool = True,
                  counters: bool = False) -> list[str]:
        """The command line of :meth:`run`, after ``pytest``."""
        extra = (f"--benchmark-storage=file://{self.storage}",) if storage and not any(
            arg.startswith("--benchmark-storage") for arg in args) else ()
        if not any(arg.startswith("--perf-model") for arg in args):
            extra += ("--perf-pipeline=tiny",)
        if not any(arg.startswith("--perf-size") for arg in args):
            extra += ("--perf-size=32",)
        if any(arg.startswith("--perf-inject") for arg in args):
            extra += ("-p", "perf.inject")  # fault injection is a plugin of its own, opt-in
        for name, source in (plugins or {}).items():
            self.pytester.makepyfile(**{name: source})
            extra += ("-p", name)
        return [str(PERF), *FAST, *(() if counters else NO_COUNTERS), *extra, *args]

    def saved(self) -> list[Path]:
        return sorted(self.storage.rglob("*.json"))

    def key_folder(self) -> Path:
        [folder] = [p for p in self.storage.iterdir() if p.is_dir()]
        return folder

    @staticmethod
    def last_line(result: pytest.RunResult) -> str:
        """The suite's final line: the last of the output."""
        return [line for line in result.outlines if line.strip()][-1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "alone: under `pytest tests -n`, runs while no other test runs (A/B's paired "
                                       "ratios: a test on the other core skewed an A/A by 36 % on the 2-core machine)")
    config.addinivalue_line("markers", "slow: takes 25 s or more on the 2-core machine (whole suite runs, compiles, "
                                       "A/B workers); runs first, and `-m 'not slow'` leaves it out")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, the ``alone`` ones first of all: under ``-n auto --dist worksteal`` each
    worker starts on its share of the list and the idle one steals from the end of the other's, so
    long tests at the end would leave one core idle while the other finishes them."""
    items.sort(key=lambda item: (item.get_closest_marker("alone") is None, item.get_closest_marker("slow") is None))


@contextlib.contextmanager
def _flock(path: Path, mode: int):
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _alone_when_marked(request: pytest.FixtureRequest):
    """A readers-writer lock between xdist workers: every test holds it shared, an ``alone`` test
    exclusively. The turnstile makes a waiting ``alone`` test stop new tests from starting, so
    it is not starved by the other worker's stream of shared holds."""
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None:
        yield
        return
    stem = Path(tempfile.gettempdir()) / f"diffusers-perf-tests-{workerinput['testrunuid']}"
    alone = request.node.get_closest_marker("alone") is not None
    with contextlib.ExitStack() as held:
        with _flock(stem.with_suffix(".turnstile"), fcntl.LOCK_EX):
            held.enter_context(_flock(stem.with_suffix(".lock"), fcntl.LOCK_EX if alone else fcntl.LOCK_SH))
        yield


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``pytest tests -n``, each ``pytest perf`` a test starts is a fresh pytest, not an xdist
    worker: it must not inherit the worker's environment, or the suite refuses to run under xdist."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Suite:
    return Suite(pytester)
