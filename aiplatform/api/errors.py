"""One error shape for the whole HTTP surface: ``{"error": code, "message": ...}`` (STYLE.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiplatform.errors import AIPError, InvalidArgument, http_status

logger = logging.getLogger(__name__)
RETRY_AFTER_S = 1
ERROR_CODE_BY_STATUS = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 413: "too_large"}


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def error_body(path: str, code: str, message: str) -> dict[str, str]:
    """``{"error": code, "message": ...}``; on the Open Inference Protocol (``/v2/``) its own
    ``{"error": message}``."""
    return {"error": message} if path.startswith("/v2/") else {"error": code, "message": message}


def error_response(request: Request, exc: AIPError) -> JSONResponse:
    status = http_status(exc)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse(
        status_code=status, content=error_body(request.url.path, exc.code, exc.message), headers=headers
    )


async def send_error(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """The same error body from a plain ASGI middleware (which answers before FastAPI runs)."""
    data = json.dumps(error_body(scope.get("path", ""), code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


def validation_message(exc: RequestValidationError) -> str:
    """``body.params: Input should be a valid dictionary; query.limit: ...`` (one line)."""
    problems = []
    for item in exc.errors():
        where = ".".join(str(part) for part in item.get("loc", ())) or "request"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    """Platform errors by their code, FastAPI's validation errors as 400 ``invalid_argument``,
    HTTP errors with a code, anything else logged and answered with a plain 500."""

    @app.exception_handler(AIPError)
    async def platform_error(request: Request, exc: AIPError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, InvalidArgument(validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = ERROR_CODE_BY_STATUS.get(exc.status_code, "http_error")
        message = f"No route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": code, "message": message},
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"error": "internal", "message": "Internal server error"})
