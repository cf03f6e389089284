"""The model registry's durable store: names, versions, aliases and alias history in SQLite.

Every change is one transaction committed (``synchronous=FULL``) before the call returns. A version
is recorded only after its package is found in storage with the same sha256, so the registry never
points at a missing or partial package.

Each model belongs to one project (``models.project``; a registry from before projects upgrades in
place, every model into ``default``). Model names stay unique across the platform: serving, the
OIP protocols and every existing client address a model by its name alone, and the access guard
finds the project a request on a model acts in from the name (``ModelProjects``). A task claims
its model's name for its project when it is created (``claim_model``), so the version its job
registers later lands in that project.

Versions, alias moves and traffic splits record who made them (``created_by``, ``by``, ``set_by``:
a principal's name; null on rows from before). A version a task's job registers names the task's
creator, read from the task queue's file beside this one (``tasks.sqlite``, read-only).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from aiplatform.errors import AlreadyExists, Conflict, IntegrityError, InvalidArgument, NotFound
from aiplatform.sqlite import open_database, transaction
from aiplatform.storage import Storage

_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,62}")
MAX_TRAFFIC_VERSIONS = 16
RESERVED_ALIASES = ("latest",)
DEFAULT_PROJECT = "default"
TASKS_DB = "tasks.sqlite"
"""The task queue's file, beside this one: who created the task whose job registers a version."""
"""aiplatform.access.DEFAULT_PROJECT (a sibling layer: not imported)."""
MODEL_PROJECT_TTL_S = 30.0
MAX_KNOWN_MODELS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL REFERENCES models(name),
    version INTEGER NOT NULL,
    package_key TEXT NOT NULL,
    package_uri TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    template TEXT NOT NULL,
    metrics TEXT NOT NULL,
    lineage TEXT NOT NULL,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_idempotency
    ON versions(name, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS traffic (
    name TEXT PRIMARY KEY,
    weights TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alias_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER,
    previous_version INTEGER,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_events_by_alias ON alias_events(name, alias, id);
CREATE TABLE IF NOT EXISTS model_claims (
    name TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    at REAL NOT NULL
);
"""
_UPGRADE = """
CREATE INDEX IF NOT EXISTS models_by_project ON models(project, name);
"""


def _add_project_column(db: sqlite3.Connection, table: str) -> None:
    """Add ``project`` to ``table`` in place (a store from before projects): every row lands in
    ``default``, nothing else changes."""
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    if "project" not in columns:
        with transaction(db):
            db.execute(f"ALTER TABLE {table} ADD COLUMN project TEXT NOT NULL DEFAULT '{DEFAULT_PROJECT}'")


def _add_who_columns(db: sqlite3.Connection) -> None:
    """Add who made each version, alias move and split in place: null on rows from before (unknown)."""
    for table, column in (("versions", "created_by"), ("alias_events", "by"), ("traffic", "set_by")):
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            with transaction(db):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    package_key: str
    package_uri: str
    sha256: str
    size: int
    template: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    created_at: float
    aliases: tuple[str, ...] = ()
    created_by: str | None = None
    """Who registered it (a task's job: the task's creator); None: unknown."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        return data


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidArgument(
            f"Model name {name!r} is invalid: use 1-128 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidArgument(f"Alias {alias!r} is invalid: use a lowercase letter then letters, digits, '_' or '-'")
    if alias in RESERVED_ALIASES:
        raise InvalidArgument(f"Alias {alias!r} is reserved")
    return alias


class RegistryAPI(Protocol):
    """What callers may ask of the model registry: the store itself, or its actor through a client."""

    def register_version(
        self,
        name: str,
        *,
        package_key: str,
        sha256: str,
        template: str,
        metrics: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        project: str | None = None,
        created_by: str | None = None,
    ) -> ModelVersion: ...

    def claim_model(self, name: str, project: str) -> str: ...

    def model_project(self, name: str) -> str | None: ...

    def get_version(self, name: str, version: int) -> ModelVersion: ...

    def resolve(self, name: str, ref: str | int) -> ModelVersion: ...

    def list_versions(
        self, name: str, *, limit: int | None = None, before: int | None = None
    ) -> list[ModelVersion]: ...

    def list_models(self, project: str | None = None) -> list[dict[str, Any]]: ...

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None) -> ModelVersion: ...

    def delete_alias(self, name: str, alias: str, *, by: str | None = None) -> None: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def alias_history(self, name: str, alias: str, limit: int | None = None) -> list[dict[str, Any]]: ...

    def delete_version(self, name: str, version: int) -> None: ...

    def set_traffic(self, name: str, weights: dict[int, float], *, by: str | None = None) -> dict[int, float]: ...

    def get_traffic(self, name: str) -> dict[int, float]: ...

    def traffic_set_by(self, name: str) -> str | None: ...


class RegistryStore:
    """SQLite-backed registry; thread-safe; checks packages in ``storage`` before recording."""

    def __init__(self, db_path: str | Path, storage: Storage) -> None:
        self.db_path = Path(db_path)
        self.storage = storage
        self._lock = threading.RLock()
        self._db = open_database(self.db_path, _SCHEMA)
        _add_project_column(self._db, "models")
        _add_who_columns(self._db)
        self._db.executescript(_UPGRADE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes ----------------------------------------------------------------------------
    def register_version(
        self,
        name: str,
        *,
        package_key: str,
        sha256: str,
        template: str,
        metrics: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        project: str | None = None,
        created_by: str | None = None,
    ) -> ModelVersion:
        """Record the next version of ``name``; a repeated ``idempotency_key`` returns the first.
        A new model goes to ``project``, else the project that claimed its name, else ``default``;
        a model of another project than ``project`` is a ``Conflict``. ``created_by`` defaults to
        the creator of the task its ``lineage`` names (``task_id``)."""
        validate_model_name(name)
        owner = self.model_project(name)
        if project is not None and owner is not None and owner != project:
            raise Conflict(f"Model name {name!r} belongs to another project; choose another name")
        if idempotency_key is not None:
            existing = self._by_idempotency_key(name, idempotency_key)
            if existing is not None:
                return existing
        if not self.storage.exists(package_key):
            raise NotFound(f"Package {package_key!r} not found in storage; upload it before registering")
        info = self.storage.info(package_key)
        if info.sha256 != sha256:
            raise IntegrityError(f"Package {package_key!r} in storage has sha256 {info.sha256}, not {sha256}")
        if created_by is None and isinstance((lineage or {}).get("task_id"), str):
            created_by = self._task_creator(str((lineage or {})["task_id"]))
        now = time.time()
        with self._lock, transaction(self._db) as db:
            claim = db.execute("SELECT project FROM model_claims WHERE name = ?", (name,)).fetchone()
            home = project or (claim[0] if claim is not None else DEFAULT_PROJECT)
            db.execute("INSERT OR IGNORE INTO models(name, created_at, project) VALUES (?, ?, ?)", (name, now, home))
            row = db.execute("SELECT MAX(version) FROM versions WHERE name = ?", (name,)).fetchone()
            version = int(row[0] or 0) + 1
            db.execute(
                "INSERT INTO versions(name, version, package_key, package_uri, sha256, size, template,"
                " metrics, lineage, idempotency_key, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    version,
                    package_key,
                    info.uri,
                    sha256,
                    info.size,
                    template,
                    json.dumps(metrics or {}),
                    json.dumps(lineage or {}),
                    idempotency_key,
                    now,
                    created_by,
                ),
            )
        return self.get_version(name, version)

    def claim_model(self, name: str, project: str) -> str:
        """Reserve ``name`` for ``project`` (a task about to train it): its first version will be
        registered there. ``Conflict`` when the name is another project's; returns ``project``."""
        validate_model_name(name)
        with self._lock, transaction(self._db) as db:
            row = db.execute("SELECT project FROM models WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = db.execute("SELECT project FROM model_claims WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != project:
                raise Conflict(f"Model name {name!r} belongs to another project; choose another model name")
            if row is None:
                db.execute("INSERT INTO model_claims(name, project, at) VALUES (?, ?, ?)", (name, project, time.time()))
        return project

    def model_project(self, name: str) -> str | None:
        """The project of model ``name`` (or of a task that claimed the name); None for neither."""
        with self._lock:
            row = self._db.execute("SELECT project FROM models WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = self._db.execute("SELECT project FROM model_claims WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None) -> ModelVersion:
        """Point ``alias`` at ``version`` (creating or moving it); recorded in the alias history
        with who moved it (``by``)."""
        validate_alias(alias)
        target = self.get_version(name, int(version))
        with self._lock, transaction(self._db) as db:
            previous = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
            db.execute(
                "INSERT INTO aliases(name, alias, version, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version,"
                " updated_at = excluded.updated_at",
                (name, alias, target.version, time.time()),
            )
            if previous is None or int(previous[0]) != target.version:
                db.execute(
                    "INSERT INTO alias_events(name, alias, version, previous_version, at, by) VALUES (?,?,?,?,?,?)",
                    (name, alias, target.version, None if previous is None else int(previous[0]), time.time(), by),
                )
        return self.get_version(name, target.version)

    def delete_alias(self, name: str, alias: str, *, by: str | None = None) -> None:
        validate_alias(alias)
        with self._lock, transaction(self._db) as db:
            row = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
            if row is None:
                raise NotFound(f"Alias (name={name}, alias={alias}) not found")
            db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            db.execute(
                "INSERT INTO alias_events(name, alias, version, previous_version, at, by) VALUES (?,?,?,?,?,?)",
                (name, alias, None, int(row[0]), time.time(), by),
            )

    def delete_version(self, name: str, version: int, *, delete_package: bool = True) -> None:
        """Delete a version no alias points at; its package goes after the row is gone."""
        target = self.get_version(name, int(version))
        if target.aliases:
            raise Conflict(
                f"Model version (name={name}, version={version}) is the target of alias(es) "
                f"{list(target.aliases)}; move them first"
            )
        with self._lock, transaction(self._db) as db:
            db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, target.version))
        if delete_package and self.storage.exists(target.package_key):
            self.storage.delete(target.package_key)

    def set_traffic(self, name: str, weights: dict[int, float], *, by: str | None = None) -> dict[int, float]:
        """Split the default route of ``name`` between versions (a canary), e.g. {3: 90, 4: 10},
        recording who set it (``by``).

        Weights are relative: they are stored normalised to percentages. An empty mapping removes
        the split (all traffic follows the ``production`` alias).
        """
        validate_model_name(name)
        if len(weights) > MAX_TRAFFIC_VERSIONS:
            raise InvalidArgument(f"A split may name at most {MAX_TRAFFIC_VERSIONS} versions, got {len(weights)}")
        clean: dict[int, float] = {}
        for version, weight in weights.items():
            if (
                isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not math.isfinite(weight)
                or weight < 0
            ):
                raise InvalidArgument(f"Traffic weight for version {version} must be a finite number >= 0")
            clean[int(self.get_version(name, int(version)).version)] = float(weight)
        total = sum(clean.values())  # inf when the weights overflow: refused below
        if clean and not (math.isfinite(total) and total > 0):
            raise InvalidArgument("Traffic weights must add up to a finite number above 0")
        clean = {version: 100.0 * weight / total for version, weight in clean.items()}
        with self._lock, transaction(self._db) as db:
            if clean:
                db.execute(
                    "INSERT INTO traffic(name, weights, updated_at, set_by) VALUES (?,?,?,?) ON CONFLICT(name)"
                    " DO UPDATE SET weights = excluded.weights, updated_at = excluded.updated_at,"
                    " set_by = excluded.set_by",
                    (name, json.dumps({str(k): v for k, v in clean.items()}), time.time(), by),
                )
            else:
                db.execute("DELETE FROM traffic WHERE name = ?", (name,))
        return clean

    def get_traffic(self, name: str) -> dict[int, float]:
        with self._lock:
            row = self._db.execute("SELECT weights FROM traffic WHERE name = ?", (name,)).fetchone()
        return {} if row is None else {int(k): float(v) for k, v in json.loads(row[0]).items()}

    def traffic_set_by(self, name: str) -> str | None:
        """Who set ``name``'s current split; None with no split, or when unknown."""
        with self._lock:
            row = self._db.execute("SELECT set_by FROM traffic WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    # -- reads -----------------------------------------------------------------------------
    def get_version(self, name: str, version: int) -> ModelVersion:
        validate_model_name(name)
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM versions WHERE name = ? AND version = ?", (name, int(version))
            ).fetchone()
        if row is None:
            raise NotFound(f"Model version (name={name}, version={version}) not found")
        return self._to_version(row)

    def resolve(self, name: str, ref: str | int) -> ModelVersion:
        """A version number, an alias, or ``latest`` -> the version it means now."""
        validate_model_name(name)
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return self.get_version(name, int(ref))
        if ref == "latest":
            versions = self.list_versions(name)
            if not versions:
                raise NotFound(f"Model {name!r} has no versions")
            return versions[0]
        validate_alias(ref)
        with self._lock:
            row = self._db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, ref)).fetchone()
        if row is None:
            raise NotFound(f"Alias (name={name}, alias={ref}) not found")
        return self.get_version(name, int(row[0]))

    def list_versions(self, name: str, *, limit: int | None = None, before: int | None = None) -> list[ModelVersion]:
        """Versions of a model, newest first (at most ``limit``, older than version ``before``:
        a page); :class:`NotFound` for an unknown model."""
        validate_model_name(name)
        if limit is not None and limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        with self._lock:
            if self._db.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is None:
                raise NotFound(f"Model {name!r} not found")
            rows = self._db.execute(
                "SELECT * FROM versions WHERE name = ? AND version < ? ORDER BY version DESC LIMIT ?",
                (name, before if before is not None else 2**62, limit if limit is not None else -1),
            ).fetchall()
        return [self._to_version(row) for row in rows]

    def list_models(self, project: str | None = None) -> list[dict[str, Any]]:
        """Every model (of ``project``; None: of every project) with its latest version and aliases."""
        where, args = ("WHERE m.project = ?", (project,)) if project is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT m.name, m.created_at, MAX(v.version) AS latest, COUNT(v.version) AS versions"
                f" FROM models m LEFT JOIN versions v ON v.name = m.name {where} GROUP BY m.name ORDER BY m.name",
                args,
            ).fetchall()
        return [
            {
                "name": row["name"],
                "created_at": row["created_at"],
                "latest_version": row["latest"],
                "versions": row["versions"],
                "aliases": self.aliases(row["name"]),
            }
            for row in rows
        ]

    def aliases(self, name: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,)
            ).fetchall()
        return {row["alias"]: int(row["version"]) for row in rows}

    def alias_history(self, name: str, alias: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Moves of an alias, newest first (the last ``limit``): what ``rollback`` walks back through."""
        with self._lock:
            rows = self._db.execute(
                "SELECT version, previous_version, at, by FROM alias_events WHERE name = ? AND alias = ?"
                " ORDER BY id DESC LIMIT ?",
                (name, alias, -1 if limit is None else limit),
            ).fetchall()
        return [dict(row) for row in rows]

    # -- helpers ---------------------------------------------------------------------------
    def _by_idempotency_key(self, name: str, key: str) -> ModelVersion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM versions WHERE name = ? AND idempotency_key = ?", (name, key)
            ).fetchone()
        return None if row is None else self._to_version(row)

    def _to_version(self, row: sqlite3.Row) -> ModelVersion:
        with self._lock:
            alias_rows = self._db.execute(
                "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias",
                (row["name"], row["version"]),
            ).fetchall()
        return ModelVersion(
            name=row["name"],
            version=int(row["version"]),
            package_key=row["package_key"],
            package_uri=row["package_uri"],
            sha256=row["sha256"],
            size=int(row["size"]),
            template=row["template"],
            metrics=json.loads(row["metrics"]),
            lineage=json.loads(row["lineage"]),
            created_at=float(row["created_at"]),
            aliases=tuple(r["alias"] for r in alias_rows),
            created_by=row["created_by"],
        )

    def _task_creator(self, task_id: str) -> str | None:
        """Who created task ``task_id``, from the task queue's file beside this one (read-only;
        None when there is no such file, task or record)."""
        path = self.db_path.parent / TASKS_DB
        if not path.exists():
            return None
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            if "created_by" not in {row[1] for row in db.execute("PRAGMA table_info(tasks)")}:
                return None
            row = db.execute("SELECT created_by FROM tasks WHERE id = ?", (task_id,)).fetchone()
        except sqlite3.Error:
            return None
        finally:
            db.close()
        return None if row is None else row[0]


class ModelProjects:
    """Which project each model belongs to, read straight from the registry's SQLite file on a
    read-only connection of its own: the access guard asks on every request on a model (the
    inference hot path), where a call to the registry's actor would cost a round trip. A name a
    task has claimed (not registered yet) is its project's, as ``RegistryStore.model_project``
    says. A model's project never changes, so an answer is kept ``MODEL_PROJECT_TTL_S``; an
    unknown name is not kept (it may be registered the next moment)."""

    def __init__(self, db_path: str | Path | None) -> None:
        """``db_path``: the registry's file (None in a subclass that asks elsewhere)."""
        self.db_path = None if db_path is None else Path(db_path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._known: dict[str, tuple[str, float]] = {}

    def project_of(self, name: str, now: float | None = None) -> str | None:
        """``name``'s project; None when there is no such model (or no registry yet)."""
        now = time.monotonic() if now is None else now
        known = self._known.get(name)
        if known is not None and now - known[1] < MODEL_PROJECT_TTL_S:
            return known[0]
        project = self._look_up(name)
        if project is None:
            return None
        while len(self._known) >= MAX_KNOWN_MODELS:  # the oldest answer first
            try:
                self._known.pop(next(iter(self._known)), None)
            except (RuntimeError, StopIteration):  # another thread changed it meanwhile
                break
        self._known[name] = (project, now)
        return project

    def blocks(self, name: str) -> bool:
        """Whether :meth:`project_of` may wait on another process for ``name`` (never: a read of
        the registry's file; see ``ActorModelProjects``)."""
        return False

    def _look_up(self, name: str) -> str | None:
        with self._lock:
            try:
                if self._db is None:
                    if self.db_path is None or not self.db_path.exists():
                        return None
                    self._db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False)
                row = self._db.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchone()
                columns = [c[0] for c in self._db.execute("SELECT * FROM models LIMIT 0").description]
                if row is None:  # a task's claim on the name, as RegistryStore.model_project
                    claim = self._db.execute("SELECT project FROM model_claims WHERE name = ?", (name,)).fetchone()
                    return None if claim is None else str(claim[0])
            except sqlite3.Error:
                return None
        return str(row[columns.index("project")] if "project" in columns else DEFAULT_PROJECT)


__all__ = ["AlreadyExists", "ModelProjects", "ModelVersion", "RegistryStore", "validate_alias", "validate_model_name"]
