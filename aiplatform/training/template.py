"""What a task template is: a typed parameter schema plus what the run needs.

Two kinds: a :class:`TrainingTemplate` has the platform build the data, model and loop (the
built-in CNN, text and table templates); the ``user-code`` template runs a user's own function
(``aiplatform.training.user_code``). Templates are plugins: each is a subclass in its own
module, found through the ``aiplatform.templates`` entry-point group (see ``catalog``); this
base knows none of them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from aiplatform.errors import InvalidArgument
from aiplatform.storage.projects import DEFAULT_PROJECT

if TYPE_CHECKING:
    from aiplatform.datasets import (
        DatasetManager,
        DatasetVersion,
        ImageDatasetSpec,
        TabularDatasetSpec,
        TextDatasetSpec,
    )
    from aiplatform.settings import Settings
    from aiplatform.storage import Storage
    from aiplatform.training.outcome import TrainingOutcome

MAX_WORKER_FAILURES = 3
"""Worker-group restarts a training run survives (each resumes from the last checkpoint)."""


def ray_train_configs(
    settings: Settings,
    storage: Storage,
    *,
    run_name: str,
    workers: int,
    use_gpu: bool = False,
    callbacks: list[Any] | None = None,
    max_failures: int = MAX_WORKER_FAILURES,
    worker_runtime_env: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """The ``ScalingConfig`` and ``RunConfig`` every training run uses, whatever its trainer:
    fractional CPUs per worker (and a GPU when used), the settings' placement, checkpoints in the
    platform's storage (two kept), restarts from them; and the controller's report interval
    (``runtime.train_controller_env``), read when the trainer starts it."""
    import ray.train

    from aiplatform.runtime import train_controller_env

    train_controller_env(settings)
    resources = {"CPU": settings.train_worker_cpus, **({"GPU": 1} if use_gpu else {})}
    scaling = ray.train.ScalingConfig(
        num_workers=workers,
        use_gpu=use_gpu,
        resources_per_worker=resources,
        placement_strategy=settings.train_placement,
    )
    run = ray.train.RunConfig(
        name=run_name,
        storage_path=storage.arrow_path("checkpoints"),
        storage_filesystem=storage.arrow_filesystem(),
        failure_config=ray.train.FailureConfig(max_failures=max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks,
        **({"worker_runtime_env": worker_runtime_env} if worker_runtime_env is not None else {}),
    )
    return scaling, run


def worker_threads(workers: int) -> int:
    """Compute threads per worker: the real cores shared out (fractional CPU reservations leave
    cores for Ray Data, so the reservation says nothing about the cores a worker may use)."""
    import ray

    cpus_total = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(min(os.cpu_count() or 1, cpus_total) // workers))


def validation_message(error: ValidationError, what: str) -> str:
    """One readable line per problem: ``epochs: Input should be >= 1 (got 0)``."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or what
        # A whole-model check names its fields itself; echoing the whole input would bury it.
        got = f" (got {item['input']!r})" if "input" in item and item["type"] != "missing" and item["loc"] else ""
        problems.append(f"{where}: {item['msg']}{got}")
    return f"Invalid {what}: " + "; ".join(problems)


class TaskTemplate(ABC):
    """One kind of task: its name, its parameters' schema, and what creating one checks."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    runs_user_code: ClassVar[bool] = False
    job_module: ClassVar[str] = "jobs.train"
    """The module the task's Ray job runs (``python -m <module> --task-id <id>``)."""
    """The task runs code its creator sent (refused through the API unless ``AIP_USER_CODE``)."""

    def parse_params(self, raw: dict[str, Any]) -> BaseModel:
        """Validate raw parameters against the schema; :class:`InvalidArgument` names each problem."""
        try:
            return self.params_model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidArgument(validation_message(exc, f"parameters for template {self.name!r}")) from exc

    def schema(self) -> dict[str, Any]:
        """JSON schema of the parameters (the UI builds its form from it)."""
        return self.params_model.model_json_schema()

    @abstractmethod
    def dataset_source(self, params: Any) -> str | None:
        """The dataset source the run reads (checked against the API's allow-list), or None when
        it names an already built version."""

    def check_inputs(self, params: Any, storage: Storage, project: str = DEFAULT_PROJECT) -> None:
        """Refuse a task of ``project`` whose stored inputs are missing there (e.g. a code
        archive): nothing by default."""

    def runs_code(self, params: Any) -> bool:
        """Whether this task runs code its creator sent (a sweep does when its trials do)."""
        return self.runs_user_code

    def concurrent_runs(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """How many training runs the task holds at once, and one run's parameters (what the
        scheduler reserves resources for): one run of its own parameters by default."""
        return 1, params

    @abstractmethod
    def default_model_name(self, params: Any) -> str:
        """The registry name used when the caller gives none."""


class TrainingTemplate(TaskTemplate):
    """A task whose data, model and loop the platform builds (``cnn-classification``, ...)."""

    task: ClassVar[str]
    """``model.json``'s task, e.g. ``image-classification``."""
    reported_metrics: ClassVar[tuple[str, ...]] = ("val_accuracy", "val_loss", "train_loss")
    """What its runs report every epoch (what a sweep may rank its trials by)."""
    budget_parameter: ClassVar[str] = "epochs"
    """The parameter that says how long a run trains, in the unit of its reports' ``epoch``."""

    @abstractmethod
    def dataset_spec(self, params: Any) -> ImageDatasetSpec | TextDatasetSpec | TabularDatasetSpec:
        """The dataset version this run trains on."""

    @abstractmethod
    def preprocessing(self, params: Any, dataset: DatasetVersion, datasets: DatasetManager) -> dict[str, Any]:
        """The ``preprocessing`` block of ``model.json`` (fitted on the training split if needed):
        training, evaluation and serving all turn raw inputs into tensors with it."""

    @abstractmethod
    def architecture(self, params: Any, dataset: DatasetVersion, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """The ``architecture`` block of ``model.json``."""

    @abstractmethod
    def input_spec(self, dataset: DatasetVersion, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """The ``input`` block of ``model.json``: what a prediction request may carry."""

    @abstractmethod
    def train_loop(self) -> Callable[[dict[str, Any]], Any]:
        """The Ray Train per-worker loop (of the engine's ``TorchTrainer``)."""

    def fit(
        self,
        params: Any,
        *,
        settings: Settings,
        storage: Storage,
        datasets: DatasetManager,
        run_name: str,
        callbacks: list[Any] | None,
    ) -> TrainingOutcome | None:
        """A whole run on this template's own Ray Train trainer (XGBoost's, ...): dataset, fit and
        test metrics. None, the default, has the engine run ``train_loop`` on ``TorchTrainer``."""
        return None

    def dataset_source(self, params: Any) -> str:
        return self.dataset_spec(params).source
