"""What a project still holds in the other head-node stores, read from their SQLite files in the
state folder on read-only connections of its own: a project is renamed or deleted only when it
holds nothing, and the refusal names what it holds.

The access store sits below the task queue and the registry in the layers, so it reads their
files rather than importing them; a store whose table has no ``project`` column yet (one from
before projects, or a store not scoped by project yet) holds nothing of any project.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Holding:
    """One kind of resource: its store's file and table, and the rows of it a project holds."""

    what: str
    """How the refusal names it (plural): ``tasks``, ``sweeps``, ``models``."""
    file: str
    table: str
    where: str = "1"
    """An extra condition on the rows (which of a table's rows are this kind)."""


HOLDINGS = (
    Holding("tasks", "tasks.sqlite", "tasks", "template != 'sweep'"),
    Holding("sweeps", "tasks.sqlite", "tasks", "template = 'sweep'"),
    Holding("models", "registry.sqlite", "models"),
    # a name a task claimed for the project, whose first version is not registered yet
    Holding("claimed model names", "registry.sqlite", "model_claims", "name NOT IN (SELECT name FROM models)"),
)


def _count(db: sqlite3.Connection, holding: Holding, project: str) -> int:
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({holding.table})")}
    if "project" not in columns:
        return 0
    query = f"SELECT COUNT(*) FROM {holding.table} WHERE project = ? AND ({holding.where})"
    return int(db.execute(query, (project,)).fetchone()[0])


def project_holdings(state_dir: Path, project: str) -> dict[str, int]:
    """What ``project`` holds (``{"tasks": 3, "models": 1}``), kinds it holds none of left out."""
    held: dict[str, int] = {}
    for holding in HOLDINGS:
        path = state_dir / holding.file
        if not path.exists():
            continue
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            count = _count(db, holding, project)
        finally:
            db.close()
        if count:
            held[holding.what] = count
    return held


def describe(held: dict[str, int]) -> str:
    """``3 tasks, 1 model``."""
    return ", ".join(f"{count} {what if count != 1 else what.removesuffix('s')}" for what, count in held.items())
