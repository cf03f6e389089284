"""Bodies of ``/v1/results``."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from aiplatform.api.schemas.base import Body, Record


class ResultPublic(Record):
    """One prediction as the result store keeps it (``PredictionRecord.to_dict()``)."""

    id: str
    model: str
    version: int
    input_digest: str
    output: dict[str, Any]
    latency_ms: float
    created_at: float
    input_uri: str | None
    features: dict[str, Any] = Field(description="summary features of the input (what drift compares)")
    client_id: str | None
    preview: dict[str, Any] | None = Field(
        None, description="its input, small (only when asked for): its kind and an image data URL or a text"
    )
    feedback: dict[str, Any] | None = Field(
        None, description="its true label when one was given: label, labeled_at, labeled_by"
    )


class ResultList(Body):
    results: list[ResultPublic]
    next_cursor: str | None


class FeedbackCreate(Body):
    """The true label of one past prediction: one of its model version's classes."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(..., min_length=1, max_length=200)


class FeedbackChange(Body):
    """What labeling one result did."""

    id: str
    model: str
    version: int
    predicted: str
    label: str
    previous_label: str | None = Field(description="the label it replaced (null: the first)")
    correct: bool = Field(description="whether the prediction was right")
    changed: bool = Field(description="false when it had this label already (nothing recorded)")


class FeedbackBatchResult(Body):
    labeled: int
    changed: int
    results: list[FeedbackChange]


class FeedbackEntry(Body):
    result_id: str
    label: str
    previous_label: str | None
    labeled_by: str
    labeled_at: float


class FeedbackHistory(Body):
    """A result's current label (null: none) and every label it was given, oldest first."""

    id: str
    label: str | None
    history: list[FeedbackEntry]


class VersionQualityPublic(Body):
    model: str
    version: int
    labeled: int = Field(description="labeled predictions made in the window")
    correct: int
    accuracy: float
    macro_f1: float


class QualityList(Body):
    """Accuracy and macro-F1 of the labeled predictions made in [since, until), per version."""

    since: float
    until: float
    versions: list[VersionQualityPublic]


class LabeledPredictionPublic(Body):
    result_id: str
    model: str
    version: int
    created_at: float
    predicted: str
    label: str
    input_uri: str | None
    labeled_at: float
    labeled_by: str


class LabeledList(Body):
    """A page of labeled predictions, oldest first; ``next_cursor`` goes in ``after``."""

    predictions: list[LabeledPredictionPublic]
    next_cursor: str | None
