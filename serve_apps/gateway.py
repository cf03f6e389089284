"""The gateway: FastAPI ingress for inference (v1 JSON/upload) and the result store queries."""


import hashlib
import json
import logging
import time
import uuid
from typing import Any, Optional

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from aiplatform.errors import AIPError, InvalidArgument, http_status
from aiplatform.registry import RegistryClient
from aiplatform.results import PredictionRecord, ResultsClient, ResultWriter
from aiplatform.serving.inputs import MAX_UPLOAD_BYTES, image_from_bytes, image_from_json
from aiplatform.serving.router import Router
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
app = FastAPI(title="aiplatform gateway")


@app.exception_handler(AIPError)
async def _platform_error(request: Request, exc: AIPError) -> JSONResponse:
    return JSONResponse(status_code=http_status(exc), content=exc.to_dict())


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(app)
class Gateway:
    """Parses and validates inputs, routes to a model version, records every prediction."""

    def __init__(self, model_server: DeploymentHandle, settings: Settings) -> None:
        self.model_server = model_server
        self.registry = RegistryClient.connect(settings)
        self.router = Router(self.registry)
        self.results = ResultsClient.connect(settings)
        self.writer = ResultWriter(self.results.handle)
        self._configs: dict[str, dict[str, Any]] = {}

    async def _config(self, model_id: str) -> dict[str, Any]:
        if model_id not in self._configs:
            self._configs[model_id] = await self.model_server.options(
                multiplexed_model_id=model_id
            ).model_config.remote(model_id)
        return self._configs[model_id]

    @app.post("/v1/models/{name}/predict")
    async def predict(
        self, name: str, request: Request, version: Optional[int] = None, alias: Optional[str] = None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        target = self.router.resolve(name, version=version, alias=alias)
        model_id = f"{target.name}:{target.version}"
        config = await self._config(model_id)
        raw, image = await self._read_input(request, config)
        answer = await self.model_server.options(multiplexed_model_id=model_id).predict.remote(model_id, image)
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = uuid.uuid4().hex
        output = {"label": answer["label"], "probability": answer["probability"],
                  "probabilities": answer["probabilities"]}
        self.writer.record(PredictionRecord(
            id=request_id, model=target.name, version=target.version,
            input_digest=hashlib.sha256(raw).hexdigest(), output=output, latency_ms=latency_ms,
        ))
        return {"request_id": request_id, "model": target.name, "version": target.version,
                **output, "latency_ms": round(latency_ms, 3)}

    async def _read_input(self, request: Request, config: dict[str, Any]) -> tuple[bytes, Any]:
        content_type = request.headers.get("content-type", "")
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_UPLOAD_BYTES * 2:
            raise InvalidArgument(f"Request body is {declared} bytes; the limit is {MAX_UPLOAD_BYTES}")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise InvalidArgument("multipart upload needs a 'file' field")
            data = await upload.read()
            return data, image_from_bytes(data, config, f"Uploaded file {upload.filename!r}")
        body = await request.body()
        if not body:
            raise InvalidArgument("Request body is empty")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise InvalidArgument(f"Request body is not valid JSON: {exc}") from exc
        return body, image_from_json(payload, config)

    @app.get("/v1/results/{result_id}")
    async def get_result(self, result_id: str) -> dict[str, Any]:
        return self.results.get(result_id).to_dict()

    @app.get("/v1/results")
    async def list_results(
        self, model: Optional[str] = None, version: Optional[int] = None,
        since: Optional[float] = None, limit: int = Query(100),
    ) -> dict[str, Any]:
        records = self.results.query(model=model, version=version, since=since, limit=limit)
        return {"results": [r.to_dict() for r in records]}

    @app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}
