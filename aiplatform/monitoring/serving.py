"""What the gateway records per prediction: outcome, latency and predicted class."""

from __future__ import annotations

from typing import Optional

from aiplatform.errors import AIPError, http_status
from aiplatform.monitoring.metrics import inc, observe

UNROUTED = "unrouted"
"""The model label of a request that never reached a model (unknown name or alias)."""


def count_success(model: str, version: int, latency_s: float, label: str) -> None:
    inc("aip_requests", model=model, version=version, outcome="ok")
    observe("aip_request_latency_seconds", latency_s, model=model, version=version)
    inc("aip_predicted_class", model=model, version=version, label=label)


def outcome_of(error: BaseException) -> str:
    """``rejected`` (503: a full queue, a model server away), ``client_error`` (other 4xx) or
    ``server_error`` (anything unexpected)."""
    if isinstance(error, AIPError):
        status = http_status(error)
        if status == 503:
            return "rejected"
        if 400 <= status < 500:
            return "client_error"
    return "server_error"


def count_failure(model: str, version: Optional[int], error: BaseException) -> None:
    outcome = outcome_of(error)
    inc("aip_requests", model=model, version="none" if version is None else version, outcome=outcome)
    if outcome == "rejected":
        inc("aip_rejected_requests", where="gateway")
