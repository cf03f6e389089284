"""The platform's Serve application: ``serve run serve_apps.app:app``."""

from __future__ import annotations

from aiplatform.settings import Settings
from serve_apps.gateway import Gateway
from serve_apps.model_server import ModelServer


def build_app(settings: Settings):  # type: ignore[no-untyped-def]
    """Gateway in front of the model servers, both configured from one settings object."""
    return Gateway.bind(ModelServer.bind(settings), settings)


app = build_app(Settings())
