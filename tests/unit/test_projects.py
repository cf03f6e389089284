"""Projects and their members in the access store and through the gateway's guard (without Ray),
the project a request acts in, and the task queue and registry scoped by project, including a
state folder written before projects upgraded in place into ``default``."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from aiplatform.access import Action, Principal, authorize, request_action
from aiplatform.access.store import AccessStore
from aiplatform.api.app import create_api_app
from aiplatform.api.security import AccessPolicy
from aiplatform.errors import AlreadyExists, Conflict, Forbidden, InvalidArgument, NotFound
from aiplatform.registry import ModelProjects, RegistryStore
from aiplatform.storage import open_storage, sha256_bytes
from aiplatform.tasks.queue import TaskStore

TOKEN = "bootstrap-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BEFORE_PROJECTS = Path(__file__).resolve().parents[1] / "data" / "state-before-projects"


def test_projects_and_members_in_the_store(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    store.create_user("ann", role="viewer", by="platform")
    made = store.create_project("vision", by="platform")
    assert made["name"] == "vision" and made["members"] == []
    with pytest.raises(AlreadyExists, match="'vision' already exists"):
        store.create_project("vision", by="platform")
    with pytest.raises(InvalidArgument, match="Project name"):
        store.create_project("Bad Name", by="platform")
    with pytest.raises(NotFound, match="User 'nobody' not found"):
        store.set_member("vision", "nobody", "member", by="platform")
    with pytest.raises(NotFound, match="Project 'nope' not found"):
        store.set_member("nope", "ann", "member", by="platform")
    with pytest.raises(InvalidArgument, match="Unknown role 'boss'"):
        store.set_member("vision", "ann", "boss", by="platform")
    store.set_member("vision", "ann", "member", by="platform")
    store.set_member("vision", "ann", "maintainer", by="platform")  # a change, not a second row
    assert store.project("vision")["members"][0] | {"granted_at": 0} == {
        "user": "ann",
        "role": "maintainer",
        "granted_at": 0,
        "granted_by": "platform",
    }
    assert [p["name"] for p in store.projects()] == ["default", "vision"]
    assert [p["name"] for p in store.projects(["vision"])] == ["vision"]
    # a key names its project; a user may only have keys in projects they hold a role in
    key, secret = store.create_key("ann", name="v", project="vision", by="ann")
    assert key["project"] == "vision"
    principal = store.authenticate(secret)
    assert principal is not None and principal.project == "vision"
    assert principal.roles == {"default": "viewer", "vision": "maintainer"}
    store.create_project("audio", by="platform")
    with pytest.raises(InvalidArgument, match="no role in project 'audio'"):
        store.create_key("ann", name="a", project="audio", by="ann")
    store.remove_member("vision", "ann")
    with pytest.raises(NotFound, match="not a member of project 'vision'"):
        store.remove_member("vision", "ann")
    assert store.authenticate(secret).roles == {"default": "viewer"}  # type: ignore[union-attr]


def test_authorization_in_a_project() -> None:
    ann = Principal("ann", "user", roles={"a": "member", "b": "viewer"})
    authorize(ann, Action.CREATE, project="a")
    authorize(ann, Action.READ, project="b")
    with pytest.raises(Forbidden, match="member role in project 'b'"):
        authorize(ann, Action.CREATE, project="b")
    with pytest.raises(NotFound, match="Project 'c' not found"):
        authorize(ann, Action.READ, project="c")
    service = Principal("app", "service", models=frozenset({"m"}), project="b")
    authorize(service, Action.INFER, project="b", model="m")
    with pytest.raises(NotFound, match="Model 'm' not found"):
        authorize(service, Action.INFER, project="a", model="m")
    assert request_action("PUT", "/v1/projects/a/members/ann").project == "a"
    assert request_action("PUT", "/v1/projects/a/members/ann").action is Action.MANAGE
    assert request_action("GET", "/v1/projects/a/members").action is Action.READ
    assert request_action("POST", "/v1/projects").action is Action.ADMINISTER
    assert request_action("GET", "/v1/projects").action is Action.IDENTIFY


def test_projects_routes_and_the_project_a_request_acts_in(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    registry = RegistryStore(tmp_path / "registry.sqlite", open_storage(str(tmp_path / "art")))
    registry.claim_model("b-model", "b")
    content = b"pkg"
    registry.storage.put_bytes("packages/b-model/p.zip", content)
    registry.register_version(
        "b-model", package_key="packages/b-model/p.zip", sha256=sha256_bytes(content), template="t"
    )
    app = create_api_app()
    policy = AccessPolicy("token", TOKEN, ("127.0.0.1",), store, ModelProjects(tmp_path / "registry.sqlite"))
    app.state.platform = SimpleNamespace(access=policy)

    client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    assert client.post("/v1/projects", json={"name": "a"}, headers=ADMIN).status_code == 201
    assert client.post("/v1/projects", json={"name": "b"}, headers=ADMIN).status_code == 201
    assert client.post("/v1/projects", json={"name": "a"}, headers=ADMIN).status_code == 409
    bad = client.post("/v1/projects", json={"name": "../x"}, headers=ADMIN)
    assert bad.status_code == 400 and "Project name" in bad.json()["message"]
    for user in ("mo", "al", "vi"):
        assert client.post("/v1/users", json={"name": user}, headers=ADMIN).status_code == 201
    assert (
        client.post("/v1/projects/a/members", json={"user": "mo", "role": "maintainer"}, headers=ADMIN).status_code
        == 200
    )
    mo = {
        "Authorization": "Bearer "
        + client.post("/v1/users/mo/keys", json={"name": "k"}, headers=ADMIN).json()["secret"]
    }
    # a maintainer of a manages a's members, up to their own role; not b's (404: no role there)
    assert client.put("/v1/projects/a/members/al", json={"role": "member"}, headers=mo).status_code == 200
    too_high = client.put("/v1/projects/a/members/vi", json={"role": "admin"}, headers=mo)
    assert too_high.status_code == 403 and "admin role" in too_high.json()["message"]
    hidden = client.put("/v1/projects/b/members/vi", json={"role": "viewer"}, headers=mo)
    assert hidden.status_code == 404 and "Project 'b' not found" in hidden.json()["message"]
    assert client.put("/v1/projects/a/members/ghost", json={"role": "viewer"}, headers=mo).status_code == 404
    assert client.put("/v1/projects/a/members/al", json={"role": "boss"}, headers=mo).status_code == 400
    al = {
        "Authorization": "Bearer "
        + client.post("/v1/users/al/keys", json={"name": "k", "project": "a"}, headers=ADMIN).json()["secret"]
    }
    assert client.put("/v1/projects/a/members/vi", json={"role": "viewer"}, headers=al).status_code == 403
    assert [m["user"] for m in client.get("/v1/projects/a/members", headers=al).json()["members"]] == ["al", "mo"]
    assert [p["name"] for p in client.get("/v1/projects", headers=al).json()["projects"]] == ["a", "default"]
    assert len(client.get("/v1/projects", headers=ADMIN).json()["projects"]) == 3
    assert client.get("/v1/whoami", headers=al).json()["project"] == "a"
    # which project: the header, else ?project=, else the key's, else default; unknown: 404
    assert client.get("/v1/models", headers={**al, "X-AIP-Project": "b"}).status_code == 404
    assert client.get("/v1/models?project=b", headers=al).status_code == 404
    assert client.get("/v1/models", headers={**ADMIN, "X-AIP-Project": "nope"}).status_code == 404
    assert client.get("/v1/models", headers={**ADMIN, "X-AIP-Project": "Not valid"}).status_code == 400
    # a request on a model acts in the model's project, whatever the caller names
    assert client.get("/v1/models/b-model", headers={**al, "X-AIP-Project": "a"}).status_code == 404
    entries, _ = store.audit(principal="al", outcome="denied")
    assert entries[0]["project"] == "b"
    assert client.delete("/v1/projects/a/members/al", headers=mo).status_code == 200
    assert client.get("/v1/projects/a", headers=al).status_code == 404  # gone at once


def test_a_state_folder_from_before_projects_upgrades_into_default(tmp_path: Path) -> None:
    for name in ("tasks.sqlite", "registry.sqlite"):
        shutil.copy(BEFORE_PROJECTS / name, tmp_path / name)
    # the guard reads a registry the registry actor has not upgraded yet: every model is default's
    assert ModelProjects(tmp_path / "registry.sqlite").project_of("old-cnn") == "default"
    tasks = TaskStore(tmp_path / "tasks.sqlite")
    old = tasks.list()
    assert [t.template for t in old] == ["sweep", "cnn-classification"]
    assert {t.project for t in old} == {"default"}
    assert [t.id for t in tasks.list(project="default")] == [t.id for t in old]
    assert tasks.list(project="b") == [] and tasks.counts("b")["total"] == 0
    assert tasks.counts("default") == tasks.counts() and tasks.counts()["total"] == 2
    done = old[1]
    assert done.state == "SUCCEEDED" and done.result == {"version": 1} and done.model_name == "old-cnn"
    assert tasks.metrics_history(done.id) == [{"epoch": 0, "epochs": 1, "val_accuracy": 0.5}]
    assert len(tasks.trials(old[0].id)) == 1
    assert tasks.create("cnn-classification", {"epochs": 1}, idempotency_key="first").id == done.id
    with pytest.raises(Conflict, match="already used"):
        tasks.create("cnn-classification", {"epochs": 1}, idempotency_key="first", project="b")
    mine = tasks.create("cnn-classification", {"epochs": 1}, project="b")
    assert [t.id for t in tasks.list(project="b")] == [mine.id] and tasks.counts("b")["CREATED"] == 1
    assert mine.id not in [t.id for t in tasks.list(project="default")]
    tasks.close()
    TaskStore(tmp_path / "tasks.sqlite").close()  # a second open changes nothing

    registry = RegistryStore(tmp_path / "registry.sqlite", open_storage(str(tmp_path / "art")))
    assert [m["name"] for m in registry.list_models("default")] == ["old-cnn"]
    assert registry.list_models("b") == []
    assert registry.model_project("old-cnn") == "default"
    assert [v.version for v in registry.list_versions("old-cnn")] == [2, 1]
    assert registry.aliases("old-cnn") == {"production": 1}
    assert registry.get_traffic("old-cnn") == {1: 90.0, 2: 10.0}
    assert registry.get_version("old-cnn", 1).metrics == {"test_accuracy": 0.9}
    # names stay unique on the platform: another project cannot take one
    with pytest.raises(Conflict, match="belongs to another project"):
        registry.claim_model("old-cnn", "b")
    assert registry.claim_model("new-b", "b") == "b"
    with pytest.raises(Conflict, match="belongs to another project"):
        registry.claim_model("new-b", "default")
    content = b"b-package"
    registry.storage.put_bytes("packages/new-b/x.zip", content)
    version = registry.register_version(
        "new-b", package_key="packages/new-b/x.zip", sha256=sha256_bytes(content), template="t"
    )
    assert version.version == 1 and registry.model_project("new-b") == "b"
    assert [m["name"] for m in registry.list_models("b")] == ["new-b"]
    assert [m["name"] for m in registry.list_models()] == ["new-b", "old-cnn"]
    assert ModelProjects(tmp_path / "registry.sqlite").project_of("new-b") == "b"
    assert ModelProjects(tmp_path / "registry.sqlite").project_of("nothing") is None


def test_the_cli_acts_in_the_project_it_names() -> None:
    from aip.cli import build_parser
    from aiplatform.settings import Settings

    args = build_parser().parse_args(["--project", "b", "projects", "add-member", "b", "ann", "--role", "member"])
    assert (args.project, args.name, args.user, args.role) == ("b", "b", "ann", "member")
    headers = Settings(api_token="t" * 20, project="b").api_auth_headers()
    assert headers == {"Authorization": f"Bearer {'t' * 20}", "X-AIP-Project": "b"}
    assert "X-AIP-Project" not in Settings(api_token="t" * 20).api_auth_headers()


def test_renaming_and_deleting_projects(tmp_path: Path) -> None:
    store = AccessStore.in_state_dir(tmp_path)
    tasks = TaskStore(tmp_path / "tasks.sqlite")
    storage = open_storage(str(tmp_path / "art"))
    registry = RegistryStore(tmp_path / "registry.sqlite", storage)
    app = create_api_app()
    policy = AccessPolicy("token", TOKEN, ("127.0.0.1",), store, ModelProjects(tmp_path / "registry.sqlite"))
    app.state.platform = SimpleNamespace(access=policy, storage=storage, pools=None)  # no Serve here
    client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    for name in ("busy", "empty", "gone"):
        assert client.post("/v1/projects", json={"name": name}, headers=ADMIN).status_code == 201
    assert client.post("/v1/users", json={"name": "mo"}, headers=ADMIN).status_code == 201
    client.put("/v1/projects/empty/members/mo", json={"role": "maintainer"}, headers=ADMIN)
    made = client.post("/v1/users/mo/keys", json={"name": "k", "project": "empty"}, headers=ADMIN).json()
    mo = {"Authorization": f"Bearer {made['secret']}"}
    tasks.create("cnn-classification", {"epochs": 1}, project="busy")
    tasks.create("cnn-classification", {"epochs": 1}, project="busy")
    tasks.create("sweep", {"trials": 2}, project="busy")
    registry.claim_model("busy-model", "busy")

    # platform admins only: a maintainer of the project is refused, a stranger learns nothing
    refused = client.patch("/v1/projects/empty", json={"name": "x"}, headers=mo)
    assert refused.status_code == 403 and "platform admin" in refused.json()["message"]
    assert client.delete("/v1/projects/busy", headers=mo).status_code == 403
    assert client.delete("/v1/projects/nope", headers=ADMIN).status_code == 404
    assert client.patch("/v1/projects/nope", json={"name": "x"}, headers=ADMIN).status_code == 404
    for answer in (
        client.patch("/v1/projects/default", json={"name": "x"}, headers=ADMIN),
        client.delete("/v1/projects/default", headers=ADMIN),
    ):
        assert answer.status_code == 409 and "'default' cannot be" in answer.json()["message"]
    # what a project holds is named, and nothing changes
    held = client.delete("/v1/projects/busy", headers=ADMIN)
    assert held.status_code == 409
    assert "holds 2 tasks, 1 sweep, 1 claimed model name" in held.json()["message"]
    held = client.patch("/v1/projects/busy", json={"name": "b2"}, headers=ADMIN)
    assert held.status_code == 409 and "cannot be renamed" in held.json()["message"]
    assert [p["name"] for p in store.projects()] == ["busy", "default", "empty", "gone"]
    assert client.patch("/v1/projects/empty", json={"name": "gone"}, headers=ADMIN).status_code == 409
    assert client.patch("/v1/projects/empty", json={"name": "Bad!"}, headers=ADMIN).status_code == 400

    # an empty project is renamed: its members, keys and quota follow
    with sqlite3.connect(tmp_path / "access.db") as db:  # the quota store's table, in the same file
        db.execute("CREATE TABLE IF NOT EXISTS project_quotas (project TEXT PRIMARY KEY, cpus REAL)")
        db.execute("INSERT INTO project_quotas VALUES ('empty', 4)")
    renamed = client.patch("/v1/projects/empty", json={"name": "vision"}, headers=ADMIN)
    assert renamed.status_code == 200 and [m["user"] for m in renamed.json()["members"]] == ["mo"]
    assert client.get("/v1/projects/vision/members", headers=mo).status_code == 200
    assert client.get("/v1/whoami", headers=mo).json()["project"] == "vision"
    assert client.get("/v1/projects/empty", headers=ADMIN).status_code == 404
    quotas = sqlite3.connect(tmp_path / "access.db")
    assert quotas.execute("SELECT * FROM project_quotas").fetchall() == [("vision", 4.0)]
    # and deleted: its members lose their roles, its keys stop
    gone = client.delete("/v1/projects/vision", headers=ADMIN)
    assert gone.status_code == 200 and gone.json() == {"project": "vision", "members": 1, "keys_revoked": 1}
    assert client.get("/v1/whoami", headers=mo).status_code == 401
    assert [p["name"] for p in store.projects()] == ["busy", "default", "gone"]
    assert store.user("mo")["roles"] == {"default": "viewer"}
    assert quotas.execute("SELECT * FROM project_quotas").fetchall() == []
    entries, _ = store.audit(principal="platform", action="administer")
    assert [e["method"] for e in entries[:2]] == ["DELETE", "PATCH"]
    # a model registered in a project is held too
    content = b"pkg"
    registry.storage.put_bytes("packages/busy-model/p.zip", content)
    registry.register_version(
        "busy-model", package_key="packages/busy-model/p.zip", sha256=sha256_bytes(content), template="t"
    )
    assert "1 model" in client.delete("/v1/projects/busy", headers=ADMIN).json()["message"]
    # what a project keeps in storage is held too (a new project of its name would inherit it)
    archive = "projects/gone/code/" + "0" * 64 + ".zip"
    storage.put_bytes(archive, b"zip")
    kept = client.delete("/v1/projects/gone", headers=ADMIN)
    assert kept.status_code == 409 and "1 code archive" in kept.json()["message"]
    assert client.patch("/v1/projects/gone", json={"name": "g2"}, headers=ADMIN).status_code == 409
    storage.delete(archive)
    assert client.delete("/v1/projects/gone", headers=ADMIN).status_code == 200
