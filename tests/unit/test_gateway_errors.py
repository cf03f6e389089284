from __future__ import annotations

import json

from ray.serve.exceptions import BackPressureError
from starlette.requests import Request

from aiplatform.api.errors import RETRY_AFTER_S, error_response
from aiplatform.errors import NotFound
from aiplatform.serving.dataplane import Overloaded


def _request(path: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""})


def test_overload_answers_503_with_retry_after() -> None:
    error = Overloaded.of(BackPressureError(num_queued_requests=256, max_queued_requests=256), RETRY_AFTER_S)
    response = error_response(_request("/v1/models/m/predict"), error)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert json.loads(response.body)["error"] == "unavailable"
    assert json.loads(error_response(_request("/v2/models/m/infer"), error).body) == {"error": error.message}


def test_v2_paths_get_v2_error_bodies() -> None:
    response = error_response(_request("/v2/models/x/infer"), NotFound("Model 'x' not found"))
    assert response.status_code == 404
    assert json.loads(response.body) == {"error": "Model 'x' not found"}
    v1 = error_response(_request("/v1/models/x/predict"), NotFound("Model 'x' not found"))
    assert json.loads(v1.body) == {"error": "not_found", "message": "Model 'x' not found"}
