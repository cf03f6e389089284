"""The model-server deployment: verified packages multiplexed by model id, requests batched."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import ray
import ray.exceptions
import torch
from ray import serve

from aiplatform.errors import IntegrityError
from aiplatform.monitoring.metrics import inc, observe
from aiplatform.packaging.config import ModelConfig
from aiplatform.registry import RegistryClient
from aiplatform.serving.loopback import keep_serve_on_loopback
from aiplatform.serving.runner import ModelRunner
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings

logger = logging.getLogger("ray.serve")  # a replica's log file (Serve configures this logger)
MAX_MODELS_PER_REPLICA = 4
MAX_CALLS_PER_BATCH = 8
HEALTH_TIMEOUT_S = 5
REGISTRY_OUTAGE_S = 120.0
"""How long the registry may stay unreachable before a replica reports itself unhealthy. A replica
serves the models it holds without the registry, so a registry restart (seconds) must not take
serving down; a replica cut off for minutes is replaced."""
# Replicas follow the calls in flight; bounds come from Settings (serve_min/max_replicas).
AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4}


@serve.deployment(
    max_ongoing_requests=64,
    max_queued_requests=256,
    autoscaling_config=AUTOSCALING,
    health_check_period_s=5,
    # Fractions of a CPU: on small machines Serve must leave room for Ray Data and Train.
    ray_actor_options={"num_cpus": 0.5},
)
class ModelServer:
    """Loads ``name:version`` packages on demand (LRU of ``MAX_MODELS_PER_REPLICA``; an evicted
    model releases its weights) and answers batches; a package whose sha256 differs from the
    registry's is never served. Uses the replica's GPU when it has one."""

    def __init__(self, settings: Settings) -> None:
        keep_serve_on_loopback()
        self.settings = settings
        self.storage = storage_from_settings(settings)
        self.registry = RegistryClient.connect(settings)
        self._registry_unreachable_since: float | None = None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cpus = len(os.sched_getaffinity(0))
        self.loaded: set[str] = set()
        self.loads = 0
        self.evictions = 0
        self._predict.set_batch_wait_timeout_s(settings.serve_batch_wait_s)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_runner(self, model_id: str) -> ModelRunner:
        # Serve's multiplexing calls this only for a model the replica does not hold.
        inc("aip_model_cache", event="miss")
        name, _, version = model_id.rpartition(":")
        entry = self.registry.get_version(name, int(version))
        # The registry's sha256 must be storage's record, and get_bytes checks the bytes against
        # that record: one hash of the package, and it is never served if either differs.
        if self.storage.recorded_sha256(entry.package_key) != entry.sha256:
            raise IntegrityError(f"Package of {model_id} does not match the registry's sha256")
        data = self.storage.get_bytes(entry.package_key)
        runner = ModelRunner.from_bytes(data, self.device)
        runner.limit_run_time(self.settings.serve_onnx_run_timeout_s)
        threads = runner.choose_threads(self.settings.serve_model_threads, self.cpus)  # see Settings
        if runner.forward_s is None:
            logger.warning("%s: its forward pass failed on a blank input; serving on %d thread(s)", model_id, threads)
        else:
            logger.info(
                "%s: forward pass over one input %.2f ms on one thread; serving on %d thread(s)",
                model_id,
                runner.forward_s * 1000,
                threads,
            )
        runner.on_release = lambda: self._forget(model_id)
        self.loaded.add(model_id)
        self.loads += 1
        observe("aip_model_load_seconds", runner.load_seconds, model=name, version=version)
        return runner

    def _forget(self, model_id: str) -> None:
        if model_id in self.loaded:
            self.loaded.discard(model_id)
            self.evictions += 1
            inc("aip_model_cache", event="eviction")

    @serve.batch(max_batch_size=MAX_CALLS_PER_BATCH, batch_wait_timeout_s=0.0)
    async def _predict(self, calls: list[tuple[str, np.ndarray]]) -> list[list[dict[str, Any]]]:
        """Merges the batches of concurrent callers: one forward pass per model."""
        by_model: dict[str, list[int]] = {}
        for index, (model_id, _) in enumerate(calls):
            by_model.setdefault(model_id, []).append(index)
        answers: list[list[dict[str, Any]]] = [[] for _ in calls]
        for model_id, indexes in by_model.items():
            if model_id in self.loaded:
                inc("aip_model_cache", event="hit")  # a miss is counted where the model loads
            runner = await self.get_runner(model_id)
            stacked = np.concatenate([calls[i][1] for i in indexes])
            name, _, version = model_id.rpartition(":")
            observe("aip_batch_size", len(stacked), model=name, version=version)
            results = iter(runner.predict(stacked))
            for i in indexes:
                answers[i] = [{**next(results), "batch_size": len(stacked)} for _ in range(len(calls[i][1]))]
        return answers

    async def predict(self, model_id: str, inputs: np.ndarray) -> list[dict[str, Any]]:
        """Answers for a batch of model inputs (as the model's kind makes them) with ``model_id``."""
        return await self._predict((model_id, inputs))

    async def model_config(self, model_id: str) -> ModelConfig:
        return (await self.get_runner(model_id)).config

    def stats(self) -> dict[str, Any]:
        """What this replica holds: loaded model ids, loads and evictions so far, its device."""
        return {"loaded": sorted(self.loaded), "loads": self.loads, "evictions": self.evictions, "device": self.device}

    def check_health(self) -> None:
        """Unhealthy when the registry has been unreachable for ``REGISTRY_OUTAGE_S`` (no new model
        could be loaded); shorter outages, an actor restart among them, are only logged."""
        try:
            ray.get(self.registry.handle.ping.remote(), timeout=HEALTH_TIMEOUT_S)
        except (
            ray.exceptions.GetTimeoutError,
            ray.exceptions.RayActorError,
            ray.exceptions.ActorUnavailableError,
        ) as exc:
            now = time.monotonic()
            since = self._registry_unreachable_since = self._registry_unreachable_since or now
            if now - since > REGISTRY_OUTAGE_S:
                raise RuntimeError(f"The model registry has been unreachable for {now - since:.0f} s") from exc
            logger.warning(
                "model registry unreachable for %.0f s (%s); still serving loaded models",
                now - since,
                type(exc).__name__,
            )
            return
        self._registry_unreachable_since = None


def model_server_app(settings: Settings, min_replicas: int, max_replicas: int):  # type: ignore[no-untyped-def]
    """The model-server deployment autoscaled between ``min_replicas`` and ``max_replicas``, bound
    to ``settings``: the platform app's shared one, or a project's pool (``aiplatform.serving.pools``)."""
    autoscaling = {**AUTOSCALING, "min_replicas": min_replicas, "max_replicas": max_replicas}
    return ModelServer.options(autoscaling_config=autoscaling).bind(settings)
