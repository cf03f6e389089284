"""The prediction routes answered ahead of FastAPI's router.

FastAPI's router and dependency solving cost ~0.3 ms of CPU per request on this project's
machines, more than a small model's forward pass, and the gateway is one Python process per
node: on the hot path that is throughput lost (docs/BENCHMARKS.md). ``FastRoutes`` is a plain
ASGI middleware, installed inside the access guard and the body limit (so every request still
passes both), that matches a short table of routes with one regular expression each and calls
their endpoints directly.

A request it does not fully understand (another method or path, a query parameter that is not a
plain integer where one is expected, a repeated parameter) goes on to FastAPI unchanged, so the
answers, errors included, are the same as without it. The endpoints stay declared as FastAPI
routes too: the OpenAPI schema documents them and FastAPI serves whatever falls through.
Exceptions become responses through the app's own exception handlers.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Mapping, Optional
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from aiplatform.api.errors import Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]
INTEGER = re.compile(r"[0-9]{1,18}")


class FastRoute:
    """``POST /v1/models/{name}/predict`` -> endpoint ``predict(request=..., name=..., version=...)``.

    ``path`` uses Starlette's syntax (``{version:int}`` converts); ``query`` names the query
    parameters the endpoint takes and their type (``int`` or ``str``; absent ones are None)."""

    def __init__(self, method: str, path: str, endpoint: str, query: Optional[Mapping[str, type]] = None) -> None:
        self.method = method
        self.path = path
        self.endpoint = endpoint
        self.query = dict(query or {})
        self._regex, _, self._convertors = compile_path(path)

    def parameters(self, method: str, path: str, query_string: bytes) -> Optional[dict[str, Any]]:
        """The endpoint's keyword arguments for this request, or None when it is not one for
        this route as FastAPI would answer it."""
        if method != self.method:
            return None
        match = self._regex.match(path)
        if match is None:
            return None
        params: dict[str, Any] = {name: self._convertors[name].convert(value)
                                  for name, value in match.groupdict().items()}
        params.update(dict.fromkeys(self.query))
        if not query_string:
            return params
        seen: set[str] = set()
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            if name in seen:
                return None  # FastAPI's choice among repeated values is its own: let it answer
            seen.add(name)
            kind = self.query.get(name)
            if kind is int:
                if not INTEGER.fullmatch(value):
                    return None  # FastAPI's validation error names the parameter
                params[name] = int(value)
            elif kind is str:
                params[name] = value
        return params


class FastRoutes:
    """The middleware. ``endpoints_of(scope)`` gives the endpoints by name (None until the app's
    owner has installed them: then every request goes on to FastAPI)."""

    def __init__(self, app: Any, routes: tuple[FastRoute, ...],
                 endpoints_of: Callable[[Scope], Optional[Mapping[str, Endpoint]]]) -> None:
        self.app = app
        self.routes = routes
        self.endpoints_of = endpoints_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoints = self.endpoints_of(scope)
            if endpoints is not None:
                path = _route_path(scope)
                method = scope.get("method", "GET")
                query_string = scope.get("query_string", b"")
                for route in self.routes:
                    params = route.parameters(method, path, query_string)
                    if params is not None and route.endpoint in endpoints:
                        await self._answer(scope, receive, send, endpoints[route.endpoint], params)
                        return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint,
                      params: dict[str, Any]) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(request=request, **params)
        except Exception as exc:  # noqa: BLE001 - answered by the app's handler for it
            response = await _handled(scope, request, exc)
        await response(scope, receive, send)


async def _handled(scope: Scope, request: Request, exc: Exception) -> Response:
    """The response the app's exception handlers give for ``exc`` (the most specific class);
    with none, the exception goes on up to Starlette's server-error middleware."""
    handlers = getattr(scope.get("app"), "exception_handlers", {})
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return await handler(request, exc)
    raise exc


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
