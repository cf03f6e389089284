"""Who a job submitted straight to Ray stands for, decided on the head.

A platform task's job is told its task (``--task-id``), whose project the API recorded when a
caller with a role there created it. A job started with ``ray job submit`` from a laptop has no
task: it carries its submitter's platform key in its runtime environment (``AIP_API_TOKEN``), and
the queue actor, on the head, authenticates that key against ``access.db`` before it records the
run (``TaskActor.create_self_started``). The run, and the model it registers, then belong to the
key's project (or the one the job asks for with ``AIP_PROJECT``, if the key may create there);
a project the job merely names is never taken on its word. Without a key while authentication
is on, with a refused key, a service key or a role below member, nothing is recorded, nothing
is registered, and the error says why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from aiplatform.access import DEFAULT_PROJECT, AccessStore, Action, authorize
from aiplatform.access.authenticate import principal_for
from aiplatform.errors import Forbidden, NotFound, Unauthenticated
from aiplatform.settings import Settings

KEY_HINT = (
    "pass your platform key in the job's runtime environment: ray job submit --runtime-env-json "
    '\'{"env_vars": {"AIP_API_TOKEN": "aip_..."}}\' -- python -m jobs.train ...'
)


@dataclass(frozen=True)
class Submitters:
    """The platform's authentication, as the head applies it to a job's key."""

    auth: str
    token: str | None
    state_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Submitters:
        token = settings.api_token.get_secret_value() if settings.api_token is not None else None
        return cls(settings.api_auth, token or None, settings.resolved_state_dir)

    @functools.cached_property
    def directory(self) -> AccessStore:
        return AccessStore.in_state_dir(self.state_dir)

    def keys_needed(self) -> bool:
        """Whether a job needs a key: while the platform's API does (authentication on, with a
        bootstrap token or users). A platform with neither answers no API call at all, and a run
        on it (``python -m jobs.train`` on one's own machine) is its operator's, as before teams."""
        return self.auth != "off" and (self.token is not None or bool(self.directory.users()))

    def project(self, key: str | None, project: str | None = None) -> str:
        """The project a job carrying ``key`` records its run and registers its model in: the
        key's (``project`` if it names one the key may create in), or the one it names when no key
        is needed (``keys_needed``). ``Unauthenticated`` or ``Forbidden`` saying why otherwise."""
        if not self.keys_needed():
            return project or DEFAULT_PROJECT
        if not key:
            raise Unauthenticated(f"This job carries no platform key, so it registers nothing; {KEY_HINT}")
        try:
            principal = principal_for(self.auth, self.token, self.directory, f"Bearer {key}")
        except Unauthenticated as exc:
            raise Unauthenticated(
                f"This job's platform key (AIP_API_TOKEN) was refused ({exc.message}), so it registers nothing"
            ) from None
        if principal.kind == "service":
            raise Forbidden(
                f"This job's platform key {principal.label} is a service key (inference only), so it "
                "registers nothing; use a user's key with the member role in the project"
            )
        where = project or principal.project or DEFAULT_PROJECT
        if not self.directory.project_exists(where):
            raise NotFound(f"Project {where!r} not found, so this job registers nothing")
        try:
            authorize(principal, Action.CREATE, project=where)
        except (Forbidden, NotFound):
            raise Forbidden(
                f"This job's platform key ({principal.label}) has no member role in project {where!r}, "
                "so it registers nothing"
            ) from None
        return where
