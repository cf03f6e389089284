"""The router: model name + (version | alias | nothing) -> the version to serve.

Resolutions are cached for ``CACHE_TTL_S`` so a moved alias or a new canary split reaches every
gateway replica within a second, without a redeploy and without a registry call per request.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Optional, Protocol

from aiplatform.errors import InvalidArgument
from aiplatform.registry import ModelVersion

CACHE_TTL_S = 0.5
DEFAULT_ALIAS = "production"


class RegistryReader(Protocol):
    def resolve(self, name: str, ref: str | int) -> ModelVersion: ...
    def get_traffic(self, name: str) -> dict[int, float]: ...


class Router:
    """Resolves requests to versions; the default route honours the canary split if one is set."""

    def __init__(self, registry: RegistryReader, ttl_s: float = CACHE_TTL_S, seed: Optional[int] = None) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[float, object]] = {}
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def _cached(self, key: tuple[str, str], load):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        value = load()
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def resolve(self, name: str, version: Optional[int] = None, alias: Optional[str] = None) -> ModelVersion:
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
