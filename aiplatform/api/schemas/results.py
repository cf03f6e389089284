"""Bodies of ``/v1/results``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

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


class ResultList(Body):
    results: list[ResultPublic]
    next_cursor: str | None
