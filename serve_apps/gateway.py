"""The gateway: FastAPI ingress for inference (v1 JSON/upload, v2), the REST API and the web UI."""


import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from aiplatform.api import Platform, include_api, set_platform
from aiplatform.api.admission import Admission
from aiplatform.api.errors import RETRY_AFTER_S, error_response
from aiplatform.api.fast_routes import FastRoute, FastRoutes
from aiplatform.api.security import AccessPolicy
from aiplatform.errors import AIPError, TooLarge, Unavailable
from aiplatform.kinds import ManyInputs, ModelKind, kind_for
from aiplatform.kinds.limits import RequestLimits, off_loop_if_large
from aiplatform.monitoring.serving import UNROUTED, count_failure, count_success
from aiplatform.packaging.config import ModelConfig
from aiplatform.registry import ModelVersion
from aiplatform.results import PredictionRecord, ResultWriter, input_key
from aiplatform.results.store import new_result_id
from aiplatform.runtime import MAX_REQUEST_BYTES
from aiplatform.serving.batcher import AdaptiveBatcher
from aiplatform.serving.deployer import warm_on_serve
from aiplatform.serving.ingress import PublicListener
from aiplatform.serving.limits import check_request_id
from aiplatform.serving.oip_binary import RequestedOutputs, requested_outputs, shape_response
from aiplatform.serving.oip_grpc import predict_v2_pb2 as pb
from aiplatform.serving.oip_grpc.access import grpc_refusal
from aiplatform.serving.oip_grpc.messages import (
    grpc_status_name,
    infer_request_body,
    infer_response_message,
    model_metadata_message,
    version_number,
)
from aiplatform.serving.requests import read_infer_request, read_input
from aiplatform.serving.router import Router
from aiplatform.serving.v2 import OUTPUT_NAMES, infer_response, model_metadata, server_metadata
from aiplatform.settings import Settings
from aiplatform.tokens import with_api_token
from aiplatform.serving.loopback import keep_serve_on_loopback

logger = logging.getLogger(__name__)
app = FastAPI(title="aiplatform", description="Training tasks, models, datasets, inference and results.")
REPLICA_RETRIES = 3
READY_FOR_S = 1.0
"""How long a successful readiness check stands before the registry is asked again."""
PREDICTION_FIELDS = ("label", "probability", "probabilities")
FAST_ROUTES = (
    FastRoute("POST", "/v1/models/{name}/predict", "predict", query={"version": int, "alias": str}),
    FastRoute("POST", "/v2/models/{name}/infer", "v2_infer"),
    FastRoute("POST", "/v2/models/{name}/versions/{version:int}/infer", "v2_version_infer"),
)
"""The inference routes, answered ahead of FastAPI's router (aiplatform.api.fast_routes); the
gateway's constructor installs their endpoints."""


def fast_endpoints(scope: dict[str, Any]) -> Optional[dict[str, Any]]:
    return getattr(getattr(scope.get("app"), "state", None), "fast_endpoints", None)


app.add_middleware(FastRoutes, routes=FAST_ROUTES, endpoints_of=fast_endpoints)  # inside the guard and body limit
include_api(app)


@app.exception_handler(BackPressureError)
async def overloaded(request: Request, exc: BackPressureError) -> JSONResponse:
    """The model servers' queues are full: answer at once and tell the client when to retry."""
    return error_response(
        request, Unavailable(f"Model servers are overloaded ({exc}); retry in {RETRY_AFTER_S} s")
    )


@dataclass(frozen=True)
class ServedModel:
    """What the gateway keeps of one model version: its ``model.json`` and its kind."""

    config: ModelConfig
    kind: ModelKind

    @property
    def labels(self) -> list[str]:
        return self.config.labels


@serve.deployment(max_ongoing_requests=256, max_queued_requests=256,
                  backpressure_config={"status_code": 503, "retry_after_s": RETRY_AFTER_S},
                  ray_actor_options={"num_cpus": 0.25})
@serve.ingress(app)
class Gateway:
    """Parses and validates inputs, routes to a model version, records every prediction."""

    def __init__(self, model_server: DeploymentHandle, settings: Settings, listen_port: Optional[int] = None) -> None:
        """``listen_port``: the loopback port this replica also answers on itself (a local
        platform's URL: aiplatform.serving.ingress), shared by the node's gateway replicas."""
        keep_serve_on_loopback()
        settings = with_api_token(settings, create=False)  # a token kept in the state folder counts
        self.model_server = model_server
        # The REST API's routes (aiplatform.api) share these clients through the app's Platform.
        platform = Platform.connect(settings, warm=warm_on_serve(settings.serve_app_name))
        set_platform(app, platform)
        self.registry = platform.registry
        self.router = Router(self.registry)
        self.results = platform.results
        self.storage = platform.storage
        self.limits = RequestLimits.from_settings(settings)
        self.access = AccessPolicy.from_settings(settings)  # gRPC calls; HTTP has its middleware
        self.writer = ResultWriter(self.results.handle,
                                   input_storage=self.storage if settings.serve_store_inputs else None)
        self.batcher: AdaptiveBatcher[np.ndarray, dict[str, Any]] = AdaptiveBatcher(
            self._call_model_server, settings.serve_max_batch_size, settings.serve_batches_in_flight,
            name=f"gateway-{serve.get_replica_context().replica_tag}",
        )
        self._models: dict[str, ServedModel] = {}
        self._model_handles: dict[str, DeploymentHandle] = {}
        app.state.fast_endpoints = {"predict": self.predict, "v2_infer": self.v2_infer,
                                    "v2_version_infer": self.v2_version_infer}
        self._ready_until = 0.0
        self.listener = None if listen_port is None else self._listen(settings, listen_port)

    def _listen(self, settings: Settings, port: int) -> Optional[PublicListener]:
        limit = settings.serve_gateway_max_ongoing + settings.serve_gateway_max_queued  # Serve's own backpressure
        try:
            return PublicListener(Admission(app, limit, RETRY_AFTER_S, settings.serve_request_timeout_s), "127.0.0.1", port,
                                  ready=lambda: serve.get_replica_context().servable_object is not None)
        except OSError as exc:  # e.g. an older Serve's proxy on it: clients still reach that
            logger.warning("the gateway cannot listen on port %d (%s); Serve's ingress answers there", port, exc)
            return None

    async def __del__(self) -> None:
        if self.listener is not None:
            await self.listener.stop()

    async def _call_model_server(self, model_id: str, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """One handle call for a batch of requests to the same model (see AdaptiveBatcher).

        Predictions have no side effects, so a batch whose replica died is sent again: a replica
        lost under load costs latency, not failed requests."""
        handle = self._model_handles.get(model_id)
        if handle is None:  # one per model: options() builds a new handle each call
            handle = self._model_handles[model_id] = self.model_server.options(multiplexed_model_id=model_id)
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
    ) -> tuple[ModelVersion, str, ServedModel]:
        """The version a request goes to, its model id, and its config and kind."""
        target = self.router.resolve(name, version=version, alias=alias)
        model_id = f"{target.name}:{target.version}"
        return target, model_id, await self._model(model_id)

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

    async def _model(self, model_id: str) -> ServedModel:
        if model_id not in self._models:
            config = await self.model_server.options(multiplexed_model_id=model_id).model_config.remote(model_id)
            self._models[model_id] = ServedModel(config, kind_for(config))
        return self._models[model_id]

    def _submitter(self, model_id: str) -> Callable[[np.ndarray], Awaitable[dict[str, Any]]]:
        """Sends one model input of ``model_id`` through the batcher."""
        return lambda model_input: self.batcher.submit(model_id, model_input)

    @app.post("/v1/models/{name}/predict")
    async def predict(
        self, name: str, request: Request, version: Optional[int] = None, alias: Optional[str] = None
    ) -> JSONResponse:
        started = time.perf_counter()
        try:
            target, model_id, model = await self._route(name, version, alias)
        except Exception as exc:
            count_failure(UNROUTED, None, exc)  # not a label from the URL: unknown names are unbounded
            raise
        try:
            raw, item = await read_input(request, model.kind, self.limits)
            if isinstance(item, ManyInputs):
                return await self._predict_many(target, model_id, model, raw, item, started)
            answer, features = await model.kind.classify(item, self._submitter(model_id), model.labels,
                                                         self.limits.max_chunks)
        except Exception as exc:
            count_failure(name, target.version, exc)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = new_result_id()
        output = self._record(request_id, target, hashlib.sha256(raw).hexdigest(), answer, latency_ms, features, raw)
        # A plain JSONResponse: FastAPI's response validation would cost more than the model.
        extra = {"chunks": answer["chunks"]} if "chunks" in answer else {}
        return JSONResponse({"request_id": request_id, "model": target.name, "version": target.version,
                             **output, "latency_ms": round(latency_ms, 3), "batch_size": answer["batch_size"],
                             **extra})

    async def _predict_many(self, target: ModelVersion, model_id: str, model: ServedModel, raw: bytes,
                            items: ManyInputs, started: float) -> JSONResponse:
        """One request holding many inputs (a CSV of table rows): each through the batcher, each
        recorded as ``<request id>-<row>``, all answered together in the rows' order."""
        submit = self._submitter(model_id)
        classified = await asyncio.gather(*(model.kind.classify(item, submit, model.labels, 1) for item in items))
        latency_ms = (time.perf_counter() - started) * 1000
        request_id, digest = new_result_id(), hashlib.sha256(raw).hexdigest()
        outputs = [self._record(f"{request_id}-{index}", target, digest, answer, latency_ms, features,
                                raw if index == 0 else None)
                   for index, (answer, features) in enumerate(classified)]
        return JSONResponse({"request_id": request_id, "model": target.name, "version": target.version,
                             "rows": len(outputs), "predictions": outputs, "latency_ms": round(latency_ms, 3)})

    # -- Open Inference Protocol (KServe v2) ----------------------------------------------------
    @app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        # A load balancer probes often: a success holds for READY_FOR_S, and the registry is asked
        # off the event loop (a blocking actor call here stalled every request behind the probe).
        if time.monotonic() >= self._ready_until:
            try:
                await asyncio.to_thread(self.registry.list_models)
            except Exception:  # noqa: BLE001 - any failure means not ready
                # The probe is public: why it failed goes to the log, not to whoever asks.
                logger.warning("readiness check failed", exc_info=True)
                return JSONResponse(status_code=503, content={"ready": False})
            self._ready_until = time.monotonic() + READY_FOR_S
        return JSONResponse(content={"ready": True})

    @app.get("/v2")
    async def v2_server(self) -> dict[str, Any]:
        return server_metadata()

    @app.get("/v2/models/{name}")
    async def v2_model(self, name: str) -> dict[str, Any]:
        return await self._v2_metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_model_version(self, name: str, version: int) -> dict[str, Any]:
        return await self._v2_metadata(name, version)

    async def _v2_metadata(self, name: str, version: Optional[int]) -> dict[str, Any]:
        _, _, model = await self._route(name, version)
        versions = [v.version for v in self.registry.list_versions(name)] if version is None else [version]
        return model_metadata(name, versions, model.kind, model.labels, model.config.architecture)

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
    async def v2_infer(self, name: str, request: Request) -> Response:
        return await self._v2_infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_version_infer(self, name: str, version: int, request: Request) -> Response:
        return await self._v2_infer(name, version, request)

    async def _v2_infer(self, name: str, version: Optional[int], request: Request) -> Response:
        """JSON or binary tensors in (the binary tensor data extension), outputs as requested."""
        response, wanted = await self._infer(name, version, lambda: read_infer_request(request))
        content, headers = shape_response(response, wanted)
        return Response(content, headers=headers)

    async def _infer(self, name: str, version: Optional[int],
                     read: Callable[[], Awaitable[tuple[bytes, Any]]]) -> tuple[dict[str, Any], RequestedOutputs]:
        """One infer request over either transport: ``read`` gives its raw bytes and its body as
        REST parses it. Returns the response body and the outputs the request asked for."""
        started = time.perf_counter()
        target: Optional[ModelVersion] = None
        try:
            target, model_id, model = await self._route(name, version)
            raw, body = await read()
            client_id = check_request_id(body.get("id") if isinstance(body, dict) else None)
            wanted = requested_outputs(body, OUTPUT_NAMES)
            items = await off_loop_if_large(len(raw), model.kind.from_v2, body, self.limits)
            # One request's inputs share the chunk limit: 256 documents x 256 chunks would not.
            share = max(1, self.limits.max_chunks // len(items))
            submit = self._submitter(model_id)
            classified = await asyncio.gather(*(model.kind.classify(item, submit, model.labels, share)
                                                for item in items))
            answers, features = [a for a, _ in classified], [f for _, f in classified]
        except Exception as exc:
            count_failure(target.name if target else UNROUTED, target.version if target else None, exc)
            raise
        # The server names every result; a client's id is kept beside it, never in its place.
        request_id = new_result_id()
        latency_ms = (time.perf_counter() - started) * 1000
        digest = hashlib.sha256(raw).hexdigest()
        for index, answer in enumerate(answers):
            row_id = request_id if len(answers) == 1 else f"{request_id}-{index}"
            self._record(row_id, target, digest, answer, latency_ms, features[index], raw if index == 0 else None,
                         client_id)
        response = infer_response(target.name, target.version, client_id or request_id, model.labels,
                                  list(answers))
        return {**response, "parameters": {"request_id": request_id}}, wanted

    # -- Open Inference Protocol over gRPC ------------------------------------------------------
    # Serve's gRPC proxy calls these by the RPC's name with the request message (SERVICER_FUNCTION
    # in serve_apps.app); errors become gRPC status codes with the same messages as over REST.
    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - the RPC's name
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        ready = await self.ready()
        return pb.ServerReadyResponse(ready=ready.status_code == 200)

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def answer() -> Any:
            metadata = server_metadata()
            return pb.ServerMetadataResponse(name=metadata["name"], version=metadata["version"],
                                             extensions=metadata["extensions"])
        return await self._grpc(grpc_context, pb.ServerMetadataResponse, answer)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def answer() -> Any:
            ready = await self._v2_ready(request.name, version_number(request.version))
            return pb.ModelReadyResponse(ready=ready["ready"])
        return await self._grpc(grpc_context, pb.ModelReadyResponse, answer)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def answer() -> Any:
            return model_metadata_message(await self._v2_metadata(request.name, version_number(request.version)))
        return await self._grpc(grpc_context, pb.ModelMetadataResponse, answer)

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        async def read() -> tuple[bytes, Any]:
            if request.ByteSize() > MAX_REQUEST_BYTES:  # the proxy's own limit may be set higher
                raise TooLarge(f"The request is {request.ByteSize()} bytes; the limit is {MAX_REQUEST_BYTES}")
            raw = request.SerializeToString()
            return raw, await off_loop_if_large(len(raw), infer_request_body, request)

        async def answer() -> Any:
            response, wanted = await self._infer(request.model_name, version_number(request.model_version), read)
            return infer_response_message(response, wanted.names)
        return await self._grpc(grpc_context, pb.ModelInferResponse, answer)

    async def _grpc(self, context: Any, empty: Callable[[], Any], answer: Callable[[], Awaitable[Any]]) -> Any:
        """``answer()`` for a caller the access policy lets in; a refusal or a platform error sets
        the call's status code and details and returns an empty message."""
        import grpc

        metadata = dict(context.invocation_metadata()) if context is not None else {}
        refusal = grpc_refusal(self.access.auth, self.access.token, metadata.get("authorization"))
        try:
            if refusal is not None:
                raise refusal
            return await answer()
        except AIPError as exc:
            if context is None:
                raise
            context.set_code(getattr(grpc.StatusCode, grpc_status_name(exc)))
            context.set_details(exc.message)
            return empty()
        except BackPressureError as exc:
            if context is None:
                raise
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(f"Model servers are overloaded ({exc}); retry in {RETRY_AFTER_S} s")
            return empty()
