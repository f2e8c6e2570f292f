"""The GitHub workflows pass zizmor, the security linter for GitHub Actions: actions pinned to a
commit, no workflow input expanded into a script, least permissions, no persisted credentials."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"


@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor is not installed (pip install -e '.[test]')")
def test_the_workflows_pass_zizmor():
    result = subprocess.run(["zizmor", "--offline", "--no-progress", str(WORKFLOWS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_expression_is_expanded_into_a_script():
    """Inputs, matrix values and event data reach ``run:`` scripts as environment variables only."""
    import yaml

    for path in WORKFLOWS.glob("*.yml"):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), f"{path.name} job {name}: {step.get('name')}"
