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
