"""pytest hooks that wire the suite into pytest-benchmark.

What pytest-benchmark alone gets wrong for this suite, and where it is fixed here:

* baselines live in ``baselines/<hardware key>/`` instead of ``.benchmarks/<python version>/``,
  and each stage is compared with its own baseline by one stated rule (:mod:`perf.baselines`),
  chosen when the run starts, so saving while comparing never compares a run with itself
  (:func:`pytest_configure`);
* in compare mode green means compared: a selected stage that could not be judged fails, and
  the last line of the output says what was compared, derived with the exit status from
  pytest's own reports of each stage's test (:mod:`perf.outcome`, :func:`pytest_unconfigure`);
* every output the user asked for (report, JSON, step summary, save) that could not be
  written fails the run with one line naming it;
* ``--benchmark-compare-fail`` is judged beside the suite's own rule, one verdict per stage;
* every output is checked before the first stage is built (:mod:`perf.preflight`);
* ``machine_info`` holds only the hardware fields that matter, whichever way the plugin is
  loaded (:func:`pytest_benchmark_generate_machine_info`);
* saving takes the next free number under a lock, never overwrites, saves nothing from an
  interrupted or failing run, and writes a fallback file rather than lose a finished one
  (:func:`_save`);
* under pytest-xdist, one GPU per worker and one stored run, report and verdict from the
  controller (:mod:`perf.distribute`); on CPU, a clear refusal instead of silently disabled benchmarks.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import statistics
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import pytest

from . import (ab, baselines, charts, compile_cache, compile_workers, counters, distribute, gate, options, outcome,
               pipelines, preflight, progress, report, signals, stages, storage, worker)
from .ab import ABResult
from .results import StageExtra, StageResult
from .runner import Runner

PERF_DIR = Path(__file__).resolve().parent
RECORD_COMMAND = "pytest perf --benchmark-save=baseline"
#: The two kinds of stage test: the ladder's (perf/test_ladder.py) and A/B's (perf/test_ladder_ab.py).
LADDER, AB = "perf_stage", "perf_ab_stage"


@dataclasses.dataclass
class PerfSession:
    settings: options.Settings
    runner: Runner
    storage: Path
    key: str
    policy: gate.Policy
    plan: baselines.Plan | None
    context: list[str]
    saved: list[Path] = dataclasses.field(default_factory=list)
    verdicts: dict[str, gate.Verdict] = dataclasses.field(default_factory=dict)
    not_saved: str = ""
    save_error: str = ""
    save_short: str = ""  # the same, in a few words, for the final line
    ab: ab.Session | None = None  # --perf-reference-python: the A/B part of the run
    ab_verdicts: dict[str, gate.Verdict] = dataclasses.field(default_factory=dict)
    hardware: dict = dataclasses.field(default_factory=dict)  # this machine's, as the run started
    session_seconds: float | None = None  # the whole process's wall time, taken as the run ends
    cache_before: dict | None = None  # torch's compile-cache counters as the run began (CUDA, cache on)
    nodes: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # nodeid -> (LADDER or AB, stage)
    records: dict[tuple[str, str], outcome.Record] = dataclasses.field(default_factory=dict)  # pytest's reports
    interrupted: bool = False  # KeyboardInterrupt or pytest.exit()
    problems: list[str] = dataclasses.field(default_factory=list)  # outputs asked for and not written
    session: pytest.Session | None = None
    json_target: object = None  # --benchmark-json: written by the suite (_write_json), never by pytest-benchmark
    report_written: bool = False
    deselected: bool = False  # some stage's test was deselected (-k, -m)
    role: str = "serial"  # or, under pytest-xdist, "controller" / "worker" (perf.distribute)
    signals: signals.Guard = dataclasses.field(default_factory=signals.Guard)  # SIGTERM as Ctrl-C, the end held

    def judge(self, name: str, result: StageResult) -> gate.Verdict:
        """Record a stage's result and its verdict (called by the fixture as soon as the stage ends)."""
        self.runner.results[name] = result
        stage_plan = self.plan.stages.get(name) if self.plan else None
        verdict = self.verdicts[name] = gate.judge(name, result, stage_plan, self.policy)
        return verdict

    def judge_ab(self, name: str, result: ABResult) -> gate.Verdict:
        policy = dataclasses.replace(self.policy, compare=True)  # an A/B stage is always a comparison
        verdict = self.ab_verdicts[name] = gate.judge_ab(name, result, policy)
        return verdict

    def settled(self, kind: str = LADDER) -> list[gate.Verdict]:
        """The verdict of every selected stage of ``kind``, in ladder order, settled with what pytest
        reported of its test (:func:`perf.outcome.settle`): a stage the gate never judged is failed,
        interrupted, skipped or not run, as pytest saw it."""
        judged = self.verdicts if kind == LADDER else self.ab_verdicts
        selected = {stage for k, stage in self.nodes.values() if k == kind}
        return [outcome.settle(name, judged.get(name), self.records.get((kind, name)), self.interrupted, _verdict)
                for name in self.settings.stages if name in selected]


def _verdict(stage: str, status: outcome.Status, detail: str, failing: bool) -> gate.Verdict:
    return gate.Verdict(stage, status, detail, failing=failing, headline=f"{stage} {status}" if failing else "")


#: A path as the output shows it (relative to where pytest runs): the one the stored verdicts use.
shown = storage.shown


def _targets_perf(config: pytest.Config) -> bool:
    """Whether the command line reaches the ladder: by path, or by module name under --pyargs."""
    for arg in config.args or ["."]:
        target = arg.split("::")[0]
        paths = [Path(target)]
        if config.option.pyargs:
            paths += _module_paths(target)
        for path in paths:
            try:
                path = path.resolve()
            except (OSError, RuntimeError):
                continue
            if path == PERF_DIR or PERF_DIR in path.parents or path in PERF_DIR.parents:
                return True
    return False


def _module_paths(name: str) -> list[Path]:
    """Where ``--pyargs NAME`` points: the module's file or the package's folders."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return []
    if spec is None:
        return []
    paths = [Path(spec.origin)] if spec.origin else []
    return paths + [Path(p) for p in spec.submodule_search_locations or ()]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``pytest perf -n auto``: one worker per visible GPU (on CPU, xdist's count, which is refused)."""
    if not _targets_perf(config):
        return None
    return len(distribute.devices()) or None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        _configure(config)
    except OSError as exc:  # a path no check above foresaw: still one line, never an INTERNALERROR
        where = f" {storage.short_path(exc.filename)}" if exc.filename else ""
        raise pytest.UsageError(f"diffusers-perf:{where}: {exc.strerror or exc}") from None


def _register_added(config: pytest.Config) -> None:
    """Stages and pipelines from ``pytest_perf_stages`` / ``pytest_perf_pipelines`` (:mod:`perf.hooks`)."""
    try:
        for added in config.hook.pytest_perf_stages():
            stages.register(*added)
        for added in config.hook.pytest_perf_pipelines():
            pipelines.register(*added)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"diffusers-perf: {exc}") from None
    if config.getoption("perf_reference_python", None):
        try:
            selected = stages.parse(config.getoption("perf_stages", None))
        except ValueError:
            selected = []  # an unknown stage: the options say so, with the valid names
        added = [name for name in selected if name not in stages.BUILT_IN]
        pipeline = config.getoption("perf_pipeline", None)
        if pipeline and pipeline not in pipelines.BUILT_IN:
            added.append(f"pipeline {pipeline}")
        if added:
            raise pytest.UsageError(f"--perf-reference-python: A/B workers know the built-in stages and pipelines "
                                    f"only, not {', '.join(added)} (added by a hook); select built-in ones for A/B")


def quiet_compile_trace() -> None:
    """Keep ``torch.compile``'s structured trace out of pytest's captured logs.

    Why: its logger (``torch.__trace``) is always at DEBUG and reaches pytest's capture handlers,
    so a failing compiled stage printed about 2,400 empty ``DEBUG torch.__trace`` lines under
    "Captured log call" on the H200 (``reports/h200/loop/``). That trace is only written where
    ``TORCH_TRACE`` (or ``TORCH_COMPILE_DEBUG=1``) asks for it, and then it is left alone."""
    if not os.environ.get("TORCH_TRACE") and os.environ.get("TORCH_COMPILE_DEBUG", "0") != "1":
        logging.getLogger("torch.__trace").disabled = True


def _configure(config: pytest.Config) -> None:
    if not hasattr(config.option, "benchmark_storage"):
        raise pytest.UsageError("diffusers-perf needs pytest-benchmark: pip install pytest-benchmark")
    config._perf = None
    if not _targets_perf(config):
        return  # installed, but this run does not reach the ladder: judge, print and write nothing
    quiet_compile_trace()
    role = distribute.role(config)
    gpus: list[str] = []
    workers = 0
    if role == "controller":
        gpus = distribute.devices()
        problem = distribute.refusal(config, gpus, bool(config.getoption("perf_reference_python", None)))
        if problem:
            raise pytest.UsageError(f"diffusers-perf: {problem}")
        workers = distribute.worker_count(config, gpus)
    shared = distribute.from_controller(config) if role == "worker" else None
    _register_added(config)
    for option, value in (("--perf-model", config.getoption("perf_model", None)),
                          ("--perf-reference-python", config.getoption("perf_reference_python", None)),
                          ("--perf-compile-cache", config.getoption("perf_compile_cache", None))):
        if value:
            preflight.check_path(option, value)
    settings = options.settings_from(config)
    opt = config.option
    if role == "worker":  # the controller saves, writes and reports what every worker timed
        settings = dataclasses.replace(settings, report=None)
        opt.benchmark_save = opt.benchmark_autosave = opt.benchmark_json = None
    root = preflight.storage_folder(opt.benchmark_storage, config.rootpath)
    opt.benchmark_storage = f"file://{root}"
    opt.benchmark_save_data = True  # the gate's rank test needs the raw rounds
    if shared is not None:
        hardware = shared["hardware"]
    else:
        hardware = baselines.hardware_info()
        if role == "controller":
            hardware = distribute.hardware_of_run(hardware, workers)
    key = baselines.hardware_key(hardware)
    compare = opt.benchmark_compare
    saving = opt.benchmark_save or opt.benchmark_autosave
    _check_benchmark_options(config, settings, bool(compare), bool(saving))
    if saving:
        preflight.check_saving(root / key, opt.benchmark_save)
    if settings.report is not None:
        preflight.check_output("--perf-report", settings.report, root)
    if opt.benchmark_json:  # a path, or (pytest-benchmark before 5.3) a file argparse already opened
        json_path = opt.benchmark_json if isinstance(opt.benchmark_json, (str, os.PathLike)) else opt.benchmark_json.name
        preflight.check_output("--benchmark-json", Path(json_path), root)
    if role != "worker":
        preflight.check_step_summary(root)

    context: list[str] = []
    plan = None
    if compare:
        plan = _plan(config, settings, root, key, hardware, context)
        opt.benchmark_compare = str(plan.baselines()[-1].path) if plan.baselines() else []
    policy = gate.Policy(compare=bool(compare), allow_uncompared=settings.allow_uncompared,
                         host_drift=settings.host_drift, gpu_rounds=settings.budget.gpu_rounds,
                         compare_fail=tuple(opt.benchmark_compare_fail or ()))
    opt.benchmark_compare_fail = None  # judged by the gate, with the suite's rule: one verdict per stage
    config.hook.pytest_perf_plan(settings=settings, plan=plan)  # a plugin may refuse the run here
    session_ab = None
    if settings.reference_python is not None:
        problem = worker.check_python(settings.reference_python)
        if problem:
            raise pytest.UsageError(f"--perf-reference-python: {problem}")
        import torch

        session_ab = ab.Session(settings, worker.resolve(settings.reference_python),
                                fixed_layout=not torch.cuda.is_available())
    runner = Runner(settings, plan.stages if plan else None)
    runner.prepare = lambda run, pipe, name: config.hook.pytest_perf_prepare(pipe=pipe, stage=name, runner=run)
    runner.before_timing = lambda run, name: config.hook.pytest_perf_before_timing(stage=name, runner=run)
    runner.describe = lambda run, name: config.hook.pytest_perf_stage_extra(stage=name, runner=run)
    config._perf = PerfSession(settings=settings, runner=runner, storage=root, key=key, policy=policy, plan=plan,
                               context=context, ab=session_ab, hardware=hardware, role=role)
    signals.watch(config._perf.signals)
    if role == "controller":
        perf = config._perf
        config.pluginmanager.register(distribute.Controller(gpus, {"hardware": hardware, "key": key},
                                                            lambda ids: _collected_by_workers(perf, ids)),
                                      "diffusers-perf-distribute")
        context.append(f"pytest-xdist: {workers} worker{'s' * (workers > 1)}, one GPU each, "
                       f"of GPU{'s' * (len(gpus) > 1)} {', '.join(gpus)}")
    else:
        _load_compile_cache(config._perf)


def _compile_cache_folder(perf: PerfSession, root: Path) -> Path:
    """This GPU model's files in the compile cache under ``root`` (perf.compile_cache): the single-GPU
    key's, however many GPUs the host or the run has, since kernels depend on the model only."""
    model = baselines.hardware_key(baselines.single_gpu(perf.hardware))
    return compile_cache.folder(root, model)


def _load_compile_cache(perf: PerfSession) -> None:
    """Before anything compiles: the kernels earlier runs on this hardware stored (perf.compile_cache)."""
    root = perf.settings.compile_cache
    if root is None or perf.runner.device.type != "cuda":
        return
    perf.cache_before = counters.cache_state()
    where = _compile_cache_folder(perf, root)
    paths = compile_cache.files(where)
    problems = compile_cache.load(paths)
    perf.context.extend(problems)
    loaded = len(paths) - len(problems)
    if loaded:
        perf.context.append(f"compile cache: {loaded} file{'s' * (loaded > 1)} loaded from "
                            f"{shown(where)}")


def _save_compile_cache(perf: PerfSession) -> None:
    """A run that had to compile afresh adds what it compiled to the stored cache, unless a stage
    failed or a fault was injected (their graphs are not the ones later runs compile)."""
    root = perf.settings.compile_cache
    if (root is None or perf.cache_before is None or perf.settings.injecting
            or compile_cache.misses_since(perf.cache_before) <= 0):
        return
    if any(v.status == "failed" for v in perf.verdicts.values()):
        return
    try:
        path = compile_cache.save(_compile_cache_folder(perf, root))
    except Exception as exc:  # the cache only saves time: never fail a run over it
        perf.context.append(f"compile cache not written ({type(exc).__name__}: {exc})")
        return
    if path is not None:
        perf.context.append(f"compile cache written: {shown(path)} "
                            f"({path.stat().st_size / 2**20:.1f} MiB)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``perf/test_ladder_ab.py`` runs only when a reference is given (--perf-reference-python)."""
    perf: PerfSession | None = getattr(config, "_perf", None)
    if perf is not None and perf.ab is None and collection_path == PERF_DIR / "test_ladder_ab.py":
        return True
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Progress lines (:mod:`perf.progress`) once the selected stages are known (after -k)."""
    perf: PerfSession | None = getattr(session.config, "_perf", None)
    if perf is None:
        return
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for kind in (LADDER, AB):
            if kind in params and PERF_DIR in Path(str(item.path)).resolve().parents:
                perf.nodes[item.nodeid] = (kind, params[kind])
    if perf.nodes:
        perf.runner.progress = progress.Progress(progress.pytest_writer(session.config), total=len(perf.nodes))


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Stages deselected (-k, -m) are not the run's to judge, but a run that deselected every
    stage still owes its last line (in compare mode: nothing was compared)."""
    perf: PerfSession | None = _perf_of_current()
    if perf is not None and any(PERF_DIR in Path(str(item.path)).resolve().parents for item in items):
        perf.deselected = True


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    perf: PerfSession | None = _perf_of_current()
    if perf is not None and nodeid in perf.nodes:
        perf.records.setdefault(perf.nodes[nodeid], outcome.Record()).started = True


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """A stop that was swallowed during this test (:func:`perf.signals.raise_if_swallowed`) ends the run
    here, as it would have where it arrived."""
    perf: PerfSession | None = _perf_of_current()
    if perf is not None:
        named = perf.nodes.get(nodeid)
        signals.raise_if_swallowed(perf.signals, f"as {named[1] if named else nodeid}'s test ended")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """pytest's own account of each stage's test: what the last line is derived from. Under
    pytest-xdist the controller gets every worker's reports here, with each timed stage's entry."""
    perf: PerfSession | None = _perf_of_current()
    if perf is None or report.nodeid not in perf.nodes:
        return
    message = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longreprtext
    perf.records.setdefault(perf.nodes[report.nodeid], outcome.Record()).add(report.when, report.outcome, message)
    if perf.role == "controller":
        _merge(perf, report)
    if report.when == "teardown" and perf.role != "worker" and perf.session is not None:
        _write_json(perf.session.config, perf, checkpoint=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """In an xdist worker: the stage's stored entry and verdict ride on its test's report."""
    made = yield
    perf: PerfSession | None = getattr(item.config, "_perf", None)
    if perf is None or perf.role != "worker" or call.when != "call" or item.nodeid not in perf.nodes:
        return
    stage = perf.nodes[item.nodeid][1]
    entry = distribute.entry_of(item)
    verdict = perf.verdicts.get(stage)
    report = made.get_result()
    if entry is not None:
        report.user_properties.append((distribute.ENTRY, entry))
    if verdict is not None:
        report.user_properties.append((distribute.VERDICT, {
            "stage": stage, "status": str(verdict.status), "detail": verdict.detail, "failing": verdict.failing,
            "headline": verdict.headline, "baseline": verdict.baseline}))


def _merge(perf: PerfSession, report: pytest.TestReport) -> None:
    """A worker's stage into the controller's run: judged here by the same rule and baseline (so the
    report has every comparison), and added to pytest-benchmark's session, which saves and draws it."""
    stage = perf.nodes[report.nodeid][1]
    judged = distribute.verdict_of(report)
    for entry in distribute.entries(report):
        perf.judge(stage, StageResult(stage=stage, outcome="passed", rounds=list(entry["stats"]["data"]),
                                      extra=cast(StageExtra, entry.get("extra_info") or {})))
        bs = getattr(perf.session.config, "_benchmarksession", None) if perf.session else None
        if bs is not None:
            bs.benchmarks.append(distribute.metadata(entry))
    if judged is not None and stage not in perf.verdicts:  # not timed: skipped, not compared, failed
        perf.verdicts[stage] = gate.Verdict(stage, outcome.Status(judged["status"]), judged["detail"],
                                            failing=judged["failing"], headline=judged["headline"],
                                            baseline=judged["baseline"])
    if stage not in perf.runner.results and judged is not None and judged["status"] in ("failed", "skipped"):
        perf.runner.results[stage] = StageResult(stage, judged["status"], judged["detail"])


def _collected_by_workers(perf: PerfSession, ids: list[str]) -> None:
    """The controller collects nothing: it learns each stage's test from its workers' collections."""
    stages_found = [(nodeid, distribute.stage_of(nodeid, perf.settings.stages)) for nodeid in ids]
    for nodeid, stage in stages_found:
        if stage is not None:
            perf.nodes[nodeid] = (LADDER, stage)
    if not any(stage for _, stage in stages_found):
        perf.deselected = True  # every worker collects the same tests: -k/-m left no stage to any of them


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    perf: PerfSession | None = _perf_of_current()
    if perf is not None:
        perf.interrupted = True
        perf.signals.seen()
        signals.hold(perf.signals)  # the run ends now: what it measured is written before any other signal
        if isinstance(excinfo.value, signals.Stopped):
            perf.context.append(f"stopped by {excinfo.value}")


_CURRENT: list[PerfSession] = []  # the running session's PerfSession, for hooks that get no config


def _perf_of_current() -> PerfSession | None:
    return _CURRENT[-1] if _CURRENT else None


def _check_benchmark_options(config: pytest.Config, settings: options.Settings, compare: bool, saving: bool) -> None:
    opt = config.option
    if settings.injecting and saving:
        raise pytest.UsageError("--perf-inject-* break the pipeline on purpose: never record a baseline with them "
                                "(drop --benchmark-save/--benchmark-autosave)")
    if getattr(opt, "benchmark_disable", False) and compare:
        raise pytest.UsageError("--benchmark-disable times nothing, so there is nothing to compare: "
                                "drop --benchmark-compare (or --benchmark-disable)")
    if getattr(opt, "benchmark_disable", False) and saving:
        raise pytest.UsageError("--benchmark-disable times nothing, so there is nothing to save: "
                                "drop --benchmark-save/--benchmark-autosave (or --benchmark-disable)")
    if getattr(opt, "benchmark_histogram", None):
        try:
            import pygal  # noqa: F401
            import pygaljs  # noqa: F401
        except ImportError:
            raise pytest.UsageError("--benchmark-histogram needs pytest-benchmark's histogram extra: "
                                    "pip install 'pytest-benchmark[histogram]'") from None
    if opt.benchmark_compare_fail and not compare:
        raise pytest.UsageError("--benchmark-compare-fail judges a comparison: add --benchmark-compare")


def _plan(config: pytest.Config, settings: options.Settings, root: Path, key: str, hardware: dict,
          context: list[str]) -> baselines.Plan:
    """Read the stored runs of this hardware once, before anything runs, and apply the rule to each stage."""
    folder = root / key
    runs, problems = storage.read_folder(folder)
    alone = baselines.single_gpu(hardware)
    if not runs and not problems and distribute.role(config) != "serial" and baselines.hardware_key(alone) != key:
        # Nothing stored for this many GPUs yet: the same GPU alone is the nearest honest reference.
        hardware, key = alone, baselines.hardware_key(alone)
        folder = root / key
        runs, problems = storage.read_folder(folder)
        context.append(f"nothing stored yet for this many GPUs: each stage is compared with the single-GPU folder "
                       f"{shown(folder)}, whose runs had no other worker beside them on the host")
    context.extend(problems)
    chosen = None
    selector = config.option.benchmark_compare
    if isinstance(selector, str):
        preflight.check_path("--benchmark-compare", selector)
        chosen, problem = baselines.select(folder, selector, root)
        if chosen is None:
            raise pytest.UsageError(f"--benchmark-compare={selector}: {problem}")
    identities = _identities(settings, config.option.benchmark_timer)
    plan = baselines.plan(runs, folder, hardware, identities, chosen)
    _check_rounds(settings, plan)
    if not runs:
        context.append(f"no baseline for this hardware ({key}) in {shown(root)}: record one with `{RECORD_COMMAND}` "
                       "and commit it")
    software = baselines.software_info()
    for run in plan.baselines():
        compared = [name for name, p in plan.stages.items() if p.baseline is run]
        context.append(f"compared with {shown(run.path)} ({', '.join(compared)})")
        fields = tuple(dict.fromkeys(f for name in compared for f in baselines.software_fields(identities[name])))
        changed = baselines.software_changed(run.software, software, fields)
        if changed:
            context.append(f"software changed since {run.path.name}: {', '.join(changed)}")
    return plan


def _identities(settings: options.Settings, timer: object) -> dict[str, dict]:
    """What a stored entry of each selected stage must match to be compared (or charted) with this run."""
    return {name: baselines.identity(settings.describe(), dataclasses.asdict(settings.recipe(name)), timer)
            for name in settings.stages}


def _check_rounds(settings: options.Settings, plan: baselines.Plan) -> None:
    """Refuse rounds with which the rank test could never fail a stage against its baseline."""
    budget = settings.budget
    for name, stage_plan in plan.stages.items():
        if stage_plan.entry is None:
            continue
        saved = len(stage_plan.entry["stats"]["data"])
        source = stage_plan.baseline.path.name if stage_plan.baseline else "its baseline"
        if not gate.comparable(budget.min_rounds, saved):
            need = gate.fewest_rounds(saved)
            raise pytest.UsageError(
                f"--perf-min-rounds={budget.min_rounds}: against the {saved} rounds of {name} in "
                f"{source} the rank test cannot reach p <= {gate.ALPHA}; use at least {need}")
        gpu_saved = len(baselines.gpu_samples(stage_plan.entry))
        if budget.gpu_rounds and gpu_saved and not gate.comparable(budget.gpu_rounds, gpu_saved, gate.GPU_TIME_ALPHA):
            need = gate.fewest_rounds(gpu_saved, gate.GPU_TIME_ALPHA)
            raise pytest.UsageError(
                f"--perf-gpu-rounds={budget.gpu_rounds}: against the {gpu_saved} profiled rounds of {name} in "
                f"{source} the rank test cannot reach p <= {gate.GPU_TIME_ALPHA}; "
                f"use at least {need}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    perf: PerfSession | None = getattr(config, "_perf", None)
    if perf is None:
        return []
    s = perf.settings
    lines = [f"diffusers-perf: pipeline {s.label}, {s.size}x{s.size}, {s.steps} steps, batch {s.batch}, "
             f"device {perf.runner.device}" + (f" ({s.threads} thread{'s' * (s.threads > 1)})" if s.threads else "")
             + f", hardware key {perf.key}, stages {','.join(s.stages)}"]
    if set(stages.parse("all", s.family)) <= set(s.stages):  # a whole ladder: say what `all` left out
        lines += [f"diffusers-perf: opt-in stage {name} not selected ({stages.BY_NAME[name].opt_in}); "
                  f"run it with --perf-stages=all,{name}"
                  for name in stages.opted_out(s.family) if name not in s.stages]
    return lines


def pytest_sessionstart(session: pytest.Session) -> None:
    perf: PerfSession | None = getattr(session.config, "_perf", None)
    if perf is None:
        return
    perf.session = session
    _CURRENT.append(perf)
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is None:
        return
    bs.xdist_warning = False  # the suite runs under xdist only as perf.distribute arranges it
    if perf.role == "worker":
        distribute.enable_timing(bs)
    from pytest_benchmark.storage.file import FileStorage

    if isinstance(bs.storage, FileStorage):
        bs.machine_id = perf.key
        bs.storage.default_machine_id = perf.key
        bs.storage.save = lambda output_json, save: _save(perf, output_json, save)
    display = bs.display

    def display_or_say_why(terminalreporter: pytest.TerminalReporter) -> None:
        # pytest-benchmark's table reads the stored baseline too; whatever it trips on, the run
        # says so in one line and fails, instead of a traceback after the verdict.
        try:
            display(terminalreporter)
        except Exception as exc:
            perf.problems.append(f"pytest-benchmark's table could not be drawn ({type(exc).__name__}: {exc})")

    bs.display = display_or_say_why


def _save(perf: PerfSession, output_json: dict, save: str) -> None:
    """Save the run as the next numbered file; if that fails, never lose it: write a fallback file."""
    from pytest_benchmark.utils import safe_dumps

    payload = safe_dumps(output_json, ensure_ascii=True, indent=4).encode()
    folder = perf.storage / perf.key
    try:
        path = storage.save(folder, save, payload)
    except OSError as exc:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        fallback: Path | None = None
        for place in (Path.cwd(), Path(tempfile.gettempdir())):
            fallback = place / f"diffusers-perf-unsaved-{stamp}-{os.getpid()}.json"
            try:
                storage.write_new(fallback, payload)
                break
            except OSError:
                fallback = None
        perf.save_short = f"save failed, run kept in {fallback}" if fallback else "save failed, run lost"
        perf.save_error = (f"could not save the run in {folder} ({exc.strerror or exc}); "
                           + (f"it was written to {fallback} instead: move it into {folder} as NNNN_{save}.json"
                              if fallback else "no fallback file could be written either"))
        return
    perf.saved.append(path)


@pytest.hookimpl(hookwrapper=True, tryfirst=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_save_only_good_runs(session: pytest.Session,
                                            exitstatus: int) -> Generator[None, Any, None]:
    """Runs before pytest-benchmark saves: an interrupted or failing run must not become a baseline.
    From here to the last line, a signal to stop waits (:func:`perf.signals.hold`)."""
    bs = getattr(session.config, "_benchmarksession", None)
    perf: PerfSession | None = getattr(session.config, "_perf", None)
    if perf is None:
        yield
        return
    signals.hold(perf.signals)
    perf.session_seconds = progress.process_seconds()
    if bs is not None and (bs.save or bs.autosave):
        failing = [v.stage for v in perf.settled(LADDER) if v.failing and v.status != "not compared"]
        failing += [f"{v.stage} (A/B)" for v in perf.settled(AB) if v.failing]
        if perf.interrupted or session.exitstatus == pytest.ExitCode.INTERRUPTED:
            perf.not_saved = "interrupted: no baseline was saved"
        elif failing:
            perf.not_saved = (f"not saved: {', '.join(failing)} failed or regressed, and a failing run never becomes "
                              "a baseline; fix it, or record without --benchmark-compare to accept the change")
        elif not bs.benchmarks:
            perf.not_saved = "not saved: no stage was timed"
            perf.problems.append("--benchmark-save: nothing was timed, nothing saved")
        if perf.not_saved:
            bs.save = bs.autosave = None
            perf.save_short = "not saved"
    if bs is not None and bs.json:
        perf.json_target, bs.json = bs.json, None  # the suite writes it (_write_json), and says if it cannot
    yield


@pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_report(session: pytest.Session, exitstatus: int) -> None:
    perf: PerfSession | None = getattr(session.config, "_perf", None)
    if perf is None or session.config.option.collectonly:
        return
    _save_compile_cache(perf)
    if perf.role == "worker":
        return  # the controller writes every output
    if perf.role == "controller" and perf.plan is not None:
        line = distribute.host_parts(perf.runner.results, perf.plan.stages)
        if line:
            perf.context.append(line)
    costs = [result.extra["cost_seconds"] for result in perf.runner.results.values() if "cost_seconds" in result.extra]
    if costs and perf.session_seconds is not None:
        perf.context.append(progress.summarize(perf.session_seconds, costs))
    if perf.runner.reference_problem:
        perf.context.append(perf.runner.reference_problem)
    for path in perf.saved:
        perf.context.append(f"baseline recorded: {shown(path)}")
    for line in (perf.not_saved, perf.save_error):
        if line:
            perf.context.append(line)
    if perf.save_error:
        perf.problems.append(perf.save_short)
    _write_json(session.config, perf)
    verdicts, ab_verdicts = perf.settled(LADDER), perf.settled(AB)
    if not perf.runner.results and not any(v.compared or v.status == "measured" for v in verdicts) \
            and not perf.ab_verdicts:
        verdicts = [v for v in verdicts if v.status != outcome.Status.NOT_RUN] if perf.verdicts else []
    if not verdicts and not perf.ab_verdicts:
        return
    drawn = _charts(session.config, perf) if perf.runner.results else []
    text = report.markdown(_title(perf), verdicts, perf.runner.results, _not_selected(perf), perf.context,
                           stages.root(perf.settings.family)) if verdicts else ""
    if perf.ab_verdicts and perf.ab is not None:  # A/B verdicts come from a session's workers only
        text += ("\n" if text else "") + report.ab_markdown(ab_verdicts, perf.ab)
    if drawn:
        text += "\n" + charts.markdown(drawn)
    _write_report(text, drawn, perf)


def _write_report(text: str, drawn: list, perf: PerfSession) -> None:
    """--perf-report (with its charts) and GitHub's step summary: each one that fails fails the run."""
    path = perf.settings.report
    if path:
        try:
            report.write_file(text, path)
            if drawn:
                charts.write(drawn, charts.folder_for(path))
            perf.report_written = True
        except OSError as exc:
            perf.problems.append(f"--perf-report {shown(path)} not written ({_why(exc)})")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            report.append_summary(text, Path(summary))
        except OSError as exc:
            perf.problems.append(f"GITHUB_STEP_SUMMARY not written ({_why(exc)})")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _charts(config: pytest.Config, perf: PerfSession) -> list[charts.Chart]:
    """The ladder chart of this run, and each measured stage's trend over this hardware's stored runs."""
    results = perf.runner.results
    medians = {name: results[name].median for name in perf.settings.stages if name in results}
    measured = [(name, median, results[name].extra.get("gpu_median")) for name, median in medians.items() if median]
    drawn = [charts.ladder(measured, f"{perf.settings.label} on {perf.key}", stages.root(perf.settings.family))]
    parts = []
    for name in perf.settings.stages:
        timing = results[name].extra.get("step_timing") if name in results else None
        whole = medians.get(name)
        if timing and whole:
            median = {field: statistics.median(values) for field, values in timing.items()}
            denoising = whole - median["first"] - median["after"]
            parts.append((name, median["first"], max(denoising, 0.0), median["after"]))
    drawn.append(charts.components(parts, f"{perf.settings.label}: where each round's time goes"))
    gpu_parts = [(name, {part: statistics.median(values) for part, values in gate.gpu_components(
        results[name].extra).items()}) for name in perf.settings.stages if name in results]
    found = gate.component_order(part for _, parts in gpu_parts for part in parts)
    drawn.append(charts.gpu_components(gpu_parts, [(part, gate.component_name(part)) for part in found],
                                       f"{perf.settings.label}: GPU time per component"))
    if perf.plan is not None:  # compare mode read them before the run, so without this run's own file
        runs = perf.plan.runs
    else:
        saved_now = {path.resolve() for path in perf.saved}
        runs = [run for run in storage.read_folder(perf.storage / perf.key)[0] if run.path.resolve() not in saved_now]
    for name, ident in _identities(perf.settings, config.option.benchmark_timer).items():
        if name in results and results[name].median:
            points = [(run.path.stem.split("_", 1)[0], entry["stats"]["median"])
                      for run, entry in baselines.trend(runs, name, ident, perf.hardware)]
            drawn.append(charts.trend(name, points + [("this run", results[name].median)]))
    return [chart for chart in drawn if chart is not None]


def _not_selected(perf: PerfSession) -> list[str]:
    return perf.plan.not_selected(perf.settings.stages) if perf.plan else []


def _title(perf: PerfSession) -> str:
    s, device = perf.settings, perf.runner.device
    return (f"diffusers-perf: {s.label} {s.size}x{s.size}, {s.steps} steps, batch {s.batch} "
            f"on {perf.key} ({device}, Python {platform.python_version()})")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    perf: PerfSession | None = getattr(config, "_perf", None)
    if perf is None or config.option.collectonly or perf.role == "worker":
        return
    verdicts, ab_verdicts = perf.settled(LADDER), perf.settled(AB)
    if not verdicts and not ab_verdicts and not perf.problems:
        return
    terminalreporter.section("diffusers-perf", sep="-", bold=True)
    if verdicts:
        report.terminal(verdicts, perf.runner.results, _not_selected(perf), perf.context, terminalreporter.write_line,
                        stages.root(perf.settings.family))
    if ab_verdicts and perf.ab is not None:
        report.ab_terminal(ab_verdicts, perf.ab, terminalreporter.write_line)
    failing = [v for v in verdicts if v.failing and v.status != "failed"]
    failing += [dataclasses.replace(v, stage=f"{v.stage} (A/B)") for v in ab_verdicts
                if v.failing and v.status != "failed"]
    if failing or perf.problems:
        terminalreporter.write_line("")
    for verdict in failing:
        terminalreporter.write_line(f"{verdict.status.upper()} {verdict.stage}: {verdict.detail}", red=True, bold=True)
    for problem in perf.problems:
        terminalreporter.write_line(problem, red=True, bold=True)
    if perf.report_written and perf.settings.report is not None:
        terminalreporter.write_line(f"report: {shown(perf.settings.report)}")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The last line of the output and the exit status, derived together (:func:`perf.outcome.final`)."""
    perf: PerfSession | None = getattr(config, "_perf", None)
    if perf is None:
        return
    try:
        _final_line(config, perf)
    finally:
        perf.signals.restore()
        compile_workers.end_running_jobs()  # a stop inside a compile: torch 2.11 would wait for them


def _final_line(config: pytest.Config, perf: PerfSession) -> None:
    if perf in _CURRENT:
        _CURRENT.remove(perf)
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if perf.session is None or config.option.collectonly or perf.role == "worker" or not (
            perf.nodes or perf.deselected or perf.verdicts or perf.ab_verdicts):
        return
    run = outcome.Run(
        verdicts=perf.settled(LADDER), ab_verdicts=perf.settled(AB), compare=perf.policy.compare,
        allow_uncompared=perf.policy.allow_uncompared, exit_status=int(perf.session.exitstatus),
        interrupted=perf.interrupted, problems=perf.problems,
        baselines=[run.path.name for run in perf.plan.baselines()] if perf.plan else [],
        saved=perf.saved, save_note=perf.save_short, reference=perf.ab.pythons["reference"] if perf.ab else "")
    line, code, colour = outcome.final(run)
    perf.session.exitstatus = code
    if terminal is not None:
        terminal.ensure_newline()
        terminal.write_line(line, **{colour: True}, bold=True)


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_generate_machine_info(config: pytest.Config) -> dict | None:
    """Only what makes timings comparable; software versions go under ``diffusers_perf``.

    ``tryfirst``: this is a first-result hook, and pytest-benchmark's own implementation must
    not win when the plugin is loaded with ``-p`` (registered before pytest-benchmark).
    """
    if getattr(config, "_perf", None) is None:
        return None  # not the suite's run: pytest-benchmark's own machine_info
    info = dict(config._perf.hardware)  # as the run started; under -n, as many GPUs as workers
    info.update(system=platform.system(), python_implementation=platform.python_implementation())
    return info


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any], output_json: dict) -> None:
    perf: PerfSession | None = getattr(config, "_perf", None)
    if perf is None:
        return
    output_json["diffusers_perf"] = {
        "hardware_key": perf.key,
        "software": baselines.software_info(),
        "settings": perf.settings.describe(),
        "verdicts": {v.stage: {"status": str(v.status), "detail": v.detail, "baseline": v.baseline}
                     for v in perf.settled(LADDER)},
        "session_seconds": _session_seconds(perf),
    }
    faults = perf.settings.injected()
    if faults:  # never saved (refused up front), and never read back as a baseline (perf.storage.validate)
        output_json["diffusers_perf"]["injected"] = faults
    if perf.ab_verdicts and perf.ab is not None:
        output_json["diffusers_perf"]["ab"] = report.ab_json(perf.settled(AB), perf.ab)


def _session_seconds(perf: PerfSession) -> float:
    return round(perf.session_seconds if perf.session_seconds is not None else progress.process_seconds(), 1)


def _write_json(config: pytest.Config, perf: PerfSession, checkpoint: bool = False) -> None:
    """``--benchmark-json``, written by the suite: pytest-benchmark's document when stages were timed
    (or the A/B part alone), and one line that fails the run when it cannot be written.

    With ``checkpoint``, after each stage: the document so far, with ``"finished": false``, written
    quietly (the last write reports any problem). Why: pytest-benchmark writes the file only as the
    session ends, and a process that dies without ending it loses every stage it measured. On the
    H200 a ``timeout -s INT`` that reached Inductor's coordinate-descent tuning ended the process at
    once, with no KeyboardInterrupt, no verdict line and an empty JSON, and with it the two stages
    it had finished (``reports/h200/frontier-dec4/``)."""
    bs = getattr(config, "_benchmarksession", None)
    target: Any = perf.json_target or (getattr(bs, "json", None) if checkpoint else None)
    if not target:
        return
    import json

    # A stage interrupted while it was timed leaves pytest-benchmark an entry the suite never
    # described (no stage, no recipe): the JSON holds the stages that finished, so that it can be
    # judged again (python -m perf.compare) like any stored run.
    finished = [b for b in (bs.benchmarks if bs is not None else []) if (b.extra_info or {}).get("stage")]
    if finished and bs is not None:
        from pytest_benchmark.utils import safe_dumps

        commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
        config.hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
        document = config.hook.pytest_benchmark_generate_json(
            config=config, benchmarks=finished, include_data=True, machine_info=bs.get_machine_info(),
            commit_info=commit_info)
        config.hook.pytest_benchmark_update_json(config=config, benchmarks=finished, output_json=document)
        document["diffusers_perf"]["finished"] = not checkpoint
        text = safe_dumps(document, ensure_ascii=True, indent=4)
    elif perf.ab_verdicts and perf.ab is not None:
        text = json.dumps({"diffusers_perf": {"hardware_key": perf.key, "settings": perf.settings.describe(),
                                              "session_seconds": _session_seconds(perf), "finished": not checkpoint,
                                              "ab": report.ab_json(perf.settled(AB), perf.ab)}}, indent=2)
    elif checkpoint:
        return
    else:
        perf.problems.append("--benchmark-json not written (nothing was timed)")
        return
    name = target.name if hasattr(target, "write") else target
    real = Path(os.path.realpath(name))
    if checkpoint and real.exists() and not real.is_file():
        return  # a device or a pipe (/dev/stdout): written once, as the session ends
    try:
        if hasattr(target, "write"):  # pytest-benchmark before 5.3 hands an open file
            if target.seekable() and target.tell() > 0:  # over the last checkpoint
                target.seek(0)
                target.truncate()
            target.write(text.encode() if "b" in getattr(target, "mode", "") else text)
            target.flush()
        elif checkpoint:  # replaced whole: a process killed while writing leaves the last document
            partial = real.with_name(real.name + ".partial")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, real)
        else:
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text)
    except OSError as exc:
        if not checkpoint:
            perf.problems.append(f"--benchmark-json {shown(Path(name))} not written ({_why(exc)})")
        return
    if not checkpoint:
        perf.context.append(f"JSON written: {shown(Path(name))}")
