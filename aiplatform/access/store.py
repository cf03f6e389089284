"""Users, their API keys, project memberships and the audit log, in SQLite in the state folder
(``access.db``, beside the other head-node stores).

A key's secret is shown once, when it is made, and never stored: the store keeps the SHA-256 of
it (a 256-bit random secret needs no slow hash: nothing shorter than the secret itself can be
guessed from its digest) and finds a key by that digest, so a lookup costs one indexed read.
``last_used_at`` is written at most once a minute per key, so a busy key does not write on every
request. The audit log is append-only: triggers refuse to update or delete its rows.

Projects are made by platform admins; ``default`` always exists (every state folder from before
projects upgrades into it). A project's members each hold one role in it; a user's key names the
project its requests act in when they name none, and a service key is bound to its project. A
project that holds nothing in the other stores (``holdings.py``) may be renamed (its members and
keys follow) or deleted; ``default`` may be neither.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiplatform.access.holdings import describe, project_holdings
from aiplatform.access.roles import DEFAULT_PROJECT, ROLES, Principal, check_role
from aiplatform.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unauthenticated
from aiplatform.sqlite import conditions, open_database, transaction
from aiplatform.storage import Storage

ACCESS_DB = "access.db"
KEY_PREFIX = "aip_"
KEY_BYTES = 32
LAST_USED_RESOLUTION_S = 60.0
MAX_KEY_DAYS = 3650.0
MAX_SERVICE_MODELS = 100
MAX_AUDIT_PAGE = 1000
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
GROUP_GRANTOR = "sso-groups"
"""Who a membership that a sign-in proxy's groups grant is granted by: such a membership follows
the groups (changed or removed with them); one an admin granted is only ever raised by them."""
QUOTAS_TABLE = "project_quotas"
"""Projects' quotas (the quota store keeps them in this file too): they follow a renamed project
and go with a deleted one."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);
INSERT OR IGNORE INTO projects VALUES ('{DEFAULT_PROJECT}', 0, 'platform');
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    platform_admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    disabled_at REAL,
    disabled_by TEXT
);
CREATE TABLE IF NOT EXISTS memberships (
    project TEXT NOT NULL REFERENCES projects(name),
    user TEXT NOT NULL REFERENCES users(name),
    role TEXT NOT NULL,
    granted_at REAL NOT NULL,
    granted_by TEXT NOT NULL,
    PRIMARY KEY (project, user)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name),
    name TEXT NOT NULL,
    project TEXT NOT NULL REFERENCES projects(name),
    models TEXT,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    expires_at REAL,
    last_used_at REAL,
    revoked_at REAL,
    revoked_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name ON api_keys(user, name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    principal TEXT NOT NULL,
    key_id TEXT,
    action TEXT NOT NULL,
    method TEXT NOT NULL,
    resource TEXT NOT NULL,
    project TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    address TEXT
);
CREATE INDEX IF NOT EXISTS audit_principal ON audit(principal, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


class KeyRefused(Unauthenticated):
    """A known key that may not be used (revoked, expired, its user disabled): the audit log
    names its user."""

    def __init__(self, message: str, user: str = "unknown", key_id: str | None = None) -> None:
        super().__init__(message)
        self.user = user
        self.key_id = key_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.user, self.key_id))  # through Ray: who stays named


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX) and 16 < len(token) < 200


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log: who did what to which resource, when, from where, and how it
    ended (``ok``, ``failed``: the request ran and answered an error, ``denied``: refused by
    authorization or authentication). Never a secret or a request body."""

    at: float
    principal: str
    key_id: str | None
    action: str
    method: str
    resource: str
    project: str
    outcome: str
    status: int
    address: str | None


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidArgument(
            f"{what} {str(name)[:80]!r} is not a valid name: 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )
    return name


def check_project_name(name: str) -> str:
    """A project's name: the rules of a user's name (it goes in headers, paths and storage prefixes)."""
    return _check_name(name, "Project name")


def _check_expiry(expires_in_days: float | None, now: float) -> float | None:
    if expires_in_days is None:
        return None
    if not isinstance(expires_in_days, (int, float)) or not 0 < expires_in_days <= MAX_KEY_DAYS:
        raise InvalidArgument(
            f"expires_in_days must be more than 0 and at most {MAX_KEY_DAYS:g}, not {expires_in_days!r}"
        )
    return now + float(expires_in_days) * 86400.0


def _check_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    if not models or len(models) > MAX_SERVICE_MODELS:
        raise InvalidArgument(f"A service key names 1 to {MAX_SERVICE_MODELS} models")
    for model in models:
        if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
            raise InvalidArgument(f"Model name {str(model)[:80]!r} is not a valid model name")
    return sorted(set(models))


class LastUses:
    """When this process last sent each key's last use: a key used all the time is written once
    per ``LAST_USED_RESOLUTION_S``, not on every request."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def due(self, key_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - self._at.get(key_id, float("-inf")) >= LAST_USED_RESOLUTION_S

    def note(self, key_id: str, now: float | None = None) -> float:
        """Note ``key_id`` sent at ``now`` (the present by default); returns that time."""
        now = time.time() if now is None else now
        self._at[key_id] = now
        return now


class AccessStore:
    """SQLite-backed users, keys, memberships and audit log; thread-safe."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.RLock()
        self._db = open_database(self.db_path, _SCHEMA)
        # Keys are looked up on the request path: a reader of its own, which WAL never makes wait
        # for a writer (an audit entry's fsync holds the writer's lock).
        self._read_lock = threading.Lock()
        self._reader = open_database(self.db_path, "")
        self._touched = LastUses()

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> AccessStore:
        return cls(state_dir / ACCESS_DB)

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    # -- users ---------------------------------------------------------------------------
    def create_user(self, name: str, *, role: str = "viewer", platform_admin: bool = False, by: str) -> dict[str, Any]:
        """A user with ``role`` in the default project; ``AlreadyExists`` if the name is taken
        (a disabled user's name too: their records keep naming them)."""
        _check_name(name, "User name")
        check_role(role)
        now = time.time()
        with self._lock, transaction(self._db) as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None:
                raise AlreadyExists(f"User {name!r} already exists")
            db.execute(
                "INSERT INTO users (name, platform_admin, created_at, created_by) VALUES (?, ?, ?, ?)",
                (name, int(platform_admin), now, by),
            )
            db.execute("INSERT INTO memberships VALUES (?, ?, ?, ?, ?)", (DEFAULT_PROJECT, name, role, now, by))
        return self.user(name)

    def user(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"User {name!r} not found")
            roles = {
                m["project"]: m["role"]
                for m in self._db.execute("SELECT project, role FROM memberships WHERE user = ?", (name,))
            }
            keys = self._db.execute(
                "SELECT COUNT(*) FROM api_keys WHERE user = ? AND revoked_at IS NULL", (name,)
            ).fetchone()[0]
        return {
            "name": row["name"],
            "platform_admin": bool(row["platform_admin"]),
            "roles": roles,
            "created_at": row["created_at"],
            "created_by": row["created_by"],
            "disabled_at": row["disabled_at"],
            "live_keys": keys,
        }

    def users(self) -> list[dict[str, Any]]:
        with self._lock:
            names = [row[0] for row in self._db.execute("SELECT name FROM users ORDER BY name")]
            return [self.user(name) for name in names]

    def disable_user(self, name: str, *, by: str) -> dict[str, Any]:
        """Every key of a disabled user stops working at once; their records stay."""
        with self._lock, transaction(self._db) as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                raise NotFound(f"User {name!r} not found")
            db.execute(
                "UPDATE users SET disabled_at = ?, disabled_by = ? WHERE name = ? AND disabled_at IS NULL",
                (time.time(), by, name),
            )
        return self.user(name)

    # -- projects and members ------------------------------------------------------------
    def create_project(self, name: str, *, by: str) -> dict[str, Any]:
        """A new, empty project; ``AlreadyExists`` if the name is taken."""
        check_project_name(name)
        with self._lock, transaction(self._db) as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone() is not None:
                raise AlreadyExists(f"Project {name!r} already exists")
            db.execute("INSERT INTO projects VALUES (?, ?, ?)", (name, time.time(), by))
        return self.project(name)

    def project(self, name: str) -> dict[str, Any]:
        """The project with its members (user -> role)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM projects WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"Project {str(name)[:80]!r} not found")
            members = self._db.execute(
                "SELECT user, role, granted_at, granted_by FROM memberships WHERE project = ? ORDER BY user", (name,)
            ).fetchall()
        return {
            "name": row["name"],
            "created_at": row["created_at"],
            "created_by": row["created_by"],
            "members": [dict(m) for m in members],
        }

    def projects(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """Every project (or those in ``names``), by name."""
        with self._lock:
            found = [row[0] for row in self._db.execute("SELECT name FROM projects ORDER BY name")]
            return [self.project(name) for name in found if names is None or name in names]

    def rename_project(self, name: str, new_name: str, *, by: str, storage: Storage | None = None) -> dict[str, Any]:
        """Rename an empty project; its members and keys follow. ``Conflict`` naming what it still
        holds (tasks, sweeps, models: their records carry the name; with ``storage``, what it keeps
        under its prefix there) or for ``default``."""
        check_project_name(new_name)
        self._check_changeable(name, "renamed", storage)
        with self._lock, transaction(self._db) as db:
            row = db.execute("SELECT * FROM projects WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"Project {str(name)[:80]!r} not found")
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (new_name,)).fetchone() is not None:
                raise AlreadyExists(f"Project {new_name!r} already exists")
            db.execute("INSERT INTO projects VALUES (?, ?, ?)", (new_name, row["created_at"], row["created_by"]))
            db.execute("UPDATE memberships SET project = ? WHERE project = ?", (new_name, name))
            db.execute("UPDATE api_keys SET project = ? WHERE project = ?", (new_name, name))
            if _has_table(db, QUOTAS_TABLE):  # its quota follows it
                db.execute(f"UPDATE {QUOTAS_TABLE} SET project = ? WHERE project = ?", (new_name, name))
            db.execute("DELETE FROM projects WHERE name = ?", (name,))
        return self.project(new_name)

    def delete_project(self, name: str, *, by: str, storage: Storage | None = None) -> dict[str, Any]:
        """Delete an empty project: its members lose their roles and its keys are revoked (a key
        acts in its project). ``Conflict`` naming what it still holds, or for ``default``.
        Returns what went: ``{"project", "members", "keys_revoked"}``."""
        self._check_changeable(name, "deleted", storage)
        with self._lock, transaction(self._db) as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone() is None:
                raise NotFound(f"Project {str(name)[:80]!r} not found")
            members = db.execute("DELETE FROM memberships WHERE project = ?", (name,)).rowcount
            revoked = db.execute(
                "UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE project = ? AND revoked_at IS NULL",
                (time.time(), by, name),
            ).rowcount
            if _has_table(db, QUOTAS_TABLE):
                db.execute(f"DELETE FROM {QUOTAS_TABLE} WHERE project = ?", (name,))
            db.execute("DELETE FROM projects WHERE name = ?", (name,))
        return {"project": name, "members": members, "keys_revoked": revoked}

    def _check_changeable(self, name: str, verb: str, storage: Storage | None) -> None:
        if name == DEFAULT_PROJECT:
            raise Conflict(f"Project {DEFAULT_PROJECT!r} cannot be {verb}: requests that name no project act in it")
        self.project(name)  # an unknown project: 404 before what it holds
        held = project_holdings(self.db_path.parent, name, storage)
        if held:
            raise Conflict(
                f"Project {name!r} cannot be {verb}: it holds {describe(held)}, whose records carry its "
                f"name; only a project that holds nothing can be {verb}"
            )

    def project_exists(self, name: str) -> bool:
        """One read on the request path (the guard asks before a platform admin acts in a project)."""
        with self._read_lock:
            return self._reader.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone() is not None

    def set_member(self, project: str, user: str, role: str, *, by: str) -> dict[str, Any]:
        """Grant ``user`` ``role`` in ``project`` (adding them, or changing their role)."""
        check_role(role)
        now = time.time()
        with self._lock, transaction(self._db) as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
                raise NotFound(f"Project {str(project)[:80]!r} not found")
            found = db.execute("SELECT disabled_at FROM users WHERE name = ?", (user,)).fetchone()
            if found is None:
                raise NotFound(f"User {str(user)[:80]!r} not found")
            if found["disabled_at"] is not None:
                raise InvalidArgument(f"User {user!r} is disabled; a disabled user gets no new roles")
            db.execute(
                "INSERT INTO memberships VALUES (?, ?, ?, ?, ?) ON CONFLICT(project, user) DO UPDATE SET"
                " role = excluded.role, granted_at = excluded.granted_at, granted_by = excluded.granted_by",
                (project, user, role, now, by),
            )
        return self.project(project)

    def remove_member(self, project: str, user: str) -> dict[str, Any]:
        """``user`` loses every access to ``project`` at once (a task of theirs still running finishes)."""
        with self._lock, transaction(self._db) as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
                raise NotFound(f"Project {str(project)[:80]!r} not found")
            gone = db.execute("DELETE FROM memberships WHERE project = ? AND user = ?", (project, user))
            if gone.rowcount == 0:
                raise NotFound(f"User {str(user)[:80]!r} is not a member of project {project!r}")
        return self.project(project)

    def sync_group_roles(self, user: str, roles: dict[str, str]) -> bool:
        """Bring ``user``'s memberships in step with what their groups grant (``roles``: project
        -> role): a missing or lower role is granted (by ``GROUP_GRANTOR``), a role the groups
        granted and no longer do is changed or removed; an admin's higher grant stays. Projects
        that do not exist are skipped. One read when nothing changes; whether anything did."""
        with self._lock:
            current = {
                row["project"]: (row["role"], row["granted_by"])
                for row in self._db.execute("SELECT project, role, granted_by FROM memberships WHERE user = ?", (user,))
            }
            known = {row[0] for row in self._db.execute("SELECT name FROM projects")}
            grant = {
                project: role
                for project, role in roles.items()
                if project in known
                and (
                    project not in current
                    or (current[project][1] == GROUP_GRANTOR and current[project][0] != role)
                    or (current[project][1] != GROUP_GRANTOR and ROLES.index(role) > ROLES.index(current[project][0]))
                )
            }
            withdraw = [p for p, (_, by) in current.items() if by == GROUP_GRANTOR and p not in roles]
            if not grant and not withdraw:
                return False
            now = time.time()
            with transaction(self._db) as db:
                for project, role in grant.items():
                    db.execute(
                        "INSERT INTO memberships VALUES (?, ?, ?, ?, ?) ON CONFLICT(project, user) DO UPDATE SET"
                        " role = excluded.role, granted_at = excluded.granted_at, granted_by = excluded.granted_by",
                        (project, user, role, now, GROUP_GRANTOR),
                    )
                for project in withdraw:
                    db.execute("DELETE FROM memberships WHERE project = ? AND user = ?", (project, user))
        return True

    def role(self, project: str, user: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT role FROM memberships WHERE project = ? AND user = ?", (project, user)
            ).fetchone()
        return None if row is None else str(row[0])

    # -- keys ----------------------------------------------------------------------------
    def create_key(
        self,
        user: str,
        *,
        name: str,
        expires_in_days: float | None = None,
        models: list[str] | None = None,
        project: str = DEFAULT_PROJECT,
        by: str,
    ) -> tuple[dict[str, Any], str]:
        """A new key of ``user`` and its secret (returned this once, stored only as its digest).
        With ``models`` it is a service key: inference on those models of ``project`` only.
        A user's key acts in ``project`` when a request names none; the user must hold a role
        there (or be a platform admin)."""
        if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
            raise InvalidArgument(
                f"Key name {str(name)[:80]!r} is not valid: 1-64 letters, digits, spaces, '.', '_', '-'"
            )
        now = time.time()
        expires_at = _check_expiry(expires_in_days, now)
        models = _check_models(models)
        secret = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
        key_id = "k-" + uuid.uuid4().hex[:12]
        with self._lock, transaction(self._db) as db:
            row = db.execute("SELECT disabled_at, platform_admin FROM users WHERE name = ?", (user,)).fetchone()
            if row is None:
                raise NotFound(f"User {user!r} not found")
            if row["disabled_at"] is not None:
                raise InvalidArgument(f"User {user!r} is disabled; a disabled user gets no new keys")
            taken = db.execute(
                "SELECT 1 FROM api_keys WHERE user = ? AND name = ? AND revoked_at IS NULL", (user, name)
            ).fetchone()
            if taken is not None:
                raise AlreadyExists(f"User {user!r} already has a live key named {name!r}")
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (project,)).fetchone() is None:
                raise NotFound(f"Project {str(project)[:80]!r} not found")
            member = db.execute("SELECT 1 FROM memberships WHERE project = ? AND user = ?", (project, user)).fetchone()
            if member is None and not row["platform_admin"]:
                raise InvalidArgument(
                    f"User {user!r} has no role in project {project!r}; a key acts where its user may"
                )
            db.execute(
                "INSERT INTO api_keys (id, user, name, project, models, secret_sha256, created_at, created_by,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    user,
                    name,
                    project,
                    None if models is None else json.dumps(models),
                    key_digest(secret),
                    now,
                    by,
                    expires_at,
                ),
            )
        return self.key(user, key_id), secret

    def key(self, user: str, key_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM api_keys WHERE user = ? AND id = ?", (user, key_id)).fetchone()
        if row is None:
            raise NotFound(f"Key {key_id!r} of user {user!r} not found")
        return _key_public(row)

    def keys(self, user: str) -> list[dict[str, Any]]:
        """``user``'s keys, newest first, without their secrets (never stored) or digests."""
        self.user(user)
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM api_keys WHERE user = ? ORDER BY created_at DESC", (user,)
            ).fetchall()
        return [_key_public(row) for row in rows]

    def revoke_key(self, user: str, key_id: str, *, by: str) -> dict[str, Any]:
        with self._lock, transaction(self._db) as db:
            if db.execute("SELECT 1 FROM api_keys WHERE user = ? AND id = ?", (user, key_id)).fetchone() is None:
                raise NotFound(f"Key {key_id!r} of user {user!r} not found")
            db.execute(
                "UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), by, key_id),
            )
        return self.key(user, key_id)

    def authenticate(self, secret: str, *, now: float | None = None) -> Principal | None:
        """The principal a key's secret stands for; None for a secret that is no key;
        ``Unauthenticated`` naming why for a revoked or expired key or a disabled user."""
        if not looks_like_key(secret):
            return None
        return self.authenticate_digest(key_digest(secret), now=now)

    def authenticate_digest(self, digest: str, *, now: float | None = None) -> Principal | None:
        """:meth:`authenticate` by the secret's digest (what a client off the head node sends:
        never the secret itself)."""
        now = time.time() if now is None else now
        with self._read_lock:
            row = self._reader.execute(
                "SELECT k.*, u.platform_admin, u.disabled_at FROM api_keys k JOIN users u ON u.name = k.user"
                " WHERE k.secret_sha256 = ?",
                (digest,),
            ).fetchone()
            if row is None or not hmac.compare_digest(row["secret_sha256"], digest):
                return None
            refusal = None
            if row["revoked_at"] is not None:
                refusal = f"API key {row['id']} ({row['name']!r}) was revoked"
            elif row["expires_at"] is not None and row["expires_at"] <= now:
                refusal = f"API key {row['id']} ({row['name']!r}) has expired"
            elif row["disabled_at"] is not None:
                refusal = f"User {row['user']!r} is disabled"
            if refusal is not None:
                raise KeyRefused(refusal, row["user"], row["id"])
            roles = {
                m["project"]: m["role"]
                for m in self._reader.execute("SELECT project, role FROM memberships WHERE user = ?", (row["user"],))
            }
        if row["models"] is not None:
            return Principal(
                row["user"],
                "service",
                models=frozenset(json.loads(row["models"])),
                key_id=row["id"],
                project=row["project"],
            )
        return Principal(
            row["user"],
            "user",
            platform_admin=bool(row["platform_admin"]),
            roles=roles,
            key_id=row["id"],
            project=row["project"],
        )

    def needs_touch(self, key_id: str, now: float | None = None) -> bool:
        """Whether this process has not written ``key_id``'s last use within LAST_USED_RESOLUTION_S."""
        return self._touched.due(key_id, now)

    def touch(self, key_id: str, now: float | None = None) -> None:
        """Record that ``key_id`` was used now (its ``last_used_at``)."""
        now = self._touched.note(key_id, now)
        with self._lock, transaction(self._db) as db:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))

    # -- audit ---------------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> None:
        fields = asdict(entry)
        with self._lock, transaction(self._db) as db:
            db.execute(
                f"INSERT INTO audit ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                tuple(fields.values()),
            )

    def audit(
        self,
        *,
        principal: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Entries newest first, filtered; and the cursor (``before``) of the next page, None at the end."""
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise InvalidArgument(f"limit must be 1 to {MAX_AUDIT_PAGE}, not {limit}")
        clauses, params = conditions(
            (
                ("principal", "=", principal),
                ("action", "=", action),
                ("outcome", "=", outcome),
                ("at", ">=", since),
                ("at", "<", until),
                ("seq", "<", before),
            )
        )
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM audit {where} ORDER BY seq DESC LIMIT ?", (*params, limit + 1)
            ).fetchall()
        entries = [dict(row) for row in rows[:limit]]
        return entries, (entries[-1]["seq"] if len(rows) > limit else None)


def _has_table(db: Any, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def _key_public(row: Any) -> dict[str, Any]:
    models = row["models"]
    return {
        "id": row["id"],
        "user": row["user"],
        "name": row["name"],
        "project": row["project"],
        "kind": "user" if models is None else "service",
        "models": None if models is None else json.loads(models),
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "expires_at": row["expires_at"],
        "last_used_at": row["last_used_at"],
        "revoked_at": row["revoked_at"],
    }
