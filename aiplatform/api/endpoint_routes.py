"""The inference endpoints' routes: each declared once, on its endpoint, and the hot ones answered
ahead of FastAPI's router.

``include_endpoints(app, V1Endpoints, ...)`` adds every route declared on those classes'
endpoints (``aiplatform.serving.rest.route``) to FastAPI's router, so the OpenAPI schema documents
them and FastAPI answers them, and derives from the ``direct`` ones the table of ``DirectDispatch``;
``bind_endpoints(app, instance, ...)`` gives both the objects that answer (the gateway makes them
in its replica, after the app is built).

FastAPI's router and dependency solving cost ~0.3 ms of CPU per request on this project's
machines, more than a small model's forward pass, and the gateway is one Python process per
node: on the hot path that is throughput lost (docs/BENCHMARKS.md). ``DirectDispatch`` is a plain
ASGI middleware, installed inside the access guard and the body limit (so every request still
passes both), that matches a short table of routes with one regular expression each and calls
their endpoints directly.

A request it does not fully understand (another method or path, a query parameter that is not a
plain integer where one is expected, a repeated parameter) goes on to FastAPI unchanged, so the
answers, errors included, are the same as without it. The endpoints stay declared as FastAPI
routes too (``include_endpoints`` does both from one declaration): the OpenAPI schema documents
them and FastAPI serves whatever falls through.
Exceptions become responses through the app's own exception handlers.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from aiplatform.api.errors import Receive, Scope, Send
from aiplatform.errors import Unavailable
from aiplatform.serving.rest import Route, declared_routes

Endpoint = Callable[..., Awaitable[Response]]
INTEGER = re.compile(r"[0-9]{1,18}")


class DirectRoute:
    """``POST /v1/models/{name}/predict`` -> endpoint ``predict(request=..., name=..., version=...)``.

    ``path`` uses Starlette's syntax (``{version:int}`` converts); ``query`` names the query
    parameters the endpoint takes and their type (``int`` or ``str``; absent ones are None)."""

    def __init__(self, method: str, path: str, endpoint: str, query: Mapping[str, type] | None = None) -> None:
        self.method = method
        self.path = path
        self.endpoint = endpoint
        self.query = dict(query or {})
        self._regex, _, self._convertors = compile_path(path)

    def parameters(self, method: str, path: str, query_string: bytes) -> dict[str, Any] | None:
        """The endpoint's keyword arguments for this request, or None when it is not one for
        this route as FastAPI would answer it."""
        if method != self.method:
            return None
        match = self._regex.match(path)
        if match is None:
            return None
        params: dict[str, Any] = {
            name: self._convertors[name].convert(value) for name, value in match.groupdict().items()
        }
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


def direct_route(endpoints: type, name: str, declared: Route) -> DirectRoute:
    """The direct path's route for ``endpoints.name``: its integer path parameters converted
    (``{version:int}``: another value falls through to FastAPI's validation error), its query
    parameters those of its signature that are not in the path, typed as it types them."""
    hints = typing.get_type_hints(getattr(endpoints, name))
    path_names = set(re.findall(r"{(\w+)}", declared.path))
    path = re.sub(r"{(\w+)}", lambda m: f"{{{m[1]}:int}}" if _plain(hints.get(m[1])) is int else m[0], declared.path)
    query = {
        param: _plain(hints[param])
        for param in inspect.signature(getattr(endpoints, name)).parameters
        if param not in path_names and param not in ("self", "request")
    }
    unknown = {param: kind for param, kind in query.items() if kind not in (int, str)}
    if unknown:
        raise TypeError(f"{endpoints.__name__}.{name}: a direct route's query parameters are int or str, not {unknown}")
    return DirectRoute(declared.method, path, endpoint_key(endpoints, name), query=query)


def _plain(hint: Any) -> Any:
    """``Optional[int]`` -> ``int``."""
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    return arguments[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(arguments) == 1 else hint


def endpoint_key(endpoints: type, name: str) -> str:
    return f"{endpoints.__qualname__}.{name}"


def include_endpoints(app: FastAPI, *endpoint_classes: type) -> None:
    """Every route declared on these classes' endpoints, in FastAPI's router and (the ``direct``
    ones) in a ``DirectDispatch`` middleware. Call it before the API's middlewares are added
    (``include_api``): the direct path then runs inside the access guard and the body limit."""
    direct = []
    for endpoints in endpoint_classes:
        for name, declared in declared_routes(endpoints):
            app.add_api_route(declared.path, _late_bound(endpoints, name), methods=[declared.method])
            if declared.direct:
                direct.append(direct_route(endpoints, name, declared))
    app.add_middleware(DirectDispatch, routes=tuple(direct), endpoints_of=_direct_endpoints)


def bind_endpoints(app: FastAPI, *instances: object) -> None:
    """The objects that answer the routes of their classes (``include_endpoints``), for both paths."""
    app.state.endpoints = {type(instance): instance for instance in instances}
    app.state.direct_endpoints = {
        endpoint_key(type(instance), name): getattr(instance, name)
        for instance in instances
        for name, declared in declared_routes(type(instance))
        if declared.direct
    }


def _direct_endpoints(scope: Scope) -> Mapping[str, Endpoint] | None:
    return getattr(getattr(scope.get("app"), "state", None), "direct_endpoints", None)


def _late_bound(endpoints: type, name: str) -> Callable[..., Any]:
    """``endpoints.name`` as FastAPI's endpoint: ``self`` is the bound instance, found per request
    through a dependency (Serve's ``@serve.ingress`` binds its class's methods the same way); the
    other parameters keyword-only, their annotations resolved. A copy of the function, not a
    wrapper: no extra call per request."""
    function = getattr(endpoints, name)

    def instance(request: Request) -> Any:
        bound = getattr(request.app.state, "endpoints", {}).get(endpoints)
        if bound is None:
            raise Unavailable("The inference endpoints are starting; retry shortly")
        return bound

    hints = typing.get_type_hints(function)
    self_param, *params = inspect.signature(function).parameters.values()
    signature = inspect.Signature(
        [self_param.replace(default=Depends(instance))]
        + [
            param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(param.name, param.annotation))
            for param in params
        ],
        return_annotation=hints.get("return", inspect.Signature.empty),
    )
    copy = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__, copy.__doc__, copy.__module__ = function.__qualname__, function.__doc__, function.__module__
    copy.__signature__ = signature  # type: ignore[attr-defined]
    return copy


class DirectDispatch:
    """The middleware. ``endpoints_of(scope)`` gives the endpoints by name (None until the app's
    owner has installed them: then every request goes on to FastAPI)."""

    def __init__(
        self, app: Any, routes: tuple[DirectRoute, ...], endpoints_of: Callable[[Scope], Mapping[str, Endpoint] | None]
    ) -> None:
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

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, params: dict[str, Any]
    ) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(request=request, **params)
        except Exception as exc:
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
    return path[len(root) :] if root and path.startswith(root) else path
