"""Which action an HTTP request is, from its method and path: the access guard asks here before
any route runs, so every route (FastAPI's, the fast inference routes, the event streams) is
covered by one table, and a route added later without an entry still gets its method's action.

A GET reads, a POST/PUT/PATCH creates or runs, a DELETE manages; the table below names the
routes whose action differs from their method's (promote, predict, the admin routes...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiplatform.access.roles import Action

BY_METHOD = {
    "GET": Action.READ,
    "HEAD": Action.READ,
    "OPTIONS": Action.READ,
    "POST": Action.CREATE,
    "PUT": Action.CREATE,
    "PATCH": Action.CREATE,
    "DELETE": Action.MANAGE,
}
NAME = r"(?P<name>[^/]+)"
ROUTES: tuple[tuple[str, str, Action], ...] = (
    # inference: members, or service keys scoped to the model
    ("POST", rf"/v1/models/{NAME}/predict", Action.INFER),
    ("POST", rf"/v2/models/{NAME}(/versions/[^/]+)?/infer", Action.INFER),
    ("GET", rf"/v2/models/{NAME}(/versions/[^/]+)?(/ready)?", Action.INFER),
    ("GET", r"/v2", Action.IDENTIFY),
    ("GET", r"/v1/whoami", Action.IDENTIFY),
    # what a model serves, and what deletes: maintainers
    ("POST", rf"/v1/models/{NAME}/(promote|rollback|canary)", Action.MANAGE),
    ("PUT", rf"/v1/models/{NAME}/traffic", Action.MANAGE),
    ("POST", r"/v1/alerts/rules/reload", Action.MANAGE),
    ("POST", r"/v1/loops", Action.MANAGE),  # a retraining policy promotes and rolls back on its own
    # a drift analysis records the model's drift scores (its alerts, its retraining loop): members
    ("POST", r"/v1/analysis/drift", Action.CREATE),
    # POSTs that only read
    ("POST", r"/v1/runs/compare", Action.READ),
    # projects: anyone lists their own; members are their project's maintainers' to manage
    ("GET", r"/v1/projects", Action.IDENTIFY),
    ("POST", r"/v1/projects", Action.ADMINISTER),
    ("GET", r"/v1/projects/(?P<project>[^/]+)(/members)?", Action.READ),
    ("ANY", r"/v1/projects/(?P<project>[^/]+)/members(/[^/]+)?", Action.MANAGE),
    ("GET", r"/v1/projects/(?P<project>[^/]+)/quota", Action.READ),
    ("PUT", r"/v1/projects/(?P<project>[^/]+)/quota", Action.ADMINISTER),
    ("ANY", r"/v1/projects/(?P<project>[^/]+)", Action.ADMINISTER),  # rename, delete
    # people, keys and the audit log
    ("ANY", r"/v1/users/(?P<owner>[^/]+)/keys(/[^/]+)?", Action.OWN_KEYS),
    ("ANY", r"/v1/users(/.*)?", Action.ADMINISTER),
    ("ANY", r"/v1/audit(/.*)?", Action.ADMINISTER),
)
_COMPILED = tuple((method, re.compile(pattern), action) for method, pattern, action in ROUTES)


@dataclass(frozen=True)
class RequestAction:
    """A request's action and what it acts on."""

    action: Action
    model: str | None = None
    owner: str | None = None
    project: str | None = None
    """The project the path names (``/v1/projects/{p}/...``): the request acts there."""


def request_action(method: str, path: str) -> RequestAction:
    """The action of ``method path`` (``/v1/models/a/predict`` -> INFER on model ``a``)."""
    method = method.upper()
    for wanted, pattern, action in _COMPILED:
        if wanted not in (method, "ANY"):
            continue
        match = pattern.fullmatch(path)
        if match is not None:
            groups = match.groupdict()
            return RequestAction(
                action, model=groups.get("name"), owner=groups.get("owner"), project=groups.get("project")
            )
    return RequestAction(BY_METHOD.get(method, Action.MANAGE))


QUIET = frozenset({Action.READ, Action.INFER, Action.IDENTIFY})
"""Actions the audit log records only when refused: reads, and predictions (the hot path; the
result store keeps those)."""


def audited(method: str, action: RequestAction) -> bool:
    """Whether the audit log records this request whatever its outcome: every change."""
    return method.upper() in ("POST", "PUT", "PATCH", "DELETE") and action.action not in QUIET
