"""The platform's edges (issue 29, second pass): log streams that clients abandon or hoard,
``s3://`` keys that climb out of an allowed prefix, links out of the data root inside an allowed
folder, and the secrets a job the platform submits does (not) see."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aiplatform.api.log_stream import MAX_STREAMS_PER_CLIENT, STREAM_SECONDS
from tests.factories import wait_for
from tests.hostile import TOKEN, refused


@pytest.fixture()
def idle_task(platform: dict[str, Any]) -> Iterator[str]:
    """A task that is created and never started: its log stream stays open until its time is up."""
    created = platform["api"].post(
        "/v1/tasks", json={"template": "text-classification", "params": {"dataset": "tweets-sentiment"}}
    )
    assert created.status_code == 201, created.text
    yield created.json()["id"]
    platform["api"].post(f"/v1/tasks/{created.json()['id']}/cancel")


def _stream_request(platform: dict[str, Any], task_id: str) -> socket.socket:
    """A log stream's request on a connection of its own (a client that may vanish at any moment)."""
    parts = urlsplit(platform["url"])
    connection = socket.create_connection((parts.hostname, parts.port), timeout=60)
    connection.sendall(
        f"GET /v1/tasks/{task_id}/logs/stream HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return connection


def _status(connection: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = connection.recv(1024)
        assert chunk, f"the connection closed after {head!r}"
        head += chunk
    return int(head.split(b" ", 2)[1])


def _served(platform: dict[str, Any], task_id: str) -> bool:
    with closing(_stream_request(platform, task_id)) as connection:
        return _status(connection) == 200


def test_abandoned_log_streams_give_their_slots_back_at_once(platform: dict[str, Any], idle_task: str) -> None:
    # Clients that leave before their response starts, then as many streams as one client may
    # hold, each left (its connection closed) once it is served.
    for _ in range(MAX_STREAMS_PER_CLIENT):
        _stream_request(platform, idle_task).close()
    for _ in range(MAX_STREAMS_PER_CLIENT):
        with closing(_stream_request(platform, idle_task)) as connection:
            assert _status(connection) == 200
    # Before, their slots stayed taken until any stream would have ended (75 s): the same client
    # was refused that long. Each stream notices its client is gone at its next poll.
    started = time.monotonic()
    wait_for(lambda: _served(platform, idle_task), STREAM_SECONDS / 2, "a new stream to be served")
    assert time.monotonic() - started < STREAM_SECONDS / 2


def test_one_client_may_hold_only_a_few_log_streams(platform: dict[str, Any], idle_task: str) -> None:
    with ExitStack() as held:
        for _ in range(MAX_STREAMS_PER_CLIENT):
            connection = held.enter_context(closing(_stream_request(platform, idle_task)))
            assert _status(connection) == 200
        refused(
            platform,
            "GET",
            f"/v1/tasks/{idle_task}/logs/stream",
            503,
            f"{MAX_STREAMS_PER_CLIENT} log streams are open from your address",
        )
    # Its streams closed, the client is served again.
    wait_for(lambda: _served(platform, idle_task), STREAM_SECONDS / 2, "a stream once the others closed")


def test_s3_keys_that_climb_out_of_an_allowed_prefix_are_refused(platform: dict[str, Any]) -> None:
    source = "csv:s3://allowed-bucket/pre/../../other/secret.csv"
    body = refused(
        platform,
        "POST",
        "/v1/tasks",
        400,
        "without '.', '..' or empty segments",
        json={"template": "text-classification", "params": {"dataset": source}, "start": True},
    )
    assert repr(source) in body["message"]


def test_a_link_out_of_the_data_root_inside_an_allowed_folder_is_refused(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    folder = platform["settings"].resolved_data_root / f"reviews-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "reviews.csv").write_text("text,label\ngood,1\nbad,0\n")
    (tmp_path / "secret.csv").write_text("text,label\ns3cr3t,1\n")
    (folder / "more.csv").symlink_to(tmp_path / "secret.csv")
    body = refused(
        platform,
        "POST",
        "/v1/tasks",
        400,
        "'more.csv' in it links outside the data root",
        json={"template": "text-classification", "params": {"dataset": f"csv:{folder.name}"}, "start": True},
    )
    assert "s3cr3t" not in body["message"]


JOB = """
import json, os, ray
from aiplatform.settings import Settings
from aiplatform.storage import storage_from_settings

NAMES = ("AIP_API_TOKEN", "AIP_ALERT_WEBHOOKS", "AIP_S3_SECRET_ACCESS_KEY")

@ray.remote(num_cpus=0)
def worker():
    storage_from_settings(Settings()).put_bytes("edges/worker.txt", b"a worker of the job")
    return {name: os.environ.get(name) for name in NAMES}

storage_from_settings(Settings()).put_bytes("edges/driver.txt", b"the job's driver")
print("SEEN " + json.dumps({"driver": {name: os.environ.get(name) for name in NAMES}, "worker": ray.get(worker.remote())}))
"""


def test_a_job_the_platform_submits_reaches_s3_storage_but_sees_no_other_secret(
    ray_session: None, s3_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    """`aip up`'s head holds no secret in its environment (tests/unit/test_head_env.py): the
    storage's keys reach a job, and its workers, through the job's own runtime env; the API token
    and the webhook URLs never do."""
    from aiplatform.settings import Settings
    from aiplatform.storage import open_storage
    from aiplatform.tasks.ray_jobs import RayJobs

    assert "AIP_S3_SECRET_ACCESS_KEY" not in os.environ  # what the job sees came with the job
    secret = f"key-{uuid.uuid4().hex}"
    settings = Settings(
        home=tmp_path,
        storage_uri=f"{s3_bucket}/platform",
        s3_endpoint_url=s3_server,
        s3_access_key_id="testing",
        s3_secret_access_key=secret,
        api_token="job-must-not-see-this-token",
        alert_webhooks=["https://hooks.example.com/s3cr3t"],
    )
    jobs, job_id = RayJobs(settings), f"edges-{uuid.uuid4().hex[:8]}"
    jobs.submit(job_id, f"{shlex.quote(sys.executable)} -c {shlex.quote(JOB)}", env_vars=settings.to_env(), metadata={})
    done = wait_for(
        lambda: (state := jobs.state(job_id)) is not None and state.terminal and state, 180, "the job to end"
    )
    log = jobs.logs(job_id)
    assert done.status == "SUCCEEDED", log[-3000:]
    [seen] = [json.loads(line[len("SEEN ") :]) for line in log.splitlines() if line.startswith("SEEN {")]
    for process in ("driver", "worker"):
        assert seen[process] == {"AIP_API_TOKEN": None, "AIP_ALERT_WEBHOOKS": None, "AIP_S3_SECRET_ACCESS_KEY": secret}
    storage = open_storage(
        f"{s3_bucket}/platform", endpoint_url=s3_server, access_key_id="testing", secret_access_key=secret
    )
    assert storage.get_bytes("edges/worker.txt") == b"a worker of the job"
    assert storage.get_bytes("edges/driver.txt") == b"the job's driver"
