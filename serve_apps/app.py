"""The platform's Serve application: ``serve run serve_apps.app:app``."""

from __future__ import annotations

from aiplatform.settings import Settings
from serve_apps.gateway import Gateway
from serve_apps.model_server import AUTOSCALING, ModelServer


def build_app(settings: Settings):  # type: ignore[no-untyped-def]
    """Gateway in front of the model servers, both configured from one settings object."""
    gateway = Gateway.options(
        num_replicas=settings.serve_gateway_replicas,
        max_ongoing_requests=settings.serve_gateway_max_ongoing,
        max_queued_requests=settings.serve_gateway_max_queued,
    )
    autoscaling = {**AUTOSCALING, "min_replicas": settings.serve_min_replicas,
                   "max_replicas": settings.serve_max_replicas}
    model_server = ModelServer.options(autoscaling_config=autoscaling)
    return gateway.bind(model_server.bind(settings), settings)


app = build_app(Settings())
