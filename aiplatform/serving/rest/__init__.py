"""The inference core's REST protocols: v1 (``v1.py``) and the Open Inference Protocol (``v2.py``).

Each is a class of endpoints over one ``DataPlane`` that only turns HTTP into a core call and its
result into a response. A route is declared once, on its endpoint, with :func:`route`; the
gateway's app takes the declarations from there (``aiplatform.api.endpoint_routes.include_endpoints``)
for FastAPI's router, its OpenAPI schema, and the hot routes answered ahead of that router.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
ROUTE_ATTRIBUTE = "__aip_route__"


@dataclass(frozen=True)
class Route:
    """``method path`` answered by the endpoint it is declared on. ``direct``: a hot route, matched
    and called ahead of FastAPI's router (its path and query parameters as the endpoint's
    signature types them; anything else falls through to FastAPI)."""

    method: str
    path: str
    direct: bool = False


def route(method: str, path: str, *, direct: bool = False) -> Callable[[F], F]:
    """Declares the decorated endpoint's route (Starlette's path syntax, FastAPI's parameters)."""

    def declare(endpoint: F) -> F:
        setattr(endpoint, ROUTE_ATTRIBUTE, Route(method, path, direct))
        return endpoint

    return declare


def declared_routes(endpoints: type) -> list[tuple[str, Route]]:
    """The routes declared on a class's endpoints, by endpoint name, in the order written."""
    return [
        (name, getattr(member, ROUTE_ATTRIBUTE))
        for name, member in vars(endpoints).items()
        if hasattr(member, ROUTE_ATTRIBUTE)
    ]
