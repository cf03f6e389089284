"""Keep every gRPC server Ray Serve opens on loopback when Ray runs local-only.

Ray Serve 2.60 binds its gRPC servers to ``[::]`` (all interfaces) whatever the cluster's
addresses: each replica's server for calls between deployments, and the gRPC ingress (the proxy's,
and each ingress replica's under direct ingress). When Ray runs local-only
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the platform's embedded mode: every address is 127.0.0.1)
nothing outside may reach them, so they bind to 127.0.0.1 instead. On a real cluster (the
variable unset) Serve's behaviour is unchanged.

Two ways in, for the two kinds of process: ``keep_serve_on_loopback`` is Ray's
``worker_process_setup_hook`` of the drivers that start Serve (``aiplatform.runtime.LOCAL_RUNTIME_ENV``), so the
controller and the proxy it creates run it before they open a port; replicas also call it in their
constructors (Serve ships deployment classes by value, so module top level is not enough).
"""

from __future__ import annotations

import os
from typing import Any, Callable

LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _on_loopback(original: Callable[[Any, str], int]) -> Callable[[Any, str], int]:
    if getattr(original, "loopback_only", False):
        return original

    def add_loopback_port(server: Any, address: str) -> int:
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    add_loopback_port.loopback_only = True  # type: ignore[attr-defined]
    return add_loopback_port


def keep_serve_on_loopback() -> None:
    """Make Serve's gRPC servers in this process bind 127.0.0.1 (local-only mode only)."""
    if os.environ.get(LOCAL_ONLY_VAR) != "0":
        return
    from ray.serve._private import default_impl, replica

    replica.add_port_to_grpc_server = _on_loopback(replica.add_port_to_grpc_server)
    default_impl.add_grpc_address = _on_loopback(default_impl.add_grpc_address)
