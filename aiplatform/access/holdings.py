"""What a project still holds in the other head-node stores, read from their SQLite files in the
state folder on read-only connections of its own: a project is renamed or deleted only when it
holds nothing, and the refusal names what it holds.

The access store sits below the task queue and the registry in the layers, so it reads their
files rather than importing them; a store whose table has no ``project`` column yet (one from
before projects, or a store not scoped by project yet) holds nothing of any project. Given the
platform's storage, what the project keeps there counts too (``stored_holdings``): its datasets
and code archives under its prefix (``aiplatform.storage.projects.project_prefix``) and the batch
uploads marked as its own, so a project deleted with only code uploaded does not hand its
archives to a new project of the same name.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from aiplatform.storage import Storage
from aiplatform.storage.projects import DEFAULT_PROJECT, project_prefix

BATCH_INPUTS = "batch-inputs"
"""Where batch uploads are kept (``aiplatform.batch.inputs``, above this layer): a project that
uploaded one is marked at ``batch-inputs/<sha256>/projects/<project>``."""


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


def stored_holdings(storage: Storage, project: str) -> dict[str, int]:
    """What ``project`` keeps in storage: dataset versions and code archives under its prefix,
    anything else there (reports), and batch uploads marked as its own. ``default``'s objects are
    the storage root's, never counted here (``default`` is never renamed or deleted)."""
    if project == DEFAULT_PROJECT:
        return {}
    held = {"dataset versions": 0, "code archives": 0, "other stored files": 0, "batch uploads": 0}
    prefix = project_prefix(project)
    for key in storage.list(prefix.rstrip("/")):
        rest = key.removeprefix(prefix)
        if rest.startswith("datasets/"):
            held["dataset versions"] += rest.endswith("/manifest.json")
        elif rest.startswith("code/"):
            held["code archives"] += rest.endswith(".zip")
        else:
            held["other stored files"] += 1
    mark = f"/projects/{project}"
    held["batch uploads"] = sum(key.endswith(mark) and key.count("/") == 3 for key in storage.list(BATCH_INPUTS))
    return {what: count for what, count in held.items() if count}


def project_holdings(state_dir: Path, project: str, storage: Storage | None = None) -> dict[str, int]:
    """What ``project`` holds (``{"tasks": 3, "models": 1}``), kinds it holds none of left out;
    with ``storage``, what it keeps there too (``stored_holdings``)."""
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
    if storage is not None:
        held.update(stored_holdings(storage, project))
    return held


def describe(held: dict[str, int]) -> str:
    """``3 tasks, 1 model``."""
    return ", ".join(f"{count} {what if count != 1 else what.removesuffix('s')}" for what, count in held.items())
