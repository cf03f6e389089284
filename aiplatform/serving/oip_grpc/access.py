"""Who may call the gRPC service: the same keys and roles as the HTTP surface (docs/SECURITY.md).

Over HTTP the caller is checked by the API's access middleware before any route runs; gRPC calls
reach the gateway's methods without it, so each method but the health checks asks here first,
through the same authentication and authorization point (``aiplatform.access``). The token or
key travels as call metadata: ``authorization: Bearer <key>``.
"""

from __future__ import annotations

from aiplatform.access import Action, authorize
from aiplatform.access.authenticate import principal_for
from aiplatform.access.store import AccessStore, KeyRefused
from aiplatform.errors import AIPError, Unauthenticated, Unavailable


def grpc_refusal(
    auth: str,
    token: str | None,
    authorization: str | None,
    directory: AccessStore | None = None,
    model: str | None = None,
) -> AIPError | None:
    """Why a call with this ``authorization`` metadata is refused (None: let in), under the
    platform's ``api_auth`` setting, its token and its keys (``directory``); ``model``: the
    model the call is about (inference on it), None for the server's own metadata."""
    if auth == "off":
        return None
    if token is None:
        return Unavailable(
            "No API token is configured: set AIP_API_TOKEN (`aip up` makes one) or "
            "turn authentication off with AIP_API_AUTH=off"
        )
    try:
        principal = principal_for(auth, token, directory, authorization)
        authorize(principal, Action.INFER if model is not None else Action.IDENTIFY, model=model)
    except KeyRefused as exc:
        return exc
    except Unauthenticated:
        return Unauthenticated(
            "This platform needs an API token: send the metadata 'authorization: Bearer <token>' (AIP_API_TOKEN)"
        )
    except AIPError as exc:
        return exc
    return None
