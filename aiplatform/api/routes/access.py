"""People and keys: users (platform admins only), their API keys (a user's own, or any for a
platform admin; the secret is answered once), the audit log, and who the caller is. The access
guard has authorized each request before it reaches these routes (``aiplatform.access.actions``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from aiplatform.access.store import MAX_AUDIT_PAGE
from aiplatform.api.deps import AccessStoreDep, PrincipalDep
from aiplatform.api.schemas.access import (
    AuditPage,
    Identity,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyPublic,
    UserCreate,
    UserList,
    UserPublic,
)

router = APIRouter(tags=["access"])


@router.post("/v1/users", status_code=201, response_model=UserPublic)
def create_user(body: UserCreate, store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """A user with a role in the default project; 409 if the name is taken."""
    return store.create_user(body.name, role=body.role, platform_admin=body.platform_admin, by=principal.name)


@router.get("/v1/users", response_model=UserList)
def list_users(store: AccessStoreDep) -> dict[str, Any]:
    return {"users": store.users()}


@router.get("/v1/users/{name}", response_model=UserPublic)
def get_user(name: str, store: AccessStoreDep) -> dict[str, Any]:
    return store.user(name)


@router.post("/v1/users/{name}/disable", response_model=UserPublic)
def disable_user(name: str, store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """Every key of the user stops working (as a revoked key does); what they made keeps naming them."""
    return store.disable_user(name, by=principal.name)


@router.post("/v1/users/{name}/keys", status_code=201, response_model=KeyCreated)
def create_key(name: str, body: KeyCreate, store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """A new key; its ``secret`` is in this answer only (the platform keeps its SHA-256)."""
    key, secret = store.create_key(
        name,
        name=body.name,
        expires_in_days=body.expires_in_days,
        models=body.models,
        project=body.project,
        by=principal.name,
    )
    return {**key, "secret": secret}


@router.get("/v1/users/{name}/keys", response_model=KeyList)
def list_keys(name: str, store: AccessStoreDep) -> dict[str, Any]:
    return {"keys": store.keys(name)}


@router.delete("/v1/users/{name}/keys/{key_id}", response_model=KeyPublic)
def revoke_key(name: str, key_id: str, store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """The key stops working at once where the state folder is (each request reads the store), and
    within ``access_cache_ttl_s`` on a gateway off the head node (``aiplatform.access.actor``)."""
    return store.revoke_key(name, key_id, by=principal.name)


@router.get("/v1/audit", response_model=AuditPage)
def query_audit(
    store: AccessStoreDep,
    principal: str | None = Query(None, max_length=64),
    action: str | None = Query(None, max_length=32),
    outcome: str | None = Query(None, max_length=16),
    since: float | None = None,
    until: float | None = None,
    before: int | None = None,
    limit: int = Query(100, ge=1, le=MAX_AUDIT_PAGE),
) -> dict[str, Any]:
    """Newest first; ``next_before`` (null on the last page) goes in ``before`` for the next."""
    entries, next_before = store.audit(
        principal=principal, action=action, outcome=outcome, since=since, until=until, before=before, limit=limit
    )
    return {"entries": entries, "next_before": next_before}


@router.get("/v1/whoami", response_model=Identity)
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    return {
        "name": principal.name,
        "kind": principal.kind,
        "platform_admin": principal.platform_admin,
        "roles": principal.roles,
        "models": sorted(principal.models) if principal.kind == "service" else None,
        "key_id": principal.key_id,
        "project": principal.project,
    }
