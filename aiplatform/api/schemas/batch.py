"""Bodies of ``/v1/batch-inputs`` and ``/v1/batch-jobs``."""

from __future__ import annotations

from pydantic import Field

from aiplatform.api.schemas.base import Body, Record
from aiplatform.api.schemas.tasks import TaskPublic


class BatchInputPublic(Record):
    """An uploaded input (``BatchInput.to_dict()``): the ``upload`` a job's input names."""

    id: str
    format: str = Field(description="csv (table rows), zip (images) or jsonl (texts)")
    filename: str
    bytes: int
    rows: int
    columns: list[str] = Field(description="its rows' columns (a CSV's header; id, text, label; id, data, label)")
    has_labels: bool = Field(description="a label column with values: a job can be evaluated")


class BatchEvaluation(Record):
    """How the model did on the rows whose true label is one of its classes."""

    accuracy: float
    macro_f1: float
    rows: int = Field(description="rows evaluated: those with a true label the model knows")
    rows_with_unknown_labels: int
    labels: list[str]
    confusion_matrix: list[list[int]] = Field(description="rows are the true label, columns the predicted one")


class BatchSummary(Record):
    """What a finished job scored (``summary.json``): the model version, its rows and speed, and
    where the input had labels its evaluation."""

    model: str
    version: int
    labels: list[str] = Field(description="the order of each output row's probabilities")
    rows: int
    seconds: float
    rows_per_s: float | None = Field(description="rows scored by the last attempt per second (null: none)")
    evaluation: BatchEvaluation | None = None


class BatchJobPublic(TaskPublic):
    """A batch job: a task of template ``batch-inference`` and, once it has finished, its summary.
    ``progress.metrics`` holds ``rows_done``, ``rows_total`` and ``rows_per_s`` (``epoch`` of
    ``epochs`` counts the output's parts)."""

    summary: BatchSummary | None = Field(
        None, description="once the job has finished (null in a list of jobs: GET the job for it)"
    )


class BatchJobListed(BatchJobPublic):
    waiting: str | None = Field(description="why a queued job has not started (null otherwise)")


class BatchJobDetail(BatchJobListed):
    ray_dashboard_url: str | None


class BatchJobList(Body):
    jobs: list[BatchJobListed]
    next_before: str | None = Field(description="``before`` of the next page (null on the last)")


class BatchJobLogs(Body):
    job_id: str
    logs: str
    truncated: bool
