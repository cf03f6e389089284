"""SQLite connections for the head-node stores (registry, results, later queue and alerts)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating) a durable SQLite file: WAL journal, fsync on every commit, schema applied.

    The connection is in autocommit mode; callers wrap writes in explicit transactions and
    serialize access with their own lock (``check_same_thread=False``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def conditions(filters: Iterable[tuple[str, str, Any]]) -> tuple[list[str], list[Any]]:
    """SQL conditions (``column op ?``) and their parameters for each ``(column, op, value)``
    whose value is given (None: no condition): a listing's optional filters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in filters:
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    return clauses, params
