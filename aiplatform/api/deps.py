"""What the API's routes depend on: the app's ``Platform`` (kept in ``app.state``, installed by
whoever serves the app) and, one dependency each, the parts of it a route uses (``RegistryDep``,
``TasksDep``, ``DatasetsDep``...). A route names only the parts it needs, so a test can hand it
its own with ``app.dependency_overrides[get_registry] = ...`` without building a platform."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from aiplatform.access import DEFAULT_PROJECT, Principal
from aiplatform.access.protocols import AccessAPI, QuotaAPI
from aiplatform.alerting.actor import AlertClient
from aiplatform.api.security import AccessPolicy
from aiplatform.datasets import DatasetManager
from aiplatform.errors import Unauthenticated, Unavailable
from aiplatform.model_import import ImportSlots
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from aiplatform.serving.pools import ServePools
from aiplatform.settings import Settings
from aiplatform.storage import Storage, storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import scheduler_handle


@dataclass
class Platform:
    """Clients of the platform's actors and storage, made once per API process."""

    settings: Settings
    registry: RegistryClient
    results: ResultClient
    tasks: TaskManager
    storage: Storage
    datasets: DatasetManager
    alerts: AlertClient
    warm: Callable[[str], None]
    """Loads ``name:version`` on the model servers before an alias moves to it."""
    pools: ServePools | None = None
    """The projects' own model servers (a serving-replica quota); None where no Serve runs them."""

    @functools.cached_property
    def access(self) -> AccessPolicy:
        return AccessPolicy.from_settings(self.settings)

    @property
    def quotas(self) -> QuotaAPI:
        """The projects' quotas (the task manager's: one store, or one client of the head's actor)."""
        return self.tasks.quotas

    @functools.cached_property
    def import_slots(self) -> ImportSlots:
        """The model imports this process checks at once (``max_concurrent_imports``)."""
        return ImportSlots(self.settings.max_concurrent_imports)

    @classmethod
    def connect(cls, settings: Settings, *, warm: Callable[[str], None], pools: ServePools | None = None) -> Platform:
        """Clients of the platform's actors; a created or started task wakes the scheduler."""
        storage = storage_from_settings(settings)
        scheduler = scheduler_handle(settings)
        return cls(
            settings=settings,
            registry=RegistryClient.connect(settings),
            results=ResultClient.connect(settings),
            tasks=TaskManager(
                TaskClient.connect(settings),
                RayJobs(settings),
                settings,
                wake_scheduler=lambda: scheduler.wake.remote(),
                storage=storage,
            ),
            storage=storage,
            datasets=DatasetManager.from_settings(storage, settings),
            alerts=AlertClient.connect(settings),
            warm=warm,
            pools=pools,
        )


def set_platform(app: FastAPI, platform: Platform) -> None:
    """Install ``app``'s platform (the gateway does this in its constructor)."""
    app.state.platform = platform


def _installed(app: object) -> Platform | None:
    state = getattr(app, "state", None)
    return getattr(state, "platform", None)


def get_platform(request: Request) -> Platform:
    platform = _installed(request.app)
    if platform is None:
        raise Unavailable("The platform API is starting; retry in a moment")
    return platform


def access_policy(scope: dict[str, object]) -> AccessPolicy | None:
    """What the HTTP guard enforces for a request to the app in ``scope``; None until the app's
    platform is installed (the guard then refuses everything but the health probes)."""
    platform = _installed(scope.get("app"))
    return None if platform is None else platform.access


PlatformDep = Annotated[Platform, Depends(get_platform)]


def get_settings(platform: PlatformDep) -> Settings:
    return platform.settings


def get_registry(platform: PlatformDep) -> RegistryClient:
    return platform.registry


def get_results(platform: PlatformDep) -> ResultClient:
    return platform.results


def get_tasks(platform: PlatformDep) -> TaskManager:
    return platform.tasks


def get_storage(platform: PlatformDep) -> Storage:
    return platform.storage


def get_datasets(platform: PlatformDep) -> DatasetManager:
    return platform.datasets


def get_alerts(platform: PlatformDep) -> AlertClient:
    return platform.alerts


def get_warm(platform: PlatformDep) -> Callable[[str], None]:
    return platform.warm


def get_pools(platform: PlatformDep) -> ServePools | None:
    return platform.pools


def get_import_slots(platform: PlatformDep) -> ImportSlots:
    return platform.import_slots


def get_access_store(platform: PlatformDep) -> AccessAPI:
    directory = platform.access.directory
    if directory is None:
        raise Unavailable("This platform keeps no users or keys (its access policy has no directory)")
    return directory


def get_principal(request: Request) -> Principal:
    """Who the access guard let this request in as (``aiplatform.api.security``)."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:  # not through the guard: nobody
        raise Unauthenticated("This request did not pass the platform's access guard")
    return principal  # type: ignore[no-any-return]


def get_creator(request: Request) -> str | None:
    """Who a change is recorded as made by (``created_by``): the guard's principal's name; None
    for a request that did not pass the guard (a route's own test), recorded as unknown. Never
    used to authorize: the guard did that."""
    principal = request.scope.get("state", {}).get("principal")
    return None if principal is None else str(principal.name)


def get_project(request: Request) -> str:
    """The project the access guard found this request acting in (``default`` when it named none)."""
    return str(request.scope.get("state", {}).get("project") or DEFAULT_PROJECT)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[RegistryClient, Depends(get_registry)]
ResultsDep = Annotated[ResultClient, Depends(get_results)]
TasksDep = Annotated[TaskManager, Depends(get_tasks)]
StorageDep = Annotated[Storage, Depends(get_storage)]
DatasetsDep = Annotated[DatasetManager, Depends(get_datasets)]
AlertsDep = Annotated[AlertClient, Depends(get_alerts)]
WarmDep = Annotated[Callable[[str], None], Depends(get_warm)]
"""Loads ``name:version`` on the model servers (before an alias or a canary moves to it)."""
PoolsDep = Annotated[ServePools | None, Depends(get_pools)]
ImportSlotsDep = Annotated[ImportSlots, Depends(get_import_slots)]
AccessStoreDep = Annotated[AccessAPI, Depends(get_access_store)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
"""The caller: the platform admin, a user (with roles) or a service key."""
CreatorDep = Annotated[str | None, Depends(get_creator)]
"""The caller's name, for the ``created_by`` of what the request makes (None: unknown)."""
ProjectDep = Annotated[str, Depends(get_project)]
"""The project the request acts in: listings show only its resources, and another project's is a 404."""
