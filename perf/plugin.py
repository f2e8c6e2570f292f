"""pytest hooks that wire the suite into pytest-benchmark.

What pytest-benchmark alone gets wrong for this suite, and where it is fixed here:

* baselines live in ``baselines/<hardware key>/`` instead of ``.benchmarks/<python version>/``
  (:func:`pytest_configure`, :func:`pytest_sessionstart`);
* ``--benchmark-compare`` with no baseline yet, or a broken one, reports and carries on
  instead of aborting (:func:`pytest_configure`);
* ``machine_info`` holds only the hardware fields that matter, so containers with new host
  names do not warn on every run (:func:`pytest_benchmark_generate_machine_info`);
* saving is atomic, never overwrites, and an interrupted run saves nothing
  (:func:`pytest_sessionstart`, :func:`pytest_sessionfinish`);
* raw rounds are always saved, so the gate can run a rank test against them;
* per-stage thresholds, new and missing stages named, a verdict table at the end
  (:mod:`perf.gate`, :mod:`perf.report`);
* a clear refusal under pytest-xdist instead of silently disabled benchmarks.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from pathlib import Path

import pytest

from . import baselines, gate, options, report
from .runner import Runner

PERF_DIR = Path(__file__).resolve().parent
DEFAULT_BENCHMARK_STORAGE = "file://./.benchmarks"
RECORD_COMMAND = "pytest perf --benchmark-save=baseline"


@dataclasses.dataclass
class PerfSession:
    settings: options.Settings
    runner: Runner
    storage: Path | None
    key: str
    compare_requested: bool
    context: list[str]
    saved: list[Path] = dataclasses.field(default_factory=list)
    verdicts: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)


def _xdist_active(config: pytest.Config) -> bool:
    return (config.getoption("dist", "no") not in (None, "no")
            or bool(config.getoption("numprocesses", None))
            or bool(os.environ.get("PYTEST_XDIST_WORKER")))


def _targets_perf(config: pytest.Config) -> bool:
    for arg in config.args or ["."]:
        path = Path(arg.split("::")[0]).resolve()
        if path == PERF_DIR or PERF_DIR in path.parents or path in PERF_DIR.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config.option, "benchmark_storage"):
        raise pytest.UsageError("diffusers-perf needs pytest-benchmark: pip install pytest-benchmark")
    if _xdist_active(config) and _targets_perf(config):
        raise pytest.UsageError(
            "diffusers-perf: benchmarks cannot run under pytest-xdist (-n/--dist): parallel workers share "
            "the device and make every timing wrong; run `pytest perf` without -n (the tests may use -n)"
        )
    settings = options.settings_from(config)
    context: list[str] = []

    if config.option.benchmark_storage == DEFAULT_BENCHMARK_STORAGE:
        config.option.benchmark_storage = f"file://{config.rootpath / 'baselines'}"
    storage_uri = config.option.benchmark_storage
    storage = Path(storage_uri[len("file://"):] if storage_uri.startswith("file://") else storage_uri) \
        if "://" not in storage_uri or storage_uri.startswith("file://") else None
    config.option.benchmark_save_data = True  # the gate's rank test needs the raw rounds

    hardware = baselines.hardware_info()
    key = baselines.hardware_key(hardware)
    compare = config.option.benchmark_compare
    baseline = None
    if compare and storage is not None:
        baseline, problems = baselines.find(storage, key, compare)
        context.extend(problems)
        if baseline is not None:
            differences = baselines.hardware_differences(baseline.hardware, hardware)
            if differences:
                context.append(f"baseline {baseline.path} is from other hardware ({'; '.join(differences)}): "
                               f"not compared; record one here with `{RECORD_COMMAND}`")
                baseline = None
        if baseline is not None:
            config.option.benchmark_compare = str(baseline.path)  # validated: pytest-benchmark loads this one
        else:
            context.append(f"no usable baseline for this hardware in {storage / key}; the run reports without a "
                           f"gate; record one with `{RECORD_COMMAND}`")
            config.option.benchmark_compare = []
            if config.option.benchmark_compare_fail:
                config.option.benchmark_compare_fail = None  # it would abort with a UsageError
    saving = config.option.benchmark_save or config.option.benchmark_autosave
    if (settings.inject_nan or settings.inject_slowdown) and saving:
        raise pytest.UsageError("--perf-inject-* break the pipeline on purpose: never record a baseline with them "
                                "(drop --benchmark-save/--benchmark-autosave)")
    if settings.inject_slowdown and baseline is None:
        raise pytest.UsageError("--perf-inject-slowdown sizes the injected work from a baseline, and none was found "
                                f"for this hardware; record one first with `{RECORD_COMMAND}`")
    if baseline is not None:
        software = baselines.software_info()
        changed = {k: (v, software.get(k)) for k, v in baseline.software.items() if software.get(k) != v}
        if changed:
            context.append("software changed since the baseline: " +
                           ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
        context.insert(0, f"compared with {baseline.path}")

    config._perf = PerfSession(
        settings=settings,
        runner=Runner(settings, baseline),
        storage=storage,
        key=key,
        compare_requested=bool(compare),
        context=context,
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    perf: PerfSession = config._perf
    s = perf.settings
    return [f"diffusers-perf: pipeline {s.label}, {s.size}x{s.size}, {s.steps} steps, batch {s.batch}, "
            f"device {perf.runner.device}, hardware key {perf.key}, stages {','.join(s.stages)}"]


def pytest_sessionstart(session: pytest.Session) -> None:
    perf: PerfSession = session.config._perf
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is None or perf.storage is None:
        return
    from pytest_benchmark.storage.file import FileStorage

    if isinstance(bs.storage, FileStorage):
        bs.machine_id = perf.key
        bs.storage.default_machine_id = perf.key
        bs.storage.save = functools.partial(_save_atomic, bs.storage, perf)


def _save_atomic(storage, perf: PerfSession, output_json: dict, save: str) -> None:
    from pytest_benchmark.utils import safe_dumps

    path = storage.get(f"{storage._next_num}_{save}.json")
    baselines.write_atomic(path, safe_dumps(output_json, ensure_ascii=True, indent=4).encode())
    perf.saved.append(path)
    storage.logger.info(f"Saved benchmark data in: {path}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_no_partial_baseline(session: pytest.Session, exitstatus):
    """Runs before pytest-benchmark saves: an interrupted run must not leave a partial baseline."""
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None and session.exitstatus == pytest.ExitCode.INTERRUPTED and (bs.save or bs.autosave):
        bs.save = bs.autosave = None
        session.config._perf.context.append("interrupted: no baseline was saved")
    yield


@pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_gate_and_report(session: pytest.Session, exitstatus) -> None:
    perf: PerfSession = session.config._perf
    if not perf.runner.results:
        return
    history = baselines.history(perf.storage, perf.key, perf.settings.describe()) \
        if perf.runner.baseline is not None and perf.storage is not None else {}
    perf.verdicts, perf.missing = gate.evaluate(
        perf.runner.results, perf.settings.stages, perf.runner.baseline,
        history, host_drift=perf.settings.host_drift,
    )
    for path in perf.saved:
        perf.context.append(f"baseline recorded: {path}")
    text = report.markdown(_title(perf), perf.verdicts, perf.runner.results, perf.missing, perf.context)
    report.write(text, perf.settings.report)
    if any(v.failing for v in perf.verdicts) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _title(perf: PerfSession) -> str:
    s, device = perf.settings, perf.runner.device
    return (f"diffusers-perf: {s.label} {s.size}x{s.size}, {s.steps} steps, batch {s.batch} "
            f"on {perf.key} ({device}, Python {platform.python_version()})")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    perf: PerfSession = config._perf
    if not perf.verdicts:
        return
    terminalreporter.section("diffusers-perf", sep="-", bold=True)
    terminal_line = terminalreporter.write_line
    report.terminal(perf.verdicts, perf.runner.results, perf.missing, perf.context, terminal_line)
    failing = [v for v in perf.verdicts if v.failing]
    if failing:
        terminalreporter.write_line("")
        for verdict in failing:
            terminalreporter.write_line(f"REGRESSION {verdict.stage}: {verdict.detail}", red=True, bold=True)
    if perf.settings.report:
        terminalreporter.write_line(f"report: {perf.settings.report}")


def pytest_benchmark_generate_machine_info(config: pytest.Config) -> dict:
    """Only what makes timings comparable; software versions go under ``diffusers_perf``."""
    info = baselines.hardware_info()
    info.update(system=platform.system(), python_implementation=platform.python_implementation())
    return info


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    perf: PerfSession = config._perf
    output_json["diffusers_perf"] = {
        "hardware_key": perf.key,
        "software": baselines.software_info(),
        "settings": perf.settings.describe(),
    }
