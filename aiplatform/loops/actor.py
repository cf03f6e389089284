"""The loop engine as a detached, head-pinned Ray actor, and the client every process uses.

Every ``loop_interval_s`` (or at once, when a manual trigger wakes it) it ticks the engine: the
policies' triggers are checked and each open run moved on. On failure: Ray restarts it
(``max_restarts=-1``), ``aip down`` / ``aip up`` start it again; either way its state is
``loops.sqlite`` in the state folder and its first tick carries every open run on from its last
finished step (``aiplatform.loops.engine``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import ray

from aiplatform.loops.engine import LoopEngine
from aiplatform.loops.lineage import version_link
from aiplatform.loops.notify import send_due
from aiplatform.loops.policy import parse_policy
from aiplatform.loops.store import LoopStore
from aiplatform.runtime import ActorProxy, call, head_actor
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
LOOP_ACTOR_NAME = "loop-engine"
BUSY_POLL_S = 0.5
"""How soon the actor ticks again while a run's data or gate task runs."""


class LoopAPI(Protocol):
    """What callers may ask of the loop engine."""

    def put_policy(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def policies(self) -> list[dict[str, Any]]: ...

    def policy(self, model: str) -> dict[str, Any]: ...

    def delete_policy(self, model: str) -> None: ...

    def trigger(self, model: str, by: str = "manual", detail: str | None = None) -> dict[str, Any]: ...

    def runs(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]: ...

    def run(self, run_id: str) -> dict[str, Any]: ...

    def skipped(self, model: str, limit: int = 50) -> list[dict[str, Any]]: ...

    def deliveries(self, run_id: str) -> list[dict[str, Any]]: ...

    def version_run(self, model: str, version: int) -> dict[str, Any] | None: ...

    def tick_now(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


class LoopService:
    """The engine's answers as plain dicts over its store: what the actor serves (and what a
    test calls in its own process)."""

    def __init__(self, store: LoopStore, engine: LoopEngine) -> None:
        self.store = store
        self.engine = engine

    def put_policy(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.engine.put_policy(parse_policy(body), time.time()).to_dict()

    def policies(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.store.policies()]

    def policy(self, model: str) -> dict[str, Any]:
        return self.store.policy(model).to_dict()

    def delete_policy(self, model: str) -> None:
        self.store.delete_policy(model)

    def trigger(self, model: str, by: str = "manual", detail: str | None = None) -> dict[str, Any]:
        return self.engine.trigger(model, time.time(), by=by, detail=detail)

    def runs(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.store.runs(model, limit)]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.store.run(run_id).to_dict()

    def skipped(self, model: str, limit: int = 50) -> list[dict[str, Any]]:
        self.store.policy(model)  # 404 for a model without a policy
        return self.store.skipped(model, limit)

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        self.store.run(run_id)  # 404 for an unknown run
        return self.store.deliveries(run_id)

    def version_run(self, model: str, version: int) -> dict[str, Any] | None:
        """The run that made ``version`` as its registry lineage links it (``lineage.version_link``)."""
        run = self.store.run_of_version(model, version)
        return None if run is None else version_link(run.to_dict())


class LoopActor(LoopService):
    def __init__(self, settings: Settings) -> None:
        # Here, not at the top: a client (the API) imports this module without the platform's
        # data, gate and serving code the engine runs.
        from aiplatform.loops.platform import PlatformLoops
        from aiplatform.serving.deployer import warm_on_serve
        from aiplatform.serving.pools import pool_routes

        self.settings = settings
        store = LoopStore(settings.resolved_state_dir / "loops.sqlite", webhooks=settings.webhook_urls)
        platform = PlatformLoops(settings, warm_on_serve(settings.serve_app_name, pool_routes(settings)))
        super().__init__(store, LoopEngine(store, platform, clock=time.time))
        self._wake = threading.Event()
        self._tick_lock = threading.Lock()
        self.ticks = 0
        self.last_tick: dict[str, Any] = {}
        threading.Thread(target=self._loop, name="loop-engine", daemon=True).start()

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def trigger(self, model: str, by: str = "manual", detail: str | None = None) -> dict[str, Any]:
        outcome = super().trigger(model, by=by, detail=detail)
        self._wake.set()  # the run starts now, not at the next interval
        return outcome

    def tick_now(self) -> dict[str, Any]:
        """One tick at once (the loop does the same every interval)."""
        with self._tick_lock:
            report = self.engine.tick(time.time())
            secret = self.settings.loop_webhook_secret
            send_due(self.store, secret.get_secret_value() if secret else None, time.time())
            self.ticks += 1
            self.last_tick = {"at": time.time(), **report.__dict__}
        return self.last_tick

    def status(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "interval_s": self.settings.loop_interval_s, "last_tick": self.last_tick}

    def _loop(self) -> None:
        while True:
            try:
                self.tick_now()
            except Exception:
                logger.exception("loop engine tick failed; trying again next interval")
            # A data or gate task running: looked at again soon, not a whole interval after it ends.
            busy = getattr(self.engine.platform, "busy", False)
            self._wake.wait(min(self.settings.loop_interval_s, BUSY_POLL_S) if busy else self.settings.loop_interval_s)
            self._wake.clear()


class LoopClient(ActorProxy, LoopAPI, protocol=LoopAPI):
    """The loop actor, called like the engine (see ``ActorProxy``)."""

    @classmethod
    def connect(cls, settings: Settings) -> LoopClient:
        return cls(head_actor(LoopActor, LOOP_ACTOR_NAME, settings))


def loop_of_version(settings: Settings, model: str, version: int) -> dict[str, Any] | None:
    """The loop run that made a model version (``LoopService.version_run``); None when no loop
    engine runs on this platform (it is not started for a lineage read) or no run made it."""
    if not ray.is_initialized():
        return None
    try:
        handle = ray.get_actor(LOOP_ACTOR_NAME, namespace=settings.ray_namespace)
    except ValueError:
        return None
    return LoopClient(handle).version_run(model, version)


def ensure_loop_engine(settings: Settings) -> LoopClient:
    """Create the loop engine if needed and wait until it runs (``aip up``)."""
    client = LoopClient.connect(settings)
    call(client.handle.ping)
    return client
