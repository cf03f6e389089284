"""Train a model from a template and register it.

    python -m jobs.train --template cnn-classification --dataset mnist --epochs 3
    python -m jobs.train --entry mypkg.train:train_loop --working-dir . --dataset mnist --param epochs=3
    python -m jobs.train --task-id 0123456789abcdef      (how the task manager starts a task)

With ``--entry`` the run is the user's own function (the ``user-code`` template): the working
directory (``--working-dir``, default the current one, which is the uploaded one under
``ray job submit --working-dir``) is kept in storage as a code archive named by its sha256, and
``--param`` values become the function's ``config``.

Runs on the cluster it is submitted to (``ray job submit ... -- python -m jobs.train ...``) or,
with no cluster configured, on an embedded local Ray. Every run is a task in the platform's queue:
a run started directly records itself, with its Ray job id, and reports its epochs and result. It
does so in the project of the platform key it carries (``--runtime-env-json '{"env_vars":
{"AIP_API_TOKEN": "aip_..."}}'``), which the head authenticates; where the platform's API needs a
key, a run without one registers nothing and exits 2 saying why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiplatform.code_archives import CodeArchives, pack_directory, require_users_code
from aiplatform.datasets import DatasetManager
from aiplatform.errors import AIPError, Conflict, InvalidArgument
from aiplatform.evaluation import scalar_metrics
from aiplatform.registry import ModelVersion, RegistryClient
from aiplatform.runtime import connect, quiet_ray_data
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings
from aiplatform.tasks.console import LiveProgress, epoch_line
from aiplatform.tasks.queue import RUNNING, TaskClient
from aiplatform.tasks.reporting import TaskRun, record_self_started
from aiplatform.tasks.sweeps.params import SweepParams
from aiplatform.training.catalog import get_template
from aiplatform.training.engine import run_training
from aiplatform.training.publish import publish_model
from aiplatform.training.template import TaskTemplate
from aiplatform.training.user_code import USER_CODE, UserCodeParams, run_user_code


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n")[0])
    parser.add_argument("--template", help="e.g. cnn-classification (required without --task-id)")
    parser.add_argument("--task-id", help="run this queued task (template and parameters come from it)")
    parser.add_argument(
        "--entry",
        help="your own training function, package.module:function (the user-code "
        "template; --param values become its config)",
    )
    parser.add_argument("--working-dir", help="with --entry: the folder your code is in (default: the current one)")
    parser.add_argument("--max-failures", type=int, help="with --entry: worker-group restarts before failing")
    parser.add_argument("--dataset", help="mnist, idx:<uri>, folder:<uri> or parquet:<uri>")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--optimizer")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--augment-strength", type=float)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--gpu", help="auto, on or off")
    parser.add_argument("--max-rows", type=int, help="first N rows of each source split (quick runs)")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any other template parameter, e.g. --param 'conv_channels=[16,32]'",
    )
    parser.add_argument("--model-name", help="registry name (default: from template and dataset)")
    parser.add_argument("--run-name", help="unique run name (default: generated)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--verbose", action="store_true", help="show Ray Data's progress logs")
    parser.add_argument(
        "--deploy",
        action="store_true",
        help="start the Serve app (if needed), deploy the new version to production (gated), and "
        "send real MNIST test digits through the HTTP upload endpoint",
    )
    parser.add_argument("--http-port", type=int, default=8000, help="Serve HTTP port for --deploy")
    parser.add_argument("--check-digits", type=int, default=200, help="digits sent over HTTP with --deploy")
    return parser.parse_args(argv)


TEMPLATE_FLAGS = (
    "dataset",
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "augment",
    "augment_strength",
    "workers",
    "gpu",
    "max_rows",
    "seed",
)
USER_CODE_FLAGS = ("dataset", "workers", "gpu", "max_rows", "seed", "max_failures")


def parse_param_flags(items: Sequence[str]) -> dict[str, Any]:
    """``--param KEY=JSON`` values (a value that is not JSON is taken as a string)."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--param {item!r} must look like KEY=JSON")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def collect_params(args: argparse.Namespace) -> dict[str, Any]:
    """Template parameters from the flags that were given (the template validates them); with
    ``--entry``, the user-code template's, ``--param`` going to the function's config."""
    flags = USER_CODE_FLAGS if args.entry else TEMPLATE_FLAGS
    params = {flag: getattr(args, flag) for flag in flags if getattr(args, flag, None) is not None}
    if args.entry:
        return {**params, "entry": args.entry, "config": parse_param_flags(args.param)}
    return {**params, **parse_param_flags(args.param)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run: TaskRun | None = None
    try:
        settings = Settings()
        storage = storage_from_settings(settings)
        if not args.task_id:
            if args.entry and args.template and args.template != USER_CODE:
                raise InvalidArgument("give --template or --entry, not both")
            if not args.entry and not args.template:
                raise InvalidArgument("give --template, --entry (your own function) or --task-id of a queued task")
            template = get_template(USER_CODE if args.entry else args.template)
            raw = collect_params(args)
            code = pack_directory(args.working_dir or ".") if args.entry else None
            if code is None:
                template.parse_params(raw)  # bad parameters are refused before Ray starts
        connect(settings)
        if not args.verbose:
            quiet_ray_data()
        queue = TaskClient.connect(settings)
        if args.task_id:
            task = queue.get(args.task_id)
            if task.state != RUNNING:
                raise Conflict(
                    f"Task {task.id} is {task.state}; the task manager starts a task by making it RUNNING first"
                )
            template = get_template(task.template)
            params = template.parse_params(task.params)
        else:
            # Straight from `ray job submit`: the head authenticates the platform key the job
            # carries (AIP_API_TOKEN) and says the project it acts in; no key, nothing is registered.
            key = settings.api_token.get_secret_value() if settings.api_token is not None else None
            project = queue.submitter_project(key, settings.project)
            if code is not None:  # the code that runs is kept, by its digest, before anything runs
                raw["code"] = CodeArchives(storage, project).put(code).digest
            params = template.parse_params(raw)
            task = record_self_started(
                queue, template.name, params.model_dump(mode="json"), args.model_name, platform_key=key, project=project
            )
        run = TaskRun(queue, task)
        if task.source == "api" and template.runs_code(params):
            # Whoever reached the API may no longer run code here (the platform's settings, as the
            # task manager passed them, decide now, not when the task was created). A cluster
            # user's own `ray job submit` run is theirs to make.
            require_users_code(settings, f"Task {task.id} (template {template.name!r}) runs the caller's own code")
        # On stderr with --json, so that stdout stays the one JSON summary.
        print(
            f"task {task.id} ({template.name}, Ray job {task.ray_job_id or 'none'})",
            flush=True,
            file=sys.stderr if args.json else sys.stdout,
        )
        # A queued task's name is the same in every attempt: an attempt after an interruption (its
        # head lost, its job gone) finds the last one's checkpoints and Train resumes from them.
        run_name = args.run_name or (
            f"{template.name}-task-{task.id}"
            if args.task_id
            else f"{template.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        )
        # A task created through the API names a dataset its caller may not be allowed to read:
        # the source allow-list applies (a cluster user's own `ray job submit` run is trusted).
        datasets = DatasetManager.from_settings(storage, settings, untrusted=task.source == "api", project=task.project)
        registry = RegistryClient.connect(settings)
        model_name = task.model_name or args.model_name or template.default_model_name(params)
        if not args.task_id and registry.model_project(model_name) != task.project:
            registry.claim_model(model_name, task.project)  # its version lands in the run's project
        runner = (
            run_sweep_task
            if isinstance(params, SweepParams)
            else run_user_task
            if isinstance(params, UserCodeParams)
            else run_template_task
        )
        # Each epoch as it lands, and a line every few seconds before the first (on stderr with --json).
        with LiveProgress(lambda: queue.get(task.id), sys.stderr if args.json else sys.stdout) as live:
            version, result, summary, lines = runner(
                template,
                params,
                settings=settings,
                storage=storage,
                datasets=datasets,
                registry=registry,
                run=run,
                run_name=run_name,
                model_name=model_name,
            )
        run.succeeded(result)
        check = deploy_and_check(args, settings, registry, version.name, version.version) if args.deploy else None
    except AIPError as exc:
        if run is not None:
            run.failed(exc.message)
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if run is not None:
            run.failed(f"{type(exc).__name__}: {exc}")
        raise
    summary = {
        "task_id": task.id,
        "model": version.name,
        "version": version.version,
        "package_uri": version.package_uri,
        "sha256": version.sha256,
        **summary,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "http_check": None if check is None else check.__dict__,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    for line in lines:
        if line not in live.printed:
            print(line)
    print(f"  package: {version.package_uri} (sha256 {version.sha256})")
    print(f"  dataset: {summary['dataset']}; wall time {summary['wall_seconds']} s")
    if check is not None:
        print(
            f"Deployed to production and checked over HTTP: {check.requests} MNIST test digits "
            f"uploaded as PNG, accuracy {check.accuracy:.4f}, latency p50 {check.p50_ms:.1f} ms "
            f"p99 {check.p99_ms:.1f} ms (version {', '.join(map(str, check.versions))})"
        )
    return 0


RunResult = tuple[ModelVersion, dict[str, Any], dict[str, Any], list[str]]
"""The version, the task's result, the job's summary and the lines it prints."""


def run_template_task(
    template: TaskTemplate,
    params: Any,
    *,
    settings: Settings,
    storage: Any,
    datasets: DatasetManager,
    registry: RegistryClient,
    run: TaskRun,
    run_name: str,
    model_name: str,
) -> RunResult:
    """A built-in (or plugin) template: the platform's engine trains, evaluates and publishes."""
    outcome = run_training(
        template,
        params,
        settings=settings,
        storage=storage,
        datasets=datasets,
        run_name=run_name,
        callbacks=[run.callback()],
    )
    version = publish_model(
        outcome,
        name=model_name,
        storage=storage,
        registry=registry,
        lineage={"ray_job_id": run.task.ray_job_id or _ray_job_id(), "task_id": run.task.id},
    )
    result = {
        "model": version.name,
        "version": version.version,
        "package_uri": version.package_uri,
        "dataset": outcome.dataset.ref,
        **scalar_metrics(outcome.test_metrics),
    }
    summary = {
        "test_accuracy": outcome.test_metrics["test_accuracy"],
        "test_samples": outcome.test_metrics["test_samples"],
        "test_macro_f1": outcome.test_metrics["test_macro_f1"],
        "dataset": outcome.dataset.ref,
        "used_gpu": outcome.used_gpu,
        "epochs": outcome.history,
        "timings": {k: round(v, 1) for k, v in outcome.timings.items()},
    }
    lines = [epoch_line(e) for e in outcome.history]
    lines += [
        f"Registered model {version.name} version {version.version}",
        f"  test accuracy: {summary['test_accuracy']:.4f}, macro-F1 {summary['test_macro_f1']:.4f} "
        f"on {summary['test_samples']} test samples",
    ]
    return version, result, summary, lines


def run_user_task(
    template: TaskTemplate,
    params: UserCodeParams,
    *,
    settings: Settings,
    storage: Any,
    datasets: DatasetManager,
    registry: RegistryClient,
    run: TaskRun,
    run_name: str,
    model_name: str,
) -> RunResult:
    """The user's own function on Ray Train; the version is the one it published (the last, if several)."""
    outcome = run_user_code(
        params,
        settings=settings,
        storage=storage,
        datasets=datasets,
        run_name=run_name,
        task_id=run.task.id,
        model_name=model_name,
        callbacks=[run.callback()],
    )
    published = outcome.published[-1]
    version = registry.get_version(published["name"], int(published["version"]))
    result = {
        "model": version.name,
        "version": version.version,
        "package_uri": version.package_uri,
        "dataset": outcome.dataset.ref,
        "code_digest": outcome.code_digest,
        "entry": params.entry,
        "published": outcome.published,
        "checkpoint": outcome.checkpoint,
        **scalar_metrics(outcome.final_metrics),
    }
    summary = {
        "dataset": outcome.dataset.ref,
        "code_digest": outcome.code_digest,
        "used_gpu": outcome.used_gpu,
        "final_metrics": scalar_metrics(outcome.final_metrics),
        "published": outcome.published,
        "timings": {k: round(v, 1) for k, v in outcome.timings.items()},
    }
    lines = [
        f"{params.entry} (code {outcome.code_digest}) reported {json.dumps(summary['final_metrics'])}",
        *(f"Registered model {p['name']} version {p['version']}" for p in outcome.published),
    ]
    return version, result, summary, lines


def run_sweep_task(
    template: TaskTemplate,
    params: SweepParams,
    *,
    settings: Settings,
    storage: Any,
    datasets: DatasetManager,
    registry: RegistryClient,
    run: TaskRun,
    run_name: str,
    model_name: str,
) -> RunResult:
    """A sweep: its trials on Ray Tune, then its best trial registered (and, if asked, deployed
    through the gate)."""
    from aiplatform.tasks.sweeps.driver import run_sweep

    outcome = run_sweep(
        run.task,
        params,
        settings=settings,
        storage=storage,
        datasets=datasets,
        registry=registry,
        queue=run.queue,
        model_name=model_name,
    )
    version, best = outcome.version, outcome.best
    result = {
        "model": version.name,
        "version": version.version,
        "package_uri": version.package_uri,
        "best_trial": best.trial_id,
        "best_params": best.params,
        params.metric: best.metrics[params.metric],
        "trials": outcome.trials,
        "segments": outcome.segments,
    }
    if params.deploy:
        result["deploy"] = _deploy_through_gate(settings, registry, version)
    lines = [
        f"Sweep finished: {sum(outcome.trials.values())} trials ({', '.join(f'{n} {s.lower()}' for s, n in outcome.trials.items())})",
        f"Best trial {best.trial_id}: {params.metric} {best.metrics[params.metric]:.4f} with {json.dumps(best.params)}",
        f"Registered model {version.name} version {version.version}",
    ]
    return version, result, dict(result), lines


def _deploy_through_gate(settings: Settings, registry: RegistryClient, version: ModelVersion) -> dict[str, Any]:
    """The deploy gate, as for any model: a refusal is recorded, not a failed sweep."""
    from aiplatform.serving.deployer import deploy, warm_on_serve
    from aiplatform.serving.pools import pool_routes

    try:
        done = deploy(
            registry, version.name, version.version, warm=warm_on_serve(settings.serve_app_name, pool_routes(settings))
        )
    except AIPError as exc:
        return {"deployed": False, "reason": exc.message}
    return {"deployed": True, "version": done.version, "previous": done.previous_version, "gate": done.gate}


def deploy_and_check(args: argparse.Namespace, settings: Settings, registry: RegistryClient, name: str, version: int):  # type: ignore[no-untyped-def]
    """Serve the platform app on 127.0.0.1, deploy ``version`` and check it over HTTP."""
    from aiplatform.serving.deployer import deploy, warm_on_serve
    from aiplatform.serving.http_check import check_digits_over_http
    from aiplatform.serving.pools import pool_routes
    from aiplatform.serving.router import CACHE_TTL_S
    from aiplatform.tokens import with_api_token
    from serve_apps.app import start_app

    settings = with_api_token(settings, create=True)  # the gateway refuses requests without one
    url = start_app(settings, args.http_port, grpc_port=0)  # the check is over HTTP; a busy 9000 must not fail it
    deploy(registry, name, version, warm=warm_on_serve(settings.serve_app_name, pool_routes(settings)))
    time.sleep(CACHE_TTL_S + 0.1)  # routers see the alias move within their cache TTL
    return check_digits_over_http(url, name, count=args.check_digits, headers=settings.api_auth_headers())


def _ray_job_id() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().get_job_id()
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
