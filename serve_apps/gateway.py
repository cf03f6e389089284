"""The gateway: FastAPI ingress for inference (v1 JSON/upload) and the result store queries."""


import asyncio
import hashlib
import json
import logging
import time
import uuid
from typing import Any, Optional

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from aiplatform.errors import AIPError, InvalidArgument, Unavailable, http_status
from aiplatform.registry import ModelVersion, RegistryClient
from aiplatform.results import PredictionRecord, ResultsClient, ResultWriter
from aiplatform.serving.inputs import MAX_UPLOAD_BYTES, image_from_bytes, image_from_json
from aiplatform.serving.router import Router
from aiplatform.serving.v2 import images_from_infer_request, infer_response, model_metadata
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
app = FastAPI(title="aiplatform gateway")
RETRY_AFTER_S = 1
PREDICTION_FIELDS = ("label", "probability", "probabilities")


@app.exception_handler(AIPError)
async def platform_error(request: Request, exc: AIPError) -> JSONResponse:
    status = http_status(exc)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    if request.url.path.startswith("/v2/"):  # the Open Inference Protocol's error body
        return JSONResponse(status_code=status, content={"error": exc.message}, headers=headers)
    return JSONResponse(status_code=status, content=exc.to_dict(), headers=headers)


@app.exception_handler(BackPressureError)
async def overloaded(request: Request, exc: BackPressureError) -> JSONResponse:
    """The model servers' queues are full: answer at once and tell the client when to retry."""
    return await platform_error(
        request, Unavailable(f"Model servers are overloaded ({exc}); retry in {RETRY_AFTER_S} s")
    )


def _parse_json(raw: bytes) -> Any:
    if not raw:
        raise InvalidArgument("Request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"Request body is not valid JSON: {exc}") from exc


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

    async def _route(
        self, name: str, version: Optional[int], alias: Optional[str] = None
    ) -> tuple[ModelVersion, str, dict[str, Any]]:
        """The version a request goes to, its model id and its ``model.json``."""
        target = self.router.resolve(name, version=version, alias=alias)
        model_id = f"{target.name}:{target.version}"
        return target, model_id, await self._config(model_id)

    def _record(self, request_id: str, target: ModelVersion, input_digest: str,
                answer: dict[str, Any], latency_ms: float) -> dict[str, Any]:
        """Hand a prediction to the result writer (off the request path); returns its output."""
        output = {field: answer[field] for field in PREDICTION_FIELDS}
        self.writer.record(PredictionRecord(
            id=request_id, model=target.name, version=target.version,
            input_digest=input_digest, output=output, latency_ms=latency_ms,
        ))
        return output

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
        target, model_id, config = await self._route(name, version, alias)
        raw, image = await self._read_input(request, config)
        answer = await self.model_server.options(multiplexed_model_id=model_id).predict.remote(model_id, image)
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = uuid.uuid4().hex
        output = self._record(request_id, target, hashlib.sha256(raw).hexdigest(), answer, latency_ms)
        return {"request_id": request_id, "model": target.name, "version": target.version,
                **output, "latency_ms": round(latency_ms, 3), "batch_size": answer["batch_size"]}

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
        return body, image_from_json(_parse_json(body), config)

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

    # -- Open Inference Protocol (KServe v2) ----------------------------------------------------
    @app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        try:
            self.registry.list_models()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse(status_code=503, content={"ready": False, "error": str(exc)})
        return JSONResponse(content={"ready": True})

    @app.get("/v2/models/{name}")
    async def v2_model(self, name: str) -> dict[str, Any]:
        return await self._v2_metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_model_version(self, name: str, version: int) -> dict[str, Any]:
        return await self._v2_metadata(name, version)

    async def _v2_metadata(self, name: str, version: Optional[int]) -> dict[str, Any]:
        _, _, config = await self._route(name, version)
        versions = [v.version for v in self.registry.list_versions(name)] if version is None else [version]
        return model_metadata(name, versions, config)

    @app.get("/v2/models/{name}/ready")
    async def v2_ready(self, name: str) -> dict[str, Any]:
        return await self._v2_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_version_ready(self, name: str, version: int) -> dict[str, Any]:
        return await self._v2_ready(name, version)

    async def _v2_ready(self, name: str, version: Optional[int]) -> dict[str, Any]:
        target, _, _ = await self._route(name, version)  # loads and verifies the package
        return {"name": name, "version": str(target.version), "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(self, name: str, request: Request) -> dict[str, Any]:
        return await self._v2_infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_version_infer(self, name: str, version: int, request: Request) -> dict[str, Any]:
        return await self._v2_infer(name, version, request)

    async def _v2_infer(self, name: str, version: Optional[int], request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        target, model_id, config = await self._route(name, version)
        raw = await request.body()
        body = _parse_json(raw)
        images, _ = images_from_infer_request(body, config)
        handle = self.model_server.options(multiplexed_model_id=model_id)
        answers = await asyncio.gather(*(handle.predict.remote(model_id, image) for image in images))
        request_id = str(body.get("id") or uuid.uuid4().hex)
        latency_ms = (time.perf_counter() - started) * 1000
        digest = hashlib.sha256(raw).hexdigest()
        for index, answer in enumerate(answers):
            row_id = request_id if len(answers) == 1 else f"{request_id}-{index}"
            self._record(row_id, target, digest, answer, latency_ms)
        return infer_response(target.name, target.version, request_id, config["labels"], list(answers))
