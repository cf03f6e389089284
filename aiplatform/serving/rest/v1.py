"""The v1 REST protocol: ``POST /v1/models/{name}/predict`` with an upload or a JSON body."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse

from aiplatform.serving.dataplane import DataPlane, Predictions
from aiplatform.serving.requests import read_input
from aiplatform.serving.rest import route


class V1Endpoints:
    """The v1 endpoints over the inference core."""

    def __init__(self, core: DataPlane) -> None:
        self.core = core

    @route("POST", "/v1/models/{name}/predict", direct=True)
    async def predict(
        self, name: str, request: Request, version: int | None = None, alias: str | None = None
    ) -> JSONResponse:
        """One input (an uploaded file or a JSON body) or many (a CSV of table rows) classified by
        ``name``'s version (``version``, ``alias``, or the default route with its canary split)."""
        # A plain JSONResponse: FastAPI's response validation would cost more than the model.
        return JSONResponse(predict_body(await self.core.predict(name, version, alias, partial(read_input, request))))


def predict_body(predictions: Predictions) -> dict[str, object]:
    """The v1 answer: one prediction's fields at the top, or ``rows`` and ``predictions``."""
    target = predictions.target
    latency_ms = round(predictions.latency_ms, 3)
    if predictions.many:
        return {
            "request_id": predictions.request_id,
            "model": target.name,
            "version": target.version,
            "rows": len(predictions.outputs),
            "predictions": predictions.outputs,
            "latency_ms": latency_ms,
        }
    answer = predictions.answers[0]
    extra = {"chunks": answer["chunks"]} if "chunks" in answer else {}
    return {
        "request_id": predictions.request_id,
        "model": target.name,
        "version": target.version,
        **predictions.outputs[0],
        "latency_ms": latency_ms,
        "batch_size": answer["batch_size"],
        **extra,
    }
