"""What the API's routes depend on: one ``Platform`` per process, reached through ``PlatformDep``."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Callable, Optional

from fastapi import Depends

from aiplatform.alerting.actor import AlertClient
from aiplatform.api.security import AccessPolicy
from aiplatform.datasets import DatasetManager
from aiplatform.errors import Unavailable
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from aiplatform.settings import Settings
from aiplatform.storage import Storage, storage_from_settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import TaskClient
from aiplatform.tasks.ray_jobs import RayJobs


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

    @functools.cached_property
    def access(self) -> AccessPolicy:
        return AccessPolicy.from_settings(self.settings)

    @classmethod
    def connect(cls, settings: Settings, *, warm: Callable[[str], None],
                wake_scheduler: Optional[Callable[[], None]] = None) -> "Platform":
        storage = storage_from_settings(settings)
        return cls(
            settings=settings,
            registry=RegistryClient.connect(settings),
            results=ResultClient.connect(settings),
            tasks=TaskManager(TaskClient.connect(settings), RayJobs(settings), settings, wake_scheduler),
            storage=storage,
            datasets=DatasetManager.from_settings(storage, settings),
            alerts=AlertClient.connect(settings),
            warm=warm,
        )


_platform: Optional[Platform] = None


def set_platform(platform: Platform) -> None:
    """Install the process's platform (the gateway does this in its constructor)."""
    global _platform
    _platform = platform


def get_platform() -> Platform:
    if _platform is None:
        raise Unavailable("The platform API is starting; retry in a moment")
    return _platform


def access_policy() -> Optional[AccessPolicy]:
    """What the HTTP guard enforces; None until the process's platform is installed (the guard
    then refuses everything but the health probes)."""
    return None if _platform is None else _platform.access


PlatformDep = Annotated[Platform, Depends(get_platform)]
