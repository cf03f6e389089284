"""``aip login``: the gateway, key and default project kept in the CLI's config file (0600) and
used by later commands (``--project`` and the ``AIP_*`` environment still override; the key never
goes to another gateway), against the real API app served on loopback (no Ray)."""

from __future__ import annotations

import io
import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from aip.cli import main
from aip.login_cli import CONFIG_ENV, with_login
from aiplatform.access.store import AccessStore
from aiplatform.api.security import AccessPolicy
from aiplatform.registry import ModelProjects
from aiplatform.settings import Settings
from aiplatform.tasks.manager import TaskManager
from aiplatform.tasks.queue import TaskStore
from aiplatform.tasks.ray_jobs import RayJobs
from tests.factories import free_port, wait_for

TOKEN = "bootstrap-token-0123456789"


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[tuple[str, AccessStore, TaskStore]]:
    import uvicorn

    from aiplatform.api.app import create_api_app

    store = AccessStore.in_state_dir(tmp_path)
    app = create_api_app()
    policy = AccessPolicy("token", TOKEN, ("127.0.0.1",), store, ModelProjects(tmp_path / "registry.sqlite"))
    queue = TaskStore(tmp_path / "tasks.sqlite")
    settings = Settings(autoscaling=True)
    tasks = TaskManager(queue, RayJobs(settings), settings)  # type: ignore[arg-type]
    app.state.platform = SimpleNamespace(access=policy, tasks=tasks, settings=settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 60, "the API server to listen")
    yield f"http://127.0.0.1:{port}", store, queue
    server.should_exit = True
    thread.join(30)
    queue.close()


def test_login_keeps_the_gateway_key_and_project_for_later_commands(
    gateway: tuple[str, AccessStore, TaskStore],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, store, queue = gateway
    for name in ("AIP_API_URL", "AIP_API_TOKEN", "AIP_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "home" / "login.json"
    monkeypatch.setenv(CONFIG_ENV, str(config))
    store.create_user("ann", role="member", by="platform")
    store.create_project("vision", by="platform")
    store.set_member("vision", "ann", "member", by="platform")
    _, key = store.create_key("ann", name="laptop", by="ann")

    # bad input: a key that is none, a project not hers, a URL that is none; nothing is written
    monkeypatch.setattr("sys.stdin", io.StringIO("aip_not-a-key-at-all-0123456789\n"))
    assert main(["login", "--url", url, "--key", "-"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    assert main(["login", "--url", url, "--key", "-", "--project", "audio"]) == 2
    assert "Project 'audio' not found" in capsys.readouterr().err
    assert main(["login", "--url", "ftp://x", "--key", key]) == 2
    assert not config.exists()

    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    assert main(["login", "--url", url + "/", "--key", "-", "--project", "vision"]) == 0
    assert "as ann; commands act in vision" in capsys.readouterr().out
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": url, "key": key, "project": "vision", "user": "ann"}
    # later commands use it: who am I, and the project they act in (a listing of hers)
    assert main(["whoami", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "ann"
    sweep = queue.create("sweep", {"template": "cnn-classification"}, project="vision")
    assert main(["sweeps", "list", "--json"]) == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)["sweeps"]] == [sweep.id]
    assert main(["--project", "default", "sweeps", "list", "--json"]) == 0  # --project still overrides
    assert json.loads(capsys.readouterr().out)["sweeps"] == []
    # a second login replaces the file whole, still 0600
    assert main(["login", "--url", url, "--key", key]) == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and json.loads(config.read_text())["project"] is None
    assert main(["logout"]) == 0 and not config.exists()
    assert main(["logout"]) == 0 and "not logged in" in capsys.readouterr().out


def test_the_environment_and_project_flag_override_the_login() -> None:
    login = {"url": "http://gw:8000", "key": "aip_secret", "project": "vision"}
    used = with_login(Settings(), login)
    assert (used.api_url, used.project) == ("http://gw:8000", "vision")
    assert used.api_token == SecretStr("aip_secret")
    # AIP_PROJECT and AIP_API_TOKEN win; the login's key never goes to another gateway
    assert with_login(Settings(project="other"), login).project == "other"
    assert with_login(Settings(api_token="t" * 20), login).api_token == SecretStr("t" * 20)
    elsewhere = with_login(Settings(api_url="http://other:8000"), login)
    assert elsewhere.api_url == "http://other:8000" and elsewhere.api_token is None
    assert with_login(Settings(api_url="http://gw:8000/"), login).api_token == SecretStr("aip_secret")
    assert with_login(Settings(), {}) == Settings()
