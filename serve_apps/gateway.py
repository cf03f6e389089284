"""The gateway: FastAPI ingress for inference (v1 JSON/upload, v2), the REST API and the web UI."""


import asyncio
import hashlib
import logging
import time
import uuid
from typing import Any, Callable, Optional, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from aiplatform.analysis.features import image_features, text_features
from aiplatform.api import Platform, include_api, set_platform
from aiplatform.api.errors import RETRY_AFTER_S, error_response
from aiplatform.errors import InvalidArgument, TooLarge, Unavailable
from aiplatform.monitoring.serving import UNROUTED, count_failure, count_success
from aiplatform.registry import ModelVersion
from aiplatform.results import PredictionRecord, ResultWriter, input_key
from aiplatform.serving.batcher import AdaptiveBatcher
from aiplatform.serving.deployer import warm_on_serve
from aiplatform.serving.documents import (
    check_text,
    check_upload_name,
    combine_chunks,
    document_chunks,
    document_tokens,
    text_from_bytes,
)
from aiplatform.serving.inputs import image_from_bytes, image_from_json
from aiplatform.serving.limits import (
    MAX_UPLOAD_BYTES,
    OFFLOAD_BYTES,
    RequestLimits,
    check_request_id,
    parse_json,
)
from aiplatform.serving.router import Router
from aiplatform.serving.v2 import (
    images_from_infer_request,
    infer_response,
    model_metadata,
    texts_from_infer_request,
)
from aiplatform.settings import Settings
from aiplatform.tasks.scheduler import scheduler_handle
from aiplatform.text import TextTokenizer, text_tokenizer
from aiplatform.tokens import with_api_token
from serve_apps.loopback import bind_replica_grpc_to_loopback

logger = logging.getLogger(__name__)
T = TypeVar("T")
app = FastAPI(title="aiplatform", description="Training tasks, models, datasets, inference and results.")
REPLICA_RETRIES = 3
PREDICTION_FIELDS = ("label", "probability", "probabilities")


include_api(app)


@app.exception_handler(BackPressureError)
async def overloaded(request: Request, exc: BackPressureError) -> JSONResponse:
    """The model servers' queues are full: answer at once and tell the client when to retry."""
    return error_response(
        request, Unavailable(f"Model servers are overloaded ({exc}); retry in {RETRY_AFTER_S} s")
    )


async def _uploaded_file(request: Request) -> Optional[tuple[Optional[str], bytes]]:
    """(file name, bytes) of a multipart upload's ``file`` field; None for other bodies."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return None
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidArgument("multipart upload needs a 'file' field")
    return upload.filename, await upload.read()


async def off_loop_if_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args)`` in a worker thread when its input is large (parsing or decoding it
    would hold the event loop, and with it every other request, health checks included);
    small inputs are cheaper done in place."""
    if size > OFFLOAD_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


@serve.deployment(max_ongoing_requests=256, max_queued_requests=256,
                  backpressure_config={"status_code": 503, "retry_after_s": RETRY_AFTER_S},
                  ray_actor_options={"num_cpus": 0.25})
@serve.ingress(app)
class Gateway:
    """Parses and validates inputs, routes to a model version, records every prediction."""

    def __init__(self, model_server: DeploymentHandle, settings: Settings) -> None:
        bind_replica_grpc_to_loopback()
        settings = with_api_token(settings, create=False)  # a token kept in the state folder counts
        self.model_server = model_server
        scheduler = scheduler_handle(settings)
        # The REST API's routes (aiplatform.api) share these clients through the process's Platform.
        platform = Platform.connect(settings, warm=warm_on_serve(settings.serve_app_name),
                                    wake_scheduler=lambda: scheduler.wake.remote())
        set_platform(platform)
        self.registry = platform.registry
        self.router = Router(self.registry)
        self.results = platform.results
        self.storage = platform.storage
        self.limits = RequestLimits.from_settings(settings)
        self.writer = ResultWriter(self.results.handle,
                                   input_storage=self.storage if settings.serve_store_inputs else None)
        self.batcher: AdaptiveBatcher[np.ndarray, dict[str, Any]] = AdaptiveBatcher(
            self._call_model_server, settings.serve_max_batch_size, settings.serve_batches_in_flight,
            name=f"gateway-{serve.get_replica_context().replica_tag}",
        )
        self._configs: dict[str, dict[str, Any]] = {}
        self._tokenizers: dict[str, TextTokenizer] = {}

    async def _call_model_server(self, model_id: str, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """One handle call for a batch of requests to the same model (see AdaptiveBatcher).

        Predictions have no side effects, so a batch whose replica died is sent again: a replica
        lost under load costs latency, not failed requests."""
        handle = self.model_server.options(multiplexed_model_id=model_id)
        batch = np.stack(images)
        for attempt in range(REPLICA_RETRIES + 1):
            try:
                return await handle.predict.remote(model_id, batch)
            except (RayActorError, ActorUnavailableError):
                if attempt == REPLICA_RETRIES:
                    raise Unavailable(f"No model server replica could answer for {model_id}") from None
                logger.warning("model server replica lost; resending a batch of %d", len(images))
        raise AssertionError("unreachable")

    async def _route(
        self, name: str, version: Optional[int], alias: Optional[str] = None
    ) -> tuple[ModelVersion, str, dict[str, Any]]:
        """The version a request goes to, its model id and its ``model.json``."""
        target = self.router.resolve(name, version=version, alias=alias)
        model_id = f"{target.name}:{target.version}"
        return target, model_id, await self._config(model_id)

    def _record(self, request_id: str, target: ModelVersion, digest: str, answer: dict[str, Any],
                latency_ms: float, features: dict[str, float], raw_input: Optional[bytes] = None,
                client_id: Optional[str] = None) -> dict[str, Any]:
        """Hand a prediction to the result writer (off the request path); returns its output.
        ``features`` summarise the input for drift analysis; ``raw_input`` is kept in storage
        when the writer has one."""
        output = {field: answer[field] for field in PREDICTION_FIELDS}
        count_success(target.name, target.version, latency_ms / 1000, str(output["label"]))
        self.writer.record(PredictionRecord(
            id=request_id, model=target.name, version=target.version,
            input_digest=digest, output=output, latency_ms=latency_ms,
            input_uri=input_key(digest) if self.writer.input_storage is not None else None,
            features=features, client_id=client_id,
        ), raw_input)
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
    ) -> JSONResponse:
        started = time.perf_counter()
        try:
            target, model_id, config = await self._route(name, version, alias)
        except Exception as exc:
            count_failure(UNROUTED, None, exc)  # not a label from the URL: unknown names are unbounded
            raise
        try:
            if config["input"]["type"] == "text":
                raw, text = await self._read_text(request)
                answer, features = await self._classify_text(model_id, config, text, self.limits.max_chunks)
            else:
                raw, image = await self._read_input(request, config)
                answer = await self.batcher.submit(model_id, image)
                features = image_features(image)
        except Exception as exc:
            count_failure(name, target.version, exc)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = uuid.uuid4().hex
        output = self._record(request_id, target, hashlib.sha256(raw).hexdigest(), answer, latency_ms, features, raw)
        # A plain JSONResponse: FastAPI's response validation would cost more than the model.
        extra = {"chunks": answer["chunks"]} if "chunks" in answer else {}
        return JSONResponse({"request_id": request_id, "model": target.name, "version": target.version,
                             **output, "latency_ms": round(latency_ms, 3), "batch_size": answer["batch_size"],
                             **extra})

    async def _classify_text(self, model_id: str, config: dict[str, Any], text: str,
                             max_chunks: int) -> tuple[dict[str, Any], dict[str, float]]:
        """A text or document: its chunks go through the batcher together, then are combined.
        Also its drift features, from the same split: a long document is tokenized once (in a
        worker thread when it is long), and no further than ``max_chunks`` windows."""
        tokenizer = self._tokenizer(model_id, config)

        def prepare() -> tuple[list[tuple[str, Any]], dict[str, float]]:
            tokens = document_tokens(tokenizer, text, max_chunks)
            return document_chunks(tokenizer, tokens), text_features(text, tokenizer, tokens)

        chunks, features = await off_loop_if_large(len(text), prepare)
        answers = await asyncio.gather(*(self.batcher.submit(model_id, ids) for _, ids in chunks))
        return combine_chunks(chunks, list(answers), config["labels"]), features

    def _tokenizer(self, model_id: str, config: dict[str, Any]) -> TextTokenizer:
        if model_id not in self._tokenizers:
            self._tokenizers[model_id] = text_tokenizer(config["preprocessing"]["tokenizer"])
        return self._tokenizers[model_id]

    async def _read_text(self, request: Request) -> tuple[bytes, str]:
        """Pasted text (JSON ``{"text": ...}``) or an uploaded UTF-8 ``.txt`` / ``.md`` file."""
        upload = await _uploaded_file(request)
        if upload is not None:
            filename, data = upload
            check_upload_name(filename)
            return data, text_from_bytes(data, f"Uploaded file {filename!r}", self.limits)
        body = await request.body()
        payload = await off_loop_if_large(len(body), parse_json, body)
        if not isinstance(payload, dict) or "text" not in payload:
            raise InvalidArgument("This is a text model: send JSON {\"text\": \"...\"} or upload a .txt/.md file")
        return body, check_text(payload["text"], "'text'", self.limits)

    async def _read_input(self, request: Request, config: dict[str, Any]) -> tuple[bytes, Any]:
        declared = request.headers.get("content-length") or "0"
        if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES * 2:
            raise TooLarge(f"Request body is {declared} bytes; the limit is {MAX_UPLOAD_BYTES}")
        pixels = self.limits.max_image_pixels
        upload = await _uploaded_file(request)
        if upload is not None:
            filename, data = upload
            return data, await off_loop_if_large(len(data), image_from_bytes, data, config,
                                                 f"Uploaded file {filename!r}", pixels)
        body = await request.body()
        return body, await off_loop_if_large(len(body), lambda: image_from_json(parse_json(body), config, pixels))

    # -- Open Inference Protocol (KServe v2) ----------------------------------------------------
    @app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        try:
            self.registry.list_models()
        except Exception:  # noqa: BLE001 - any failure means not ready
            # The probe is public: why it failed goes to the log, not to whoever asks.
            logger.warning("readiness check failed", exc_info=True)
            return JSONResponse(status_code=503, content={"ready": False})
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
        target: Optional[ModelVersion] = None
        try:
            target, model_id, config = await self._route(name, version)
            raw = await request.body()
            body = await off_loop_if_large(len(raw), parse_json, raw)
            client_id = check_request_id(body.get("id") if isinstance(body, dict) else None)
            if config["input"]["type"] == "text":
                texts = [check_text(text, "text input", self.limits)
                         for text in texts_from_infer_request(body, self.limits)]
                # One request's documents share the chunk limit: 256 texts x 256 chunks would not.
                share = max(1, self.limits.max_chunks // len(texts))
                classified = await asyncio.gather(*(self._classify_text(model_id, config, text, share)
                                                    for text in texts))
                answers, features = [a for a, _ in classified], [f for _, f in classified]
            else:
                images, _ = await off_loop_if_large(len(raw), images_from_infer_request, body, config, self.limits)
                answers = await asyncio.gather(*(self.batcher.submit(model_id, image) for image in images))
                features = [image_features(image) for image in images]
        except Exception as exc:
            count_failure(target.name if target else UNROUTED, target.version if target else None, exc)
            raise
        # The server names every result; a client's id is kept beside it, never in its place.
        request_id = uuid.uuid4().hex
        latency_ms = (time.perf_counter() - started) * 1000
        digest = hashlib.sha256(raw).hexdigest()
        for index, answer in enumerate(answers):
            row_id = request_id if len(answers) == 1 else f"{request_id}-{index}"
            self._record(row_id, target, digest, answer, latency_ms, features[index], raw if index == 0 else None,
                         client_id)
        response = infer_response(target.name, target.version, client_id or request_id, config["labels"],
                                  list(answers))
        return {**response, "parameters": {"request_id": request_id}}
