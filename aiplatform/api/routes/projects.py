"""Projects and their members: platform admins make, rename and delete projects (an empty one:
what it holds, named in a 409); a project's maintainers (and
platform admins) add members, change their roles and remove them. The access guard has
authorized each request in the project its path names before it gets here
(``aiplatform.access.actions``); a caller with no role in it got a 404."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from aiplatform.access import ROLES, Principal
from aiplatform.access.roles import check_role
from aiplatform.api.deps import AccessStoreDep, PoolsDep, PrincipalDep, StorageDep
from aiplatform.api.schemas.projects import (
    MemberList,
    MemberSet,
    ProjectCreate,
    ProjectDeleted,
    ProjectList,
    ProjectPublic,
    ProjectRename,
    RoleSet,
)
from aiplatform.errors import Forbidden
from aiplatform.serving.pools import ServePools

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectPublic)
def create_project(body: ProjectCreate, store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """A new, empty project (platform admins); 409 if the name is taken."""
    return store.create_project(body.name, by=principal.name)


@router.get("", response_model=ProjectList)
def list_projects(store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """The projects the caller holds a role in (every project, for a platform admin)."""
    if principal.platform_admin:
        return {"projects": store.projects()}
    mine = list(principal.roles) if principal.kind == "user" else [principal.project or ""]
    return {"projects": store.projects(mine)}


@router.get("/{project}", response_model=ProjectPublic)
def get_project(project: str, store: AccessStoreDep) -> dict[str, Any]:
    return store.project(project)


@router.patch("/{project}", response_model=ProjectPublic)
def rename_project(
    project: str,
    body: ProjectRename,
    store: AccessStoreDep,
    principal: PrincipalDep,
    storage: StorageDep,
    pools: PoolsDep,
) -> dict[str, Any]:
    """Rename a project that holds nothing (platform admins); its members, keys and quota follow
    (its own model servers too, under the new name). 409 naming what it holds, or for ``default``."""
    renamed = store.rename_project(project, body.name, by=principal.name, storage=storage)
    _sync_pools(pools, project)
    return renamed


@router.delete("/{project}", response_model=ProjectDeleted)
def delete_project(
    project: str, store: AccessStoreDep, principal: PrincipalDep, storage: StorageDep, pools: PoolsDep
) -> dict[str, Any]:
    """Delete a project that holds nothing (platform admins): its members lose their roles, its
    keys are revoked and its own model servers go. 409 naming what it holds, or for ``default``."""
    deleted = store.delete_project(project, by=principal.name, storage=storage)
    _sync_pools(pools, project)
    return deleted


def _sync_pools(pools: ServePools | None, gone: str) -> None:
    """The projects' model servers brought in line with the quotas: the pool under the name
    ``gone`` released, one under a new name deployed. The change itself is stored, so a failure
    here is only logged; the next gateway start brings them in line."""
    if pools is None:
        return
    try:
        pools.release(gone)
        pools.reconcile()
    except Exception:
        logger.warning("cannot bring the projects' model servers in line with their quotas", exc_info=True)


@router.get("/{project}/members", response_model=MemberList)
def list_members(project: str, store: AccessStoreDep) -> dict[str, Any]:
    return {"project": project, "members": store.project(project)["members"]}


def _check_grant(principal: Principal, project: str, role: str | None, current: str | None) -> None:
    """A maintainer grants, changes and removes roles up to their own, never above it."""
    if principal.platform_admin:
        return
    own = principal.roles.get(project, ROLES[0])
    for wanted in (role, current):
        if wanted is not None and ROLES.index(wanted) > ROLES.index(own):
            raise Forbidden(f"A {own} of project {project!r} may not grant or change the {wanted} role")


@router.post("/{project}/members", response_model=ProjectPublic)
def add_member(project: str, body: MemberSet, store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """Give ``user`` ``role`` in the project (a member already: their role changes)."""
    return _set_member(project, body.user, body.role, store, principal)


@router.put("/{project}/members/{user}", response_model=ProjectPublic)
def set_member(
    project: str, user: str, body: RoleSet, store: AccessStoreDep, principal: PrincipalDep
) -> dict[str, Any]:
    return _set_member(project, user, body.role, store, principal)


def _set_member(project: str, user: str, role: str, store: Any, principal: Principal) -> dict[str, Any]:
    check_role(role)
    store.project(project)  # an unknown project: 404 before the role checks
    _check_grant(principal, project, role, store.role(project, user))
    return store.set_member(project, user, role, by=principal.name)  # type: ignore[no-any-return]


@router.delete("/{project}/members/{user}", response_model=ProjectPublic)
def remove_member(project: str, user: str, store: AccessStoreDep, principal: PrincipalDep) -> dict[str, Any]:
    """The user loses access to the project at once; a task of theirs still running finishes."""
    _check_grant(principal, project, None, store.role(project, user))
    return store.remove_member(project, user)
