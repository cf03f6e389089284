"""Who may do what: the roles, the principals that hold them, and the one authorization point.

Every surface (REST routes, the fast inference routes, OIP REST and gRPC, server-sent events, the
UI's data, the CLI) reaches the platform through ``authorize(principal, action, project, model)``;
it returns when the principal may, and raises otherwise (docs/SECURITY.md, "Teams").

A caller without any role in a project gets ``NotFound`` (404) naming the project, never
``Forbidden``: that another project's resources exist is not leaked. A role that is too low gets
``Forbidden`` (403) naming the role the action needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from aiplatform.errors import Forbidden, InvalidArgument, NotFound

DEFAULT_PROJECT = "default"
"""Where a request acts when it names no project, and where every state folder from before
projects was upgraded to: every existing client keeps working unchanged."""
PROJECT_HEADER = "x-aip-project"
"""The header (or ``?project=``) that names the project a request acts in."""

ROLES = ("viewer", "member", "maintainer", "admin")
"""A project's roles, each allowing what the ones before it allow."""


class Action(StrEnum):
    """What a request does, by the role it needs."""

    READ = "read"
    """viewer: list and show anything in the project (tasks, models, datasets, results, metrics, logs)."""
    INFER = "infer"
    """member, or a service key scoped to the model: predict, and read a model's serving metadata."""
    CREATE = "create"
    """member: create and run tasks, sweeps, datasets, batch jobs, imports; label results."""
    MANAGE = "manage"
    """maintainer: promote, canary, roll back, move or delete an alias, delete, reload rules."""
    ADMINISTER = "administer"
    """platform admin: users, their keys, projects, quotas, the audit log."""
    OWN_KEYS = "own_keys"
    """a user's own keys (platform admins: anyone's)."""
    IDENTIFY = "identify"
    """any authenticated caller, service keys included: who am I, the server's metadata."""


ROLE_NEEDED = {
    Action.READ: "viewer",
    Action.INFER: "member",
    Action.CREATE: "member",
    Action.MANAGE: "maintainer",
}


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidArgument(f"Unknown role {role!r}; the roles are {', '.join(ROLES)}")
    return role


def role_allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the bootstrap token (``platform``, a platform admin), a user's
    key (acting with the user's roles) or a service key (inference on ``models`` only)."""

    name: str
    kind: str
    """``admin`` (the bootstrap token, or anyone while authentication is off), ``user`` or ``service``."""
    platform_admin: bool = False
    roles: dict[str, str] = field(default_factory=dict)
    """project -> role."""
    models: frozenset[str] = frozenset()
    """A service key's models."""
    key_id: str | None = None
    project: str | None = None
    """The key's project: where a user's requests that name none act; a service key's only one."""

    @property
    def label(self) -> str:
        """How the audit log names it: ``alice`` (key ``k-1a2b``), ``platform``."""
        return self.name if self.key_id is None else f"{self.name} (key {self.key_id})"


PLATFORM_ADMIN = Principal("platform", "admin", platform_admin=True)
"""The operator's bootstrap token (``AIP_API_TOKEN``), and every caller while authentication is off."""


def authorize(
    principal: Principal,
    action: Action,
    *,
    project: str = DEFAULT_PROJECT,
    model: str | None = None,
    owner: str | None = None,
) -> None:
    """Return when ``principal`` may do ``action`` in ``project`` (on ``model``, for inference;
    on ``owner``'s keys, for ``OWN_KEYS``); raise ``Forbidden`` or ``NotFound`` otherwise."""
    if principal.platform_admin or action is Action.IDENTIFY:
        return
    if principal.kind == "service":
        in_project = principal.project in (None, project)
        if action is Action.INFER and model is not None and model in principal.models and in_project:
            return
        if action is Action.INFER and model is not None and not in_project:
            raise NotFound(f"Model {model!r} not found")
        if action is Action.INFER and model is not None:
            raise Forbidden(
                f"This service key may call models {', '.join(sorted(principal.models))} only, not {model!r}"
            )
        raise Forbidden("A service key may only call inference on its models, not the platform's API")
    if action is Action.OWN_KEYS:
        if owner == principal.name:
            return
        raise Forbidden("Only a platform admin may manage another user's keys")
    if action is Action.ADMINISTER:
        raise Forbidden("Only a platform admin may manage users, projects, quotas and read the audit log")
    role = principal.roles.get(project)
    if role is None:
        raise NotFound(f"Project {project!r} not found")
    needed = ROLE_NEEDED[action]
    if not role_allows(role, needed):
        raise Forbidden(f"This needs the {needed} role in project {project!r}; {principal.name} is a {role}")
