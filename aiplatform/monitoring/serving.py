"""What the gateway records per prediction: outcome, latency and predicted class (buffered: the
request path only updates memory, see ``MetricBuffer``)."""

from __future__ import annotations

from aiplatform.errors import AIPError, http_status
from aiplatform.monitoring.metrics import buffered

UNROUTED = "unrouted"
"""The model label of a request that never reached a model (unknown name or alias)."""


def count_success(model: str, version: int, latency_s: float, label: str) -> None:
    buffered.inc("aip_requests", model=model, version=version, outcome="ok")
    buffered.observe("aip_request_latency_seconds", latency_s, model=model, version=version)
    buffered.inc("aip_predicted_class", model=model, version=version, label=label)


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


def count_failure(model: str, version: int | None, error: BaseException) -> None:
    outcome = outcome_of(error)
    buffered.inc("aip_requests", model=model, version="none" if version is None else version, outcome=outcome)
    if outcome == "rejected":
        buffered.inc("aip_rejected_requests", where="gateway")
