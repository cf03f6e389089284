"""Who may call the gRPC service: the same keys and roles as the HTTP surface (docs/SECURITY.md).

Over HTTP the caller is checked by the API's access middleware before any route runs; gRPC calls
reach the gateway's methods without it, so each method but the health checks asks here first,
through the same authentication and authorization point (``aiplatform.access``). The token or
key travels as call metadata: ``authorization: Bearer <key>``. A known caller refused (a role too
low, a model outside a service key's, a revoked or expired key, a disabled user) goes to the
audit log like a refused HTTP request, written off the event loop. A call acts in its model's
project (read from the registry in the same state folder as the keys), as over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiplatform.access import Action, AuditEntry, authorize
from aiplatform.access.authenticate import principal_for
from aiplatform.access.protocols import AccessAPI
from aiplatform.access.roles import DEFAULT_PROJECT
from aiplatform.access.store import KeyRefused
from aiplatform.errors import AIPError, Unauthenticated, Unavailable, http_status
from aiplatform.registry import ModelProjects

logger = logging.getLogger(__name__)

GRPC_METHOD = "GRPC"
"""The audit log's ``method`` for a gRPC call."""
SERVICE = "/inference.GRPCInferenceService"


def _project_of(models: ModelProjects | None, model: str | None) -> str:
    """The project of the model a call is about (``default`` for none, or with no registry)."""
    if models is None or model is None:
        return DEFAULT_PROJECT
    return models.project_of(model) or DEFAULT_PROJECT


def grpc_refusal(
    auth: str,
    token: str | None,
    authorization: str | None,
    directory: AccessAPI | None = None,
    model: str | None = None,
    models: ModelProjects | None = None,
) -> AIPError | None:
    """Why a call with this ``authorization`` metadata is refused (None: let in), under the
    platform's ``api_auth`` setting, its token and its keys (``directory``); ``model``: the
    model the call is about (inference on it), None for the server's own metadata; ``models``:
    which project each model belongs to (None: every model is ``default``'s)."""
    if auth == "off":
        return None
    if token is None:
        return Unavailable(
            "No API token is configured: set AIP_API_TOKEN (`aip up` makes one) or "
            "turn authentication off with AIP_API_AUTH=off"
        )
    action = Action.INFER if model is not None else Action.IDENTIFY
    try:
        principal = principal_for(auth, token, directory, authorization)
    except KeyRefused as exc:
        _audit_refusal(directory, exc.user, exc.key_id, action, model, exc)
        return exc
    except Unauthenticated:
        return Unauthenticated(
            "This platform needs an API token: send the metadata 'authorization: Bearer <token>' (AIP_API_TOKEN)"
        )
    except AIPError as exc:
        return exc
    try:
        project = _project_of(models, model)  # off the head node: asked of the registry's actor
    except AIPError as exc:  # its node away: UNAVAILABLE, never let in
        return exc
    try:
        authorize(principal, action, project=project, model=model)
    except AIPError as exc:
        _audit_refusal(directory, principal.name, principal.key_id, action, model, exc, project)
        return exc
    return None


def _audit_refusal(
    directory: AccessAPI | None,
    who: str,
    key_id: str | None,
    action: Action,
    model: str | None,
    refusal: AIPError,
    project: str = DEFAULT_PROJECT,
) -> None:
    """The refusal's audit entry, written on a worker thread when a loop runs here (the gateway's)."""
    if directory is None:
        return
    entry = AuditEntry(
        at=time.time(),
        principal=who,
        key_id=key_id,
        action=str(action),
        method=GRPC_METHOD,
        resource=f"{SERVICE}/models/{model}" if model is not None else f"{SERVICE}/server",
        project=project,
        outcome="denied",
        status=http_status(refusal),
        address=None,
    )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _record(directory, entry)
        return
    loop.run_in_executor(None, _record, directory, entry)


def _record(directory: AccessAPI, entry: AuditEntry) -> None:
    try:
        directory.record(entry)
    except Exception:  # the caller is answered either way; an unwritable log is the operator's to see
        logger.exception("could not write the audit entry for a refused gRPC call on %s", entry.resource)
