"""Ray's job API (``JobSubmissionClient``) reduced to what the task manager needs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiplatform.errors import NotFound, Unavailable
from aiplatform.runtime import storage_credentials_env
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)
TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "STOPPED")
DRIVER_LOST_ERRORS = frozenset(
    {"JOB_SUPERVISOR_ACTOR_DIED", "JOB_SUPERVISOR_ACTOR_START_FAILURE", "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE"}
)
"""How Ray's job manager, started again on a new head, marks the jobs whose supervisor (and so
the driver) died with the old one: it cannot find the supervisor, or finds it dead."""


@dataclass(frozen=True)
class JobState:
    """A Ray job as the task manager sees it."""

    submission_id: str
    status: str
    message: str | None
    error_type: str | None = None
    """Ray's ``JobErrorType`` of a failed job (``JOB_SUPERVISOR_ACTOR_DIED``, ...)."""
    driver_node_dead: bool = False
    """The node its driver ran on is dead. Ray keeps such a job RUNNING after its head is
    replaced (GCS fault tolerance) until a job manager is started again, which only a new
    submission does: the platform must not wait for that."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES or self.driver_node_dead

    @property
    def driver_lost(self) -> bool:
        """Ended because its driver's process went away with its node (the head's loss), not
        because its entrypoint failed: the run was interrupted, not refuted."""
        return self.driver_node_dead or (self.status == "FAILED" and self.error_type in DRIVER_LOST_ERRORS)


def dashboard_url(settings: Settings) -> str:
    """The job API's URL: the settings', else the one the cluster publishes in its GCS (a process
    connected to Ray, e.g. the scheduler actor, can always read it)."""
    if settings.dashboard_url:
        return settings.dashboard_url.rstrip("/")
    from ray._private import ray_constants
    from ray.experimental import internal_kv

    address = internal_kv._internal_kv_get(
        ray_constants.DASHBOARD_ADDRESS, namespace=ray_constants.KV_NAMESPACE_DASHBOARD
    )
    if not address:
        raise Unavailable("Ray's job API is not running: start Ray with its dashboard (`aip up` does)")
    return f"http://{address.decode()}"


SUBMIT_ATTEMPTS = 8
SUBMIT_BASE_DELAY_S = 0.5
SUBMIT_MAX_DELAY_S = 8.0


class RayJobs:
    """Submit, follow, stop and read the logs of Ray jobs; the client is made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._dashboard: str | None = None

    def job_url(self, submission_id: str) -> str | None:
        """The job's page in Ray's dashboard (None when the dashboard cannot be found)."""
        if self._dashboard is None:
            try:
                self._dashboard = dashboard_url(self.settings)
            except Unavailable:
                return None
        return f"{self._dashboard}/#/jobs/{quote(submission_id, safe='')}"

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            url = dashboard_url(self.settings)
            try:
                self._client = JobSubmissionClient(url)
            except Exception as exc:
                raise Unavailable(f"Ray's job API at {url} cannot be reached: {exc}") from exc
        return self._client

    def submit(
        self, submission_id: str, entrypoint: str, *, env_vars: dict[str, str], metadata: dict[str, str]
    ) -> None:
        """Submit once: a repeated ``submission_id`` (a retried submit) is accepted as done. A
        refusal that may pass (the head's job agent busy or restarting: "No available agent to
        submit job, please try again later") is retried with backoff for about half a minute.

        The job's environment is ``env_vars`` and the storage's keys: the platform's jobs read and
        write its storage, and the head's environment holds no secret (``aip.local.head_env``)."""
        env_vars = {**env_vars, **storage_credentials_env(self.settings)}
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                self.client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=submission_id,
                    runtime_env={"env_vars": env_vars},
                    metadata=metadata,
                    entrypoint_num_cpus=0,
                )
                return
            except Exception as exc:
                if self._submitted(submission_id):
                    return
                if attempt == SUBMIT_ATTEMPTS:
                    raise Unavailable(
                        f"Ray job {submission_id} could not be submitted after {attempt} attempts: {exc}"
                    ) from exc
                time.sleep(min(SUBMIT_MAX_DELAY_S, SUBMIT_BASE_DELAY_S * 2 ** (attempt - 1)))

    def states(self, submission_ids: Iterable[str]) -> dict[str, JobState]:
        """The state of each of ``submission_ids`` the cluster knows (one it does not is left out);
        :class:`Unavailable` if it cannot say.

        Asked job by job: listing every job the cluster has run costs the job API and its caller
        in proportion to them all, and a scheduler round follows the few that run."""
        details, missing = {}, []
        for submission_id in submission_ids:
            info = self._info(submission_id)
            if info is None:
                missing.append(submission_id)
            else:
                details[submission_id] = info
        if missing:  # rare (a restarted cluster): the list confirms it, whatever an id's characters
            listed = {job.submission_id: job for job in self._list() if job.submission_id in missing}
            details.update(listed)
        # Ray is asked for its dead nodes only while a job is unfinished.
        unfinished = any(str(job.status) not in TERMINAL_STATUSES for job in details.values())
        dead = _dead_nodes() if unfinished else set()
        states = {}
        for submission_id, job in details.items():
            node = getattr(job, "driver_node_id", None)
            orphaned = str(job.status) not in TERMINAL_STATUSES and node in dead
            message = f"the node its driver ran on ({node}) is dead" if orphaned else job.message
            states[submission_id] = JobState(
                submission_id, str(job.status), message, _error_type(job), driver_node_dead=orphaned
            )
        return states

    def state(self, submission_id: str) -> JobState | None:
        """The job's state, or None when the cluster has no such job."""
        info = self._info(submission_id)
        return None if info is None else JobState(submission_id, str(info.status), info.message, _error_type(info))

    def _submitted(self, submission_id: str) -> bool:
        """Whether a refused submit was taken after all (a retried one); False while the job API
        cannot say, so that the next attempt asks again."""
        try:
            return self.state(submission_id) is not None
        except Unavailable:
            return False

    def _list(self) -> list[Any]:
        try:
            return list(self.client.list_jobs())
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(f"Ray's job API cannot list jobs: {exc}") from exc

    def _info(self, submission_id: str) -> Any:
        """Ray's details of the job, or None when the cluster has no such job."""
        try:
            return self.client.get_job_info(submission_id)
        except Unavailable:
            raise
        except Exception as exc:  # the job API unreachable or refusing: this round decides nothing
            if isinstance(exc, RuntimeError) and ("status code 404" in str(exc) or "does not exist" in str(exc)):
                return None
            raise Unavailable(f"Ray's job API cannot describe job {submission_id}: {exc}") from exc

    def stop(self, submission_id: str) -> bool:
        try:
            return bool(self.client.stop_job(submission_id))
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return False
            raise Unavailable(f"Ray job {submission_id} could not be stopped: {exc}") from exc

    def logs(self, submission_id: str) -> str:
        try:
            return str(self.client.get_job_logs(submission_id))
        except RuntimeError as exc:
            if "status code 404" in str(exc) or "does not exist" in str(exc):
                raise NotFound(f"Ray job {submission_id} no longer exists") from None
            raise Unavailable(f"Logs of Ray job {submission_id} cannot be read: {exc}") from exc


def _error_type(info: Any) -> str | None:
    error_type = getattr(info, "error_type", None)
    return None if error_type is None else str(getattr(error_type, "value", error_type))


def _dead_nodes() -> set[str]:
    """Ids of the nodes Ray knows as dead (none when this process is not connected to Ray)."""
    import ray

    if not ray.is_initialized():
        return set()
    try:
        return {node["NodeID"] for node in ray.nodes() if not node.get("Alive")}
    except Exception as exc:  # a GCS that is itself coming back: decide nothing this round
        logger.warning("cannot list Ray's nodes: %s", exc)
        return set()
