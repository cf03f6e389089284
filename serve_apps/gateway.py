"""The gateway: the Serve deployment in front of the model servers. It wires the inference core
(``aiplatform.serving.dataplane``) under its protocols (v1 and v2 REST in
``aiplatform.serving.rest``, gRPC in ``aiplatform.serving.oip_grpc.servicer``) into one FastAPI
app with the REST API and the web UI (``aiplatform.api``)."""

from __future__ import annotations

import functools
import logging
import threading

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from aiplatform.api import Platform, include_api, set_platform
from aiplatform.api.admission import Admission
from aiplatform.api.endpoint_routes import bind_endpoints, include_endpoints
from aiplatform.api.errors import RETRY_AFTER_S
from aiplatform.limits import RequestLimits
from aiplatform.results import ResultWriter
from aiplatform.serving.dataplane import DataPlane, ServeModelServers
from aiplatform.serving.deployer import warm_on_serve
from aiplatform.serving.ingress import PublicListener
from aiplatform.serving.loopback import keep_serve_on_loopback
from aiplatform.serving.oip_grpc.servicer import RPCS, InferenceServicer
from aiplatform.serving.pools import ServePools, pool_routes
from aiplatform.serving.rest.v1 import V1Endpoints
from aiplatform.serving.rest.v2 import V2Endpoints
from aiplatform.settings import Settings
from aiplatform.tokens import with_api_token
from serve_apps.model_server import model_server_app

logger = logging.getLogger(__name__)


def gateway_app() -> FastAPI:
    """The gateway's FastAPI app: the inference protocols' routes and the REST API with the UI."""
    app = FastAPI(title="aiplatform", description="Training tasks, models, datasets, inference and results.")
    include_endpoints(app, V1Endpoints, V2Endpoints)  # first: the hot routes' direct path sits inside the guard
    include_api(app)
    return app


def _reconcile(pools: ServePools) -> None:
    """Bring the projects' model-server pools in line with the stored quotas (``ServePools.reconcile``:
    a fresh cluster has none)."""
    try:
        started = pools.reconcile()
    except Exception:  # the gateway serves on; the next replica start tries again
        logger.warning("cannot deploy the projects' model-server pools", exc_info=True)
        return
    if started:
        logger.info("deployed the model-server pools of projects %s", ", ".join(started))


@serve.deployment(
    max_ongoing_requests=256,
    max_queued_requests=256,
    backpressure_config={"status_code": 503, "retry_after_s": RETRY_AFTER_S},
    ray_actor_options={"num_cpus": 0.25},
)
@serve.ingress()
class Gateway:
    """One gateway replica: the platform's clients, the inference core, its protocols, and
    (local-only) its own listener. Serve's gRPC proxy calls the method named as each RPC: those
    are the servicer's (``RPCS``).

    The replica builds its app and Serve serves that one (``__serve_build_asgi_app__``): an app
    given to ``@serve.ingress(app)`` is served as a copy made where the class was pickled, and a
    constructor that installs the platform on a module's ``app`` may be installing it on another
    object than the one Serve's direct ingress answers with."""

    def __init__(self, model_server: DeploymentHandle, settings: Settings, listen_port: int | None = None) -> None:
        """``listen_port``: the loopback port this replica also answers on itself (a local
        platform's URL: aiplatform.serving.ingress), shared by the node's gateway replicas."""
        keep_serve_on_loopback()
        settings = with_api_token(settings, create=False)  # a token kept in the state folder counts
        self.gateway_app = app = gateway_app()
        # The REST API's routes (aiplatform.api) share these clients through the app's Platform.
        # Projects with a serving-replica quota have model servers of their own (pools.py).
        routes = pool_routes(settings, background=True)
        pools = ServePools(
            settings.serve_app_name,
            functools.partial(model_server_app, settings),
            settings.serve_min_replicas,
            routes.replica_quotas,
        )
        platform = Platform.connect(settings, warm=warm_on_serve(settings.serve_app_name, routes), pools=pools)
        set_platform(app, platform)
        threading.Thread(target=_reconcile, args=(pools,), name="aip-pools", daemon=True).start()
        recorder = ResultWriter(
            platform.results.handle, input_storage=platform.storage if settings.serve_store_inputs else None
        )
        self.core = DataPlane(
            ServeModelServers(model_server, routes),
            platform.registry,
            recorder,
            RequestLimits.from_settings(settings),
            settings.serve_max_batch_size,
            settings.serve_batches_in_flight,
            RETRY_AFTER_S,
            name=f"gateway-{serve.get_replica_context().replica_tag}",
        )
        bind_endpoints(app, V1Endpoints(self.core), V2Endpoints(self.core))
        access = platform.access  # gRPC calls; HTTP has its middleware
        servicer = InferenceServicer(
            self.core, access.auth, access.token, access.directory, access.models, blocking=access.blocking
        )
        for rpc in RPCS:
            setattr(self, rpc, getattr(servicer, rpc))
        self.listener = None if listen_port is None else self._listen(settings, listen_port)

    def _listen(self, settings: Settings, port: int) -> PublicListener | None:
        limit = settings.serve_gateway_max_ongoing + settings.serve_gateway_max_queued  # Serve's own backpressure
        try:
            return PublicListener(
                Admission(self.gateway_app, limit, RETRY_AFTER_S, settings.serve_request_timeout_s),
                "127.0.0.1",
                port,
                ready=lambda: serve.get_replica_context().servable_object is not None,
                # This deployment's other replicas (a replacement binds while the old one drains).
                is_peer=lambda command: command.startswith(f"ray::ServeReplica:{settings.serve_app_name}:Gateway"),
            )
        except OSError as exc:  # e.g. an older Serve's proxy on it: clients still reach that
            logger.warning("the gateway cannot listen on port %d (%s); Serve's ingress answers there", port, exc)
            return None

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.gateway_app

    async def __del__(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
