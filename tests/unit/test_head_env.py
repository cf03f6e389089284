"""`aip up` starts Ray's head with the operator's environment, which every worker inherits (Serve
replicas, jobs, users' code): the platform's secrets are taken out of it, and the jobs the
platform submits get the storage's keys, and nothing else secret, in their own runtime env."""

from __future__ import annotations

from typing import Any

import pytest

from aip.local import LOCAL_RAY_ENV, head_env
from aiplatform.runtime import ONE_MACHINE_ENV, SECRET_ENV_NAMES, storage_credentials_env
from aiplatform.settings import Settings
from aiplatform.tasks.ray_jobs import RayJobs

pytestmark = pytest.mark.unit

SECRETS = {
    "AIP_API_TOKEN": "api-token-0123456789",
    "AIP_S3_ACCESS_KEY_ID": "AKIA-id",
    "AIP_S3_SECRET_ACCESS_KEY": "s3-secret-key",
    "AIP_ALERT_WEBHOOKS": '["https://hooks.example.com/s3cr3t"]',
    "aip_api_token": "lower-case-token-0123",
}  # pydantic-settings reads AIP_* in any case


def test_the_heads_environment_keeps_the_operators_settings_but_not_the_platforms_secrets() -> None:
    operator = {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "AIP_HOME": "/srv/aip",
        "AIP_STORAGE_URI": "s3://b/p",
        "AIP_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        **SECRETS,
    }
    env = head_env(operator)
    assert not set(SECRETS) & set(env)
    assert not any(value in SECRETS.values() for value in env.values())
    assert {k: env[k] for k in ("PATH", "HOME", "AIP_HOME", "AIP_STORAGE_URI", "AIP_S3_ENDPOINT_URL")} == {
        k: operator[k] for k in ("PATH", "HOME", "AIP_HOME", "AIP_STORAGE_URI", "AIP_S3_ENDPOINT_URL")
    }
    assert LOCAL_RAY_ENV.items() <= env.items()


def test_the_head_gets_rays_one_machine_sizes_unless_the_operator_chose_others() -> None:
    assert ONE_MACHINE_ENV.items() <= head_env({"PATH": "/usr/bin"}).items()
    chosen = head_env({"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "16"})
    assert chosen["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "16"
    assert chosen["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"


def test_every_secret_setting_is_kept_out_of_the_heads_environment() -> None:
    # A new SecretStr setting joins by its type; these four are the ones there are today.
    assert {
        "AIP_API_TOKEN",
        "AIP_S3_ACCESS_KEY_ID",
        "AIP_S3_SECRET_ACCESS_KEY",
        "AIP_ALERT_WEBHOOKS",
    } <= SECRET_ENV_NAMES
    assert not {"AIP_HOME", "AIP_STORAGE_URI", "AIP_S3_ENDPOINT_URL", "AIP_API_AUTH"} & SECRET_ENV_NAMES


class RecordingJobClient:
    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit_job(self, **request: Any) -> None:
        self.submitted.append(request)


@pytest.mark.parametrize("keys", [True, False])
def test_a_submitted_job_gets_the_storage_keys_and_no_other_secret(keys: bool) -> None:
    s3 = {"s3_access_key_id": "AKIA-id", "s3_secret_access_key": "s3-secret-key"} if keys else {}
    settings = Settings(api_token="api-token-0123456789", alert_webhooks=["https://hooks.example.com/s3cr3t"], **s3)
    jobs = RayJobs(settings)
    jobs._client = client = RecordingJobClient()
    jobs.submit("job-1", "python -m jobs.train", env_vars={**settings.to_env(), "X": "1"}, metadata={})
    env = client.submitted[0]["runtime_env"]["env_vars"]
    assert env["X"] == "1" and env["AIP_HOME"] == str(settings.home)
    assert "AIP_API_TOKEN" not in env and "AIP_ALERT_WEBHOOKS" not in env
    assert not any("api-token" in value or "s3cr3t" in value for value in env.values())
    expected = {"AIP_S3_ACCESS_KEY_ID": "AKIA-id", "AIP_S3_SECRET_ACCESS_KEY": "s3-secret-key"} if keys else {}
    assert storage_credentials_env(settings) == expected
    assert {k: v for k, v in env.items() if k.startswith("AIP_S3_")} == expected
