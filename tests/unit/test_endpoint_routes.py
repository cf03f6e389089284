"""The inference routes' direct path answers exactly as FastAPI's router would, inside the guard."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from aiplatform.api.app import include_api
from aiplatform.api.endpoint_routes import DirectDispatch, DirectRoute, bind_endpoints, direct_route, include_endpoints
from aiplatform.api.security import AccessPolicy
from aiplatform.errors import NotFound
from aiplatform.serving.rest import Route, declared_routes, route

ROUTES = (
    DirectRoute("POST", "/v1/models/{name}/predict", "predict", query={"version": int, "alias": str}),
    DirectRoute("POST", "/v2/models/{name}/versions/{version:int}/infer", "infer"),
)
REQUESTS = [
    ("POST", "/v1/models/digits/predict", b'{"x": 1}'),
    ("POST", "/v1/models/digits/predict?version=3&alias=prod", b"{}"),
    ("POST", "/v1/models/digits/predict?version=abc", b"{}"),  # FastAPI's validation error
    ("POST", "/v1/models/digits/predict?version=-1", b"{}"),
    ("POST", "/v1/models/digits/predict?version=1&version=2", b"{}"),
    ("POST", "/v1/models/digits/predict?other=1&alias=", b"{}"),
    ("POST", "/v1/models/missing/predict", b"{}"),  # the endpoint's own 404
    ("POST", "/v1/models/broken/predict", b"{}"),  # an unexpected error: 500, nothing leaked
    ("GET", "/v1/models/digits/predict", b""),  # 405 from FastAPI
    ("POST", "/v1/models/a%2Fb/predict", b"{}"),
    ("POST", "/v2/models/digits/versions/7/infer", b"[1]"),
    ("POST", "/v2/models/digits/versions/seven/infer", b"[1]"),
    ("POST", "/v2/models/missing/versions/1/infer", b"[1]"),
]
calls: list[str] = []


def _app(fast: bool, auth: str = "off") -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        DirectDispatch, routes=ROUTES, endpoints_of=lambda scope: getattr(scope["app"].state, "fast", None)
    )
    include_api(app)

    @app.post("/v1/models/{name}/predict")
    async def predict(
        name: str, request: Request, version: int | None = None, alias: str | None = None
    ) -> JSONResponse:
        calls.append("predict")
        if name == "missing":
            raise NotFound(f"Model {name!r} not found")
        if name == "broken":
            raise RuntimeError("a secret detail")
        body = await request.body()
        return JSONResponse({"name": name, "version": version, "alias": alias, "body": body.decode()})

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, version: int, request: Request) -> JSONResponse:
        calls.append("infer")
        if name == "missing":
            raise NotFound(f"Model {name!r} not found")
        return JSONResponse({"name": name, "version": version, "body": (await request.body()).decode()})

    app.state.platform = SimpleNamespace(access=AccessPolicy(auth, "s3cret", ("127.0.0.1",)))
    app.state.fast = {"predict": predict, "infer": infer} if fast else None
    return app


def _answers(app: FastAPI, headers: dict[str, str] | None = None) -> list[tuple[int, Any]]:
    client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    answers = []
    for method, url, body in REQUESTS:
        response = client.request(method, url, content=body or None, headers=headers)
        answers.append((response.status_code, response.json(), response.headers.get("x-frame-options")))
    return answers


def test_the_fast_path_answers_every_request_as_fastapi_does() -> None:
    slow = _answers(_app(fast=False))
    calls.clear()
    fast = _answers(_app(fast=True))
    assert [answer[:2] for answer in fast] == [answer[:2] for answer in slow]
    # Every answer keeps the guard's security headers; FastAPI's 500 (from the outermost
    # middleware) had none.
    assert {frame for _, _, frame in fast} == {"DENY"}
    assert [status for status, _, _ in fast] == [200, 200, 400, 200, 200, 200, 404, 500, 405, 404, 200, 400, 404]
    assert "secret" not in str(fast[7])
    assert calls == ["predict"] * 7 + ["infer"] * 2


def test_the_fast_path_takes_the_requests_it_understands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proved by FastAPI's router never being asked."""
    app = _app(fast=True)
    seen: list[str] = []
    original = app.router.__call__

    async def router(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await original(scope, receive, send)

    monkeypatch.setattr(app, "router", router)
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.post("/v1/models/digits/predict?version=2", content=b"{}").json()["version"] == 2
    assert client.post("/v2/models/digits/versions/7/infer", content=b"[]").json()["version"] == 7
    assert seen == []
    client.post("/v1/models/digits/predict?version=x", content=b"{}")
    assert seen == ["/v1/models/digits/predict"]


def test_the_guard_and_the_body_limit_still_come_first() -> None:
    client = TestClient(_app(fast=True, auth="token"), base_url="http://127.0.0.1:8000")
    calls.clear()
    refused = client.post("/v1/models/digits/predict", content=b"{}")
    assert refused.status_code == 401 and refused.json()["error"] == "unauthenticated"
    wrong_host = client.post(
        "/v1/models/digits/predict", content=b"{}", headers={"host": "evil.example", "authorization": "Bearer s3cret"}
    )
    assert wrong_host.status_code == 400
    too_large = client.post(
        "/v1/models/digits/predict", content=b"x" * (33 * 1024 * 1024), headers={"authorization": "Bearer s3cret"}
    )
    assert too_large.status_code == 413
    assert calls == []
    allowed = client.post("/v1/models/digits/predict", content=b"{}", headers={"authorization": "Bearer s3cret"})
    assert allowed.status_code == 200 and allowed.headers["x-content-type-options"] == "nosniff"


class Endpoints:
    """The two routes above, each declared once, on its endpoint."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    @route("POST", "/v1/models/{name}/predict", direct=True)
    async def predict(
        self, name: str, request: Request, version: int | None = None, alias: str | None = None
    ) -> JSONResponse:
        calls.append("predict")
        if name == "missing":
            raise NotFound(f"Model {name!r} not found")
        if name == "broken":
            raise RuntimeError("a secret detail")
        body = await request.body()
        return JSONResponse({"name": name, "version": version, "alias": alias, "body": body.decode()})

    @route("POST", "/v2/models/{name}/versions/{version}/infer", direct=True)
    async def infer(self, name: str, version: int, request: Request) -> JSONResponse:
        calls.append("infer")
        if name == "missing":
            raise NotFound(f"Model {name!r} not found")
        return JSONResponse({"name": name, "version": version, "body": (await request.body()).decode()})

    @route("GET", "/v2/models/{name}")
    async def metadata(self, name: str) -> dict[str, Any]:
        """A slow route: answered by FastAPI's router only."""
        return {"name": name, "tag": self.tag}


def _declared_app(bound: bool = True) -> FastAPI:
    app = FastAPI()
    include_endpoints(app, Endpoints)
    include_api(app)
    app.state.platform = SimpleNamespace(access=AccessPolicy("off", "s3cret", ("127.0.0.1",)))
    if bound:
        bind_endpoints(app, Endpoints("bound"))
    return app


def test_the_fast_path_is_derived_from_each_routes_one_declaration() -> None:
    assert [name for name, _ in declared_routes(Endpoints)] == ["predict", "infer", "metadata"]
    infer = direct_route(Endpoints, "infer", Route("POST", "/v2/models/{name}/versions/{version}/infer"))
    assert (infer.path, infer.query) == ("/v2/models/{name}/versions/{version:int}/infer", {})
    predict = direct_route(Endpoints, "predict", Route("POST", "/v1/models/{name}/predict"))
    assert predict.query == {"version": int, "alias": str}
    assert [answer[:2] for answer in _answers(_declared_app())] == [answer[:2] for answer in _answers(_app(fast=False))]


def test_declared_routes_are_fastapis_too(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _declared_app()
    seen: list[str] = []
    original = app.router.__call__

    async def router(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await original(scope, receive, send)

    monkeypatch.setattr(app, "router", router)
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.post("/v2/models/digits/versions/7/infer", content=b"[]").json()["version"] == 7
    assert client.get("/v2/models/digits").json() == {"name": "digits", "tag": "bound"}
    assert client.post("/v1/models/digits/predict?version=x", content=b"{}").status_code == 400
    assert seen == ["/v2/models/digits", "/v1/models/digits/predict"]
    monkeypatch.undo()
    schema = client.get("/openapi.json").json()["paths"]
    assert set(schema["/v1/models/{name}/predict"]) == {"post"}
    assert [p["name"] for p in schema["/v1/models/{name}/predict"]["post"]["parameters"]] == [
        "name",
        "version",
        "alias",
    ]


def test_before_the_endpoints_are_bound_every_route_answers_503() -> None:
    client = TestClient(_declared_app(bound=False), base_url="http://127.0.0.1:8000")
    for response in (client.post("/v1/models/digits/predict", content=b"{}"), client.get("/v2/models/digits")):
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
