"""The rule for "compared": which stored run is a stage's baseline, and which runs are its history."""

import dataclasses
import importlib.metadata
import json
from pathlib import Path

import pytest

from perf import baselines, stages, storage

HARDWARE = {"accelerator": "cpu", "gpu": None, "gpu_count": 0, "gpu_memory_gib": None, "cpu": "Test CPU",
            "cpu_count": 2, "machine": "x86_64", "cpu_capability": "AVX2"}
SETTINGS = {"pipeline": "tiny", "steps": 2, "size": 32, "batch": 1}
SOFTWARE = {"torch": "2.13.0", "diffusers": "0.42.1"}


def identity(stage):
    import dataclasses

    return baselines.identity(SETTINGS, dataclasses.asdict(stages.recipe(stage)), "time.perf_counter")


def full_stats(data):
    """Every statistic pytest-benchmark stores for these rounds, as it stores them."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for value in data:
        stats.update(value)
    return {**stats.as_dict(), "iterations": 1, "data": list(data)}


def entry(stage, median, **extra):
    recipe = {field: getattr(stages.recipe(stage), field) for field in baselines.RECIPE_FIELDS}
    return {"fullname": f"perf/test_ladder.py::test_generate[{stage}]", "name": f"test_generate[{stage}]",
            "options": {"timer": "perf_counter"}, "stats": full_stats([median] * 6),
            "extra_info": {"stage": stage, **SETTINGS, "recipe": recipe, **extra}}


def stored(folder: Path, number: int, *entries, hardware=None, software=None, name="run") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:04d}_{name}.json"
    path.write_text(json.dumps({"machine_info": dict(HARDWARE, **(hardware or {})), "benchmarks": list(entries),
                                "diffusers_perf": {"software": dict(SOFTWARE, **(software or {})),
                                                   "settings": SETTINGS}}))
    return path


def plan_for(folder, *names, chosen=None):
    runs, problems = storage.read_folder(folder)
    return baselines.plan(runs, folder, HARDWARE, {name: identity(name) for name in names}, chosen), problems


def test_hardware_key_is_a_safe_folder_name():
    key = baselines.hardware_key({"accelerator": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1})
    assert key == "NVIDIA_H100_80GB_HBM3-x1"
    cpu = baselines.hardware_key({"accelerator": "cpu", "cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_count": 2})
    assert cpu == "cpu-AMD_EPYC_7B13_64-Core_Processor-2cores"


def test_hardware_key_ignores_software():
    info = baselines.hardware_info()
    assert "torch" not in json.dumps(info) and "python" not in json.dumps(info)


def test_baseline_is_the_newest_run_that_holds_the_stage_measured_the_same_way(tmp_path):
    stored(tmp_path, 1, entry("fp32", 1.0), entry("bf16", 0.5))
    stored(tmp_path, 2, entry("fp32", 1.1))  # a newest file holding only fp32
    stored(tmp_path, 3, entry("fp32", 9.0, steps=3), entry("bf16", 9.0, steps=3))  # other settings
    stored(tmp_path, 4, entry("fp32", 9.0), hardware={"cpu_count": 4})  # saved where cpu_count differed
    plan, _ = plan_for(tmp_path, "fp32", "bf16")
    assert plan.stages["fp32"].baseline.path.name == "0002_run.json"
    assert plan.stages["bf16"].baseline.path.name == "0001_run.json"
    assert plan.stages["fp32"].medians() == [1.0, 1.1]


def test_a_changed_recipe_or_timer_is_not_compared(tmp_path):
    changed = entry("sdpa", 1.0)
    changed["extra_info"]["recipe"]["attention"] = "classic"
    stored(tmp_path, 1, changed)
    plan, _ = plan_for(tmp_path, "sdpa")
    assert plan.stages["sdpa"].baseline is None
    assert "measured it another way (attention 'classic' -> 'sdpa')" in plan.stages["sdpa"].reason
    timed = entry("fp32", 1.0)
    timed["options"]["timer"] = "process_time"
    stored(tmp_path / "t", 1, timed)
    plan, _ = plan_for(tmp_path / "t", "fp32")
    assert "timer 'process_time' -> 'perf_counter'" in plan.stages["fp32"].reason
    threaded = entry("fp32", 1.0, threads=2)  # --perf-threads=2 then; torch's default (None) now
    stored(tmp_path / "n", 1, threaded)
    plan, _ = plan_for(tmp_path / "n", "fp32")
    assert "threads 2 -> None" in plan.stages["fp32"].reason
    stored(tmp_path / "old", 1, entry("fp32", 1.0))  # saved before threads were: compared
    assert plan_for(tmp_path / "old", "fp32")[0].stages["fp32"].baseline is not None


def test_no_baseline_says_so(tmp_path):
    plan, _ = plan_for(tmp_path / "empty", "fp32")
    assert plan.stages["fp32"].baseline is None and "no baseline for this hardware" in plan.stages["fp32"].reason
    stored(tmp_path / "other", 1, entry("fp32", 1.0), hardware={"cpu": "Other CPU"})
    plan, _ = plan_for(tmp_path / "other", "fp32")
    assert "other hardware (cpu: 'Other CPU' -> 'Test CPU')" in plan.stages["fp32"].reason


def test_history_ends_at_the_baseline_and_at_a_software_change(tmp_path):
    stored(tmp_path, 1, entry("fp32", 2.0), software={"torch": "2.12.0"})
    stored(tmp_path, 2, entry("fp32", 1.0))
    stored(tmp_path, 3, entry("fp32", 1.05))
    later = stored(tmp_path, 4, entry("fp32", 1.9))  # e.g. the current run, copied in
    chosen = storage.read(tmp_path / "0003_run.json")
    plan, _ = plan_for(tmp_path, "fp32", chosen=chosen)
    assert plan.stages["fp32"].baseline.path.name == "0003_run.json"
    assert plan.stages["fp32"].medians() == [1.0, 1.05]  # not 2.0 (another torch), not 1.9 (after it)
    assert later.exists()


def test_a_new_torchao_cuts_the_history_of_quantized_stages_only(tmp_path):
    stored(tmp_path, 1, entry("compile", 1.0), entry("int8", 0.8), software={"torchao": "0.17.0"})
    stored(tmp_path, 2, entry("compile", 1.1), entry("int8", 0.9), software={"torchao": "0.18.0"})
    stored(tmp_path, 3, entry("compile", 1.2))  # torchao not installed: int8 skipped
    plan, _ = plan_for(tmp_path, "compile", "int8")
    assert plan.stages["compile"].medians() == [1.0, 1.1, 1.2]  # installing torchao is no step for it
    assert plan.stages["int8"].medians() == [0.9]  # a new torchao is
    assert baselines.software_fields(dataclasses.asdict(stages.recipe("int8")))[-1] == "torchao"
    assert "torchao" not in baselines.software_fields(dataclasses.asdict(stages.recipe("compile")))
    try:
        installed = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    assert baselines.software_info()["torchao"] == installed


def test_select_by_number_name_path_and_key(tmp_path):
    key = tmp_path / "KEY"
    stored(key, 1, entry("fp32", 1.0), name="a")
    stored(key, 2, entry("fp32", 1.0), name="nightly")
    assert baselines.select(key, "0001", tmp_path)[0].path.name == "0001_a.json"
    assert baselines.select(key, "nightly", tmp_path)[0].path.name == "0002_nightly.json"
    assert baselines.select(tmp_path / "elsewhere", "KEY/0001", tmp_path)[0].path.name == "0001_a.json"
    assert baselines.select(key, str(key / "0002_nightly.json"), tmp_path)[0].path.name == "0002_nightly.json"
    run, problem = baselines.select(key, "0003", tmp_path)
    assert run is None and "no stored run in" in problem and "0002_nightly.json" in problem


def test_numbering_keeps_sorting_past_9999(tmp_path):
    stored(tmp_path, 9999, entry("fp32", 1.0))
    path = storage.save(tmp_path, "next", b"{}")
    assert path.name == "10000_next.json"
    assert [p.name for p in storage.run_files(tmp_path)] == ["9999_run.json", "10000_next.json"]


def test_a_cpu_of_another_instruction_set_is_other_hardware_and_older_files_match_any(tmp_path):
    stored(tmp_path, 1, entry("fp32", 1.0), hardware={"cpu_capability": "AVX512"})
    plan, _ = plan_for(tmp_path, "fp32")
    assert plan.stages["fp32"].baseline is None and "cpu_capability: 'AVX512' -> 'AVX2'" in plan.stages["fp32"].reason
    older = dict(HARDWARE)
    older.pop("cpu_capability")
    (tmp_path / "0001_run.json").unlink()
    path = stored(tmp_path, 2, entry("fp32", 1.0))
    data = json.loads(path.read_text())
    data["machine_info"] = older
    path.write_text(json.dumps(data))
    plan, _ = plan_for(tmp_path, "fp32")
    assert plan.stages["fp32"].baseline is not None
