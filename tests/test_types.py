"""The package type-checks: mypy reads perf/ on every test run, with the configuration in
pyproject.toml (``[tool.mypy]``), so that ``mypy`` from the repository root says the same.

Why here and not only in an editor: the keys a stage stores are declared once
(``perf.results.StageExtra``), and mypy is what notices a key written but never declared. When it
first ran it found three (``malloc_kept``, ``attention_kernels``, ``kernel_kinds``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed: pip install -e '.[test]'")
def test_the_package_type_checks(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
