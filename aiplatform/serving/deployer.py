"""Auto-deploy: gate a new version, warm it on the model servers, then move ``production``.

The alias moves only after the new version is loaded somewhere, and routers pick the move up
within their cache TTL; requests in flight finish on the version they started with, so a switch
under load fails no request. The previous version stays registered for ``rollback``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from aiplatform.errors import Conflict, InvalidArgument, NotFound, Unavailable
from aiplatform.registry import ModelVersion, RegistryAPI
from aiplatform.serving.pools import POOL_DEPLOYMENT, PoolRoutes

logger = logging.getLogger(__name__)
PRODUCTION = "production"
DEFAULT_TOLERANCE = 0.005
GATE_METRIC = "test_accuracy"


@dataclass(frozen=True)
class Deployment:
    name: str
    version: int
    previous_version: int | None
    gate: str
    by: str | None = None
    """Who moved it (None: unknown)."""

    def describe(self) -> str:
        return f"{self.name}: production -> version {self.version} (was {self.previous_version}; {self.gate})"


def check_gate(candidate: ModelVersion, current: ModelVersion | None, tolerance: float) -> str:
    """Pass when the candidate's test accuracy is not below production's minus ``tolerance``."""
    if current is None:
        return "no production version yet"
    new, old = candidate.metrics.get(GATE_METRIC), current.metrics.get(GATE_METRIC)
    if new is None or old is None:
        raise Conflict(
            f"Cannot gate {candidate.name} v{candidate.version}: {GATE_METRIC} missing "
            f"({'candidate' if new is None else 'production'}); deploy with force to skip the gate"
        )
    if float(new) < float(old) - tolerance:
        raise Conflict(
            f"Gate refused {candidate.name} v{candidate.version}: {GATE_METRIC} {new:.4f} is below "
            f"production v{current.version}'s {old:.4f} minus tolerance {tolerance}"
        )
    return f"{GATE_METRIC} {new:.4f} >= {old:.4f} - {tolerance}"


@functools.lru_cache(maxsize=1)
def _warm_loop() -> asyncio.AbstractEventLoop:
    """One event loop, running for the life of the process, that warm-ups are awaited on. With
    Serve's throughput-optimized mode, a handle routes on the loop of its first call: a loop per
    call (``asyncio.run``) leaves the next call's handle on a closed loop."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="aip-warm-loop", daemon=True).start()
    return loop


def warm_on_serve(app_name: str, pools: PoolRoutes | None = None) -> Callable[[str], None]:
    """A ``warm`` callable that loads a model id on the running Serve app's model servers, or on
    its project's own (``pools``: ``aiplatform.serving.pools``), from a thread that is not running
    an event loop (a CLI, or a sync API route)."""

    def warm(model_id: str) -> None:
        from ray import serve
        from ray.serve.exceptions import RayServeException

        pool = None if pools is None else pools.app_for(model_id.rpartition(":")[0])

        async def load() -> None:
            handle = serve.get_deployment_handle(POOL_DEPLOYMENT, app_name=pool or app_name)
            await handle.options(multiplexed_model_id=model_id).model_config.remote(model_id)

        try:
            asyncio.run_coroutine_threadsafe(load(), _warm_loop()).result()
        except (RayServeException, KeyError) as exc:  # KeyError: no such deployment (a pool not running)
            how = (
                "start it with `serve run serve_apps/config.yaml`"
                if pool is None
                else "a gateway redeploys it as it starts"
            )
            raise Unavailable(f"Serve app {pool or app_name!r} is not running ({exc}); {how}") from exc

    return warm


def deploy(
    registry: RegistryAPI,
    name: str,
    version: int,
    *,
    warm: Callable[[str], None],
    tolerance: float = DEFAULT_TOLERANCE,
    force: bool = False,
    by: str | None = None,
) -> Deployment:
    """Gate, warm (``warm("name:version")`` loads it on the servers), then move the alias."""
    candidate = registry.get_version(name, version)
    try:
        current: ModelVersion | None = registry.resolve(name, PRODUCTION)
    except NotFound:
        current = None
    gate = "skipped (force)" if force else check_gate(candidate, current, tolerance)
    warm(f"{name}:{candidate.version}")
    registry.set_alias(name, PRODUCTION, candidate.version, by=by)
    logger.info("deployed %s v%s (was %s): %s", name, candidate.version, current.version if current else None, gate)
    return Deployment(name, candidate.version, current.version if current else None, gate, by)


def rollback(registry: RegistryAPI, name: str, *, warm: Callable[[str], None], by: str | None = None) -> Deployment:
    """Point ``production`` back at the version it held before its last move."""
    history = registry.alias_history(name, PRODUCTION, limit=1)
    if not history or history[0]["previous_version"] is None:
        raise Conflict(f"Model {name!r} has no earlier production version to roll back to")
    current, previous = history[0]["version"], int(history[0]["previous_version"])
    warm(f"{name}:{previous}")
    registry.set_alias(name, PRODUCTION, previous, by=by)
    return Deployment(name, previous, current, "rollback", by)


def set_canary(
    registry: RegistryAPI,
    name: str,
    version: int | None,
    weight: float,
    *,
    warm: Callable[[str], None],
    by: str | None = None,
) -> dict[int, float]:
    """Send ``weight`` percent of ``name``'s default route to ``version`` and the rest to
    production (warmed first); ``version=None`` ends the canary."""
    if version is None:
        return registry.set_traffic(name, {}, by=by)
    if not 0 < weight < 100:
        raise InvalidArgument(f"Canary weight must be between 0 and 100 (exclusive), got {weight}")
    production = registry.resolve(name, PRODUCTION)
    candidate = registry.get_version(name, version)
    if candidate.version == production.version:
        raise Conflict(f"Version {version} of {name!r} already is production")
    warm(f"{name}:{candidate.version}")
    return registry.set_traffic(name, {production.version: 100 - weight, candidate.version: weight}, by=by)


def describe_split(name: str, weights: dict[int, float]) -> str:
    if not weights:
        return f"{name}: no canary; all traffic follows {PRODUCTION}"
    return f"{name}: " + ", ".join(f"v{v} {w:g}%" for v, w in sorted(weights.items()))
