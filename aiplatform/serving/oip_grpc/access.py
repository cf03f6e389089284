"""Who may call the gRPC service: the same API token as the HTTP surface (docs/SECURITY.md).

Over HTTP the token is checked by the API's access middleware before any route runs; gRPC calls
reach the gateway's methods without it, so each method but the health checks asks here first. The
token travels as call metadata: ``authorization: Bearer <AIP_API_TOKEN>``.
"""

from __future__ import annotations

import hmac

from aiplatform.errors import AIPError, Unauthenticated, Unavailable


def grpc_refusal(auth: str, token: str | None, authorization: str | None) -> AIPError | None:
    """Why a call with this ``authorization`` metadata is refused (None: let in), under the
    platform's ``api_auth`` setting and its token."""
    if auth == "off":
        return None
    if token is None:
        return Unavailable(
            "No API token is configured: set AIP_API_TOKEN (`aip up` makes one) or "
            "turn authentication off with AIP_API_AUTH=off"
        )
    if hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
        return None
    return Unauthenticated(
        "This platform needs an API token: send the metadata 'authorization: Bearer <token>' (AIP_API_TOKEN)"
    )
