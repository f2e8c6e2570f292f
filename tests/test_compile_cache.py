"""The stored compile cache (perf.compile_cache): named for the torch that wrote it, never replaced,
and a damaged file costs a compile, not the run."""

import gzip

import torch

from perf import compile_cache


def test_a_cache_file_round_trips_and_is_never_written_twice(tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"kernels", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", loaded.append)
    path = compile_cache.save(tmp_path)
    assert path.parent == tmp_path and path.name.startswith(f"torch-{torch.__version__.split('+')[0]}")
    assert gzip.decompress(path.read_bytes()) == b"kernels"
    assert compile_cache.save(tmp_path) is None  # the same kernels: no second file, nothing replaced
    assert compile_cache.load(compile_cache.files(tmp_path)) == [] and loaded == [b"kernels"]


def test_other_torch_versions_are_ignored_and_a_damaged_file_is_one_line(tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", loaded.append)
    folder = tmp_path

    (folder / "torch-0.0.1-0123456789ab.bin.gz").write_bytes(gzip.compress(b"another torch"))
    (folder / f"{compile_cache._prefix()}-damaged.bin.gz").write_bytes(b"not gzip")
    problems = compile_cache.load(compile_cache.files(tmp_path))
    assert loaded == [] and len(problems) == 1
    assert "damaged.bin.gz not loaded" in problems[0] and "compile as on a fresh machine" in problems[0]


def test_nothing_to_save_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: None)
    assert compile_cache.save(tmp_path / "key") is None and not (tmp_path / "key").exists()


def test_real_artifacts_of_a_compiled_function_round_trip(tmp_path):
    """torch's own Mega-Cache API, end to end, on whatever device runs the tests."""
    compiled = torch.compile(lambda x: x.sin() + 1)
    compiled(torch.randn(8))
    path = compile_cache.save(tmp_path)
    assert path is not None and path.stat().st_size > 0
    torch._dynamo.reset()
    assert compile_cache.load(compile_cache.files(tmp_path)) == []


def test_the_cache_lives_outside_the_repository_unless_a_folder_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.root(None) == tmp_path / "xdg" / "diffusers-perf" / "compile-cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.root(None) == tmp_path / "home" / ".cache" / "diffusers-perf" / "compile-cache"
    assert compile_cache.root("~/ci-cache") == tmp_path / "home" / "ci-cache"
    assert compile_cache.folder(tmp_path, "NVIDIA_H200-x1") == tmp_path / "NVIDIA_H200-x1"
