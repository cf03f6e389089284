"""The ``user-code`` template: a user's own function runs as Ray Train's ``train_loop_per_worker``.

The task names the function (``entry``: ``package.module:function``), the code it lives in (a
stored archive, by sha256: ``aiplatform.code_archives``), a dataset and the function's own
``config``. The entry's module must be a file of the archive, and the one that runs: nothing
installed where the job runs (``subprocess:run``) may be named, so what a version's lineage
records (the digest and the entry) is exactly the code that ran. The run builds or loads the
dataset, unpacks the archive, and starts a ``TorchTrainer`` whose workers get the archive as
their working directory and the dataset's splits as shards. On each worker the function is
called with its ``config``; through ``aiplatform.sdk`` it reads its shard, reports per-epoch
metrics and checkpoints (curves in the task, resume after a worker failure) and publishes its
model. What the workers need to know of the task travels in ``RunContext``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import ray
import ray.train
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray.train.torch import TorchTrainer

from aiplatform.code_archives import DIGEST, CodeArchives
from aiplatform.datasets import DatasetManager, DatasetVersion, ImageDatasetSpec
from aiplatform.datasets.spec import SPLITS
from aiplatform.errors import AIPError, InvalidArgument
from aiplatform.kinds import kind_class
from aiplatform.settings import Settings
from aiplatform.storage import Storage
from aiplatform.storage.projects import DEFAULT_PROJECT
from aiplatform.training.engine import ingest_config, resolve_gpu
from aiplatform.training.template import TaskTemplate, ray_train_configs

USER_CODE = "user-code"
ENTRY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
MAX_CONFIG_BYTES = 64 * 1024
DEFAULT_MAX_FAILURES = 3


class UserCodeParams(BaseModel):
    """Parameters of a ``user-code`` task."""

    model_config = ConfigDict(extra="forbid")

    entry: str = Field(
        ...,
        description="package.module:function of the code archive, called on every worker with config",
        examples=["digits_mlp.train:train_loop"],
    )
    code: str = Field(..., description="sha256 of the code archive (POST /v1/code) that holds the entry's module")
    dataset: str = Field(
        "mnist",
        description="a built version (name@version) or an image source: mnist, "
        "idx:<uri>, folder:<uri> or parquet:<uri>",
    )
    config: dict[str, Any] = Field(default_factory=dict, description="passed to the function as it is")
    workers: int = Field(1, ge=1, le=256, description="Ray Train workers")
    gpu: Literal["auto", "on", "off"] = "auto"
    max_failures: int = Field(
        DEFAULT_MAX_FAILURES,
        ge=0,
        le=20,
        description="worker-group restarts (from the last checkpoint) before the task fails",
    )
    max_rows: int | None = Field(None, ge=10, description="built from a source: first N rows of each split")
    seed: int = Field(0, ge=0)

    @field_validator("entry")
    @classmethod
    def _entry_form(cls, value: str) -> str:
        if not ENTRY.fullmatch(value):
            raise ValueError("use package.module:function (Python names only)")
        top = value.partition(":")[0].split(".")[0]
        if top in sys.stdlib_module_names:
            raise ValueError(
                f"module {top!r} is Python's own (standard library): name a module of your code "
                "archive (rename yours if it has that name)"
            )
        return value

    @field_validator("code")
    @classmethod
    def _digest_form(cls, value: str) -> str:
        if not DIGEST.fullmatch(value):
            raise ValueError("a code archive's sha256: 64 lowercase hex digits")
        return value

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > MAX_CONFIG_BYTES:
            raise ValueError(f"config is over {MAX_CONFIG_BYTES // 1024} KiB of JSON; put data in a dataset")
        return value

    @property
    def built_version(self) -> bool:
        return "@" in self.dataset


class UserCodeTemplate(TaskTemplate):
    name = USER_CODE
    title = "Your own training code"
    description = (
        "Runs your function (package.module:function) on Ray Train workers with the dataset's "
        "shards; it reports and publishes through aiplatform.sdk."
    )
    params_model = UserCodeParams
    runs_user_code = True

    def dataset_source(self, params: UserCodeParams) -> str | None:
        return None if params.built_version else params.dataset

    def check_inputs(self, params: UserCodeParams, storage: Storage, project: str = DEFAULT_PROJECT) -> None:
        """The archive is stored in the task's project and holds the entry's module (a task that could only fail at its
        import is refused when it is created, not after a job has started; and an entry may only
        name code of its own archive)."""
        _, names = CodeArchives(storage, project).contents(params.code)
        module_name = params.entry.partition(":")[0]
        if not module_in_archive(module_name, names):
            path = module_name.replace(".", "/")
            raise InvalidArgument(
                f"entry {params.entry!r}: module {module_name!r} is not in code archive "
                f"{params.code[:12]} (no {path}.py or {path}/__init__.py at its root; is the "
                "archive's root the project folder?)"
            )

    def default_model_name(self, params: UserCodeParams) -> str:
        module = params.entry.partition(":")[0].split(".")[0]
        return re.sub(r"[^a-z0-9-]+", "-", module.lower()).strip("-")[:63] or "user-model"


def module_in_archive(module_name: str, names: list[str]) -> bool:
    """Whether an archive's files (``names``) hold ``module_name`` as a module or a package."""
    path = module_name.replace(".", "/")
    return any(
        name in (f"{path}.py", f"{path}/__init__.py")
        or (name.startswith(f"{path}.") and name.endswith((".so", ".pyd")))
        for name in names
    )


# -- on the workers ---------------------------------------------------------------------------
@dataclass
class RunContext:
    """What the user's function may ask of its task (``aiplatform.sdk.context()``)."""

    task_id: str | None
    run_name: str
    dataset: str
    kind: str
    labels: list[str]
    inputs: dict[str, Any]
    """What the dataset's kind needs to read its rows (``DatasetKind.worker_inputs``)."""
    code_digest: str
    entry: str
    model_name: str
    rank: int = 0
    world_size: int = 1
    reports: int = 0
    last_metrics: dict[str, Any] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    candidate_key: str | None = None
    """Set in a sweep's trial: ``publish`` keeps the package there, unregistered (the sweep
    registers its best trial's)."""

    @property
    def image_shape(self) -> list[int] | None:
        """An image dataset's (height, width, channels); None for other kinds."""
        shape = self.inputs.get("image_shape")
        return list(shape) if shape is not None else None

    def lineage(self) -> dict[str, Any]:
        """What a version published from this run records of where it came from."""
        return {
            "task_id": self.task_id,
            "run_name": self.run_name,
            "dataset": self.dataset,
            "code_digest": self.code_digest,
            "entry": self.entry,
        }


_current: RunContext | None = None


def current_context() -> RunContext | None:
    """The running task's context on a worker, or None outside one."""
    return _current


def load_entry(entry: str, code_dir: Path | None = None) -> Callable[[dict[str, Any]], Any]:
    """The function ``entry`` names; :class:`InvalidArgument` says what is missing. With
    ``code_dir`` (the task's unpacked archive), its module must come from there: a module of that
    name imported already (the standard library's, the platform's own, an installed package's)
    is not the archive's code."""
    if not ENTRY.fullmatch(entry):
        raise InvalidArgument(f"entry {entry!r} must look like package.module:function")
    module_name, _, function_name = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise InvalidArgument(
                f"entry {entry!r}: module {module_name!r} is not in the task's code "
                f"(missing {exc.name!r}; is the archive's root the project folder?)"
            ) from None
        raise
    if code_dir is not None:
        where = Path(getattr(module, "__file__", None) or "").resolve()
        if not where.is_relative_to(Path(code_dir).resolve()):
            raise InvalidArgument(
                f"entry {entry!r}: module {module_name!r} is not the one in the task's code "
                f"archive (it is {getattr(module, '__file__', None) or 'built in'}): rename "
                "your module"
            )
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvalidArgument(f"entry {entry!r}: {module_name} has no function {function_name!r}")
    return function


def unpack_code(digest: str, storage: Storage, project: str = DEFAULT_PROJECT) -> Path:
    """The archive of ``project`` unpacked on this node (once per node: the driver's check and
    every worker on the node share it), read from the platform's storage as datasets are."""
    target = Path(tempfile.gettempdir()) / "aip-code" / digest
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
        CodeArchives(storage, project).extract(digest, staging)
        try:
            staging.rename(target)
        except OSError:  # another worker on this node finished first: same digest, same files
            shutil.rmtree(staging, ignore_errors=True)
    return target


def user_code_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's per-worker loop: call the user's function with its config, in its context
    (its code archive unpacked, on ``sys.path`` and the working directory, as Ray's own
    ``working_dir`` would be)."""
    global _current
    from aiplatform.storage import storage_from_settings

    code_dir = unpack_code(config["code"], storage_from_settings(Settings()), config["code_project"])
    sys.path.insert(0, str(code_dir))
    os.chdir(code_dir)
    train_context = ray.train.get_context()
    context = RunContext(
        **{**config["context"], "rank": train_context.get_world_rank(), "world_size": train_context.get_world_size()}
    )
    function = load_entry(config["entry"], code_dir)
    _current = context
    try:
        function(dict(config["config"]))
    finally:
        _current = None
    return {"published": context.published, "reports": context.reports, "rank": context.rank}


# -- on the driver ----------------------------------------------------------------------------
@dataclass
class UserCodeOutcome:
    """What a finished run of user code hands back to its task."""

    dataset: DatasetVersion
    code_digest: str
    published: list[dict[str, Any]]
    final_metrics: dict[str, Any]
    run_name: str
    checkpoint: str | None
    """The last checkpoint reported (a path in the storage's filesystem), if any."""
    used_gpu: bool
    timings: dict[str, float]


class UserCodeFailed(AIPError):
    """The user's function raised: the reason is its exception in one line (the traceback is in
    the job's log)."""

    code = "user_code_failed"


def user_dataset(params: UserCodeParams, datasets: DatasetManager) -> DatasetVersion:
    """The built version a run of users' code reads: the one it names, or the one its source builds."""
    if params.built_version:
        return datasets.get_ref(params.dataset)
    return datasets.build(ImageDatasetSpec(source=params.dataset, max_rows=params.max_rows, seed=params.seed))


@dataclass(frozen=True)
class UserSplits:
    """A run's dataset with its splits as the workers read them (cached in the object store, or
    streamed): a sweep reads them once, in its driver, for all its trials, whose searched values
    only ever change the function's ``config``."""

    source: tuple[str, int | None, int]
    dataset: DatasetVersion
    splits: dict[str, Any]
    cached: bool

    @staticmethod
    def source_of(params: UserCodeParams) -> tuple[str, int | None, int]:
        return params.dataset, params.max_rows, params.seed

    @classmethod
    def read(
        cls, params: UserCodeParams, datasets: DatasetManager, dataset: DatasetVersion | None = None
    ) -> UserSplits:
        dataset = dataset or user_dataset(params, datasets)
        splits, cached = datasets.training_splits(dataset, tuple(split for split in SPLITS if dataset.rows(split)))
        return cls(cls.source_of(params), dataset, splits, cached)


def run_user_code(
    params: UserCodeParams,
    *,
    settings: Settings,
    storage: Storage,
    datasets: DatasetManager,
    run_name: str,
    task_id: str | None,
    model_name: str,
    callbacks: list[Any] | None = None,
    candidate_key: str | None = None,
    shared: UserSplits | None = None,
) -> UserCodeOutcome:
    """Run the task's function on Ray Train and say what it published. ``shared``: its dataset's
    splits already read (a sweep reads them once for all its trials)."""
    timings: dict[str, float] = {}
    use_gpu = resolve_gpu(params.gpu, params.workers)
    started = time.perf_counter()
    if shared is not None and shared.source != UserSplits.source_of(params):
        shared = None
    dataset = shared.dataset if shared is not None else user_dataset(params, datasets)
    timings["dataset_seconds"] = time.perf_counter() - started
    code_dir = unpack_code(params.code, storage, datasets.project)  # the task's project's code
    _check_entry_here(params.entry, code_dir)  # a missing module fails before any worker starts
    context = RunContext(
        task_id=task_id,
        run_name=run_name,
        dataset=dataset.ref,
        kind=dataset.kind,
        labels=dataset.labels,
        inputs=kind_class(dataset.kind).worker_inputs(dataset.manifest),
        code_digest=params.code,
        entry=params.entry,
        model_name=model_name,
        candidate_key=candidate_key,
    )
    # Workers read the archive from storage themselves (Ray takes local folders only for a job).
    worker_env = {"env_vars": {**settings.to_env(), "AIP_TASK_ID": task_id or ""}}
    scaling, run = ray_train_configs(
        settings,
        storage,
        run_name=run_name,
        workers=params.workers,
        use_gpu=use_gpu,
        callbacks=callbacks,
        max_failures=params.max_failures,
        worker_runtime_env=worker_env,
    )
    # The splits as the templates' engine reads them: cached in the object store, or streamed.
    data = shared or UserSplits.read(params, datasets, dataset)
    trainer = TorchTrainer(
        user_code_loop,
        train_loop_config={
            "entry": params.entry,
            "code": params.code,
            "code_project": datasets.project,
            "config": params.config,
            "context": asdict(context),
        },
        scaling_config=scaling,
        run_config=run,
        datasets=data.splits,
        dataset_config=ingest_config(data.cached),
    )
    fit_started = time.perf_counter()
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        print(f"The training function failed; Ray Train reported:\n{exc}", file=sys.stderr, flush=True)
        raise UserCodeFailed(user_error_line(exc)) from exc
    timings["fit_seconds"] = time.perf_counter() - fit_started
    if result.error is not None:
        raise UserCodeFailed(user_error_line(result.error)) from result.error
    returned = result.return_value or {}
    if not returned.get("reports"):
        raise InvalidArgument(
            f"{params.entry} returned without reporting: call aiplatform.sdk.report(metrics) "
            "once per epoch (the task's curves and resumption come from it)"
        )
    if not returned.get("published"):
        raise InvalidArgument(
            f"{params.entry} returned without publishing a model: call "
            "aiplatform.sdk.publish(model, ...) at the end (rank 0 publishes)"
        )
    return UserCodeOutcome(
        dataset=dataset,
        code_digest=params.code,
        published=list(returned["published"]),
        final_metrics=dict(result.metrics or {}),
        run_name=run_name,
        used_gpu=use_gpu,
        timings=timings,
        checkpoint=str(result.checkpoint.path) if result.checkpoint is not None else None,
    )


def _check_entry_here(entry: str, code_dir: Path) -> None:
    """Import the entry in the driver, from the archive."""
    search = str(code_dir)
    sys.path.insert(0, search)
    try:
        load_entry(entry, code_dir)
    except AIPError:
        raise
    except Exception as exc:  # the user's module failed at import: its own error, named
        raise UserCodeFailed(f"importing {entry} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(search)


def user_error_line(error: BaseException) -> str:
    """The user's exception in one line (``ValueError: ... (train.py:12)``), found inside Ray
    Train's wrapping; the whole traceback is in the job's log."""
    failures = getattr(error, "worker_failures", None) or {}
    inner: BaseException = next(iter(failures.values()), error) if failures else error
    cause = getattr(inner, "cause", None)
    if isinstance(cause, BaseException):
        inner = cause
    text = str(inner).strip().splitlines()
    last = next(
        (line for line in reversed(text) if re.match(r"[\w.]+(Error|Exception|Argument|Failed)\b|[\w.]+: ", line)), None
    )
    summary = last or (f"{type(inner).__name__}: {text[0]}" if text else type(inner).__name__)
    # Ray Train keeps the user's exception without its traceback: the frames are in its message.
    where = _last_user_frame(inner) or _last_user_frame(error)
    return f"the training function failed: {summary[:400]}" + (f" ({where})" if where else "")


def _last_user_frame(error: BaseException) -> str | None:
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, str(tb.tb_lineno)))
        tb = tb.tb_next
    frames += re.findall(r'File "([^"]+)", line (\d+)', str(error))  # a worker's, innermost last
    mine = [(f, n) for f, n in frames if "site-packages" not in f and "/aiplatform/" not in f and not f.startswith("<")]
    if not mine:
        return None
    filename, line = mine[-1]
    return f"{Path(filename).name}:{line}"
