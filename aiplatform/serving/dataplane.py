"""The inference core: one request, whatever protocol brought it, from model name to recorded answer.

KServe's ``DataPlane`` under its REST and gRPC servers is the model (kserve/protocol/dataplane.py):
the protocol adapters (``aiplatform.serving.rest.v1``, ``aiplatform.serving.rest.v2``,
``aiplatform.serving.oip_grpc.servicer``) only turn their requests into a call here and the result
back into their responses. Here, once: the router resolves the version (alias, canary split),
the model's config and kind are cached per version, the kind decodes and classifies the inputs,
the ``AdaptiveBatcher`` groups them into one model-server call per model (a batch whose replica
died is sent again), every answer is recorded and counted, and the model servers' back-pressure
becomes one error (:class:`Overloaded`).

The model servers are anything with ``predict`` and ``model_config`` (:class:`ModelServers`):
the gateway wraps its Serve handle in :class:`ServeModelServers`, a unit test passes a plain
object. This runs on the gateway's event loop and is on the hot path: no await or copy per request
that the work does not need.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

from aiplatform.errors import Unavailable
from aiplatform.kinds import ManyInputs, ModelKind, kind_for
from aiplatform.limits import RequestLimits, off_loop_if_large
from aiplatform.monitoring.serving import UNROUTED, count_failure, count_success
from aiplatform.packaging.config import ModelConfig
from aiplatform.registry import ModelVersion
from aiplatform.results import PredictionRecord, input_key
from aiplatform.results.store import new_result_id
from aiplatform.serving.batcher import AdaptiveBatcher
from aiplatform.serving.oip_binary import RequestedOutputs, requested_outputs
from aiplatform.serving.parsing import check_request_id, parse_json
from aiplatform.serving.pools import POOL_DEPLOYMENT, POOL_TTL_S, PoolRoutes
from aiplatform.serving.requests import V1Input
from aiplatform.serving.router import RegistryReader, Router
from aiplatform.serving.v2 import OUTPUT_NAMES, model_metadata

logger = logging.getLogger(__name__)
REPLICA_RETRIES = 3
"""How many times a batch whose model-server replica died is sent again."""
READY_FOR_S = 1.0
"""How long a successful readiness check stands before the registry is asked again."""
PREDICTION_FIELDS = ("label", "probability", "probabilities")
"""What of a model server's answer is recorded and returned."""


class ModelServers(Protocol):
    """What the core asks of the model servers (a Serve handle, wrapped; a fake in a unit test).
    Both return awaitables: a Serve handle's response is awaited as it is, with no coroutine
    around it."""

    def predict(self, model_id: str, batch: np.ndarray) -> Awaitable[list[dict[str, Any]]]: ...

    def model_config(self, model_id: str) -> Awaitable[ModelConfig]: ...


class Registry(RegistryReader, Protocol):
    """The registry calls of the core: the router's, a model's versions and a readiness probe."""

    def list_versions(self, name: str) -> list[ModelVersion]: ...

    def list_models(self) -> list[dict[str, Any]]: ...


class Recorder(Protocol):
    """Where predictions go (``aiplatform.results.ResultWriter``: buffered, off the request path)."""

    input_storage: Any

    def record(self, record: PredictionRecord, raw_input: bytes | None = None) -> None: ...


class ServeModelServers:
    """:class:`ModelServers` over the model-server deployments' handles: one handle per model id
    (``options()`` builds a new one on every call), multiplexed by that id. A model of a project
    with a serving-replica quota goes to its project's pool (``pools``: ``aiplatform.serving.pools``),
    the others to the shared deployment (``handle``)."""

    def __init__(
        self, handle: Any, pools: PoolRoutes | None = None, pool_handle: Callable[[str], Any] | None = None
    ) -> None:
        self.handle = handle
        self.pools = pools
        self.pool_handle = pool_handle or _pool_handle
        self._handles: dict[tuple[str | None, str], Any] = {}
        self._pools: dict[str, Any] = {}
        self._missing: dict[str, float] = {}

    def _for(self, model_id: str) -> Any:
        app = None if self.pools is None else self.pools.app_for(model_id.rpartition(":")[0])
        handle = self._handles.get((app, model_id))
        if handle is None:
            base = self.handle if app is None else self._pools.get(app) or self._pool(app)
            handle = self._handles[(app, model_id)] = base.options(multiplexed_model_id=model_id)
        return handle

    def _pool(self, app: str) -> Any:
        """The pool's handle, made once per pool (Serve checks that it exists: one controller
        call); a pool not there is refused for ``POOL_TTL_S`` before Serve is asked again."""
        now = time.monotonic()
        if self._missing.get(app, 0.0) > now:
            raise Unavailable(f"The model servers {app!r} are not running; retry in a moment")
        try:
            handle = self._pools[app] = self.pool_handle(app)
        except Exception as exc:  # KeyError (no such deployment) or Serve's own error
            self._missing[app] = now + POOL_TTL_S
            raise Unavailable(f"The model servers {app!r} are not running ({exc!r}); retry in a moment") from None
        return handle

    def predict(self, model_id: str, batch: np.ndarray) -> Awaitable[list[dict[str, Any]]]:
        if self._may_block(model_id):
            return self._off_loop(model_id, "predict", batch)
        return self._for(model_id).predict.remote(model_id, batch)  # type: ignore[no-any-return]

    def model_config(self, model_id: str) -> Awaitable[ModelConfig]:
        if self._may_block(model_id):
            return self._off_loop(model_id, "model_config")
        return self._for(model_id).model_config.remote(model_id)  # type: ignore[no-any-return]

    def _may_block(self, model_id: str) -> bool:
        return self.pools is not None and self.pools.may_block(model_id.rpartition(":")[0])

    async def _off_loop(self, model_id: str, method: str, *args: Any) -> Any:
        """The call, its pool looked up from a worker thread first (a model's project asked of
        the head's registry actor must not hold the event loop; the answer is kept for ``_for``)."""
        handle = await asyncio.to_thread(self._for, model_id)
        return await getattr(handle, method).remote(model_id, *args)


def _pool_handle(app_name: str) -> Any:
    from ray import serve

    return serve.get_deployment_handle(POOL_DEPLOYMENT, app_name=app_name)


class Overloaded(Unavailable):
    """The model servers' queues are full (Serve's back-pressure): a 503 with Retry-After over
    REST, ``RESOURCE_EXHAUSTED`` over gRPC, the same message on both."""

    @classmethod
    def of(cls, exc: BackPressureError, retry_after_s: float) -> Overloaded:
        return cls(f"Model servers are overloaded ({exc}); retry in {retry_after_s:g} s")


@dataclass(frozen=True)
class ServedModel:
    """What the core keeps of one model version: its ``model.json`` and its kind."""

    config: ModelConfig
    kind: ModelKind

    @property
    def labels(self) -> list[str]:
        return self.config.labels


@dataclass(frozen=True)
class Routed:
    """Where a request goes: the version, its model id (``name:version``) and the served model."""

    target: ModelVersion
    model_id: str
    model: ServedModel


@dataclass(slots=True)
class Predictions:
    """One request's answers, recorded: the result id, the version that answered, per input the
    recorded output (label, probability, probabilities) and the model server's whole answer
    (``batch_size``, a text's ``chunks``), and the latency. ``many``: a v1 request that held many
    inputs; ``client_id`` and ``wanted``: an infer request's own id and requested outputs."""

    request_id: str
    target: ModelVersion
    labels: list[str]
    outputs: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    latency_ms: float
    many: bool = False
    client_id: str | None = None
    wanted: RequestedOutputs | None = None


ReadV1 = Callable[[], Awaitable[V1Input]]
"""Reads a v1 request's body (after routing: an unknown model is answered before its body is read)."""
ReadInfer = Callable[[], Awaitable[tuple[bytes, Any]]]
"""Reads an infer request: its raw bytes and its body as the REST JSON parses to."""


class DataPlane:
    """Routes, decodes, batches, classifies, records and retries; see the module docstring.

    Args:
        model_servers: the model servers (:class:`ModelServers`).
        registry: the model registry (its versions, aliases and traffic split).
        recorder: where every prediction is recorded.
        limits: what one request may ask for.
        max_batch_size: inputs per model-server call.
        batches_in_flight: model-server calls in flight per model.
        retry_after_s: what an :class:`Overloaded` error tells the client.
        name: labels the batcher's metrics (the gateway replica).
    """

    def __init__(
        self,
        model_servers: ModelServers,
        registry: Registry,
        recorder: Recorder,
        limits: RequestLimits,
        max_batch_size: int = 64,
        batches_in_flight: int = 2,
        retry_after_s: float = 1,
        name: str = "gateway",
    ) -> None:
        self.model_servers = model_servers
        self.registry = registry
        self.router = Router(registry)
        self.recorder = recorder
        self.limits = limits
        self.retry_after_s = retry_after_s
        self.batcher: AdaptiveBatcher[np.ndarray, dict[str, Any]] = AdaptiveBatcher(
            self._call_model_servers, max_batch_size, batches_in_flight, name=name
        )
        self._models: dict[str, ServedModel] = {}
        self._ready_until = 0.0

    # -- routing ----------------------------------------------------------------------------------
    async def route(self, name: str, version: int | None = None, alias: str | None = None) -> Routed:
        """The version a request goes to, with its config and kind (loaded once per version)."""
        target = self.router.resolve(name, version=version, alias=alias)
        model_id = f"{target.name}:{target.version}"
        return Routed(target, model_id, self._models.get(model_id) or await self._load(model_id))

    async def _load(self, model_id: str) -> ServedModel:
        try:
            config = await self.model_servers.model_config(model_id)
        except BackPressureError as exc:
            raise Overloaded.of(exc, self.retry_after_s) from None
        model = self._models[model_id] = ServedModel(config, kind_for(config))
        return model

    # -- the two operations -----------------------------------------------------------------------
    async def predict(self, name: str, version: int | None, alias: str | None, read: ReadV1) -> Predictions:
        """A v1 request: one input, or many (:class:`ManyInputs`, a CSV of table rows) each
        recorded as ``<request id>-<row>`` and answered in the rows' order."""
        started = time.perf_counter()
        try:  # route() written out: a cached model costs no coroutine here
            target = self.router.resolve(name, version=version, alias=alias)
            model_id = f"{target.name}:{target.version}"
            model = self._models.get(model_id) or await self._load(model_id)
        except Exception as exc:
            count_failure(UNROUTED, None, exc)  # not a label from the URL: unknown names are unbounded
            raise
        try:
            body = await read()
            kind, labels, submit = model.kind, model.labels, partial(self.batcher.submit, model_id)
            if body.upload:
                item = await off_loop_if_large(len(body.raw), kind.from_upload, body.filename, body.raw, self.limits)
            else:
                item = await off_loop_if_large(len(body.raw), self._from_json, kind, body.raw)
            many = isinstance(item, ManyInputs)
            if many:
                classified = await asyncio.gather(*(kind.classify(one, submit, labels, 1) for one in item))
            else:
                classified = [await kind.classify(item, submit, labels, self.limits.max_chunks)]
        except Exception as exc:
            count_failure(name, target.version, exc)
            raise
        return self._recorded(started, target, labels, body.raw, classified, many, None)

    async def infer(self, name: str, version: int | None, read: ReadInfer) -> Predictions:
        """An Open Inference Protocol infer request over either transport: its inputs decoded by
        the model's kind, all answered together; ``wanted``: the outputs it asked for."""
        started = time.perf_counter()
        target: ModelVersion | None = None
        try:
            target = self.router.resolve(name, version=version)
            model_id = f"{target.name}:{target.version}"
            model = self._models.get(model_id) or await self._load(model_id)
            raw, body = await read()
            client_id = check_request_id(body.get("id") if isinstance(body, dict) else None)
            wanted = requested_outputs(body, OUTPUT_NAMES)
            kind, labels = model.kind, model.labels
            items = await off_loop_if_large(len(raw), kind.from_v2, body, self.limits)
            # One request's inputs share the chunk limit: 256 documents x 256 chunks would not.
            share = max(1, self.limits.max_chunks // len(items))
            submit = partial(self.batcher.submit, model_id)
            classified = await asyncio.gather(*(kind.classify(item, submit, labels, share) for item in items))
        except Exception as exc:
            count_failure(target.name if target else UNROUTED, target.version if target else None, exc)
            raise
        predictions = self._recorded(started, target, labels, raw, classified, len(classified) != 1, client_id)
        predictions.wanted = wanted
        return predictions

    def _from_json(self, kind: ModelKind, raw: bytes) -> Any:
        return kind.from_json(parse_json(raw), self.limits)

    def _recorded(
        self,
        started: float,
        target: ModelVersion,
        labels: list[str],
        raw: bytes,
        classified: list[tuple[dict[str, Any], dict[str, float]]],
        many: bool,
        client_id: str | None,
    ) -> Predictions:
        """Hand every answer to the recorder (off the request path) and count it. The server names
        every result (``<id>-<row>`` when there are many); a client's id is kept beside it."""
        latency_ms = (time.perf_counter() - started) * 1000
        request_id, digest = new_result_id(), hashlib.sha256(raw).hexdigest()
        input_uri = input_key(digest) if self.recorder.input_storage is not None else None
        outputs, answers = [], []
        for index, (answer, features) in enumerate(classified):
            output = {field: answer[field] for field in PREDICTION_FIELDS}
            count_success(target.name, target.version, latency_ms / 1000, str(output["label"]))
            self.recorder.record(
                PredictionRecord(
                    id=f"{request_id}-{index}" if many else request_id,
                    model=target.name,
                    version=target.version,
                    input_digest=digest,
                    output=output,
                    latency_ms=latency_ms,
                    input_uri=input_uri,
                    features=features,
                    client_id=client_id,
                ),
                raw if index == 0 else None,
            )
            outputs.append(output)
            answers.append(answer)
        return Predictions(request_id, target, labels, outputs, answers, latency_ms, many, client_id)

    # -- the model servers ------------------------------------------------------------------------
    async def _call_model_servers(self, model_id: str, inputs: list[np.ndarray]) -> list[dict[str, Any]]:
        """One model-server call for a batch of inputs to the same model (see AdaptiveBatcher).

        Predictions have no side effects, so a batch whose replica died is sent again: a replica
        lost under load costs latency, not failed requests."""
        batch = np.stack(inputs)
        for attempt in range(REPLICA_RETRIES + 1):
            try:
                return await self.model_servers.predict(model_id, batch)
            except (RayActorError, ActorUnavailableError):
                if attempt == REPLICA_RETRIES:
                    raise Unavailable(f"No model server replica could answer for {model_id}") from None
                logger.warning("model server replica lost; resending a batch of %d", len(inputs))
            except BackPressureError as exc:
                raise Overloaded.of(exc, self.retry_after_s) from None
        raise AssertionError("unreachable")

    # -- metadata and health ----------------------------------------------------------------------
    async def model_metadata(self, name: str, version: int | None) -> dict[str, Any]:
        """A model's Open Inference Protocol metadata: its inputs as its kind takes them, its
        outputs, and its versions (all of them, or the one asked)."""
        routed = await self.route(name, version)
        versions = [v.version for v in self.registry.list_versions(name)] if version is None else [version]
        model = routed.model
        return model_metadata(name, versions, model.kind, model.labels, model.config.architecture)

    async def model_ready(self, name: str, version: int | None) -> dict[str, Any]:
        """Ready once the version routes and its package loads and verifies."""
        routed = await self.route(name, version)
        return {"name": name, "version": str(routed.target.version), "ready": True}

    async def ready(self) -> bool:
        """Whether the registry answers. A load balancer probes often: a success holds for
        ``READY_FOR_S``, and the registry is asked off the event loop (a blocking actor call here
        stalled every request behind the probe)."""
        if time.monotonic() >= self._ready_until:
            try:
                await asyncio.to_thread(self.registry.list_models)
            except Exception:
                # The probe is public: why it failed goes to the log, not to whoever asks.
                logger.warning("readiness check failed", exc_info=True)
                return False
            self._ready_until = time.monotonic() + READY_FOR_S
        return True
