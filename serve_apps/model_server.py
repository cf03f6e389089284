"""The model-server deployment: verified packages multiplexed by model id, requests batched."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
from ray import serve

from aiplatform.errors import IntegrityError
from aiplatform.registry import RegistryClient
from aiplatform.serving.runner import ModelRunner
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings

MAX_MODELS_PER_REPLICA = 4
MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.002
HEALTH_TIMEOUT_S = 5


@serve.deployment(
    max_ongoing_requests=64,
    max_queued_requests=256,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    health_check_period_s=5,
    # Fractions of a CPU: on small machines Serve must leave room for Ray Data and Train.
    ray_actor_options={"num_cpus": 0.5},
)
class ModelServer:
    """Loads ``name:version`` packages on demand (LRU of ``MAX_MODELS_PER_REPLICA``) and answers
    batches; a package whose sha256 differs from the registry's is never served."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = storage_from_settings(settings)
        self.registry = RegistryClient.connect(settings)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_runner(self, model_id: str) -> ModelRunner:
        name, _, version = model_id.rpartition(":")
        entry = self.registry.get_version(name, int(version))
        # The registry's sha256 must be storage's record, and get_bytes checks the bytes against
        # that record: one hash of the package, and it is never served if either differs.
        if self.storage.recorded_sha256(entry.package_key) != entry.sha256:
            raise IntegrityError(f"Package of {model_id} does not match the registry's sha256")
        data = self.storage.get_bytes(entry.package_key)
        return ModelRunner.from_bytes(data)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _predict(self, items: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
        answers: list[Any] = [None] * len(items)
        by_model: dict[str, list[int]] = {}
        for index, (model_id, _) in enumerate(items):
            by_model.setdefault(model_id, []).append(index)
        for model_id, indexes in by_model.items():
            runner = await self.get_runner(model_id)
            results = runner.predict(np.stack([items[i][1] for i in indexes]))
            for i, result in zip(indexes, results):
                answers[i] = {**result, "batch_size": len(items)}
        return answers

    async def predict(self, model_id: str, image: np.ndarray) -> dict[str, Any]:
        return await self._predict((model_id, image))

    async def model_config(self, model_id: str) -> dict[str, Any]:
        return (await self.get_runner(model_id)).config

    def check_health(self) -> None:
        """Unhealthy when the registry cannot be reached: no new model could be loaded."""
        ray.get(self.registry.handle.ping.remote(), timeout=HEALTH_TIMEOUT_S)

