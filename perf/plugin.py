"""pytest hooks that wire the suite into pytest-benchmark.

What pytest-benchmark alone gets wrong for this suite, and where it is fixed here:

* baselines live in ``baselines/<hardware key>/`` instead of ``.benchmarks/<python version>/``,
  and each stage is compared with its own baseline by one stated rule (:mod:`perf.baselines`),
  chosen when the run starts, so saving while comparing never compares a run with itself
  (:func:`pytest_configure`);
* in compare mode green means compared: a selected stage that could not be judged fails, and
  the last line of the output says what was compared (:func:`pytest_unconfigure`);
* ``--benchmark-compare-fail`` is judged beside the suite's own rule, one verdict per stage;
* every output is checked before the first stage is built (:mod:`perf.preflight`);
* ``machine_info`` holds only the hardware fields that matter, whichever way the plugin is
  loaded (:func:`pytest_benchmark_generate_machine_info`);
* saving takes the next free number under a lock, never overwrites, saves nothing from an
  interrupted or failing run, and writes a fallback file rather than lose a finished one
  (:func:`_save`);
* a clear refusal under pytest-xdist instead of silently disabled benchmarks.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import tempfile
from pathlib import Path

import pytest

from . import (ab, baselines, charts, compile_cache, counters, gate, options, preflight, progress, report, stages,
               storage, worker)
from .runner import Runner, StageResult

PERF_DIR = Path(__file__).resolve().parent
RECORD_COMMAND = "pytest perf --benchmark-save=baseline"


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

    def judge(self, name: str, result: StageResult) -> gate.Verdict:
        """Record a stage's result and its verdict (called by the fixture as soon as the stage ends)."""
        self.runner.results[name] = result
        stage_plan = self.plan.stages.get(name) if self.plan else None
        verdict = self.verdicts[name] = gate.judge(name, result, stage_plan, self.policy)
        return verdict

    def judge_ab(self, name: str, result: ab.ABResult) -> gate.Verdict:
        policy = dataclasses.replace(self.policy, compare=True)  # an A/B stage is always a comparison
        verdict = self.ab_verdicts[name] = gate.judge_ab(name, result, policy)
        return verdict

    def ordered_ab_verdicts(self) -> list[gate.Verdict]:
        return [self.ab_verdicts[name] for name in self.settings.stages if name in self.ab_verdicts]

    def ordered_verdicts(self) -> list[gate.Verdict]:
        # A stage with no verdict was deselected (-k) or the run stopped before it (-x): not run,
        # which fails nothing by itself (--perf-stages is how a run selects its stages).
        return [self.verdicts.get(name) or gate.Verdict(name, "skipped", "not run") for name in self.settings.stages]


def shown(path: Path) -> str:
    """A path as the output shows it: relative to where pytest runs, as pytest shows test paths,
    so that a report read on another machine does not name this one's folders."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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
    opt = config.option
    root = preflight.storage_folder(opt.benchmark_storage, config.rootpath)
    opt.benchmark_storage = f"file://{root}"
    opt.benchmark_save_data = True  # the gate's rank test needs the raw rounds
    hardware = baselines.hardware_info()
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
    preflight.check_step_summary()

    context: list[str] = []
    plan = None
    if compare:
        plan = _plan(config, settings, root, key, hardware, context)
        opt.benchmark_compare = str(plan.baselines()[-1].path) if plan.baselines() else []
    policy = gate.Policy(compare=bool(compare), allow_uncompared=settings.allow_uncompared,
                         host_drift=settings.host_drift, gpu_rounds=settings.budget.gpu_rounds,
                         compare_fail=tuple(opt.benchmark_compare_fail or ()))
    opt.benchmark_compare_fail = None  # judged by the gate, with the suite's rule: one verdict per stage
    if (settings.inject_slowdown or settings.inject_host_work) and (plan is None or not plan.baselines()):
        raise pytest.UsageError("--perf-inject-slowdown and --perf-inject-host-work size the injected work from a "
                                f"baseline, and none was found for this hardware; record one first with `{RECORD_COMMAND}`")
    session_ab = None
    if settings.reference_python is not None:
        problem = worker.check_python(settings.reference_python)
        if problem:
            raise pytest.UsageError(f"--perf-reference-python: {problem}")
        session_ab = ab.Session(settings, worker.resolve(settings.reference_python))
    config._perf = PerfSession(settings=settings, runner=Runner(settings, plan.stages if plan else None),
                               storage=root, key=key, policy=policy, plan=plan, context=context, ab=session_ab,
                               hardware=hardware)
    _load_compile_cache(config._perf)


def _load_compile_cache(perf: PerfSession) -> None:
    """Before anything compiles: the kernels earlier runs on this hardware stored (perf.compile_cache)."""
    if not perf.settings.compile_cache or perf.runner.device.type != "cuda":
        return
    perf.cache_before = counters.cache_state()
    paths = compile_cache.files(perf.storage / perf.key)
    problems = compile_cache.load(paths)
    perf.context.extend(problems)
    loaded = len(paths) - len(problems)
    if loaded:
        perf.context.append(f"compile cache: {loaded} file{'s' * (loaded > 1)} loaded from "
                            f"{shown(compile_cache.folder(perf.storage / perf.key))}")


def _save_compile_cache(perf: PerfSession) -> None:
    """A run that had to compile afresh adds what it compiled to the stored cache, unless a stage
    failed or a fault was injected (their graphs are not the ones later runs compile)."""
    if perf.cache_before is None or perf.settings.injecting or compile_cache.misses_since(perf.cache_before) <= 0:
        return
    if any(v.status == "failed" for v in perf.verdicts.values()):
        return
    try:
        path = compile_cache.save(perf.storage / perf.key)
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
    ladder = [item for item in session.items if PERF_DIR in Path(str(item.path)).resolve().parents]
    if ladder:
        perf.runner.progress = progress.Progress(progress.pytest_writer(session.config), total=len(ladder))


def _check_benchmark_options(config: pytest.Config, settings: options.Settings, compare: bool, saving: bool) -> None:
    opt = config.option
    if settings.injecting and saving:
        raise pytest.UsageError("--perf-inject-* break the pipeline on purpose: never record a baseline with them "
                                "(drop --benchmark-save/--benchmark-autosave)")
    if getattr(opt, "benchmark_disable", False) and compare:
        raise pytest.UsageError("--benchmark-disable times nothing, so there is nothing to compare: "
                                "drop --benchmark-compare (or --benchmark-disable)")
    if getattr(opt, "benchmark_histogram", None):
        try:
            import pygal  # noqa: F401
            import pygaljs  # noqa: F401
        except ImportError:
            raise pytest.UsageError("--benchmark-histogram needs pytest-benchmark's histogram extra: "
                                    "pip install 'pytest-benchmark[histogram]'") from None
    if opt.benchmark_compare_fail and not compare:
        raise pytest.UsageError("--benchmark-compare-fail judges a comparison: add --benchmark-compare")


def _plan(config, settings, root: Path, key: str, hardware: dict, context: list[str]) -> baselines.Plan:
    """Read the stored runs of this hardware once, before anything runs, and apply the rule to each stage."""
    folder = root / key
    runs, problems = storage.read_folder(folder)
    context.extend(problems)
    chosen = None
    selector = config.option.benchmark_compare
    if isinstance(selector, str):
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


def _identities(settings: options.Settings, timer) -> dict[str, dict]:
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
        if not gate.comparable(budget.min_rounds, saved):
            need = gate.fewest_rounds(saved)
            raise pytest.UsageError(
                f"--perf-min-rounds={budget.min_rounds}: against the {saved} rounds of {name} in "
                f"{stage_plan.baseline.path.name} the rank test cannot reach p <= {gate.ALPHA}; use at least {need}")
        gpu_saved = len(baselines.gpu_samples(stage_plan.entry))
        if budget.gpu_rounds and gpu_saved and not gate.comparable(budget.gpu_rounds, gpu_saved, gate.GPU_TIME_ALPHA):
            need = gate.fewest_rounds(gpu_saved, gate.GPU_TIME_ALPHA)
            raise pytest.UsageError(
                f"--perf-gpu-rounds={budget.gpu_rounds}: against the {gpu_saved} profiled rounds of {name} in "
                f"{stage_plan.baseline.path.name} the rank test cannot reach p <= {gate.GPU_TIME_ALPHA}; "
                f"use at least {need}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    perf: PerfSession = config._perf
    s = perf.settings
    return [f"diffusers-perf: pipeline {s.label}, {s.size}x{s.size}, {s.steps} steps, batch {s.batch}, "
            f"device {perf.runner.device}" + (f" ({s.threads} thread{'s' * (s.threads > 1)})" if s.threads else "")
            + f", hardware key {perf.key}, stages {','.join(s.stages)}"]


def pytest_sessionstart(session: pytest.Session) -> None:
    perf: PerfSession = session.config._perf
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is None:
        return
    from pytest_benchmark.storage.file import FileStorage

    if isinstance(bs.storage, FileStorage):
        bs.machine_id = perf.key
        bs.storage.default_machine_id = perf.key
        bs.storage.save = lambda output_json, save: _save(perf, output_json, save)


def _save(perf: PerfSession, output_json: dict, save: str) -> None:
    """Save the run as the next numbered file; if that fails, never lose it: write a fallback file."""
    from pytest_benchmark.utils import safe_dumps

    payload = safe_dumps(output_json, ensure_ascii=True, indent=4).encode()
    folder = perf.storage / perf.key
    try:
        path = storage.save(folder, save, payload)
    except OSError as exc:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
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
def pytest_sessionfinish_save_only_good_runs(session: pytest.Session, exitstatus):
    """Runs before pytest-benchmark saves: an interrupted or failing run must not become a baseline."""
    bs = getattr(session.config, "_benchmarksession", None)
    perf: PerfSession = session.config._perf
    perf.session_seconds = progress.process_seconds()
    if bs is not None and (bs.save or bs.autosave):
        failing = [v.stage for v in perf.verdicts.values() if v.failing and v.status != "not compared"]
        failing += [f"{v.stage} (A/B)" for v in perf.ab_verdicts.values() if v.failing]
        if session.exitstatus == pytest.ExitCode.INTERRUPTED:
            perf.not_saved = "interrupted: no baseline was saved"
        elif failing:
            perf.not_saved = (f"not saved: {', '.join(failing)} failed or regressed, and a failing run never becomes "
                              "a baseline; fix it, or record without --benchmark-compare to accept the change")
        if perf.not_saved:
            bs.save = bs.autosave = None
            perf.save_short = "not saved"
    if bs is not None and not bs.benchmarks and perf.ab_verdicts:
        bs.json = None  # only A/B ran: the suite writes --benchmark-json itself (_write_ab_json)
    yield


@pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_report(session: pytest.Session, exitstatus) -> None:
    perf: PerfSession = session.config._perf
    _save_compile_cache(perf)
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
    if perf.save_error and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if perf.ab_verdicts:
        _write_ab_json(session.config, perf)
    if not perf.runner.results and not perf.verdicts and not perf.ab_verdicts:
        return
    verdicts = perf.ordered_verdicts() if perf.verdicts else []
    drawn = _charts(session.config, perf) if verdicts else []
    text = report.markdown(_title(perf), verdicts, perf.runner.results, _not_selected(perf), perf.context,
                           stages.root(perf.settings.family)) \
        if verdicts else ""
    if perf.ab_verdicts:
        text += ("\n" if text else "") + report.ab_markdown(perf.ordered_ab_verdicts(), perf.ab)
    if drawn:
        text += "\n" + charts.markdown(drawn)
    try:
        report.write(text, perf.settings.report)
        if perf.settings.report and drawn:
            charts.write(drawn, charts.folder_for(perf.settings.report))
    except OSError as exc:
        perf.context.append(f"the report could not be written: {exc.strerror or exc}")
    if any(v.failing for v in verdicts + perf.ordered_ab_verdicts()) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _charts(config: pytest.Config, perf: PerfSession) -> list[charts.Chart]:
    """The ladder chart of this run, and each measured stage's trend over this hardware's stored runs."""
    results = perf.runner.results
    measured = [(name, results[name].median, results[name].extra.get("gpu_median"))
                for name in perf.settings.stages if name in results and results[name].median]
    drawn = [charts.ladder(measured, f"{perf.settings.label} on {perf.key}", stages.root(perf.settings.family))]
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
def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    perf: PerfSession = config._perf
    if not perf.verdicts and not perf.ab_verdicts:
        return
    terminalreporter.section("diffusers-perf", sep="-", bold=True)
    verdicts = perf.ordered_verdicts() if perf.verdicts else []
    if verdicts:
        report.terminal(verdicts, perf.runner.results, _not_selected(perf), perf.context, terminalreporter.write_line,
                        stages.root(perf.settings.family))
    if perf.ab_verdicts:
        report.ab_terminal(perf.ordered_ab_verdicts(), perf.ab, terminalreporter.write_line)
    failing = [v for v in verdicts if v.failing and v.status != "failed"]
    failing += [dataclasses.replace(v, stage=f"{v.stage} (A/B)") for v in perf.ordered_ab_verdicts()
                if v.failing and v.status != "failed"]
    if failing:
        terminalreporter.write_line("")
        for verdict in failing:
            terminalreporter.write_line(f"{verdict.status.upper()} {verdict.stage}: {verdict.detail}",
                                        red=True, bold=True)
    if perf.settings.report:
        terminalreporter.write_line(f"report: {shown(perf.settings.report)}")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The last line of the output: the verdict of the whole run, after pytest's own counts."""
    perf: PerfSession | None = getattr(config, "_perf", None)
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if perf is None or terminal is None or not (perf.verdicts or perf.ab_verdicts):
        return
    line, failed = report.final_line(perf.ordered_verdicts() if perf.verdicts else [], perf.policy,
                                     [run.path.name for run in perf.plan.baselines()] if perf.plan else [],
                                     perf.saved, perf.save_short, bool(perf.save_error),
                                     perf.ordered_ab_verdicts(), perf.ab.pythons["reference"] if perf.ab else "")
    terminal.write_line(line, red=failed, green=not failed, bold=True)


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_generate_machine_info(config: pytest.Config) -> dict:
    """Only what makes timings comparable; software versions go under ``diffusers_perf``.

    ``tryfirst``: this is a first-result hook, and pytest-benchmark's own implementation must
    not win when the plugin is loaded with ``-p`` (registered before pytest-benchmark).
    """
    info = baselines.hardware_info()
    info.update(system=platform.system(), python_implementation=platform.python_implementation())
    return info


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    perf: PerfSession = config._perf
    output_json["diffusers_perf"] = {
        "hardware_key": perf.key,
        "software": baselines.software_info(),
        "settings": perf.settings.describe(),
        "verdicts": {v.stage: {"status": v.status, "detail": v.detail, "baseline": v.baseline}
                     for v in perf.verdicts.values()},
        "session_seconds": _session_seconds(perf),
    }
    if perf.ab_verdicts:
        output_json["diffusers_perf"]["ab"] = report.ab_json(perf.ordered_ab_verdicts(), perf.ab)


def _session_seconds(perf: PerfSession) -> float:
    return round(perf.session_seconds if perf.session_seconds is not None else progress.process_seconds(), 1)


def _write_ab_json(config: pytest.Config, perf: PerfSession) -> None:
    """``--benchmark-json`` when only A/B stages ran: pytest-benchmark writes nothing without benchmarks."""
    target = config.option.benchmark_json
    bs = getattr(config, "_benchmarksession", None)
    if not target or (bs is not None and bs.benchmarks):
        return
    import json

    text = json.dumps({"diffusers_perf": {"hardware_key": perf.key, "settings": perf.settings.describe(),
                                          "session_seconds": _session_seconds(perf),
                                          "ab": report.ab_json(perf.ordered_ab_verdicts(), perf.ab)}}, indent=2)
    try:
        if hasattr(target, "write"):  # pytest-benchmark before 5.3 hands an open file
            target.write(text.encode() if "b" in getattr(target, "mode", "") else text)
            target.flush()
        else:
            Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        perf.context.append(f"--benchmark-json could not be written: {exc.strerror or exc}")
