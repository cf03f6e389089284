"""The ``sweep`` template: a task that runs many trials of another template on Ray Tune.

Creating one checks the whole search against the template its trials use, before anything runs:
every searched name must be one of that template's parameters (for ``user-code``: keys of the
function's ``config``), both ends of every range must be values the template accepts, and the
metric must be one it reports.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from aiplatform.errors import InvalidArgument
from aiplatform.storage import Storage
from aiplatform.storage.projects import DEFAULT_PROJECT
from aiplatform.tasks.sweeps.params import SweepParams
from aiplatform.training.catalog import get_template
from aiplatform.training.template import TaskTemplate, validation_message

SWEEP = "sweep"
USER_CODE = "user-code"


class SweepTemplate(TaskTemplate):
    name = SWEEP
    title = "Hyperparameter sweep"
    description = (
        "Many trials of another template with values drawn from a search space, on Ray Tune: "
        "early stopping (ASHA), random or TPE search, durable (stop, resume, extend)."
    )
    params_model = SweepParams

    def parse_params(self, raw: dict[str, Any]) -> SweepParams:
        """The sweep's own schema, then its search checked against its trials' template."""
        try:
            sweep = SweepParams.model_validate(raw)
        except ValidationError as exc:
            raise InvalidArgument(validation_message(exc, "sweep")) from exc
        trial_template = get_template(sweep.template)
        if isinstance(trial_template, SweepTemplate):
            raise InvalidArgument("A sweep's trials train with a template; 'sweep' itself cannot be swept")
        if sweep.template != USER_CODE:
            known = trial_template.params_model.model_fields
            for name in sweep.space:
                if name not in known:
                    raise InvalidArgument(
                        f"space.{name}: template {sweep.template!r} has no parameter {name!r}; "
                        f"its parameters: {sorted(known)}"
                    )
        reported = getattr(trial_template, "reported_metrics", ())
        if reported and sweep.metric not in reported:
            raise InvalidArgument(
                f"metric {sweep.metric!r} is not one template {sweep.template!r} reports; use one of {list(reported)}"
            )
        first = {name: dimension.corners()[0] for name, dimension in sweep.space.items()}
        for name, dimension in sweep.space.items():
            for value in dimension.corners():
                try:
                    trial_template.parse_params(trial_params(sweep, {**first, name: value}))
                except InvalidArgument as exc:
                    raise InvalidArgument(
                        f"space.{name} = {value!r} is refused by template {sweep.template!r}: {exc.message}"
                    ) from exc
        if sweep.scheduler.type == "asha" and budget(sweep) is None:
            raise InvalidArgument(
                "ASHA stops trials by epoch, and this sweep does not say how many epochs a trial "
                "runs: give config.epochs (user-code), or set scheduler.type to 'none'"
            )
        return sweep

    def trial_template(self, sweep: SweepParams) -> TaskTemplate:
        return get_template(sweep.template)

    def sample_trial(self, sweep: SweepParams) -> BaseModel:
        """A trial's parameters at the space's first corner (what its dataset and inputs are)."""
        first = {name: dimension.corners()[0] for name, dimension in sweep.space.items()}
        return self.trial_template(sweep).parse_params(trial_params(sweep, first))

    def dataset_source(self, params: SweepParams) -> str | None:
        return self.trial_template(params).dataset_source(self.sample_trial(params))

    def check_inputs(self, params: SweepParams, storage: Storage, project: str = DEFAULT_PROJECT) -> None:
        self.trial_template(params).check_inputs(self.sample_trial(params), storage, project)

    def runs_code(self, params: SweepParams) -> bool:
        return self.trial_template(params).runs_user_code

    def concurrent_runs(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Its concurrent trials, each as large as the space allows (the most workers, a GPU if any
        value asks for one)."""
        run = dict(params.get("params") or {})
        space = params.get("space") or {}
        workers = space.get("workers")
        if isinstance(workers, dict):
            bounds = [workers.get("high")] if workers.get("type") != "choice" else list(workers.get("values") or [])
            run["workers"] = max([int(run.get("workers", 1)), *(int(v) for v in bounds if isinstance(v, (int, float)))])
        gpu = space.get("gpu")
        if isinstance(gpu, dict) and "on" in (gpu.get("values") or []):
            run["gpu"] = "on"
        return int(params.get("max_concurrent_trials", 1)), run

    def default_model_name(self, params: SweepParams) -> str:
        return self.trial_template(params).default_model_name(self.sample_trial(params))


def trial_params(sweep: SweepParams, values: dict[str, Any]) -> dict[str, Any]:
    """A trial's raw template parameters: the fixed ones with the trial's values (for user-code,
    the values go into the function's ``config``)."""
    if sweep.template == USER_CODE:
        fixed = dict(sweep.params)
        config = fixed.get("config") or {}
        if not isinstance(config, dict):
            raise InvalidArgument("params.config must be an object (the function's config)")
        return {**fixed, "config": {**config, **values}}
    return {**sweep.params, **values}


def budget(sweep: SweepParams) -> int | None:
    """The most epochs (for tables: boosting rounds) a trial can run: ASHA's ``max_t``."""
    template = get_template(sweep.template)
    name = getattr(template, "budget_parameter", None)
    fixed = sweep.params.get("config") if sweep.template == USER_CODE else sweep.params
    if not isinstance(fixed, dict):
        raise InvalidArgument("params.config must be an object (the function's config)")
    name = name or ("epochs" if sweep.template == USER_CODE else None)
    if name is None:
        return None
    try:
        if name in sweep.space:
            value = max(float(v) for v in sweep.space[name].corners())
        elif name in fixed:
            value = float(fixed[name])
        else:
            value = None
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name!r} must be a whole number of epochs (ASHA stops trials by it)") from None
    if value is not None:
        if value < 1 or value != int(value):
            raise InvalidArgument(f"{name!r} must be a whole number of epochs of at least 1 (got {value:g})")
        return int(value)
    if sweep.template == USER_CODE:
        return None
    field = template.params_model.model_fields.get(name)
    return int(field.default) if field is not None and isinstance(field.default, int) else None
