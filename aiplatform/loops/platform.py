"""The platform as the loop engine reaches it: alerts, the registry, the task queue, datasets,
labeled predictions, and serving's canary and deploy (``aiplatform.serving.deployer``).

Every call is safe to repeat after a restart: a training task is created with the run's id as
its idempotency key (the queue gives the same task back) and one retry (a task whose Ray job was
lost with the cluster is queued again, once), a canary split or an alias set twice is set once,
and a run's tables are written whole or not at all.

The heavy work runs in Ray tasks with CPUs of their own, not in the zero-CPU head actor that
orchestrates: the data step's source (production's data read, each kept input decoded, the
tables written; ``DATA_CPUS``) and the gate's scoring (two models loaded, production's test split
and the held-out slice classified; ``GATE_CPUS``). :class:`StepWork` launches each and answers None
until it ends; the dataset version is then built by Ray Data's own tasks, driven from here. Only
the tasks' references are kept, in memory: an engine restarted meanwhile launches them again
(their files are written whole, their figures are the same).

A run acts in its model's project (``RegistryAPI.model_project``): the datasets it reads and
builds are that project's, its training task (or sweep) is created there, and the dataset
trigger watches that project's versions; a Ray task of a step is given the project.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from aiplatform.alerting.actor import AlertClient
from aiplatform.datasets import DatasetManager, DatasetVersion, ImageDatasetSpec
from aiplatform.datasets.tabular_sources import LABEL_NAME, TabularDatasetSpec
from aiplatform.errors import AIPError, Conflict, NotFound
from aiplatform.loops import data as run_data
from aiplatform.loops.gate import FreshSlice, KeptSlice, TableSlice, gate_figures
from aiplatform.loops.policy import SPLIT_PARAMS, LoopPolicy
from aiplatform.registry import RegistryClient
from aiplatform.results import ResultClient
from aiplatform.results.feedback import LabeledPrediction
from aiplatform.results.store import labeled_since
from aiplatform.serving.deployer import PRODUCTION, deploy, set_canary
from aiplatform.serving.runner import ModelRunner
from aiplatform.settings import Settings
from aiplatform.storage import Storage, storage_from_settings
from aiplatform.storage.projects import DEFAULT_PROJECT
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import SUCCEEDED, TaskClient
from aiplatform.tasks.ray_jobs import RayJobs
from aiplatform.tasks.scheduler import scheduler_handle
from aiplatform.training.catalog import get_template

SWEEP_TEMPLATE = "sweep"
LOOP_PRINCIPAL = "retraining-loop"
"""Who the alias moves and traffic splits of a loop's canary and decision are by (alias history)."""
TRAINING_RETRIES = 1
"""A run's training task is queued again once when its Ray job is lost (``aip down`` / ``up``)."""
GATE_CPUS = 1.0
"""What the gate's Ray task reserves: it loads both models and classifies both slices."""
DATA_CPUS = 1.0
"""What the data step's Ray task reserves: it reads production's data and decodes each kept input."""
RUNS_FOLDER = "loops"
"""Under the data root: ``loops/<model>/<run id>/train.parquet`` and ``holdout.parquet``."""


class PlatformLoops:
    """``LoopPlatform`` on the running platform's actors and storage."""

    def __init__(self, settings: Settings, warm: Callable[[str], None]) -> None:
        self.settings = settings
        self.warm = warm
        self.work = StepWork()
        self._datasets: dict[str, DatasetManager] = {}

    @functools.cached_property
    def registry(self) -> RegistryClient:
        return RegistryClient.connect(self.settings)

    @functools.cached_property
    def alerts(self) -> AlertClient:
        return AlertClient.connect(self.settings)

    @functools.cached_property
    def results(self) -> ResultClient:
        return ResultClient.connect(self.settings)

    @functools.cached_property
    def storage(self) -> Storage:
        return storage_from_settings(self.settings)

    def project_of(self, model: str) -> str:
        """The project ``model`` belongs to: its runs' datasets and tasks are that project's."""
        return self.registry.model_project(model) or DEFAULT_PROJECT

    def datasets(self, project: str) -> DatasetManager:
        """``project``'s datasets (one manager per project, kept)."""
        manager = self._datasets.get(project)
        if manager is None:
            manager = self._datasets[project] = DatasetManager.from_settings(
                self.storage, self.settings, project=project
            )
        return manager

    @functools.cached_property
    def tasks(self) -> TaskManager:
        scheduler = scheduler_handle(self.settings)
        return TaskManager(
            TaskClient.connect(self.settings),
            RayJobs(self.settings),
            self.settings,
            wake_scheduler=lambda: scheduler.wake.remote(),
            storage=self.storage,
        )

    @property
    def busy(self) -> bool:
        """Whether a data or gate task is running (``StepWork.busy``)."""
        return self.work.busy

    # -- triggers --------------------------------------------------------------------------
    def alert_rules(self) -> list[str]:
        return [rule["name"] for rule in self.alerts.rules()]

    def alerts_since(self, since: float) -> list[dict[str, Any]]:
        return [alert.to_dict() for alert in self.alerts.query(since=since, limit=1000)]

    def production(self, model: str) -> dict[str, Any]:
        try:
            version = self.registry.resolve(model, PRODUCTION)
        except NotFound:
            raise NotFound(f"Model {model!r} has no {PRODUCTION} version for a loop to retrain") from None
        return {
            "version": version.version,
            "dataset": version.lineage.get("dataset"),
            "task_id": version.lineage.get("task_id"),
            "template": version.template,
            "created_at": version.created_at,
        }

    def dataset_versions_after(self, model: str, dataset_ref: str, after: float) -> list[dict[str, Any]]:
        name = dataset_ref.partition("@")[0]
        return [
            {"ref": v.ref, "created_at": float(v.manifest["created_at"])}
            for v in self.datasets(self.project_of(model)).list_versions(name)
            if float(v.manifest["created_at"]) > after and v.ref != dataset_ref
        ]

    # -- data ------------------------------------------------------------------------------
    def build_data(
        self, run_id: str, model: str, policy: LoopPolicy, production: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The run's dataset version, once the Ray task that wrote its source (and held-out
        slice) has ended; None until then. The version is built here: the build is Ray Data's
        tasks, this process only drives them."""
        if not production.get("dataset") or not production.get("task_id"):
            raise Conflict(
                f"{model} v{production['version']} was not trained by a task: no data or parameters to retrain with"
            )
        project = self.project_of(model)
        datasets = self.datasets(project)
        original = datasets.get_ref(production["dataset"])
        run_data.require_built_kind(original.kind, model)
        key, table = f"data:{run_id}", None
        if original.kind == run_data.TABLE_KIND and not self.work.running(key):
            # Production's table read by Ray Data's tasks; the data task takes the blocks.
            spec = TabularDatasetSpec.model_validate(original.manifest["spec"])
            table = run_data.original_table_blocks(spec, self.settings.s3_storage_options)
        prepared = self.work.poll(
            key, _prepare_in_task, self.settings, project, run_id, model, policy, production, original.ref, table
        )
        if prepared is None:
            return None
        counts, holdout_path, overrides = prepared
        # Production's task parameters, reading the run's source, with the policy's overrides.
        trained = self.tasks.get(production["task_id"]).params
        params = {**trained, **overrides, **policy.train.params}
        params |= {name: trained[name] for name in SPLIT_PARAMS if name in trained}  # production's split
        template = get_template(production["template"])
        built = datasets.build(template.dataset_spec(template.parse_params(params)))
        return {
            "dataset": built.ref,
            "original_dataset": original.ref,
            "test_dataset": production.get("trained_on") or original.ref,  # the gate's original slice
            "kind": original.kind,
            "labeled": counts["fresh_train"] + counts["holdout"],
            **counts,
            "rows": {split: built.rows(split) for split in ("train", "val", "test")},
            "holdout_path": holdout_path,
            "params": params,
        }

    def prepare_source(
        self,
        project: str,
        run_id: str,
        model: str,
        policy: LoopPolicy,
        production: dict[str, Any],
        original_ref: str,
        table: tuple[list[Any], list[str]] | None,
    ) -> tuple[dict[str, int], str, dict[str, Any]]:
        """What the run trains on and its held-out slice, written under the data root (in the
        data step's Ray task): the counts, the slice's path and the parameters that read the source.
        ``table``: a table model's blocks and feature names (``data.original_table_blocks``);
        ``project``: the model's, whose datasets are read."""
        datasets = self.datasets(project)
        original = datasets.get_ref(original_ref)
        labeled = run_data.newest(
            labeled_since(self.results, model, since=production["created_at"]), policy.data.max_labeled
        )
        folder = self.settings.resolved_data_root / RUNS_FOLDER / model / run_id
        if original.kind == run_data.IMAGE_KIND:
            source, counts, holdout_path = self._image_data(
                model, production, policy, datasets, original, labeled, folder
            )
            overrides: dict[str, Any] = {"dataset": f"parquet:{source.resolve()}", "max_rows": None}
        elif original.kind == run_data.TEXT_KIND:
            source, counts, holdout_path = self._text_data(
                model, production, policy, datasets, original, labeled, folder
            )
            overrides = {
                "dataset": f"parquet:{source.resolve()}",
                "text_column": run_data.TEXT_COLUMN,
                "label_column": run_data.TEXT_LABEL_COLUMN,
                "max_rows": None,
            }
        else:
            if table is None:
                raise Conflict(f"{model}: a table model's run needs production's table")
            blocks, features = table
            gated = datasets.get_ref(production.get("trained_on") or original_ref)  # the gate's test split
            test_ids = {int(i) for i in datasets.read_split_table(gated, "test").column("id").to_pylist()}
            original_table, test_rows = run_data.without_test_rows(
                run_data.concat_blocks(ray.get(blocks)), gated.manifest["table"]["features"], test_ids
            )
            fresh = run_data.fresh_rows(labeled, self.storage, features, policy.data.seed, policy.data.holdout_fraction)
            source, holdout_path = run_data.write_run_tables(folder, original_table, features, fresh)
            counts = {
                "fresh_train": len(fresh.train),
                "holdout": len(fresh.holdout),
                "unreadable": fresh.unreadable,
                "test_rows_out": test_rows,
            }
            overrides = {
                "dataset": f"parquet:{source.resolve()}",
                "label_column": LABEL_NAME,
                "feature_columns": features,
                "max_rows": None,
            }
        return counts, str(holdout_path), overrides

    def _image_data(
        self,
        model: str,
        production: dict[str, Any],
        policy: LoopPolicy,
        datasets: DatasetManager,
        original: DatasetVersion,
        labeled: list[LabeledPrediction],
        folder: Path,
    ) -> tuple[Path, dict[str, int], Path]:
        """An image run's source and held-out slice: production's train and validation images
        and the labeled inputs, decoded as serving decoded them for production."""
        kind = self._runner(model, int(production["version"])).kind
        fresh = run_data.fresh_images(
            labeled, self.storage, kind, original.labels, policy.data.seed, policy.data.holdout_fraction
        )
        source_kind = ImageDatasetSpec.model_validate(original.manifest["spec"]).source_kind
        kept = run_data.image_splits_kept(source_kind)
        splits = [datasets.read_split_table(original, s) for s in kept if original.files(s)]
        table = run_data.original_images(splits, original.image_shape, original.labels)
        source, holdout_path = run_data.write_image_run(folder, table, fresh, original.labels)
        counts = {"fresh_train": len(fresh.train_images), "holdout": len(fresh.holdout), "unreadable": fresh.unreadable}
        return source, counts, holdout_path

    def _text_data(
        self,
        model: str,
        production: dict[str, Any],
        policy: LoopPolicy,
        datasets: DatasetManager,
        original: DatasetVersion,
        labeled: list[LabeledPrediction],
        folder: Path,
    ) -> tuple[Path, dict[str, int], Path]:
        """A text run's source and held-out slice: production's train and validation texts and
        the labeled inputs, decoded as serving decoded them for production; a fresh text equal
        to one of production's test texts is not trained on (nor, in a run on a new version of
        the source, one of the test texts production was gated on)."""
        kind = self._runner(model, int(production["version"])).kind
        test_ids: set[int] = set()
        for version in {original.ref, production.get("trained_on") or original.ref}:
            tested = datasets.get_ref(version)
            if tested.files("test"):
                test_ids |= {int(i) for i in datasets.read_split_table(tested, "test").column("id").to_pylist()}
        fresh = run_data.fresh_texts(
            labeled, self.storage, kind, original.labels, policy.data.seed, policy.data.holdout_fraction, test_ids
        )
        splits = [
            run_data.without_ids(datasets.read_split_table(original, s), test_ids)
            for s in run_data.text_splits_kept()
            if original.files(s)
        ]
        table = run_data.original_texts(splits, original.labels)
        source, holdout_path = run_data.write_text_run(folder, table, fresh)
        counts = {
            "fresh_train": len(fresh.train_texts),
            "holdout": len(fresh.holdout),
            "unreadable": fresh.unreadable,
            "seen": fresh.seen,
        }
        return source, counts, holdout_path

    # -- training --------------------------------------------------------------------------
    def start_training(self, run_id: str, model: str, policy: LoopPolicy, data: dict[str, Any]) -> str:
        """A task of production's template on the run's data, or a sweep around it, in the model's project."""
        production = self.production(model)
        template, params = production["template"], data["params"]
        if policy.train.sweep is not None:
            searched = set(policy.train.sweep.get("space", {}))
            shared = {k: v for k, v in params.items() if k not in searched}
            template, params = SWEEP_TEMPLATE, {**policy.train.sweep, "template": template, "params": shared}
        task = self.tasks.create(
            template,
            params,
            model_name=model,
            idempotency_key=run_id,
            priority=policy.train.priority,
            max_retries=max(TRAINING_RETRIES, self.settings.task_max_retries),
            start=True,
            project=self.project_of(model),
        )
        return task.id

    def training(self, task_id: str) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if not task.finished:
            return {"state": "running"}
        if task.state != SUCCEEDED or not task.result:
            return {
                "state": task.state.lower(),
                "error": task.error or f"task {task_id} {task.state.lower()}",
                "reason": task.error_reason,
            }
        metrics = {k: task.result[k] for k in ("test_accuracy", "test_macro_f1") if k in task.result}
        state = {"state": "succeeded", "version": int(task.result["version"]), "metrics": metrics}
        if task.template == SWEEP_TEMPLATE:
            state |= {
                "sweep_id": task.id,
                "best_trial": task.result.get("best_trial"),
                "best_params": task.result.get("best_params"),
            }
        return state

    # -- gate ------------------------------------------------------------------------------
    def gate(self, model: str, production: int, candidate: int, data: dict[str, Any]) -> dict[str, Any] | None:
        """The figures once the gate's Ray task has scored both models; None until then."""
        key = f"gate:{model}:{production}:{candidate}:{data['dataset']}"
        project = self.project_of(model)
        return self.work.poll(key, _gate_in_task, self.settings, project, model, production, candidate, data)

    def score_gate(
        self, project: str, model: str, production: int, candidate: int, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Both models scored on production's test split (of ``project``, the model's) and the
        held-out slice (in this process)."""
        datasets = self.datasets(project)
        original = datasets.get_ref(data.get("test_dataset") or data["original_dataset"])
        fresh: FreshSlice
        if data.get("kind") in (run_data.IMAGE_KIND, run_data.TEXT_KIND):
            fresh = KeptSlice(*run_data.holdout_inputs(Path(data["holdout_path"])))
        else:
            fresh = TableSlice(*run_data.holdout_rows(Path(data["holdout_path"])))
        return gate_figures(
            self._runner(model, production),
            self._runner(model, candidate),
            datasets.read_split_table(original, "test"),
            original.labels,
            fresh,
        )

    def _runner(self, model: str, version: int) -> ModelRunner:
        entry = self.registry.get_version(model, version)
        return ModelRunner.from_bytes(self.storage.get_bytes(entry.package_key))

    # -- canary and decision ---------------------------------------------------------------
    def start_canary(self, model: str, version: int, weight: float) -> dict[str, Any]:
        weights = set_canary(self.registry, model, version, weight, warm=self.warm, by=LOOP_PRINCIPAL)
        return {str(v): w for v, w in weights.items()}

    def canary_state(self, model: str, version: int) -> dict[str, Any]:
        weights = self.registry.get_traffic(model)
        signals = {}
        try:
            signals = {
                key: value
                for key, value in self.alerts.status()["signals"].items()
                if f"model={model}," in key or key.endswith(f"model={model}}}")
            }
        except Exception:  # the figures are for the record; the decision does not need them
            pass
        return {
            "serving": float(weights.get(version, 0.0)) > 0,
            "weights": {str(v): w for v, w in weights.items()},
            "signals": signals,
        }

    def promote(self, model: str, version: int) -> dict[str, Any]:
        deployment = deploy(self.registry, model, version, warm=self.warm, force=True, by=LOOP_PRINCIPAL)  # gate ran
        self.registry.set_traffic(model, {}, by=LOOP_PRINCIPAL)
        return {"previous_version": deployment.previous_version}

    def end_canary(self, model: str) -> None:
        self.registry.set_traffic(model, {}, by=LOOP_PRINCIPAL)


class StepWork:
    """A step's heavy work as a Ray task with CPUs of its own, followed without blocking the
    engine's tick: the first ``poll`` of a key launches it, later ones answer None until it ends,
    then its result (platform errors raised as themselves). A task that died is launched again
    at the next poll."""

    def __init__(self) -> None:
        self._running: dict[str, ray.ObjectRef] = {}

    @property
    def busy(self) -> bool:
        """Whether a launched task has not been collected yet (the engine then looks sooner)."""
        return bool(self._running)

    def running(self, key: str) -> bool:
        """Whether ``key``'s task was launched by this process and has not been collected."""
        return key in self._running

    def poll(self, key: str, function: Any, *args: Any) -> Any | None:
        ref = self._running.get(key)
        if ref is None:
            ref = self._running[key] = function.remote(*args)
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return None
        del self._running[key]
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AIPError):  # a platform error fails the step, as it would here
                raise type(cause)(cause.message) from None
            raise


@ray.remote(num_cpus=DATA_CPUS, max_retries=1)
def _prepare_in_task(
    settings: Settings,
    project: str,
    run_id: str,
    model: str,
    policy: LoopPolicy,
    production: dict[str, Any],
    original_ref: str,
    table: tuple[list[Any], list[str]] | None,
) -> tuple[dict[str, int], str, dict[str, Any]]:
    return PlatformLoops(settings, _no_warm).prepare_source(
        project, run_id, model, policy, production, original_ref, table
    )


@ray.remote(num_cpus=GATE_CPUS, max_retries=1)
def _gate_in_task(
    settings: Settings, project: str, model: str, production: int, candidate: int, data: dict[str, Any]
) -> dict[str, Any]:
    return PlatformLoops(settings, _no_warm).score_gate(project, model, production, candidate, data)


def _no_warm(_model: str) -> None:
    """The gate's task deploys nothing."""
