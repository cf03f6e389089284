"""Alerts and their webhook deliveries in SQLite (on the head node, like the other stores).

An alert is one episode of one rule on one series: opened when the rule fires, updated while it
holds, resolved when it clears. At most one open alert per (rule, series): that is the
deduplication. Deliveries are an outbox: written with the alert change, sent and retried by the
notifier, so a restart loses no notification.

An alert belongs to one project: an alert on a model to the model's project (asked when it opens,
``project_of``), one on no model (the queue, the cluster) to ``default``, the operator's. A store
from before projects gains the column in place when it opens, its alerts in ``default``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiplatform.access import DEFAULT_PROJECT
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.sqlite import conditions, open_database, transaction

FIRING, RESOLVED = "firing", "resolved"
MAX_QUERY_LIMIT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    labels TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    value REAL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    resolved_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts(rule, series) WHERE state = 'firing';
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(started_at);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts(state, started_at, id);
CREATE INDEX IF NOT EXISTS alerts_by_rule ON alerts(rule, started_at, id);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    delivered_at REAL,
    failed_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(delivered_at, failed_at, next_at);
"""
_UPGRADE = """
CREATE INDEX IF NOT EXISTS alerts_by_project ON alerts(project, started_at, id);
"""


@dataclass(frozen=True)
class Alert:
    id: str
    rule: str
    series: str
    labels: dict[str, str]
    severity: str
    state: str
    message: str
    value: float | None
    started_at: float
    updated_at: float
    resolved_at: float | None
    project: str = DEFAULT_PROJECT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertStore:
    """Thread-safe; every change is committed before the call returns. ``project_of`` names a
    model's project (None: unknown, ``default``'s); without it every alert is ``default``'s."""

    def __init__(self, db_path: str | Path, project_of: Callable[[str], str | None] | None = None) -> None:
        self._lock = threading.Lock()
        self._db = open_database(Path(db_path), _SCHEMA)
        self.project_of = project_of
        if "project" not in {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}:
            with transaction(self._db) as db:
                db.execute(f"ALTER TABLE alerts ADD COLUMN project TEXT NOT NULL DEFAULT '{DEFAULT_PROJECT}'")
        self._db.executescript(_UPGRADE)

    def series_project(self, labels: dict[str, str]) -> str:
        """The project of a series with ``labels``: its model's, or ``default`` for none."""
        model = labels.get("model")
        if model is None or self.project_of is None:
            return DEFAULT_PROJECT
        return self.project_of(model) or DEFAULT_PROJECT

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def open_alert(
        self,
        rule: str,
        series: str,
        labels: dict[str, str],
        severity: str,
        message: str,
        value: float | None,
        webhooks: list[str],
        now: float | None = None,
    ) -> tuple[Alert, bool]:
        """Fire (or keep firing) the alert of (rule, series); returns it and whether it is new."""
        now = time.time() if now is None else now
        with self._lock, transaction(self._db) as db:
            row = db.execute(
                "SELECT id FROM alerts WHERE rule = ? AND series = ? AND state = ?", (rule, series, FIRING)
            ).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE alerts SET value = ?, message = ?, updated_at = ? WHERE id = ?",
                    (value, message, now, row["id"]),
                )
                alert_id, new = row["id"], False
            else:
                alert_id, new = uuid.uuid4().hex[:16], True
                db.execute(
                    "INSERT INTO alerts(id, rule, series, labels, severity, state, message, value, started_at,"
                    " updated_at, project) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        alert_id,
                        rule,
                        series,
                        json.dumps(labels),
                        severity,
                        FIRING,
                        message,
                        value,
                        now,
                        now,
                        self.series_project(labels),
                    ),
                )
            alert = self._get(db, alert_id)
            if new:
                self._enqueue(db, alert, webhooks, now)
        return alert, new

    def resolve(
        self, rule: str, series: str, webhooks: list[str], message: str | None = None, now: float | None = None
    ) -> Alert | None:
        """Resolve the open alert of (rule, series), if there is one."""
        now = time.time() if now is None else now
        with self._lock, transaction(self._db) as db:
            row = db.execute(
                "SELECT id FROM alerts WHERE rule = ? AND series = ? AND state = ?", (rule, series, FIRING)
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE alerts SET state = ?, resolved_at = ?, updated_at = ?,"
                " message = COALESCE(?, message) WHERE id = ?",
                (RESOLVED, now, now, message, row["id"]),
            )
            alert = self._get(db, row["id"])
            self._enqueue(db, alert, webhooks, now)
        return alert

    def resolve_by_id(
        self, alert_id: str, webhooks: list[str], message: str | None = None, now: float | None = None
    ) -> Alert:
        """Resolve one alert by hand (an operator has dealt with it); a resolved one stays as it is."""
        alert = self.get(alert_id)
        if alert.state == RESOLVED:
            return alert
        return self.resolve(alert.rule, alert.series, webhooks, message, now) or self.get(alert_id)

    def get(self, alert_id: str) -> Alert:
        with self._lock:
            return self._get(self._db, alert_id)

    def query(
        self,
        *,
        state: str | None = None,
        rule: str | None = None,
        since: float | None = None,
        before: str | None = None,
        limit: int = 100,
        project: str | None = None,
    ) -> list[Alert]:
        """Newest first (``project``'s only, when given); ``before`` (a page's ``alerts_cursor``)
        continues after its last alert."""
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_QUERY_LIMIT}, got {limit}")
        if state not in (None, FIRING, RESOLVED):
            raise InvalidArgument(f"state must be {FIRING!r} or {RESOLVED!r}, got {state!r}")
        clauses, params = conditions(
            (("project", "=", project), ("state", "=", state), ("rule", "=", rule), ("started_at", ">=", since))
        )
        if before is not None:
            at, _, last_id = before.partition("~")
            try:
                params.extend((float(at), last_id))
            except ValueError:
                raise InvalidArgument(f"before={before[:60]!r} is not a cursor this API gave (next_before)") from None
            clauses.append("(started_at, id) < (?, ?)")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM alerts {where} ORDER BY started_at DESC, id DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [_to_alert(row) for row in rows]

    # -- the webhook outbox ---------------------------------------------------------------------
    def due_deliveries(self, now: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deliveries WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= ?"
                " ORDER BY id LIMIT ?",
                (time.time() if now is None else now, limit),
            ).fetchall()
        return [dict(row) for row in rows]

    def delivery_done(self, delivery_id: int, now: float | None = None) -> None:
        with self._lock, transaction(self._db) as db:
            db.execute(
                "UPDATE deliveries SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                (time.time() if now is None else now, delivery_id),
            )

    def delivery_failed(self, delivery_id: int, error: str, retry_at: float | None, now: float | None = None) -> None:
        """Record a failed attempt; ``retry_at`` None gives up for good."""
        with self._lock, transaction(self._db) as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_at = COALESCE(?, next_at),"
                " failed_at = CASE WHEN ? IS NULL THEN ? ELSE NULL END WHERE id = ?",
                (error[:500], retry_at, retry_at, time.time() if now is None else now, delivery_id),
            )

    def deliveries(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        """The deliveries as the API shows them: the URL reduced to its scheme and host."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deliveries" + (" WHERE alert_id = ?" if alert_id else "") + " ORDER BY id",
                ((alert_id,) if alert_id else ()),
            ).fetchall()
        return [{**dict(row), "url": redacted_url(row["url"])} for row in rows]

    def _enqueue(self, db: Any, alert: Alert, webhooks: list[str], now: float) -> None:
        payload = json.dumps({"alert": alert.to_dict(), "event": "resolved" if alert.state == RESOLVED else "firing"})
        for url in webhooks:
            db.execute(
                "INSERT INTO deliveries(alert_id, url, payload, next_at) VALUES (?,?,?,?)",
                (alert.id, url, payload, now),
            )

    @staticmethod
    def _get(db: Any, alert_id: str) -> Alert:
        row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise NotFound(f"Alert {alert_id!r} not found")
        return _to_alert(row)


def _to_alert(row: Any) -> Alert:
    return Alert(
        id=row["id"],
        rule=row["rule"],
        series=row["series"],
        labels=json.loads(row["labels"]),
        severity=row["severity"],
        state=row["state"],
        message=row["message"],
        value=row["value"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        resolved_at=row["resolved_at"],
        project=row["project"],
    )


def redacted_url(url: str) -> str:
    """``https://hooks.example.com/services/T0/B0/XYZ`` -> ``https://hooks.example.com/...``:
    webhook URLs carry their service's token in the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/..."


def alerts_cursor(page: list[Alert]) -> str | None:
    """Where the page after ``page`` starts."""
    return f"{page[-1].started_at!r}~{page[-1].id}" if page else None
