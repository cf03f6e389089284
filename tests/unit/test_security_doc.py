"""docs/SECURITY.md names, for every defense, the test that shows it holds: each test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"`((?:tests/[\w/.-]+\.py)?(?:::[\w\[\]-]+)?)`")


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) pairs in the order the table names them; ``::name`` alone continues the last file."""
    pairs, current = [], ""
    for row in (line for line in text.splitlines() if line.startswith("| ")):
        for item in NAMED.findall(row.rsplit("|", 2)[-2]):  # the last column: the tests
            path, _, name = item.partition("::")
            current = path or current
            pairs.append((current, name.split("[")[0]))
    return pairs


def test_every_test_the_security_doc_names_exists() -> None:
    pairs = named_tests((ROOT / "docs" / "SECURITY.md").read_text())
    assert len(pairs) > 40
    missing = []
    for path, name in pairs:
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"^(async )?def {re.escape(name)}\(", source.read_text(), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/SECURITY.md names tests that do not exist: {missing}"
