"""The ``batch-inference`` task template: a batch job is a task of the queue (priorities, cancel,
logs, states and the task page as any task), run as ``python -m jobs.batch --task-id <id>``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from aiplatform.batch.params import BatchParams
from aiplatform.storage.projects import DEFAULT_PROJECT
from aiplatform.training.template import TaskTemplate

if TYPE_CHECKING:
    from aiplatform.storage import Storage

BATCH_INFERENCE = "batch-inference"
URI_SOURCE_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
"""How a ``uri`` input is named to the source policy, by its ending (an ``s3://`` folder: ``folder``)."""


def uri_source(uri: str) -> str:
    """A ``uri`` input as the dataset source the policy checks (``csv:https://...``, ``folder:s3://...``)."""
    path = uri.split("?", 1)[0].lower()
    for ending, kind in URI_SOURCE_KINDS.items():
        if path.endswith(ending):
            return f"{kind}:{uri}"
    if path.endswith(".zip"):
        return f"csv:{uri}"  # a file either way: the policy's rules for a file location apply
    return f"folder:{uri}"


class BatchInferenceTemplate(TaskTemplate):
    """Scores a dataset split, an uploaded file or a URI with a registered model version."""

    name: ClassVar[str] = BATCH_INFERENCE
    title: ClassVar[str] = "Batch inference"
    description: ClassVar[str] = (
        "Score a dataset split, an uploaded file (CSV, ZIP of images, JSON lines of texts) or an "
        "s3:// or https:// input with a registered model version on Ray Data; Parquet results, "
        "accuracy when the input has labels"
    )
    params_model: ClassVar[type[BatchParams]] = BatchParams
    job_module: ClassVar[str] = "jobs.batch"

    def dataset_source(self, params: BatchParams) -> str | None:
        """A ``uri`` input is a source an API caller names: the allow-list applies to it."""
        return uri_source(params.input.uri) if params.input.uri is not None else None

    def check_inputs(self, params: BatchParams, storage: Storage, project: str = DEFAULT_PROJECT) -> None:
        """The input exists in storage and has rows (the model and the input's fit with it are
        checked with the registry by ``aiplatform.batch.checks.check_batch``, which the batch API calls before creating the task)."""
        from aiplatform.batch.checks import check_stored_input

        check_stored_input(params, storage, project)

    def concurrent_runs(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One run of ``workers`` model actors, each reserving a worker's CPUs (and a GPU with
        ``gpu=on``): what the scheduler holds for the job."""
        return 1, {"workers": int(params.get("workers", 1)), "gpu": "on" if params.get("gpu") == "on" else "off"}

    def default_model_name(self, params: BatchParams) -> str:
        return params.model_name
