"""The result store: every prediction kept and queryable; writes batched off the request path."""

from aiplatform.results.actor import (
    RESULT_STORE_ACTOR_NAME,
    ResultActor,
    ResultClient,
    ResultWriter,
    input_key,
    result_store_handle,
)
from aiplatform.results.store import PredictionRecord, ResultStore

__all__ = [
    "RESULT_STORE_ACTOR_NAME",
    "PredictionRecord",
    "ResultActor",
    "ResultClient",
    "ResultStore",
    "ResultWriter",
    "input_key",
    "result_store_handle",
]
