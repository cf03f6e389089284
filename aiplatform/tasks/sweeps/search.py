"""A sweep's search in Tune's terms: its space as Tune domains, the searcher of each segment
(random, or TPE warm-started from every trial so far) and ASHA when the sweep asks for it."""

from __future__ import annotations

from typing import Any

from ray import tune

from aiplatform.tasks.queue import Trial
from aiplatform.tasks.sweeps.params import Dimension, SweepParams, finite
from aiplatform.tasks.sweeps.recording import RecordingASHA
from aiplatform.tasks.sweeps.template import budget


def domain(dimension: Dimension) -> Any:
    """One searched parameter as a Tune domain."""
    if dimension.type == "uniform":
        return tune.uniform(dimension.low, dimension.high)
    if dimension.type == "loguniform":
        return tune.loguniform(dimension.low, dimension.high)
    if dimension.type == "int":
        return tune.randint(int(dimension.low or 0), int(dimension.high or 0) + 1)
    return tune.choice(list(dimension.values or []))


def scheduler(sweep_id: str, sweep: SweepParams) -> RecordingASHA | None:
    """ASHA (recording the trials it stops), or none."""
    if sweep.scheduler.type == "none":
        return None
    return RecordingASHA(
        sweep_id,
        time_attr="epoch",
        budget=int(budget(sweep) or 1),
        grace_period=sweep.scheduler.grace_period,
        reduction_factor=sweep.scheduler.reduction_factor,
    )


def searcher(sweep: SweepParams, index: int, earlier: list[Trial]) -> tuple[Any, int | None]:
    """The segment's searcher and the concurrency Tune should enforce itself (None when the
    searcher does). Each segment draws with its own seed; TPE starts from every trial so far."""
    if sweep.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=sweep.max_concurrent_trials, random_state=sweep.seed + index), None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    known = [t for t in earlier if t.done and finite(t.metrics.get(sweep.metric)) and set(t.params) == set(sweep.space)]
    return OptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=sweep.seed + index),
        points_to_evaluate=[dict(t.params) for t in known] or None,
        evaluated_rewards=[float(t.metrics[sweep.metric]) for t in known] or None,
    ), sweep.max_concurrent_trials
