"""The request-body limit on the API app: over the limit is 413 with the error body, whether
the client declares the size or streams it; under it the route runs."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from aiplatform.api.body_limit import BodyLimitMiddleware

pytestmark = pytest.mark.unit


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_bytes=1000)

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/v2/echo")
    async def echo_v2(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


def test_bodies_over_the_limit_are_refused_with_413() -> None:
    client = TestClient(_app())
    assert client.post("/v1/echo", content=b"x" * 1000).json() == {"bytes": 1000}
    declared = client.post("/v1/echo", content=b"x" * 1001)
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"
    assert "the limit is 1000 bytes" in declared.json()["message"]
    streamed = client.post("/v1/echo", content=iter([b"x" * 600, b"x" * 600]))  # chunked, no length
    assert streamed.status_code == 413
    assert client.post("/v2/echo", content=b"x" * 5000).json() == {
        "error": "Request body is 5000 bytes or more; the limit is 1000 bytes"
    }
