"""The OpenAPI schema as the platform really answers: every error is ``{"error", "message"}``
(``{"error"}`` on the v2 inference protocol) with 400 for invalid input (FastAPI's default
documents 422, which this API never sends), 401 when a token is required, 403, 404, 409, 413 and 503."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_STATUSES = {
    "400": "Invalid input; the message names the problem",
    "401": "AIP_API_TOKEN is set and the request has no valid bearer token",
    "403": "Refused whoever sends it: a cross-origin request, or what the operator turned off (AIP_USER_CODE)",
    "404": "Not found",
    "409": "Conflicts with the current state (e.g. an illegal task transition, a refused gate)",
    "413": "The request body is over the limit",
    "503": "Temporarily unavailable; retry after Retry-After seconds",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "stable code, e.g. invalid_argument"},
        "message": {"type": "string"},
    },
    "additionalProperties": True,
}
V2_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that documents the platform's error responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                {"Error": ERROR_SCHEMA, "V2Error": V2_ERROR_SCHEMA}
            )
            for path, operations in schema.get("paths", {}).items():
                ref = "#/components/schemas/" + ("V2Error" if path.startswith("/v2/") else "Error")
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    responses.pop("422", None)
                    for status, description in ERROR_STATUSES.items():
                        responses.setdefault(
                            status,
                            {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}},
                        )
            schema["components"]["schemas"].pop("HTTPValidationError", None)
            schema["components"]["schemas"].pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
