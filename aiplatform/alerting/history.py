"""The alert engine's signals over time: one point per series and interval, kept bounded.

What the Monitoring page and ``aip monitoring show`` chart when no Prometheus scrapes the
platform. Points older than ``max_age_s`` go, and past ``max_points`` the oldest go first, so the
file stays small whatever the traffic (a week of 10 s intervals for a few dozen series is ~10^6
rows, a few tens of MB).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiplatform.monitoring.signals import Signal
from aiplatform.sqlite import open_database, transaction

MAX_AGE_S = 7 * 24 * 3600.0
MAX_POINTS = 1_000_000
PRUNE_EVERY = 100
"""Pruning runs on every PRUNE_EVERY-th record (it scans the time index)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    at REAL NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS points_by_name ON points(name, at);
CREATE INDEX IF NOT EXISTS points_by_time ON points(at);
"""


class SignalHistory:
    """Thread-safe; every record is committed before the call returns."""

    def __init__(self, db_path: str | Path, max_age_s: float = MAX_AGE_S, max_points: int = MAX_POINTS) -> None:
        self._lock = threading.Lock()
        self._db = open_database(Path(db_path), _SCHEMA)
        self.max_age_s = max_age_s
        self.max_points = max_points
        self._records = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, at: float, signals: Iterable[Signal]) -> None:
        rows = [(at, s.name, json.dumps(dict(s.labels), sort_keys=True), float(s.value)) for s in signals]
        with self._lock:
            with transaction(self._db) as db:
                db.executemany("INSERT INTO points(at, name, labels, value) VALUES (?,?,?,?)", rows)
            self._records += 1
            if self._records % PRUNE_EVERY == 1:
                self._prune(at)

    def prune(self, now: float | None = None) -> None:
        with self._lock:
            self._prune(time.time() if now is None else now)

    def _prune(self, now: float) -> None:
        with transaction(self._db) as db:
            db.execute("DELETE FROM points WHERE at < ?", (now - self.max_age_s,))
            count = db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
            if count > self.max_points:
                cutoff = db.execute(
                    "SELECT at FROM points ORDER BY at LIMIT 1 OFFSET ?", (count - self.max_points,)
                ).fetchone()[0]
                db.execute("DELETE FROM points WHERE at <= ?", (cutoff,))  # whole intervals: never over the limit

    def series(
        self, names: Iterable[str], since: float, until: float, match: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """``[{"name", "labels", "points": [[at, value], ...]}]`` of the signals ``names`` between
        ``since`` and ``until`` whose labels include ``match``."""
        names = list(names)
        if not names:
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT at, name, labels, value FROM points WHERE name IN ({','.join('?' * len(names))})"
                " AND at >= ? AND at <= ? ORDER BY at",
                (*names, since, until),
            ).fetchall()
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            labels = json.loads(row["labels"])
            if match and any(labels.get(key) != value for key, value in match.items()):
                continue
            entry = found.setdefault(
                (row["name"], row["labels"]), {"name": row["name"], "labels": labels, "points": []}
            )
            entry["points"].append([row["at"], row["value"]])
        return list(found.values())
