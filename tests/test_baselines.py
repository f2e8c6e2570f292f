import json
import os

import pytest

from perf import baselines


def test_hardware_key_is_a_safe_folder_name():
    key = baselines.hardware_key({"accelerator": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1})
    assert key == "NVIDIA_H100_80GB_HBM3-x1"
    cpu = baselines.hardware_key({"accelerator": "cpu", "cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_count": 2})
    assert cpu == "cpu-AMD_EPYC_7B13_64-Core_Processor-2cores"


def test_hardware_key_ignores_software():
    info = baselines.hardware_info()
    assert "torch" not in json.dumps(info) and "python" not in json.dumps(info)


def test_write_atomic_never_overwrites(tmp_path):
    target = tmp_path / "0001_x.json"
    baselines.write_atomic(target, b"{}")
    with pytest.raises(FileExistsError, match="never overwrites"):
        baselines.write_atomic(target, b'{"other": 1}')
    assert target.read_bytes() == b"{}"
    assert os.listdir(tmp_path) == ["0001_x.json"]  # no temporary left behind


def test_write_atomic_interrupted_leaves_nothing(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", interrupt)
    with pytest.raises(KeyboardInterrupt):
        baselines.write_atomic(tmp_path / "0001_x.json", b"{}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content, message", [
    ('{"benchmarks": [', "truncated"),
    ("not json at all", "not valid JSON"),
    ("", "is empty"),
    ('{"machine_info": {}}', "not a pytest-benchmark file"),
    ('{"benchmarks": [{"name": "x"}]}', "lacks 'fullname'"),
])
def test_read_explains_bad_files(tmp_path, content, message):
    path = tmp_path / "0001_bad.json"
    path.write_text(content)
    with pytest.raises(baselines.BaselineError, match=message) as err:
        baselines.read(path)
    assert "\n" not in str(err.value)


def test_find_falls_back_to_the_newest_valid_file(tmp_path):
    folder = tmp_path / "key"
    folder.mkdir()
    good = {"benchmarks": [{"fullname": "t", "stats": {"median": 1.0}, "extra_info": {"stage": "fp32"}}]}
    (folder / "0001_a.json").write_text(json.dumps(good))
    (folder / "0002_b.json").write_text('{"benchmarks": [')
    baseline, problems = baselines.find(tmp_path, "key", True)
    assert baseline.path.name == "0001_a.json"
    assert len(problems) == 1 and "0002_b.json" in problems[0] and "truncated" in problems[0]
    assert baselines.find(tmp_path, "key", "0001")[0].path.name == "0001_a.json"
    assert baselines.find(tmp_path, "other", True) == (None, [])


def test_history_keeps_wall_and_gpu_medians_apart(tmp_path):
    folder = tmp_path / "key"
    folder.mkdir()
    extra = {"pipeline": "sd15", "steps": 50, "size": 512, "batch": 1}
    for number, (wall, gpu) in enumerate([(0.5, None), (0.45, [0.34, 0.343, 0.35])], start=1):
        info = dict(extra, **({"gpu_seconds": gpu} if gpu else {}))
        data = {"machine_info": {}, "commit_info": {}, "benchmarks": [
            {"fullname": "perf/test_ladder.py::test_generate[cudagraphs]", "name": "test_generate[cudagraphs]", "params": {"stage": "cudagraphs"},
             "stats": {"median": wall, "data": [wall] * 6}, "extra_info": info}]}
        (folder / f"{number:04d}_run.json").write_text(json.dumps(data))
    history = baselines.history(tmp_path, "key", {"pipeline": "sd15", "steps": 50, "size": 512, "batch": 1})
    assert history == {"latency": {"cudagraphs": [0.5, 0.45]}, "gpu_time": {"cudagraphs": [0.343]}}
