"""Nothing stored is ever lost, and no stored file or option ends in a traceback."""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perf import baselines, gate, stages, stats, storage
from perf.runner import StageResult

H100_RUN = Path(__file__).resolve().parents[1] / "baselines" / "NVIDIA_H100_80GB_HBM3-x1" / "0003_h100.json"
on_cpu = pytest.mark.skipif(torch.cuda.is_available(), reason="sized for the tiny pipeline on CPU")


# -- writing --------------------------------------------------------------------------------------


def test_write_new_never_overwrites(tmp_path):
    target = tmp_path / "0001_x.json"
    storage.write_new(target, b"{}")
    with pytest.raises(FileExistsError, match="never overwrites"):
        storage.write_new(target, b'{"other": 1}')
    assert target.read_bytes() == b"{}"
    assert os.listdir(tmp_path) == ["0001_x.json"]  # no temporary left behind


def test_write_new_interrupted_leaves_nothing(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", interrupt)
    with pytest.raises(KeyboardInterrupt):
        storage.write_new(tmp_path / "0001_x.json", b"{}")
    assert os.listdir(tmp_path) == []


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = storage.save(tmp_path, "x", b"{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_removes_stale_partials_of_killed_saves(tmp_path):
    stale = tmp_path / ".0002_killed.json.abc.partial"
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"{")
    assert storage.save(tmp_path, "x", b"{}").name == "0001_x.json"
    assert not stale.exists()


def _save_many(folder: str, name: str, count: int) -> list[str]:
    return [storage.save(Path(folder), name, b"{}").name for _ in range(count)]


def test_concurrent_saves_take_different_numbers(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        names = pool.starmap(_save_many, [(str(tmp_path), name, 5) for name in ("alpha", "beta", "gamma", "delta")])
    files = [p.name for p in storage.run_files(tmp_path)]
    assert len(files) == 20 == len({f.split("_")[0] for f in files})
    assert sorted(n for batch in names for n in batch) == sorted(files)


# -- reading: one validator -------------------------------------------------------------------------


def _valid() -> dict:
    return json.loads(H100_RUN.read_text())


def _mutated(path: str, value) -> dict:
    data = _valid()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize("path, value, field", [
    ("benchmarks.0.stats.median", float("nan"), "holds NaN"),
    ("benchmarks.0.stats.median", 0, "'stats.median' is 0"),
    ("benchmarks.0.stats.median", -1.0, "'stats.median' is -1.0"),
    ("benchmarks.0.stats.median", "1.0", "'stats.median' is '1.0'"),
    ("benchmarks.0.stats.data", [1.0, -2.0, 3.0], "'stats.data' holds a value"),
    ("benchmarks.0.stats.data", "fast", "lacks the raw rounds"),
    ("benchmarks.0.stats.mean", None, "'stats.mean' is None"),
    ("benchmarks.0.stats.stddev", None, "'stats.stddev' is None"),
    ("benchmarks.0.stats.min", None, "'stats.min' is None"),
    ("benchmarks.0.extra_info", [1], "'extra_info' is list"),
    ("benchmarks.0.extra_info.gpu_seconds", [0.3, None], "'extra_info.gpu_seconds'"),
    ("benchmarks.0.extra_info.peak_memory_bytes", -5, "'extra_info.peak_memory_bytes'"),
    ("machine_info", None, "'machine_info' is missing"),
    ("machine_info", "h100", "'machine_info' is str"),
    ("diffusers_perf", [], "'diffusers_perf' is list"),
    ("diffusers_perf.software", "torch", "'diffusers_perf.software' is str"),
])
def test_read_names_the_file_and_the_field(tmp_path, path, value, field):
    target = tmp_path / "0001_bad.json"
    target.write_text(json.dumps(_mutated(path, value)))
    with pytest.raises(storage.StoredRunError) as err:
        storage.read(target)
    assert field in str(err.value) and "0001_bad.json" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content, message", [
    ('{"benchmarks": [', "truncated"),
    ("not json at all", "not valid JSON"),
    ("", "is empty"),
    ('{"machine_info": {}}', "not a pytest-benchmark file"),
    ('{"benchmarks": [{"name": "x"}], "machine_info": {}}', "lacks 'fullname'"),
    ("[" * 100_000, "nested too deeply"),
])
def test_read_explains_bad_files(tmp_path, content, message):
    path = tmp_path / "0001_bad.json"
    path.write_text(content)
    with pytest.raises(storage.StoredRunError, match=message) as err:
        storage.read(path)
    assert "\n" not in str(err.value)


def test_a_bad_file_is_skipped_and_the_older_good_one_used(tmp_path):
    (tmp_path / "0001_good.json").write_text(H100_RUN.read_text())
    (tmp_path / "0002_bad.json").write_text(json.dumps(_mutated("benchmarks.3.stats.median", None)))
    runs, problems = storage.read_folder(tmp_path)
    assert [run.path.name for run in runs] == ["0001_good.json"]
    assert len(problems) == 1 and "0002_bad.json" in problems[0] and "benchmarks[3]" in problems[0]


# -- a property test: no mutated stored run lets an exception escape ----------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.lists(st.floats(allow_nan=True), max_size=3), st.dictionaries(st.text(max_size=3), st.none(),
                                                                                     max_size=2))


def _paths(node, prefix=()):
    """Every path into a JSON document, the document's own fields first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node[:8]):
            yield prefix + (index,)
            yield from _paths(value, prefix + (index,))


def _small_run() -> dict:
    data = _valid()
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["stage"] in ("fp32", "cudagraphs")]
    return data


SMALL = _small_run()
PATHS = list(_paths(SMALL))


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "drop"]), _VALUES),
                          min_size=1, max_size=4))
def test_no_mutated_stored_run_escapes_as_an_exception(tmp_path_factory, mutations):
    # 50 bootstrap resamples, not 2,000: every statistic still runs on the fuzzed data, and the
    # 1,000 examples take 10 s instead of 140 s on the 2-core CI machine.
    with mock.patch.object(stats, "BOOTSTRAP_RESAMPLES", 50):
        _judge_mutated(tmp_path_factory, mutations)


def _judge_mutated(tmp_path_factory, mutations):
    data = copy.deepcopy(SMALL)
    for path, action, value in mutations:
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            if action == "drop" and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "0001_good.json").write_text(json.dumps(SMALL))
    (folder / "0002_fuzzed.json").write_text(json.dumps(data))
    runs, problems = storage.read_folder(folder)
    assert all("\n" not in line for line in problems)
    hardware = {field: SMALL["machine_info"].get(field) for field in baselines.HARDWARE_FIELDS}
    identities = {name: baselines.stored_identity(bench) for name, bench in storage.StoredRun(
        folder, SMALL).entries().items()}
    plan = baselines.plan(runs, folder, hardware, identities)
    for name, stage_plan in plan.stages.items():
        bench = {b["extra_info"]["stage"]: b for b in SMALL["benchmarks"]}[name]
        current = StageResult(name, "passed", rounds=[x * 1.01 for x in bench["stats"]["data"]],
                              extra=dict(bench["extra_info"]))
        verdict = gate.judge(name, current, stage_plan, gate.Policy(compare=True))
        assert verdict.status in ("ok", "faster", "REGRESSION", "not compared")
        if verdict.latency is not None:
            assert math.isfinite(verdict.latency.ratio)


# -- options and outputs checked before anything runs (end to end) ------------------------------------


def _one_line(result) -> str:
    lines = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(lines) == 1 and result.ret == pytest.ExitCode.USAGE_ERROR, (result.ret, result.errlines)
    return lines[0]


@on_cpu
@pytest.mark.parametrize("args, expected", [
    (["--benchmark-storage=s3://bucket/baselines"], "s3:// storage is not supported"),
    (["--benchmark-storage=ftp://host/x"], "ftp:// storage is not supported"),
    (["--benchmark-storage=elasticsearch+http://localhost:9200/i/d"], "elasticsearch+http:// storage is not supported"),
    (["--benchmark-storage=file://"], "'file://' names no folder"),
    (["--benchmark-storage=file:relative"], "is neither file://PATH nor a folder path"),
    (["--perf-max-time=nan"], "--perf-max-time: must be a finite number"),
    (["--perf-max-time=inf"], "--perf-max-time: must be a finite number"),
    (["--perf-host-drift=nan"], "--perf-host-drift: must be a finite number"),
    (["--perf-host-drift=inf"], "--perf-host-drift: must be a finite number"),
    (["--perf-batch=1000"], "--perf-batch: 1000 is more than the suite takes (at most 64)"),
    (["--perf-size=8192"], "--perf-size: 8192 is more than the suite takes"),
    (["--perf-steps=5000"], "--perf-steps: 5000 is more than the suite takes (at most 1000)"),
    (["--perf-batch=64", "--perf-size=1024"], "megapixels a batch"),
    (["--benchmark-save=" + "n" * 250], "--benchmark-save: the name is 250 bytes"),
])
def test_bad_outputs_and_numbers_are_refused_before_running(suite, args, expected):
    assert expected in _one_line(suite.run("--perf-stages=fp32", *args))


@on_cpu
def test_outputs_never_write_over_a_stored_run(suite):
    assert suite.run("--perf-stages=fp32", "--benchmark-save=base").ret == 0
    [saved] = suite.saved()
    before = saved.read_bytes()
    for option in ("--perf-report", "--benchmark-json"):
        line = _one_line(suite.run("--perf-stages=fp32", f"{option}={saved}"))
        assert f"{option}: {saved} is inside the baseline storage" in line
    assert saved.read_bytes() == before
    as_file = suite.pytester.path / "a-file"
    as_file.write_text("")
    line = _one_line(suite.run("--perf-stages=fp32", f"--benchmark-storage=file://{as_file}", "--benchmark-save=x"))
    assert "is a file, not a folder" in line


@on_cpu
def test_a_broken_step_summary_is_refused(suite, monkeypatch):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(suite.pytester.path / "missing" / "summary.md"))
    assert "GITHUB_STEP_SUMMARY=" in _one_line(suite.run("--perf-stages=fp32"))


@on_cpu
def test_model_index_that_is_not_an_object_is_refused(suite, tmp_path):
    (tmp_path / "model_index.json").write_text("[1, 2]")
    assert "model_index.json holds a list" in _one_line(suite.run(f"--perf-model={tmp_path}"))


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes into read-only folders")
def test_a_read_only_hardware_folder_is_refused(suite):
    folder = suite.storage / "ro"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    line = _one_line(suite.run("--perf-stages=fp32", f"--benchmark-storage=file://{folder}", "--benchmark-save=x"))
    assert "is not writable" in line


SAVE_FAILS = """
import errno
from perf import storage


def save(folder, name, payload):
    raise OSError(errno.ENOSPC, "No space left on device")


storage.save = save
"""


@on_cpu
def test_a_save_that_fails_at_the_end_writes_a_fallback_file(suite):
    result = suite.run("--perf-stages=fp32", "--benchmark-save=x", plugins={"save_fails": SAVE_FAILS})
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*could not save the run in * (No space left on device); it was written to *"])
    assert "save failed, run kept in" in suite.last_line(result) and suite.last_line(result).startswith(
        "diffusers-perf: FAIL")
    [fallback] = suite.pytester.path.glob("diffusers-perf-unsaved-*.json")
    assert json.loads(fallback.read_text())["benchmarks"][0]["extra_info"]["stage"] == "fp32"


@on_cpu
def test_report_can_be_turned_off_and_benchmark_disable_is_a_smoke_run(suite):
    for value in ("none", ""):
        result = suite.run("--perf-stages=fp32", f"--perf-report={value}", "--benchmark-disable")
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines(["fp32 *not timed"])
        assert not (suite.pytester.path / "perf-report.md").exists()
    assert suite.saved() == []


def test_stage_names_in_recipes_are_declared():
    for name in stages.names():  # identity() needs every recipe field the baselines compare
        recipe = stages.recipe(name)
        assert all(hasattr(recipe, field) for field in baselines.RECIPE_FIELDS)
