"""Who a request's ``Authorization`` value stands for: the one place that reads it, for the HTTP
guard (``aiplatform.api.security``) and the gRPC service (``aiplatform.serving.oip_grpc.access``)."""

from __future__ import annotations

import hmac

from aiplatform.access.roles import PLATFORM_ADMIN, Principal
from aiplatform.access.store import AccessStore
from aiplatform.errors import Unauthenticated


def principal_for(auth: str, token: str | None, directory: AccessStore | None, authorization: str | None) -> Principal:
    """The bootstrap token (``token``) is the platform admin, as is everyone with ``auth`` off; a
    key is its user or service. ``Unauthenticated`` for anything else (``KeyRefused``, naming
    why, for a revoked or expired key or a disabled user's)."""
    if auth == "off":
        return PLATFORM_ADMIN
    if token is not None and hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
        return PLATFORM_ADMIN
    scheme, _, secret = (authorization or "").partition(" ")
    if directory is not None and scheme == "Bearer":
        principal = directory.authenticate(secret.strip())
        if principal is not None:
            return principal
    raise Unauthenticated("no such token or key")
