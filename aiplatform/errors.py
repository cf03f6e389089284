"""The platform's error tree; every error carries a stable code that maps to an HTTP status.

    AIPError (code "internal")
    ├── InvalidArgument  (400) bad input: a parameter, a key, a file, a package
    │   ├── IntegrityError (400) content that does not match its recorded sha256
    │   └── TooLarge       (413) input over a size limit (a body, an image's pixels, a document)
    ├── Unauthenticated  (401) a request without the API token (gRPC calls; HTTP's guard answers itself)
    ├── Forbidden        (403) a request the platform refuses whoever sends it (a foreign origin)
    ├── NotFound         (404)
    ├── AlreadyExists    (409)
    ├── Conflict         (409) the thing exists but is in the wrong state
    └── Unavailable      (503) a dependency (storage, Ray, an actor) cannot be reached

Errors cross Ray actor boundaries: they pickle with their message and code intact.
"""

from __future__ import annotations

from typing import Any


class AIPError(Exception):
    """Base of all platform errors."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class InvalidArgument(AIPError):
    code = "invalid_argument"


class IntegrityError(InvalidArgument):
    code = "integrity_error"


class TooLarge(InvalidArgument):
    code = "too_large"


class Unauthenticated(AIPError):
    code = "unauthenticated"


class Forbidden(AIPError):
    code = "forbidden"


class NotFound(AIPError):
    code = "not_found"


class AlreadyExists(AIPError):
    code = "already_exists"


class Conflict(AIPError):
    code = "conflict"


class Unavailable(AIPError):
    code = "unavailable"


HTTP_STATUS_BY_CODE: dict[str, int] = {
    InvalidArgument.code: 400,
    IntegrityError.code: 400,
    TooLarge.code: 413,
    Unauthenticated.code: 401,
    Forbidden.code: 403,
    NotFound.code: 404,
    AlreadyExists.code: 409,
    Conflict.code: 409,
    Unavailable.code: 503,
    AIPError.code: 500,
}


def http_status(error: AIPError) -> int:
    """The HTTP status for an error (500 for anything unmapped)."""
    return HTTP_STATUS_BY_CODE.get(error.code, 500)


ERROR_CLASSES: dict[str, type[AIPError]] = {
    cls.code: cls
    for cls in (InvalidArgument, IntegrityError, TooLarge, Forbidden, NotFound, AlreadyExists, Conflict, Unavailable)
}


def error_from_code(code: str, message: str) -> AIPError:
    """The error an HTTP body ``{"error": code, "message": ...}`` stands for (clients re-raise it)."""
    return ERROR_CLASSES.get(code, AIPError)(message)
