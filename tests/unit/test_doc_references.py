"""Docstrings and docs name modules and objects that exist: a reference written as code
(``aiplatform.x.y``, :class:`aiplatform.x.Y`, `serve_apps/...` in Markdown) must resolve to a
module of this checkout and, past the module, to a name that module defines or imports. A module
renamed or an object moved without its mentions fails here instead of misleading a reader."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("aiplatform", "serve_apps", "jobs", "aip")
NOT_MODULES = {"aiplatform.templates"}  # the template plugins' entry-point group, a name, not a module
REFERENCE = re.compile(r"`~?((?:{})(?:\.[A-Za-z_]\w*)+)`".format("|".join(PACKAGES)))
FILE_REFERENCE = re.compile(r"``(\w+\.py)``")  # a docstring naming a module by its file


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return files + sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        module = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if not module.exists():
            continue
        rest = parts[i:]
        return not rest or re.search(rf"\b{re.escape(rest[0])}\b", module.read_text()) is not None
    return False


def test_every_reference_to_a_module_or_object_resolves() -> None:
    dangling = sorted(
        {
            f"{path.relative_to(ROOT)}: {dotted}"
            for path in _sources()
            for dotted in REFERENCE.findall(path.read_text())
            if dotted not in NOT_MODULES and not _resolves(dotted)
        }
    )
    assert not dangling, "references to modules or objects that do not exist:\n" + "\n".join(dangling)


def test_every_module_file_a_docstring_names_exists() -> None:
    names = {p.name for folder in (*PACKAGES, "tests", "bench", "scripts") for p in (ROOT / folder).rglob("*.py")}
    dangling = sorted(
        {
            f"{path.relative_to(ROOT)}: {name}"
            for path in _sources()
            if path.suffix == ".py"
            for name in FILE_REFERENCE.findall(path.read_text())
            if name not in names
        }
    )
    assert not dangling, "docstrings naming module files that do not exist:\n" + "\n".join(dangling)


def test_the_check_finds_a_dangling_reference() -> None:
    assert _resolves("aiplatform.results.actor.ResultWriter")
    assert not _resolves("aiplatform.results.client.ResultWriter")  # the module does not exist
    assert not _resolves("aiplatform.results.actor.NoSuchWriter")  # the module has no such name
