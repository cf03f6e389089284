"""Keep every gRPC server Ray Serve opens on loopback when Ray runs local-only.

Ray Serve 2.60 binds its gRPC servers to ``[::]`` (all interfaces) whatever the cluster's
addresses: each replica's server for calls between deployments, and the gRPC ingress (the proxy's,
and each ingress replica's under direct ingress). When Ray runs local-only
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the platform's embedded mode: every address is 127.0.0.1)
nothing outside may reach them, so they bind to 127.0.0.1 instead. On a real cluster (the
variable unset) Serve's behaviour is unchanged.

Two ways in, for the two kinds of process: ``keep_serve_on_loopback`` is Ray's
``worker_process_setup_hook`` of the drivers that start Serve (``aiplatform.runtime.local_runtime_env``), so the
controller and the proxy it creates run it before they open a port; replicas also call it in their
constructors (Serve ships deployment classes by value, so module top level is not enough).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PATCHED = {
    "ray.serve._private.replica": "add_port_to_grpc_server",  # a replica's server for calls between deployments
    "ray.serve._private.default_impl": "add_grpc_address",  # the gRPC ingress: the proxy's, or a replica's
}
"""Serve's modules and the function in each that binds a gRPC server to an address."""


def _on_loopback(original: Callable[[Any, str], int]) -> Callable[[Any, str], int]:
    if getattr(original, "loopback_only", False):
        return original

    def add_loopback_port(server: Any, address: str) -> int:
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    add_loopback_port.loopback_only = True  # type: ignore[attr-defined]
    return add_loopback_port


def _patch(module: ModuleType) -> None:
    name = PATCHED[module.__name__]
    setattr(module, name, _on_loopback(getattr(module, name)))


class _PatchingLoader:
    """Runs a module as its own loader would, then patches it; anything else is the loader's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _PatchWhenImported(importlib.abc.MetaPathFinder):
    """Patches Serve's modules when (if ever) this process imports them: the hook runs in every
    worker, and most (Ray Data tasks, Train workers) never load Serve, which costs ~1 s to import."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)  # type: ignore[assignment]
                return spec
        return None


def keep_serve_on_loopback() -> None:
    """Make Serve's gRPC servers in this process bind 127.0.0.1 (local-only mode only): the
    modules already imported at once, the others when they are imported."""
    if os.environ.get(LOCAL_ONLY_VAR) != "0":
        return
    for name in PATCHED:
        if name in sys.modules:
            _patch(sys.modules[name])
    if not any(isinstance(finder, _PatchWhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchWhenImported())
