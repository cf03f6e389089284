"""The access store (users, keys, memberships, the audit log, projects' quotas) as a head-pinned
actor, and the clients a process off the head node uses.

On one machine, and on the head node, a gateway reads ``access.db`` in the state folder itself:
the fastest path, and a revoked key is refused on its next request. A gateway replica on a worker
node (the documented cluster's head runs no replicas, and its worker pods do not mount the state
folder) asks this actor instead, and keeps what the request path asks (a key's principal, a
user, whether a project exists) for ``access_cache_ttl_s``: a key revoked or a role changed
elsewhere takes effect there within that time; a change made through the same replica at once.
``access_store`` and ``quota_store`` pick the right one for the process they run in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiplatform.access.protocols import AccessAPI, QuotaAPI
from aiplatform.access.quotas import QuotaStore
from aiplatform.access.roles import Principal
from aiplatform.access.store import (
    ACCESS_DB,
    AccessStore,
    AuditEntry,
    KeyRefused,
    LastUses,
    key_digest,
    looks_like_key,
)
from aiplatform.errors import InvalidArgument, Unavailable
from aiplatform.runtime import (
    ActorProxy,
    BoundedCalls,
    call,
    freeze_startup_heap,
    head_actor,
    on_head_node,
    protocol_methods,
)
from aiplatform.settings import Settings
from aiplatform.storage import Storage, storage_from_settings

ACCESS_ACTOR_NAME = "platform-access"
ACCESS_ACTOR_THREADS = 8
MAX_KEPT_ANSWERS = 10_000
STALE_WHILE_HEAD_AWAY_S = 600.0
"""While the head's actor does not answer, a kept answer up to this old is used (nothing can
change meanwhile: every change goes through the head); one never kept is a 503."""

logger = logging.getLogger(__name__)


QUOTA_METHODS = frozenset(protocol_methods(QuotaAPI))


class AccessActor(AccessStore):
    """The access store run as an actor that owns ``access.db`` on the head node, with the quotas
    (the same file) beside it. Restarted by Ray on failure; it reopens the same file."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.resolved_state_dir / ACCESS_DB)
        self.quota_store = QuotaStore(self.db_path)
        self.storage = storage_from_settings(settings)
        freeze_startup_heap()

    def quota(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``QuotaStore.<method>(*args, **kwargs)`` (``QuotaClient``'s calls)."""
        if method not in QUOTA_METHODS:
            raise InvalidArgument(f"{method!r} is not a quota store method")
        return getattr(self.quota_store, method)(*args, **kwargs)

    def rename_project(self, name: str, new_name: str, *, by: str, storage: Storage | None = None) -> dict[str, Any]:
        """The store's, counting what the project keeps in this actor's own storage (a client
        sends no storage object: it would carry its credentials through Ray)."""
        return super().rename_project(name, new_name, by=by, storage=self.storage)

    def delete_project(self, name: str, *, by: str, storage: Storage | None = None) -> dict[str, Any]:
        """The store's, counting what the project keeps in this actor's own storage."""
        return super().delete_project(name, by=by, storage=self.storage)


class KeptAnswers:
    """Answers kept ``ttl_s`` seconds, the least recently used dropped past ``MAX_KEPT_ANSWERS``.
    ``clear`` moves the generation on: an answer asked before it is not kept after it (a lookup
    in flight across a change would keep what the change undid). Thread-safe."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.generation = 0
        self._kept: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, now: float, max_age_s: float | None = None) -> tuple[bool, Any]:
        """The answer kept for ``key`` if younger than ``max_age_s`` (the TTL by default)."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is None or now - kept[0] >= (self.ttl_s if max_age_s is None else max_age_s):
                return False, None
            self._kept.move_to_end(key)
            return True, kept[1]

    def put(self, key: Any, value: Any, now: float, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return
            self._kept[key] = (now, value)
            self._kept.move_to_end(key)
            while len(self._kept) > MAX_KEPT_ANSWERS:
                self._kept.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self.generation += 1


class _Refusal:
    """A refused key, kept: raised again as a new ``KeyRefused`` each time."""

    def __init__(self, error: KeyRefused) -> None:
        self.message, self.user, self.key_id = error.message, error.user, error.key_id

    def raise_again(self) -> None:
        raise KeyRefused(self.message, self.user, self.key_id)


CHANGES = (
    "create_user",
    "disable_user",
    "create_project",
    "rename_project",
    "delete_project",
    "set_member",
    "remove_member",
    "create_key",
    "revoke_key",
)
"""The client's calls that change what the kept answers say: each drops them."""


class AccessClient(ActorProxy, AccessAPI, protocol=AccessAPI):
    """The access actor, called like the store, keeping the request path's answers ``ttl_s``
    (see the module docstring). The request path's calls wait at most ``runtime.HEAD_CALL_TIMEOUT_S``
    (:class:`Unavailable` past it: the guard answers 503, it never lets the request in).
    Thread-safe: the gateway asks from its worker threads."""

    def __init__(self, handle: Any, ttl_s: float) -> None:
        super().__init__(handle)
        self.answers = KeptAnswers(ttl_s)
        self.calls = BoundedCalls()
        self._touched = LastUses()

    @classmethod
    def connect(cls, settings: Settings) -> AccessClient:
        """Get the platform's access actor, creating it on the head node if needed."""
        return cls(access_actor(settings), settings.access_cache_ttl_s)

    def _ask(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.calls(getattr(self.handle, method), *args, **kwargs)

    def _kept(self, key: Any, ask: Callable[[], Any]) -> Any:
        """The kept answer for ``key``, else ``ask()``'s (kept); with the head away, the last
        answer kept up to ``STALE_WHILE_HEAD_AWAY_S``, else ``Unavailable``."""
        now = time.monotonic()
        found, value = self.answers.get(key, now)
        if found:
            return value
        generation = self.answers.generation
        try:
            value = ask()
        except Unavailable:
            found, value = self.answers.get(key, now, max_age_s=STALE_WHILE_HEAD_AWAY_S)
            if not found:
                raise
            return value
        self.answers.put(key, value, now, generation)
        return value

    def authenticate(self, secret: str, *, now: float | None = None) -> Principal | None:
        """The key's principal (or None, or its refusal), asked of the actor at most once per
        ``ttl_s`` for each key, by the secret's digest: the secret itself never leaves this
        process. A value that is no key is not asked about."""
        if not looks_like_key(secret):
            return None
        return self.authenticate_digest(key_digest(secret), now=now)

    def authenticate_digest(self, digest: str, *, now: float | None = None) -> Principal | None:
        def ask() -> Principal | _Refusal | None:
            try:
                return self._ask("authenticate_digest", digest, now=now)  # type: ignore[no-any-return]
            except KeyRefused as refused:
                return _Refusal(refused)

        answer = self._kept(("key", digest), ask)
        if isinstance(answer, _Refusal):
            answer.raise_again()
        return answer  # type: ignore[no-any-return]

    def user(self, name: str) -> dict[str, Any]:
        """The user (a signed-in user's every request asks), kept ``ttl_s``."""
        return self._kept(("user", name), lambda: self._ask("user", name))  # type: ignore[no-any-return]

    def project_exists(self, name: str) -> bool:
        return self._kept(("project", name), lambda: self._ask("project_exists", name))  # type: ignore[no-any-return]

    def sync_group_roles(self, user: str, roles: dict[str, str]) -> bool:
        """The store's, asked once per ``ttl_s`` for the same user and groups' roles (a signed-in
        user's every request brings them); a change drops the kept answers (the user's roles)."""
        key = ("groups", user, tuple(sorted(roles.items())))
        found, _ = self.answers.get(key, time.monotonic())
        if found:
            return False
        generation = self.answers.generation
        try:
            changed = bool(self._ask("sync_group_roles", user, roles))
        except Unavailable:  # the head away: synced before is synced still
            if self.answers.get(key, time.monotonic(), max_age_s=STALE_WHILE_HEAD_AWAY_S)[0]:
                return False
            raise
        if changed:
            self.answers.clear()
            generation = self.answers.generation
        self.answers.put(key, True, time.monotonic(), generation)
        return changed

    def record(self, entry: AuditEntry) -> None:
        self._ask("record", entry)

    def needs_touch(self, key_id: str, now: float | None = None) -> bool:
        """Whether this process has not sent ``key_id``'s last use within LAST_USED_RESOLUTION_S."""
        return self._touched.due(key_id, now)

    def touch(self, key_id: str, now: float | None = None) -> None:
        """Send ``key_id``'s last use, not waiting for it (a request never waits on it)."""
        now = self._touched.note(key_id, now)
        try:
            self.handle.touch.remote(key_id, now)
        except Exception:  # the head away: the next use is sent a resolution later
            logger.warning("could not send the last use of key %s", key_id, exc_info=True)

    def _change(self, method: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("storage", None)  # the actor counts what a project keeps in its own storage
        try:
            return call(getattr(self.handle, method), *args, **kwargs)
        finally:
            self.answers.clear()


def _changing(name: str) -> Callable[..., Any]:
    def change(self: AccessClient, *args: Any, **kwargs: Any) -> Any:
        return self._change(name, *args, **kwargs)

    change.__name__ = change.__qualname__ = name
    change.__doc__ = f"The store's ``{name}``, run by its actor; this client's kept answers are dropped."
    return change


for _name in CHANGES:  # over the forwarders ActorProxy made: these also drop the kept answers
    setattr(AccessClient, _name, _changing(_name))


class QuotaClient(ActorProxy, QuotaAPI, protocol=QuotaAPI, via="quota"):
    """The quotas the access actor holds, called like the quota store."""

    @classmethod
    def connect(cls, settings: Settings) -> QuotaClient:
        return cls(access_actor(settings))


def access_actor(settings: Settings) -> Any:
    """The platform's access actor, created on the head node if missing: threaded, since every
    gateway off the head asks it (the stores are thread-safe, and keys are read on a connection
    of their own that a writer never makes wait)."""
    return head_actor(AccessActor, ACCESS_ACTOR_NAME, settings, max_concurrency=ACCESS_ACTOR_THREADS)


def access_store(settings: Settings) -> AccessAPI:
    """The access store for this process: ``access.db`` itself where the state folder is (outside
    Ray, or on the head node), else the head's access actor (``on_head_node``)."""
    if on_head_node():
        return AccessStore.in_state_dir(settings.resolved_state_dir)
    return AccessClient.connect(settings)


def quota_store(settings: Settings) -> QuotaAPI:
    """The projects' quotas for this process, as :func:`access_store` decides."""
    if on_head_node():
        return QuotaStore.in_state_dir(settings.resolved_state_dir)
    return QuotaClient.connect(settings)
