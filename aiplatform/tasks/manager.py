"""The task manager: creates tasks from templates, runs queued ones as Ray jobs, follows them.

``reconcile()`` is the scheduler's whole job and is safe to run at any time, from any process,
any number of times: it compares the queue with the cluster's jobs and moves each task to where
the truth says it is. That is what makes restarts harmless: a task whose job the cluster no longer
knows (the platform restarted, the head was replaced) is re-queued while it has retries left and
otherwise marked FAILED with reason ``interrupted``; none stays RUNNING forever.

Each round also copies the running tasks' job logs, and each ended task's final log and record, to
storage (``aiplatform.tasks.history``): logs, the task and its curves are read from there once Ray
no longer has the job (the job was deleted, the head was recreated).
"""

from __future__ import annotations

import functools
import inspect
import logging
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import ray

from aiplatform.access.actor import quota_store
from aiplatform.access.protocols import QuotaAPI
from aiplatform.access.quotas import Admission, Quota, check_queued_room
from aiplatform.code_archives import require_users_code, users_code_refusal
from aiplatform.datasets.source_policy import SourcePolicy
from aiplatform.errors import AIPError, Conflict, InvalidArgument, NotFound, Unavailable
from aiplatform.registry.store import validate_model_name
from aiplatform.runtime import ray_env_passthrough
from aiplatform.settings import Settings
from aiplatform.storage import Storage, storage_from_settings
from aiplatform.tasks import fair_share
from aiplatform.tasks.fair_share import Candidate, Resources
from aiplatform.tasks.history import HistoryCopier, TaskHistory
from aiplatform.tasks.queue import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TRIAL_STATES, Task, TaskClient
from aiplatform.tasks.queue.store import DEFAULT_PROJECT
from aiplatform.tasks.queue.trials import RUN_SEPARATOR
from aiplatform.tasks.ray_jobs import JobState, RayJobs
from aiplatform.tasks.sweeps.params import SweepParams, best_trial
from aiplatform.tasks.sweeps.template import SWEEP
from aiplatform.training.catalog import get_template
from aiplatform.training.template import TaskTemplate

logger = logging.getLogger(__name__)
QUEUE_LOOKAHEAD = 100
"""Queued tasks of each project the scheduler looks at per round (its first by priority and age)."""
STOP_WAIT_S = 20.0
UNSUBMITTED_GRACE_S = 30.0
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class TaskLog:
    """A task's log and where it was read: ``ray`` (the job's live log), ``storage`` (the copy
    kept in the history archive) or ``queue`` (the tail the queue kept when the task ended)."""

    text: str
    source: str
    ray_job_known: bool | None
    """Whether Ray still has the task's job (None: the task has no job, or Ray cannot say)."""


JOB_KNOWN_TTL_S = 5.0
"""How long Ray's "it has this job" stands before a task's page asks again."""
MAX_JOBS_KNOWN = 4096


def job_submission_id(task: Task) -> str:
    """The Ray job id of the task's next attempt (stable, so a retried submit is recognised)."""
    return f"aip-task-{task.id}-{task.attempts + 1}"


class TaskManager:
    """Task creation, start, cancel and logs for the API, and ``reconcile()`` for the scheduler."""

    def __init__(
        self,
        queue: TaskClient,
        jobs: RayJobs,
        settings: Settings,
        wake_scheduler: Callable[[], None] | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.queue = queue
        self.storage = storage
        self.jobs = jobs
        self.settings = settings
        self.wake_scheduler = wake_scheduler or (lambda: None)
        self.history_copier = HistoryCopier(lambda: self.history, queue, jobs, settings.task_log_archive_interval_s)
        self._jobs_known: dict[str, tuple[float, bool]] = {}
        """Ray's answers to "does it still have this job": a task page polled every few seconds
        asks Ray's job API at most every ``JOB_KNOWN_TTL_S``; a job gone is gone for good."""

    @functools.cached_property
    def history(self) -> TaskHistory:
        """The task history archive, in the platform's storage (opened on first use: the
        scheduler's manager is made without a storage of its own)."""
        storage = self.storage if self.storage is not None else storage_from_settings(self.settings)
        return TaskHistory(storage, self.settings.task_log_archive_max_bytes)

    @functools.cached_property
    def quotas(self) -> QuotaAPI:
        """Projects' quotas and the record of admissions (``access.db`` in the state folder, or
        the head's access actor off the head node: ``aiplatform.access.actor.quota_store``)."""
        return quota_store(self.settings)

    # -- API -------------------------------------------------------------------------------
    def create(self, template: str, params: dict[str, Any], **options: Any) -> Task:
        """A task of ``template`` with validated parameters (defaults filled in); see
        :meth:`creation` for the options."""
        task = self.queue.create(**self.creation(template, params, **options))
        if task.state == "QUEUED":
            self.wake_scheduler()
        return task

    async def create_async(self, template: str, params: dict[str, Any], **options: Any) -> Task:
        """:meth:`create` from an event loop. The checks run on a worker thread: they read storage
        and may unpack a code archive (a small archive can hold 256 MiB), which must not stall
        every other request the loop serves."""
        creation = await anyio.to_thread.run_sync(functools.partial(self.creation, template, params, **options))
        task = await self.queue.create_async(**creation)
        if task.state == "QUEUED":
            self.wake_scheduler()
        return task

    def creation(
        self,
        template: str,
        params: dict[str, Any],
        *,
        priority: int = 0,
        model_name: str | None = None,
        idempotency_key: str | None = None,
        max_retries: int | None = None,
        start: bool = False,
        project: str = DEFAULT_PROJECT,
    ) -> dict[str, Any]:
        """Validate a new task (template, parameters, model name) of ``project`` into the queue's arguments.
        The dataset it names must be one an API caller may name (the source allow-list)."""
        found = get_template(template)
        if found.runs_user_code:  # before its parameters are even read
            require_users_code(self.settings, f"Template {template!r} runs the caller's own code")
        parsed = found.parse_params(params)
        if found.runs_code(parsed) and not found.runs_user_code:  # a sweep of users' code
            require_users_code(self.settings, f"Its trials run the caller's own code (template {parsed.template!r})")
        source = found.dataset_source(parsed)
        if source is not None:
            SourcePolicy.from_settings(self.settings).check_source(source)
        if self.storage is not None:
            check_template_inputs(found, parsed, self.storage, project)
        self._check_fits(template, parsed.model_dump(mode="json"))
        self.check_within_quota(project, template, parsed.model_dump(mode="json"))
        if model_name is not None:
            validate_model_name(model_name)
        queued_limit = None
        if start:
            queued_limit = self.queued_limit(project)
            self.check_queued_quota(project, queued_limit)
        return {
            "queued_limit": queued_limit,
            "template": template,
            "params": parsed.model_dump(mode="json"),
            "priority": priority,
            "model_name": model_name,
            "idempotency_key": idempotency_key,
            "start": start,
            "max_retries": self.settings.task_max_retries if max_retries is None else max_retries,
            "project": project,
        }

    def record_creator(self, task: Task, creator: str | None) -> Task:
        """``task`` with ``creator`` recorded as who created it (kept if it already names someone:
        a repeated idempotency key answers the first task as it was)."""
        if task.created_by is not None or creator is None:
            return task
        return self.queue.set_created_by(task.id, creator)

    def get(self, task_id: str) -> Task:
        """The task (:class:`NotFound` when there is none); one the queue no longer has (its state
        folder was lost) as the history archive last kept it."""
        try:
            return self.queue.get(task_id)
        except NotFound:
            archived = self._archived(lambda history: history.task(task_id))
            if archived is None:
                raise
            return archived

    def list_tasks(self, *, states: list[str] | None = None, **filters: Any) -> list[Task]:
        """Tasks newest first; ``filters`` are the queue's (template, since, until, limit, offset, before)."""
        return self.queue.list(states=states, **filters)

    def counts(self, project: str | None = None) -> dict[str, int]:
        """Tasks by state (of ``project``; None: of every project)."""
        return self.queue.counts(project)

    def metrics_history(self, task_id: str) -> list[dict[str, Any]]:
        """The task's metrics, one entry per epoch (from the history archive for a task the queue
        no longer has)."""
        try:
            return self.queue.metrics_history(task_id)
        except NotFound:
            record = self._archived_record(task_id)
            if record is None:
                raise
            return list(record["metrics_history"])

    def compare_runs(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """Tasks and sweeps' trials side by side (parameters, state, latest metrics, curves); a
        task the queue no longer has, as the history archive kept it."""
        try:
            return self.queue.compare_runs(run_ids)
        except NotFound:
            archived = {}
            for run_id in dict.fromkeys(run_ids):
                record = None if RUN_SEPARATOR in run_id or self._in_queue(run_id) else self._archived_record(run_id)
                if record is not None:
                    archived[run_id] = _compared_task(record)
            if not archived:
                raise
        rest = [run_id for run_id in run_ids if run_id not in archived]
        found = {run["id"]: run for run in (self.queue.compare_runs(rest) if rest else [])}
        return [archived.get(run_id) or found[run_id] for run_id in dict.fromkeys(run_ids)]

    def dashboard_url(self, task: Task) -> str | None:
        """Where Ray's dashboard shows the task's job (None before it has one)."""
        return self.jobs.job_url(task.ray_job_id) if task.ray_job_id else None

    def ray_job_known(self, task: Task) -> bool | None:
        """Whether Ray still has the task's job: False once it is gone (its history is kept in
        storage), None when the task has no job or Ray's job API cannot say."""
        if not task.ray_job_id:
            return None
        now = time.monotonic()
        cached = self._jobs_known.get(task.ray_job_id)
        if cached is not None and (not cached[1] or now - cached[0] < JOB_KNOWN_TTL_S):
            return cached[1]
        try:
            known = self.jobs.state(task.ray_job_id) is not None
        except Exception as exc:  # the job API unreachable or confused: unknown, not gone
            logger.debug("cannot ask Ray about job %s: %s", task.ray_job_id, exc)
            return None
        self._jobs_known.pop(task.ray_job_id, None)
        self._jobs_known[task.ray_job_id] = (now, known)
        while len(self._jobs_known) > MAX_JOBS_KNOWN:
            self._jobs_known.pop(next(iter(self._jobs_known)))
        return known

    def start(self, task_id: str) -> Task:
        """Queue a created task; one that runs the caller's own code only while the platform
        allows it (the task may have been created while it did)."""
        created = self.queue.get(task_id)
        self.check_users_code(created)
        queued_limit = self.queued_limit(created.project)
        if created.state != QUEUED:
            self.check_within_quota(created.project, created.template, created.params)
            self.check_queued_quota(created.project, queued_limit)
        task = self.queue.start(task_id, queued_limit=queued_limit)
        self.wake_scheduler()
        return task

    def queued_limit(self, project: str) -> int | None:
        """``project``'s queued-task quota (None: unlimited). The queue checks it again in the
        transaction that queues a task, so two creations at the same instant cannot both pass."""
        return self.quotas.quotas().get(project, Quota(project)).queued

    def check_queued_quota(self, project: str, limit: int | None) -> None:
        """``Conflict`` naming the quota when ``project`` already has as many QUEUED tasks as its
        queued-task quota ``limit`` allows (checked before anything is stored or read from
        storage, so a refusal stores nothing and costs little; the queue's own check, given the
        same limit, is the one that holds)."""
        if limit is not None:
            check_queued_room(project, self.queue.counts(project).get(QUEUED, 0), limit)

    def check_within_quota(self, project: str, template: str, params: dict[str, Any]) -> None:
        """``Conflict`` naming the quota when a task of ``template`` needs more CPUs or GPUs than
        ``project``'s quota allows at all: queued, it could never start."""
        needed = self.resources_needed(template, params)
        refusal = fair_share.quota_exceeded(self.quotas.quotas().get(project), needed)
        if refusal is not None:
            raise Conflict(
                f"The task {refusal} (project {project!r}), so it could never start: lower its 'workers' "
                "(or a sweep's 'max_concurrent_trials'), or ask a platform admin to raise the quota (aip quotas set)"
            )

    def project_usage(self, project: str) -> tuple[Resources, list[str]]:
        """What ``project``'s running tasks hold now, and their ids (a quota may not go below it)."""
        tasks = [task for task in self.queue.running() if task.project == project]
        held = fair_share.in_use((task.project, self.resources_needed(task.template, task.params)) for task in tasks)
        return held.get(project, fair_share.NOTHING), [task.id for task in tasks]

    def check_users_code(self, task: Task) -> None:
        """:class:`Forbidden` naming ``AIP_USER_CODE`` when ``task`` runs the caller's own code
        (itself or in its trials) and the platform does not allow that now: a task keeps the
        permission of no earlier moment (created while it was on, started after it was turned off)."""
        if users_code_refusal(self.settings) is None:
            return
        found = get_template(task.template)
        if found.runs_user_code or found.runs_code(found.parse_params(task.params)):
            require_users_code(self.settings, f"Task {task.id} (template {task.template!r}) runs the caller's own code")

    def cancel(self, task_id: str) -> Task:
        """A task that has not run is cancelled at once; a running one has its Ray job stopped and
        is CANCELLED when the job has ended (waited for up to ``STOP_WAIT_S``)."""
        task = self.queue.cancel(task_id)
        if task.state != "RUNNING" or not task.ray_job_id:
            return task
        self.jobs.stop(task.ray_job_id)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            job = self.jobs.state(task.ray_job_id)
            if job is None or job.terminal:
                return self.queue.finish(
                    task_id, CANCELLED, reason="cancelled", error="cancelled by request", log_tail=self._log_tail(task)
                )
            time.sleep(0.25)
        return self.queue.get(task_id)  # the scheduler finishes it when the job has stopped

    # -- sweeps ------------------------------------------------------------------------------
    def sweep(self, sweep_id: str) -> Task:
        """The task ``sweep_id``, which must be a sweep."""
        task = self.queue.get(sweep_id)
        if task.template != SWEEP:
            raise NotFound(f"Task {sweep_id} is not a sweep (template {task.template!r})")
        return task

    def sweep_view(self, sweep_id: str) -> dict[str, Any]:
        """A sweep as the API shows it: the task, its trials, and the best finished trial so far."""
        task = self.sweep(sweep_id)
        trials = self.queue.trials(sweep_id)
        best = best_trial(trials, SweepParams.model_validate(task.params))
        counts = {state: sum(t.state == state for t in trials) for state in TRIAL_STATES}
        return {
            **task.to_dict(),
            "trials": [t.to_dict() for t in trials],
            "trial_counts": counts,
            "best_trial": best.to_dict() if best else None,
            "waiting": self.why_waiting([task]).get(task.id),
        }

    def resume_sweep(self, sweep_id: str) -> Task:
        task = self.sweep(sweep_id)
        self.check_users_code(task)
        if task.state == SUCCEEDED:
            raise Conflict(f"Sweep {sweep_id} has finished all its trials; extend it to run more")
        queued_limit = self.queued_limit(task.project)
        if task.state != QUEUED:
            self.check_within_quota(task.project, task.template, task.params)
            self.check_queued_quota(task.project, queued_limit)
        resumed = self.queue.requeue(sweep_id, queued_limit=queued_limit)
        self.wake_scheduler()
        return resumed

    def extend_sweep(self, sweep_id: str, more: int) -> Task:
        """More trials for a sweep that has ended (a running one is stopped first)."""
        task = self.sweep(sweep_id)
        self.check_users_code(task)
        if not task.finished:
            raise Conflict(f"Sweep {sweep_id} is {task.state}; stop it (or let it finish) before extending it")
        params = get_template(SWEEP).parse_params({**task.params, "trials": int(task.params["trials"]) + more})
        self.check_within_quota(task.project, task.template, params.model_dump(mode="json"))
        queued_limit = self.queued_limit(task.project)
        self.check_queued_quota(task.project, queued_limit)
        extended = self.queue.requeue(sweep_id, params.model_dump(mode="json"), queued_limit=queued_limit)
        self.wake_scheduler()
        return extended

    def logs(self, task_id: str) -> str:
        """The task's log (see :meth:`read_logs`)."""
        return self.read_logs(task_id).text

    def read_logs(self, task_id: str) -> TaskLog:
        """The job's log from Ray while Ray has it; after that, the copy in the history archive
        (every attempt's, see ``TaskHistory.log``); failing that, the tail the queue kept."""
        task = self.get(task_id)
        known: bool | None = None
        if task.ray_job_id:
            try:
                text = self.jobs.logs(task.ray_job_id)
                if text.strip():
                    return TaskLog(text, "ray", True)
                # Empty: Ray answers so for a job it has deleted, and a head rebuilt with Ray's job
                # records (GCS fault tolerance) has lost their log files.
                known = self.ray_job_known(task)
            except NotFound:
                known = False
            except Unavailable:
                pass
        archived = self._archived(lambda history: history.log(task_id))
        if archived is not None:
            return TaskLog(archived, "storage", known)
        try:
            tail = self.queue.log_tail(task_id)
        except NotFound:
            tail = None
        if tail is None:
            raise NotFound(f"Task {task_id} has no logs yet (state {task.state})")
        return TaskLog(tail, "queue", known)

    def _in_queue(self, task_id: str) -> bool:
        try:
            self.queue.get(task_id)
        except NotFound:
            return False
        return True

    def _archived_record(self, task_id: str) -> dict[str, Any] | None:
        return self._archived(lambda history: history.record(task_id))

    def _archived(self, read: Callable[[TaskHistory], Any]) -> Any:
        """A read of the history archive; None when storage cannot answer (the caller's own
        answer, a 404 or the live source, stands). Only a manager given the platform's storage
        (the API's) reads it: the scheduler's only writes."""
        if self.storage is None:
            return None
        try:
            return read(self.history)
        except Exception as exc:
            logger.warning("task history unreadable: %s", exc)
            return None

    # -- scheduler -------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Follow every RUNNING task to its job's end, then start queued tasks while capacity allows."""
        running = self.queue.running()
        try:
            jobs = self.jobs.states(self.history_copier.followed(running))
        except Unavailable as exc:
            logger.warning("not following tasks this round: %s", exc.message)
            return
        for task in running:
            try:
                self._follow(task, jobs.get(task.ray_job_id or ""))
            except AIPError as exc:
                logger.warning("task %s: %s", task.id, exc.message)
        self.history_copier.copy(running, jobs)
        self._start_queued()

    def _follow(self, task: Task, job: JobState | None) -> None:
        if task.ray_job_id is None:  # a run no Ray job follows: only its heartbeat says it lives
            if time.time() - task.updated_at > self.settings.task_heartbeat_timeout_s:
                self.queue.interrupt(task.id, "the run stopped reporting (its process is gone)")
            return
        if job is None:
            if task.source == "api" and task.submitted_at is None:
                if time.time() - (task.started_at or 0) < UNSUBMITTED_GRACE_S:
                    return  # being submitted right now by another process
                self._submit(task)  # claimed, then the submitter died before submitting
                return
            self.queue.interrupt(task.id, f"Ray job {task.ray_job_id} no longer exists (the cluster restarted)")
            return
        if not job.terminal:
            if task.cancel_requested:
                self.jobs.stop(task.ray_job_id)
            return
        current = self.queue.get(task.id)  # the job may have finished its task since it was read
        if current.state != RUNNING or current.ray_job_id != task.ray_job_id:
            return
        if job.driver_lost:  # the head (and the driver on it) was lost: re-run by the retry policy
            self.queue.interrupt(task.id, f"Ray job {task.ray_job_id} lost its driver: {job.message}")
            return
        tail = self._log_tail(task)
        if job.status == "SUCCEEDED":
            # The job finishes its task itself before it exits; still RUNNING means it did not.
            self.queue.finish(
                task.id,
                FAILED,
                reason="no_result",
                log_tail=tail,
                error="The job ended without recording a result; see the logs",
            )
        elif job.status == "STOPPED":
            self.queue.finish(
                task.id,
                CANCELLED if task.cancel_requested else FAILED,
                reason="stopped",
                error=job.message or "the Ray job was stopped",
                log_tail=tail,
            )
        else:
            self.queue.finish(task.id, FAILED, reason="job_failed", log_tail=tail, error=_failure_message(job, tail))

    def _start_queued(self) -> None:
        """Start queued tasks while they fit: within their project's quota, projects taking turns
        by weighted fair share, each project's tasks in priority order (``fair_share.plan``).
        A task larger than the whole cluster cannot start until it grows: it is passed over (its
        demand is sent to Ray's autoscaler), so it never holds up the tasks behind it. Each start
        is recorded with the quota it was checked against (``QuotaStore.record_admission``)."""
        now = time.time()
        running = self.queue.running()
        self.quotas.end_admissions({task.id for task in running}, now)
        slots = self.settings.task_max_running - len(running)
        if slots <= 0:
            return
        queued = [
            task for task in self.queue.queued(limit=QUEUE_LOOKAHEAD) if not self._fail_if_users_code_is_off(task)
        ]
        round_ = self._plan_round(queued, running, now, slots)
        if round_.plan is not None:
            held = dict(round_.held)
            for chosen in round_.plan.admitted:
                quota = round_.quotas.get(chosen.project)
                before = held.get(chosen.project, fair_share.NOTHING)
                held[chosen.project] = before.plus(chosen.needed)
                self.queue.claim(chosen.task_id, job_submission_id(round_.tasks[chosen.task_id]))
                self.quotas.record_admission(
                    Admission(
                        chosen.task_id,
                        chosen.project,
                        time.time(),
                        chosen.needed.cpu,
                        chosen.needed.gpu,
                        before.cpu,
                        before.gpu,
                        quota.cpus if quota else None,
                        quota.gpus if quota else None,
                    )
                )
                self._submit(self.queue.get(chosen.task_id))
        demand = [bundle for task in round_.too_big for bundle in self.worker_bundles(task.template, task.params)]
        if demand and self.settings.autoscaling:
            request_from_autoscaler(demand)

    def _plan_round(self, queued: list[Task], running: list[Task], now: float, slots: int) -> _Round:
        """The scheduler's round over ``queued`` (the first ones by priority and age): the tasks
        larger than the whole cluster are set aside (they cannot start until it grows, so they
        never hold up the tasks behind them); ``fair_share.plan`` decides among the rest.
        ``why_waiting`` runs the same round, so a task's reason is the one admission acts on."""
        cluster = Resources.of(ray.cluster_resources())
        held = self._held(running)
        round_ = _Round(cluster, held, _free(cluster, held))
        candidates: list[Candidate] = []
        for task in queued:
            needed = self.resources_needed(task.template, task.params)
            if not needed.fits(cluster):
                round_.too_big.append(task)
                continue
            round_.tasks[task.id] = task
            candidates.append(Candidate(task.id, task.project, needed))
        if candidates:
            round_.quotas = self.quotas.quotas()
            admissions = self.quotas.admissions(since=now - fair_share.WINDOW_S)
            run_s = fair_share.typical_run_s(admissions, now)
            used = fair_share.cpu_seconds(admissions, now, run_s=run_s)
            round_.plan = fair_share.plan(candidates, round_.quotas, held, used, round_.free, slots, run_s=run_s)
        return round_

    def _held(self, running: list[Task]) -> dict[str, Resources]:
        """What each project's running tasks hold (by their templates' needs)."""
        return fair_share.in_use((t.project, self.resources_needed(t.template, t.params)) for t in running)

    def _submit(self, task: Task) -> None:
        assert task.ray_job_id is not None
        if self._fail_if_users_code_is_off(task):
            return
        module = get_template(task.template).job_module
        entrypoint = f"{shlex.quote(sys.executable)} -m {module} --task-id {shlex.quote(task.id)}"
        try:
            self.jobs.submit(
                task.ray_job_id,
                entrypoint,
                # Time to save its state when stopped (a sweep's Tune writes its experiment state).
                env_vars={**ray_env_passthrough(), **self.settings.to_env(), "RAY_JOB_STOP_WAIT_TIME_S": "30"},
                metadata={"aip_task_id": task.id, "template": task.template},
            )
        except Unavailable as exc:
            self.queue.finish(task.id, FAILED, reason="submit_failed", error=exc.message)
            return
        self.queue.mark_submitted(task.id)

    def _fail_if_users_code_is_off(self, task: Task) -> bool:
        """A task queued while users' code was allowed, and not since: FAILED, no job started."""
        try:
            self.check_users_code(task)
        except AIPError as exc:
            self.queue.finish(task.id, FAILED, reason="user_code_off", error=exc.message)
            return True
        return False

    def resources_needed(self, template: str, params: dict[str, Any]) -> Resources:
        """What a task's Ray Train workers reserve: CPUs each, and a GPU each with ``gpu=on``, for
        each run it holds at once (a sweep's concurrent trials)."""
        bundles = self.worker_bundles(template, params)
        return Resources(cpu=sum(b["CPU"] for b in bundles), gpu=sum(b.get("GPU", 0.0) for b in bundles))

    def worker_bundles(self, template: str, params: dict[str, Any]) -> list[dict[str, float]]:
        """One resource bundle per Ray Train worker (what the autoscaler places on nodes)."""
        runs, run_params = _concurrent_runs(template, params)
        bundle = {"CPU": self.settings.train_worker_cpus, **({"GPU": 1.0} if run_params.get("gpu") == "on" else {})}
        return [dict(bundle) for _ in range(runs * int(run_params.get("workers", 1)))]

    def _check_fits(self, template: str, params: dict[str, Any]) -> None:
        """Refuse a task the cluster could never run (unless it can grow)."""
        if self.settings.autoscaling:
            return
        needed, cluster = self.resources_needed(template, params), Resources.of(ray.cluster_resources())
        if not needed.fits(cluster):
            runs, run_params = _concurrent_runs(template, params)
            what = f"{run_params.get('workers', 1)} worker(s)" + (
                f" for each of {runs} concurrent trials" if runs > 1 else ""
            )
            lower = "'max_concurrent_trials' or 'workers'" if runs > 1 else "'workers'"
            raise InvalidArgument(
                f"The task needs {needed.describe()} ({what}) but the whole cluster has {cluster.describe()}: "
                f"lower {lower}, or run it on a cluster that autoscales (AIP_AUTOSCALING=true)"
            )

    def why_waiting(self, tasks: list[Task]) -> dict[str, str]:
        """For each queued task of ``tasks``, why it has not started, as the scheduler's round
        (``_plan_round``) sees it now. It names only the task's own project's tasks (a member of
        one project learns nothing of another's queue): a quota, the room it needs against what
        is free, its project's turn, the tasks of its project ahead of it, the limit at once."""
        waiting = [task for task in tasks if task.state == QUEUED]
        if not waiting:
            return {}
        running = self.queue.running()
        slots = self.settings.task_max_running - len(running)
        queued = self.queue.queued(limit=QUEUE_LOOKAHEAD)
        round_ = self._plan_round(queued, running, time.time(), max(slots, 0))
        plan = round_.plan or fair_share.Plan()
        admitted = {c.task_id for c in plan.admitted}
        too_big = {t.id for t in round_.too_big}
        reasons = {}
        for task in waiting:
            if task.id in too_big:
                needed = self.resources_needed(task.template, task.params)
                grow = (
                    "the autoscaler has been asked for it"
                    if self.settings.autoscaling
                    else "the cluster is not set to autoscale (AIP_AUTOSCALING)"
                )
                reasons[task.id] = (
                    f"needs {needed.describe()}, more than the whole cluster has ({round_.cluster.describe()}); {grow}"
                )
            elif task.id in admitted:
                reasons[task.id] = "starting: the scheduler takes it on its next round"
            elif task.id in plan.waiting:
                reason = plan.waiting[task.id]
                if slots <= 0 and reason == fair_share.MOST_AT_ONCE:
                    reason += f" (AIP_TASK_MAX_RUNNING={self.settings.task_max_running})"
                reasons[task.id] = reason
            else:  # past the tasks the scheduler looks at this round
                reasons[task.id] = "the cluster is busy: the scheduler has not reached it in the queue yet"
        return reasons

    def _log_tail(self, task: Task) -> str | None:
        if not task.ray_job_id:
            return None
        try:
            return self.jobs.logs(task.ray_job_id)
        except (NotFound, Unavailable):
            return None


@dataclass
class _Round:
    """What one scheduler round sees and decides."""

    cluster: Resources
    held: dict[str, Resources]
    free: Resources
    tasks: dict[str, Task] = field(default_factory=dict)
    too_big: list[Task] = field(default_factory=list)
    quotas: dict[str, Quota] = field(default_factory=dict)
    plan: fair_share.Plan | None = None


def check_template_inputs(template: TaskTemplate, params: Any, storage: Storage, project: str) -> None:
    """``template.check_inputs`` with the project when it takes one: a template installed from
    before projects overrides ``check_inputs(self, params, storage)`` and keeps working."""
    if _takes_project(template.check_inputs):
        template.check_inputs(params, storage, project)
    else:
        template.check_inputs(params, storage)  # type: ignore[call-arg]


def _takes_project(check_inputs: Callable[..., None]) -> bool:
    try:
        parameters = list(inspect.signature(check_inputs).parameters.values())
    except (TypeError, ValueError):  # no signature to read: as the base class has it
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def _free(cluster: Resources, held: dict[str, Resources]) -> Resources:
    """What Ray has free, less what running tasks reserve and have not taken yet: a job's workers
    start seconds after it is submitted, and until then Ray counts their CPUs as free."""
    reserved = functools.reduce(Resources.plus, held.values(), fair_share.NOTHING)
    return Resources.of(ray.available_resources()).least(cluster.minus(reserved))


def _concurrent_runs(template: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        return get_template(template).concurrent_runs(params)
    except AIPError:  # a task of a template no longer installed: one run of its parameters
        return 1, params


def _compared_task(record: dict[str, Any]) -> dict[str, Any]:
    """An archived task as ``compare_runs`` shows a task (as the queue's own rows are made)."""
    task = record["task"]
    result = task.get("result") or {}
    latest = (task.get("progress") or {}).get("metrics", {})
    return {
        "id": task["id"],
        "kind": "task",
        "name": task["template"],
        "state": task["state"],
        "params": task["params"],
        "metrics": {**latest, **{k: v for k, v in result.items() if isinstance(v, (int, float))}},
        "history": list(record["metrics_history"]),
    }


def _failure_message(job: JobState, logs: str | None) -> str:
    lines = [line for line in (logs or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    detail = errors[-1] if errors else "\n".join(lines[-LOG_TAIL_LINES:])
    return f"{job.message or 'The Ray job failed'}\n{detail}".strip()


def request_from_autoscaler(bundles: list[dict[str, float]]) -> None:
    """Tell Ray's autoscaler what the waiting tasks need (replaces its previous request)."""
    from ray.autoscaler.sdk import request_resources

    try:
        request_resources(bundles=bundles)
    except Exception:
        logger.warning("could not send the waiting tasks' demand to the autoscaler", exc_info=True)
