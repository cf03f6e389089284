"""Who a request stands for: the one place that reads its ``Authorization`` value, or the user a
trusted sign-in proxy names (``aiplatform.access.proxy``), for the HTTP guard
(``aiplatform.api.security``) and the gRPC service (``aiplatform.serving.oip_grpc.access``)."""

from __future__ import annotations

import hmac

from aiplatform.access.protocols import AccessAPI
from aiplatform.access.proxy import Grants
from aiplatform.access.roles import DEFAULT_PROJECT, PLATFORM_ADMIN, Principal
from aiplatform.access.store import KeyRefused
from aiplatform.errors import AlreadyExists, NotFound, Unauthenticated

SIGN_IN_CREATOR = "sso"
"""Who the audit trail says made a user on their first sign-in through the proxy."""


def principal_for(
    auth: str,
    token: str | None,
    directory: AccessAPI | None,
    authorization: str | None,
    *,
    signed_in: str | None = None,
    new_user_role: str | None = None,
    grants: Grants | None = None,
) -> Principal:
    """The bootstrap token (``token``) is the platform admin, as is everyone with ``auth`` off; a
    key is its user or service; ``signed_in``, the user a trusted proxy named, is that user
    (``Authorization`` aside: the proxy may send its own), with what their groups grant
    (``grants``). ``Unauthenticated`` for anything else
    (``KeyRefused``, naming why, for a revoked or expired key or a disabled user's)."""
    if auth == "off":
        return PLATFORM_ADMIN
    if signed_in is not None:
        return signed_in_principal(directory, signed_in, new_user_role, grants)
    if token is not None and hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
        return PLATFORM_ADMIN
    scheme, _, secret = (authorization or "").partition(" ")
    if directory is not None and scheme == "Bearer":
        principal = directory.authenticate(secret.strip())
        if principal is not None:
            return principal
    raise Unauthenticated("no such token or key")


def signed_in_principal(
    directory: AccessAPI | None, user: str, new_user_role: str | None = None, grants: Grants | None = None
) -> Principal:
    """The user a trusted sign-in proxy named, with their roles and no key. A user the platform
    does not know is made with ``new_user_role`` when it is set, or when their groups grant a
    role (``grants``), and refused otherwise (an admin makes them first); a disabled user is
    refused (``KeyRefused``: the audit log names them). Their memberships follow what their
    groups grant (``AccessStore.sync_group_roles``); a group mapped to ``*:admin`` makes them a
    platform admin for as long as the proxy names them in it."""
    granting = grants is not None and (bool(grants.roles) or grants.platform_admin)
    if directory is None:
        raise Unauthenticated("This platform keeps no users: single sign-on needs its access store")
    try:
        found = directory.user(user)
    except NotFound:
        if new_user_role is None and not granting:
            raise Unauthenticated(
                f"User {user!r} signed in through the proxy but has no account on this platform: "
                f"a platform admin makes one (aip users create {user})"
            ) from None
        try:
            found = directory.create_user(user, role=new_user_role or "viewer", by=SIGN_IN_CREATOR)
            if new_user_role is None:  # made for their groups' roles alone
                found = directory.remove_member(DEFAULT_PROJECT, user) and directory.user(user)
        except AlreadyExists:  # their first two requests raced
            found = directory.user(user)
    if found["disabled_at"] is not None:
        raise KeyRefused(f"User {user!r} is disabled", user)
    if grants is not None and directory.sync_group_roles(user, grants.roles):
        found = directory.user(user)
    admin = bool(found["platform_admin"]) or (grants is not None and grants.platform_admin)
    return Principal(user, "user", platform_admin=admin, roles=dict(found["roles"]))
