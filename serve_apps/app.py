"""The platform's Serve application: ``serve run serve_apps.app:app``."""

from __future__ import annotations

import os
import socket

from ray import serve

from aiplatform.serving.loopback import LOCAL_ONLY_VAR
from aiplatform.serving.oip_grpc import SERVICER_FUNCTION
from aiplatform.settings import Settings
from serve_apps.gateway import Gateway
from serve_apps.model_server import model_server_app

_LISTEN_PORT: dict[str, int | None] = {"port": None}
"""The port ``start_app`` gave the gateway replicas in this process; ``deploy_app`` keeps it."""


def build_app(settings: Settings, listen_port: int | None = None):  # type: ignore[no-untyped-def]
    """Gateway in front of the model servers, both configured from one settings object;
    ``listen_port``: the loopback port the gateway replicas answer on themselves."""
    gateway = Gateway.options(
        num_replicas=settings.serve_gateway_replicas,
        max_ongoing_requests=settings.serve_gateway_max_ongoing,
        max_queued_requests=settings.serve_gateway_max_queued,
    )
    model_server = model_server_app(settings, settings.serve_min_replicas, settings.serve_max_replicas)
    return gateway.bind(model_server, settings, listen_port)


def deploy_app(settings: Settings) -> None:
    """(Re)deploy the platform app on the running Serve instance, at route ``/``."""
    serve.run(build_app(settings, _LISTEN_PORT["port"]), name=settings.serve_app_name, route_prefix="/")


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_app(settings: Settings, http_port: int | None = None, grpc_port: int | None = None) -> str:
    """Serve's HTTP proxy on 127.0.0.1 (``http_port`` or the settings') and its gRPC proxy for the
    Open Inference Protocol (``grpc_port`` or the settings'; 0: none), then the app; returns the
    base URL. An already running Serve keeps its proxies."""
    port = http_port or settings.http_port
    grpc = settings.grpc_port if grpc_port is None else grpc_port
    # Local-only (`aip up`, the tests): the gateway replicas answer on the URL's port themselves
    # and Serve's HTTP proxy, a hop that cost two thirds of the throughput (docs/BENCHMARKS.md,
    # issue 30), moves to a port of its own. On a cluster, direct ingress behind a load balancer.
    local = os.environ.get(LOCAL_ONLY_VAR) == "0"
    _LISTEN_PORT["port"] = port if local else None
    proxy_port = _free_loopback_port() if local else port
    # Local-only: one proxy, on the head, as in config.yaml (the nodes of a one-machine cluster
    # would otherwise all bind the same loopback port; the gateways' own listener is the ingress).
    # On a cluster, a proxy on every node, so that inference goes on from the worker nodes while
    # the head is lost (docs/CLUSTER.md). Serve binds gRPC to every interface; in local-only mode
    # aiplatform.serving.loopback keeps it on 127.0.0.1.
    serve.start(
        proxy_location="HeadOnly" if local else "EveryNode",
        http_options={"host": "127.0.0.1", "port": proxy_port, "request_timeout_s": settings.serve_request_timeout_s},
        grpc_options={
            "port": grpc,
            "grpc_servicer_functions": [SERVICER_FUNCTION] if grpc else [],
            "request_timeout_s": settings.serve_request_timeout_s,
        },
    )
    deploy_app(settings)
    return f"http://127.0.0.1:{port}"


app = build_app(Settings())
