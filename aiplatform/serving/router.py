"""The router: model name + (version | alias | nothing) -> the version to serve.

Resolutions are cached for ``CACHE_TTL_S`` so a moved alias or a new canary split reaches every
gateway replica within a second, without a redeploy and without a registry call per request.
Misses (an unknown model, version or alias) are cached the same way, so a caller cycling through
made-up names costs one registry call per name and TTL, and the cache holds at most
``MAX_CACHED`` entries (least recently used go first) however many names are tried.

Serving outlives the registry: a resolution waits at most ``REGISTRY_WAIT_S`` for the registry (an
actor on the head node) when it has an answer to fall back on. A route never resolved has
nothing to fall back on, so it waits up to ``FIRST_WAIT_S`` for a registry that is slow but live
(a loaded head on a slow machine) rather than being refused, and only ``REGISTRY_WAIT_S`` once the
registry is known unreachable. When the registry cannot answer in time (the head is lost, its
actor restarting) or fails, the last answer stands and the router marks the registry unreachable:
from then on expired entries are answered from the cache at once and refreshed in a background
thread, until a refresh succeeds. Only a route never resolved before fails, with
:class:`Unavailable`. A head lost under load thus stalls each gateway replica once, for
``REGISTRY_WAIT_S``, and inference goes on from the worker nodes
(``tests/multinode/test_head_loss.py``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitedTooLong
from typing import Any, Protocol

from aiplatform.errors import AIPError, InvalidArgument, NotFound, Unavailable
from aiplatform.registry import ModelVersion

logger = logging.getLogger(__name__)
CACHE_TTL_S = 0.5
MAX_CACHED = 4096
DEFAULT_ALIAS = "production"
REGISTRY_WAIT_S = 1.0
"""How long a resolution waits for the registry before the last answer stands."""
FIRST_WAIT_S = 10.0
"""How long a route never resolved waits for a registry not known to be unreachable."""


class RegistryReader(Protocol):
    def resolve(self, name: str, ref: str | int) -> ModelVersion: ...
    def get_traffic(self, name: str) -> dict[int, float]: ...


class Router:
    """Resolves requests to versions; the default route honours the canary split if one is set."""

    def __init__(
        self,
        registry: RegistryReader,
        ttl_s: float = CACHE_TTL_S,
        seed: int | None = None,
        registry_wait_s: float = REGISTRY_WAIT_S,
        first_wait_s: float = FIRST_WAIT_S,
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.registry_wait_s = registry_wait_s
        self.first_wait_s = max(first_wait_s, registry_wait_s)
        self._cache: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._loader = ThreadPoolExecutor(max_workers=4, thread_name_prefix="router-registry")
        self._refreshing: set[tuple[str, str]] = set()
        self.registry_unreachable = False
        """Set while the registry does not answer: expired entries stand and are refreshed behind."""

    def _cached(self, key: tuple[str, str], load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is not None and (now - hit[0] < self.ttl_s or self.registry_unreachable):
            if now - hit[0] >= self.ttl_s:
                self._refresh_behind(key, load)
            return _answer(hit[1])
        wait_s = self.registry_wait_s if hit is not None or self.registry_unreachable else self.first_wait_s
        try:
            value = self._loader.submit(_outcome, load).result(timeout=wait_s)
        except WaitedTooLong:
            value = _Failed(TimeoutError(f"no answer within {wait_s:g} s"))
        if isinstance(value, _Failed):
            return self._unreachable(hit, value)
        if isinstance(value, _Refused):
            raise value.error
        self._store(key, now, value)
        return _answer(value)

    def _unreachable(self, hit: tuple[float, object] | None, failed: _Failed) -> Any:
        """The registry did not answer in time, or failed: the last answer stands, if there is one."""
        if not self.registry_unreachable:
            logger.warning(
                "the model registry did not answer (%s): serving the routes known until it does", failed.error
            )
        self.registry_unreachable = True
        if hit is None:
            raise Unavailable("The model registry cannot be reached to route this model; retry shortly")
        return _answer(hit[1])

    def _refresh_behind(self, key: tuple[str, str], load: Callable[[], Any]) -> None:
        """Refresh ``key`` in a background thread, one at a time per key; a success means the
        registry answers again."""
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def refresh() -> None:
            started = time.monotonic()
            try:
                value = _outcome(load)
                if not isinstance(value, _Failed | _Refused):
                    self._store(key, started, value)
                    if self.registry_unreachable:
                        logger.warning("the model registry answers again")
                    self.registry_unreachable = False
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        self._loader.submit(refresh)

    def _store(self, key: tuple[str, str], when: float, value: object) -> None:
        with self._lock:
            self._cache[key] = (when, value)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)

    def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """The version a request should use."""
        if version is not None and alias is not None:
            raise InvalidArgument("Give either version or alias, not both")
        if version is not None:
            return self._cached((name, f"v{version}"), lambda: self.registry.resolve(name, int(version)))
        if alias is not None and alias != DEFAULT_ALIAS:
            return self._cached((name, f"a:{alias}"), lambda: self.registry.resolve(name, alias))
        weights = self._cached((name, "traffic"), lambda: self.registry.get_traffic(name))
        if weights:
            chosen = self._random.choices(list(weights), weights=list(weights.values()))[0]
            return self._cached((name, f"v{chosen}"), lambda: self.registry.resolve(name, chosen))
        return self._cached((name, f"a:{DEFAULT_ALIAS}"), lambda: self.registry.resolve(name, DEFAULT_ALIAS))

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()


class _Failed:
    """A registry call that raised something other than :class:`NotFound`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _outcome(load: Callable[[], Any]) -> object:
    """What ``load`` gave: its value, the :class:`NotFound` it raised (an answer, cached like one),
    another platform error of the request (:class:`_Refused`), or a :class:`_Failed` when the
    registry could not answer."""
    try:
        return load()
    except NotFound as missing:
        return missing
    except AIPError as refused:
        if isinstance(refused, Unavailable):
            return _Failed(refused)
        return _Refused(refused)
    except Exception as exc:  # an unreachable registry, whatever Ray raised for it
        return _Failed(exc)


def _answer(value: object) -> Any:
    if isinstance(value, NotFound):
        raise NotFound(value.message)
    return value


class _Refused:
    """The registry's answer was an error of the request's own (a bad alias): raised, not kept."""

    def __init__(self, error: AIPError) -> None:
        self.error = error
