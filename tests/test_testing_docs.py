"""docs/testing.md against the tests: every test file described once, every environment
variable a test reads listed, and no pytest marker registered that no test uses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DOC = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")


def first_cells() -> list[str]:
    """The first cell of every table row in the document."""
    rows = [line.split("|")[1].strip() for line in DOC.splitlines() if line.startswith("| ")]
    return [cell for cell in rows if cell not in ("file", "variable", "date")]


def test_every_test_file_is_described_once() -> None:
    described = [name for cell in first_cells() for name in re.findall(r"`(test_\w+\.py)`", cell)]
    files = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert sorted(set(described)) == files
    assert len(described) == len(set(described)), "a file described twice"


def test_every_environment_variable_a_test_reads_is_listed() -> None:
    read = set()
    for path in TESTS.glob("*.py"):
        read |= set(re.findall(r"environ\.get\(\"(INBOX_\w+)\"", path.read_text(encoding="utf-8")))
    listed = {m for cell in first_cells() for m in re.findall(r"`(INBOX_\w+)`", cell)}
    assert read == listed


def test_no_marker_is_registered_that_no_test_uses() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    markers = config["tool"]["pytest"]["ini_options"].get("markers", [])
    sources = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.glob("*.py"))
    for marker in markers:
        name = marker.split(":")[0].strip()
        assert f"mark.{name}" in sources, f"marker {name!r} is registered but never used"
