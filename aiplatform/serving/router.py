"""The router: model name + (version | alias | nothing) -> the version to serve.

Resolutions are cached for ``CACHE_TTL_S`` so a moved alias or a new canary split reaches every
gateway replica within a second, without a redeploy and without a registry call per request.
Misses (an unknown model, version or alias) are cached the same way, so a caller cycling through
made-up names costs one registry call per name and TTL, and the cache holds at most
``MAX_CACHED`` entries (least recently used go first) however many names are tried.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from typing import Protocol

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.registry import ModelVersion

CACHE_TTL_S = 0.5
MAX_CACHED = 4096
DEFAULT_ALIAS = "production"


class RegistryReader(Protocol):
    def resolve(self, name: str, ref: str | int) -> ModelVersion: ...
    def get_traffic(self, name: str) -> dict[int, float]: ...


class Router:
    """Resolves requests to versions; the default route honours the canary split if one is set."""

    def __init__(self, registry: RegistryReader, ttl_s: float = CACHE_TTL_S, seed: int | None = None) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._cache: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def _cached(self, key: tuple[str, str], load):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                self._cache.move_to_end(key)
                value = hit[1]
                if isinstance(value, NotFound):
                    raise NotFound(value.message)
                return value
        try:
            value = load()
        except NotFound as missing:
            value = missing
        with self._lock:
            self._cache[key] = (now, value)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        if isinstance(value, NotFound):
            raise NotFound(value.message)
        return value

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
