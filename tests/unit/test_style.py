"""The code's style is checked, not hoped for: ``ruff check`` with the rules pyproject.toml chooses
(pyflakes, pycodestyle, import order, bugbear, pyupgrade, comprehensions, simplifications, ruff's
own) and ``ruff format --check`` over the whole checkout. A change that fails either fails the
suite; ``ruff check --fix . && ruff format .`` mends most of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is a dev dependency (pyproject.toml): scripts/install.sh installs it")
    return found


@pytest.mark.parametrize("command", [["check", "--no-fix", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_finds_nothing(command: list[str]) -> None:
    done = subprocess.run([_ruff(), *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
