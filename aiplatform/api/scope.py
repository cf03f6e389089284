"""Which models a request's project owns: what every route that lists or counts across models
(results, labels, quality, alerts, monitoring, loops) narrows its answer to.

A model belongs to exactly one project (the registry's ``project`` column). A route addressed by
a model's name alone under ``/v1/models`` or ``/v2/models`` is already acted in that model's
project by the access guard (``aiplatform.api.security``); the routes here name a model in a
query, a body or another path, or name none, so they ask a ``ModelScope``: a model of another
project is a 404 worded as for a model that does not exist, and a listing keeps only the
project's own. Model names are unique across the platform, so a name alone says whose it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from aiplatform.access import DEFAULT_PROJECT
from aiplatform.api.deps import get_project
from aiplatform.errors import NotFound


@dataclass(frozen=True)
class ModelScope:
    """The models of one project, as a route asks about them.

    ``project_of`` answers a model's project (None: no such model); ``names`` lists the project's
    models. A scope with neither (an app without a platform: a route's unit test) owns every model.
    """

    project: str
    project_of: Callable[[str], str | None] | None = None
    names: Callable[[], list[str]] | None = field(default=None, repr=False)

    @property
    def scoped(self) -> bool:
        return self.project_of is not None

    def owns(self, model: str) -> bool:
        """Whether ``model`` is this project's. A model the registry does not know (never
        registered, or deleted since) is nobody's but ``default``'s, as before projects."""
        if self.project_of is None:
            return True
        return (self.project_of(model) or DEFAULT_PROJECT) == self.project

    def check(self, model: str) -> str:
        """``model`` when it is this project's; else NotFound worded as for a model that does not exist."""
        if not self.owns(model):
            raise NotFound(f"Model {model!r} not found")
        return model

    def models(self) -> list[str] | None:
        """The project's models, for a listing's filter; None: every model (an unscoped app)."""
        if self.names is None:
            return None
        return self.names()

    def owns_labels(self, labels: dict[str, str]) -> bool:
        """Whether a series (an alert's, a signal's) is this project's: one on a model is its
        model's project's; one on no model (the queue, the cluster) is the operator's, in ``default``."""
        model = labels.get("model")
        if model is None:
            return self.project_of is None or self.project == DEFAULT_PROJECT
        return self.owns(model)


def get_model_scope(request: Request) -> ModelScope:
    """The request's project's models, from the registry the access guard reads (its own
    read-only connection, ``registry.ModelProjects``) and the registry's listing."""
    project = get_project(request)
    platform = getattr(getattr(request.app, "state", None), "platform", None)
    policy = getattr(platform, "access", None)
    models = getattr(policy, "models", None)
    registry = getattr(platform, "registry", None)
    if models is None or registry is None:
        return ModelScope(project)
    return ModelScope(
        project,
        models.project_of,
        lambda: [str(m["name"]) for m in registry.list_models(project)],
    )


ModelScopeDep = Annotated[ModelScope, Depends(get_model_scope)]
"""The request's project's models: listings keep only them, and another project's is a 404."""
