"""One trial of a sweep, in Tune's trial actor: it trains through the same path as a task of its
template (``run_training``, or ``run_user_code`` for users' functions) with Ray Train's per-epoch
reports passed to Tune (``TuneReportCallback``), so ASHA sees every epoch, and keeps its built
package unregistered in storage: the sweep registers the best one."""

from __future__ import annotations

from typing import Any

from ray import tune

from aiplatform.datasets import DatasetManager
from aiplatform.errors import AIPError
from aiplatform.runtime import quiet_ray_data
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings
from aiplatform.tasks.queue import TRIAL_RUNNING, TaskClient
from aiplatform.tasks.sweeps.params import SweepParams
from aiplatform.tasks.sweeps.recording import SWEEP_KEY
from aiplatform.tasks.sweeps.segments import candidate_key
from aiplatform.tasks.sweeps.template import USER_CODE, SweepTemplate, trial_params
from aiplatform.training.catalog import get_template
from aiplatform.training.engine import SharedSplits, run_training
from aiplatform.training.publish import package_model, save_candidate
from aiplatform.training.template import TrainingTemplate
from aiplatform.training.user_code import UserSplits

TRIAL_DRIVER_CPUS = 0.01
"""What Tune reserves for a trial's own process: it only waits on its Ray Train run, whose
workers reserve the CPUs (the scheduler counts those, ``concurrent_runs``)."""


def shared_splits(sweep: SweepParams, datasets: DatasetManager) -> SharedSplits | UserSplits | None:
    """The trials' dataset read once, in the sweep's driver, into the object store: every trial
    whose dataset is the same (the search does not change it) trains and evaluates on these blocks."""
    template = get_template(sweep.template)
    if sweep.template == USER_CODE:  # the searched values go into the function's config only
        return UserSplits.read(SweepTemplate().sample_trial(sweep), datasets)  # type: ignore[arg-type]
    if not isinstance(template, TrainingTemplate) or type(template).fit is not TrainingTemplate.fit:
        return None  # a template with its own trainer reads its own data
    return SharedSplits.read(template.dataset_spec(SweepTemplate().sample_trial(sweep)), datasets)


def sweep_trial(config: dict[str, Any], shared: SharedSplits | UserSplits | None = None) -> None:
    """Train one trial the way a task of its template trains, and keep its package."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from aiplatform.training.user_code import run_user_code, user_error_line

    quiet_ray_data()
    sweep_id = str(config[SWEEP_KEY])
    values = {k: v for k, v in config.items() if k != SWEEP_KEY}
    settings = Settings()
    storage = storage_from_settings(settings)
    queue = TaskClient.connect(settings)
    task = queue.get(sweep_id)
    sweep = SweepParams.model_validate(task.params)
    trial_id = tune.get_context().get_trial_id()
    template = get_template(sweep.template)
    params = template.parse_params(trial_params(sweep, values))
    datasets = DatasetManager.from_settings(storage, settings, untrusted=task.source == "api", project=task.project)
    run_name = f"sweep-{sweep_id}-{trial_id}"  # the same after a resume: Train continues its checkpoints
    model_name = task.model_name or template.default_model_name(params)
    key = candidate_key(sweep_id, trial_id)
    lineage = {
        "sweep_id": sweep_id,
        "trial_id": trial_id,
        "sweep_params": values,
        "task_id": sweep_id,
        "ray_job_id": task.ray_job_id,
    }
    try:
        if sweep.template == USER_CODE:
            run_user_code(
                params,
                settings=settings,
                storage=storage,
                datasets=datasets,
                run_name=run_name,
                task_id=sweep_id,
                model_name=model_name,
                callbacks=[TuneReportCallback()],
                candidate_key=key,
                shared=shared if isinstance(shared, UserSplits) else None,
            )
            return
        # A worker's error fails the trial at once (Tune's max_failures retries it, from its checkpoint).
        outcome = run_training(
            template,
            params,
            settings=settings,
            storage=storage,
            datasets=datasets,
            run_name=run_name,
            callbacks=[TuneReportCallback()],
            shared=shared if isinstance(shared, SharedSplits) else None,
            max_failures=0,
        )
        save_candidate(storage, key, package_model(outcome, name=model_name, lineage=lineage))
    except Exception as exc:  # the reason in one line, kept before Tune wraps it
        queue.finish_trial(
            sweep_id, trial_id, TRIAL_RUNNING, error=exc.message if isinstance(exc, AIPError) else user_error_line(exc)
        )
        raise
