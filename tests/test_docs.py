"""The README and docs/ stay what users read first: short, and every link resolves."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def documents():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "reports").rglob("README.md"))]


def test_every_relative_link_resolves():
    broken = []
    for document in documents():
        for link in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", document.read_text(encoding="utf-8")):
            if link.startswith(("http://", "https://", "mailto:", "#")):
                continue
            if not (document.parent / link.split("#")[0]).exists():
                broken.append(f"{document.relative_to(ROOT)}: {link}")
    assert not broken


def test_the_readme_is_read_in_minutes():
    assert len((ROOT / "README.md").read_bytes()) <= 15_000


def _tracked() -> list[str]:
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_the_repository_holds_source_not_binaries_or_machine_paths():
    """Compiled kernels live in the user's cache (perf/compile_cache.py), and nothing outside
    reports/ (the campaigns' logs) names a path of one machine or a file beside the repository."""
    files = _tracked()
    assert not [f for f in files if f.endswith((".bin", ".bin.gz", ".pt", ".so"))]
    machine = re.compile(r"/work/|/tmp/snap|\.\./shared/")
    named = [f for f in files if not f.startswith("reports/") and f != "tests/test_docs.py"
             and (ROOT / f).is_file() and machine.search((ROOT / f).read_text(encoding="utf-8", errors="replace"))]
    assert not named
