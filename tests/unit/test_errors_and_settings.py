from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from aiplatform.errors import (
    AIPError,
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidArgument,
    NotFound,
    Unavailable,
    http_status,
)
from aiplatform.settings import Settings


@pytest.mark.parametrize(
    "error, status",
    [
        (InvalidArgument("x"), 400),
        (IntegrityError("x"), 400),
        (NotFound("x"), 404),
        (AlreadyExists("x"), 409),
        (Conflict("x"), 409),
        (Unavailable("x"), 503),
        (AIPError("x"), 500),
    ],
)
def test_every_error_maps_to_an_http_status(error: AIPError, status: int) -> None:
    assert http_status(error) == status
    assert error.to_dict() == {"error": error.code, "message": "x"}


def test_errors_survive_pickling_with_type_and_message() -> None:
    error = pickle.loads(pickle.dumps(NotFound("Model version (name=a, version=3) not found")))
    assert isinstance(error, NotFound)
    assert error.message == "Model version (name=a, version=3) not found"


def test_settings_read_aip_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIP_HOME", str(tmp_path))
    monkeypatch.setenv("AIP_STORAGE_URI", "s3://bucket/prefix")
    monkeypatch.setenv("AIP_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AIP_TRAIN_WORKER_CPUS", "0.25")
    settings = Settings()
    assert settings.resolved_storage_uri == "s3://bucket/prefix"
    assert settings.resolved_state_dir == tmp_path / "state"
    assert settings.train_worker_cpus == 0.25
    assert settings.s3_storage_options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}


def test_settings_defaults_serve_one_machine(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.resolved_storage_uri == str(tmp_path / "artifacts")
    assert settings.ray_address is None


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIP_TRAIN_WORKER_CPUS", "0")
    with pytest.raises(ValueError, match="train_worker_cpus must be > 0"):
        Settings()


def test_secrets_in_settings_never_show_in_their_repr_or_in_errors() -> None:
    from pydantic import ValidationError

    secret_hook = "https://hooks.example.com/services/T000/B000/s3cr3t"
    settings = Settings(
        s3_access_key_id="AKIA-s3cr3t",
        s3_secret_access_key="s3cr3t-key",
        api_token="s3cr3t-token-0123456",
        alert_webhooks=[secret_hook],
    )
    shown = repr(settings) + str(settings.model_dump())
    assert "s3cr3t" not in shown
    assert settings.webhook_urls == [secret_hook] and settings.s3_storage_options["secret"] == "s3cr3t-key"
    assert not {"AIP_S3_SECRET_ACCESS_KEY", "AIP_API_TOKEN", "AIP_ALERT_WEBHOOKS"} & set(settings.to_env())
    with pytest.raises(ValidationError) as refused:
        Settings(alert_webhooks=["ftp://s3cr3t@hooks.example.com/x"])
    assert "webhook URL #1" in str(refused.value) and "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize("token", [" ", "", "short-token", "   s3cr3t-pad   "])
def test_a_blank_or_short_api_token_refuses_to_start_naming_the_setting_not_the_value(
    token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import ValidationError

    from aip.cli import main

    with pytest.raises(ValidationError) as refused:
        Settings(api_token=token)
    assert "api_token (AIP_API_TOKEN) must be at least 16 characters" in str(refused.value)
    assert (token.strip() or "<none>") not in str(refused.value)
    # `aip` refuses to start with the same words, before it reaches anything.
    monkeypatch.setenv("AIP_HOME", str(tmp_path))
    monkeypatch.setenv("AIP_API_TOKEN", token)
    assert main(["models", "list"]) == 2
    shown = capsys.readouterr().err
    assert "error: setting api_token" in shown and "at least 16 characters" in shown
    assert token.strip() not in shown or not token.strip()
    assert not (tmp_path / "state").exists()


def test_the_api_token_is_stripped_and_a_short_token_file_is_refused(tmp_path: Path) -> None:
    from aiplatform.tokens import api_token_path, with_api_token

    assert Settings(api_token="  a-token-of-16-chars  ").api_token.get_secret_value() == "a-token-of-16-chars"
    settings = Settings(home=tmp_path)
    api_token_path(settings).parent.mkdir(parents=True)
    api_token_path(settings).write_text("abc\n")
    with pytest.raises(InvalidArgument, match="shorter than 16 characters; delete the file"):
        with_api_token(settings, create=True)
