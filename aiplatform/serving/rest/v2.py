"""The Open Inference Protocol (KServe v2) over REST: health, server and model metadata, infer
with JSON or binary tensors (the binary tensor data extension)."""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aiplatform.serving.dataplane import DataPlane, Predictions
from aiplatform.serving.oip_binary import shape_response
from aiplatform.serving.requests import read_infer_request
from aiplatform.serving.rest import route
from aiplatform.serving.v2 import infer_answer, server_metadata


class V2Endpoints:
    """The Open Inference Protocol's REST endpoints over the inference core."""

    def __init__(self, core: DataPlane) -> None:
        self.core = core

    @route("GET", "/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @route("GET", "/v2/health/ready")
    async def ready(self) -> JSONResponse:
        if await self.core.ready():
            return JSONResponse(content={"ready": True})
        return JSONResponse(status_code=503, content={"ready": False})

    @route("GET", "/v2")
    async def v2_server(self) -> dict[str, Any]:
        return server_metadata()

    @route("GET", "/v2/models/{name}")
    async def v2_model(self, name: str) -> dict[str, Any]:
        return await self.core.model_metadata(name, None)

    @route("GET", "/v2/models/{name}/versions/{version}")
    async def v2_model_version(self, name: str, version: int) -> dict[str, Any]:
        return await self.core.model_metadata(name, version)

    @route("GET", "/v2/models/{name}/ready")
    async def v2_ready(self, name: str) -> dict[str, Any]:
        return await self.core.model_ready(name, None)

    @route("GET", "/v2/models/{name}/versions/{version}/ready")
    async def v2_version_ready(self, name: str, version: int) -> dict[str, Any]:
        return await self.core.model_ready(name, version)

    @route("POST", "/v2/models/{name}/infer", direct=True)
    async def v2_infer(self, name: str, request: Request) -> Response:
        return http_response(await self.core.infer(name, None, partial(read_infer_request, request)))

    @route("POST", "/v2/models/{name}/versions/{version}/infer", direct=True)
    async def v2_version_infer(self, name: str, version: int, request: Request) -> Response:
        return http_response(await self.core.infer(name, version, partial(read_infer_request, request)))


def http_response(predictions: Predictions) -> Response:
    """The outputs the request asked for, as JSON or binary tensors."""
    content, headers = shape_response(infer_answer(predictions), predictions.wanted)  # type: ignore[arg-type]
    return Response(content, headers=headers)
