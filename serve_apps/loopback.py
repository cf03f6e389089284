"""Keep Serve replicas' inter-deployment gRPC servers on loopback in local-only mode.

Ray Serve 2.60 binds every replica's gRPC server to ``[::]:0`` (all interfaces) whatever the
cluster's addresses. When Ray runs local-only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the
platform's embedded mode: every address is 127.0.0.1) nothing outside may reach them, so they
bind to 127.0.0.1 instead. On a real cluster (the variable unset) Serve's behaviour is unchanged.
"""

from __future__ import annotations

import os
from typing import Any

LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def bind_replica_grpc_to_loopback() -> None:
    """Call in a deployment's constructor: it runs in the replica before Serve starts the server
    (module top level is not enough: Serve ships deployment classes by value)."""
    if os.environ.get(LOCAL_ONLY_VAR) != "0":
        return
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "loopback_only", False):
        return

    def add_loopback_port(server: Any, address: str) -> int:
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    add_loopback_port.loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_loopback_port
