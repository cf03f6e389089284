"""Datasets and code archives belong to a project (without Ray): a storage written before projects
(``tests/data/state-before-projects/storage``: a dataset version and a code archive written by the
code before projects) opens unchanged as ``default``'s; another project keeps its own under
``projects/<p>/``, may reuse a name, and finds nothing of another's: not in a listing, a 404 by
name or digest over the API, and a task naming it is refused."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aiplatform.access.store import AccessStore
from aiplatform.api.app import create_api_app
from aiplatform.api.security import AccessPolicy
from aiplatform.code_archives import CodeArchives
from aiplatform.datasets import DatasetManager
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.registry import ModelProjects
from aiplatform.settings import Settings
from aiplatform.storage import open_storage
from aiplatform.training.catalog import get_template

TOKEN = "bootstrap-token-0123456789"
BEFORE_PROJECTS = Path(__file__).resolve().parents[1] / "data" / "state-before-projects" / "storage"
OLD_DATASET = ("old-penguins", "12d7c0d9a8e2340d")
OLD_CODE = "803a00681849ba9f260de6a6037168f54e662332b173c25d0171adf3d8da7110"


def _zip(**files: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def _json(manifest: dict[str, Any], *, version: str) -> bytes:
    return json.dumps({**manifest, "version": version}).encode()


def test_datasets_and_code_from_before_projects_are_defaults_and_projects_keep_their_own(tmp_path: Path) -> None:
    shutil.copytree(BEFORE_PROJECTS, tmp_path / "storage")
    storage = open_storage(str(tmp_path / "storage"))
    default = DatasetManager(storage)
    old = default.get(*OLD_DATASET)
    assert [v.ref for v in default.list_versions()] == [old.ref] == ["old-penguins@12d7c0d9a8e2340d"]
    assert default.read_split_table(old, "train").num_rows == old.rows("train") > 0  # its files, checked
    assert CodeArchives(storage).contents(OLD_CODE)[1] == ["oldpkg/__init__.py", "oldpkg/train.py"]

    b = default.in_project("b")
    assert (b.project, default.project) == ("b", "default") and b.list_versions() == []
    with pytest.raises(NotFound):
        b.get(*OLD_DATASET)
    with pytest.raises(NotFound):
        CodeArchives(storage, "b").contents(OLD_CODE)
    # b keeps a dataset of the same name, and the same archive, under projects/b/
    manifest = {**old.manifest, "created_at": old.manifest["created_at"] + 1}
    storage.put_bytes(f"projects/b/datasets/{OLD_DATASET[0]}/other/manifest.json", _json(manifest, version="other"))
    assert [v.version for v in b.list_versions(OLD_DATASET[0])] == ["other"]
    assert [v.version for v in default.list_versions()] == [OLD_DATASET[1]]  # default's unchanged
    assert CodeArchives(storage, "b").put(storage.get_bytes(f"code/{OLD_CODE}.zip")).digest == OLD_CODE
    assert storage.exists(f"projects/b/code/{OLD_CODE}.zip")
    assert DatasetManager.from_settings(storage, Settings(api_auth="off"), project="b").root == "projects/b/datasets"
    with pytest.raises(InvalidArgument):
        default.in_project("../a")

    # a user-code task of c names an archive it does not have: refused when it is created
    template = get_template("user-code")
    params = template.parse_params({"entry": "oldpkg.train:train", "code": OLD_CODE, "dataset": "mnist"})
    template.check_inputs(params, storage, "default")
    template.check_inputs(params, storage, "b")
    with pytest.raises(NotFound, match="not found"):
        template.check_inputs(params, storage, "c")


def test_dataset_and_code_routes_act_in_the_request_project(tmp_path: Path) -> None:
    shutil.copytree(BEFORE_PROJECTS, tmp_path / "storage")
    storage = open_storage(str(tmp_path / "storage"))
    store = AccessStore.in_state_dir(tmp_path)
    app = create_api_app()
    policy = AccessPolicy("token", TOKEN, ("127.0.0.1",), store, ModelProjects(tmp_path / "registry.sqlite"))
    settings = Settings(api_auth="token", api_token=TOKEN)
    app.state.platform = SimpleNamespace(
        access=policy, storage=storage, datasets=DatasetManager(storage), settings=settings
    )
    client = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    in_b = {**admin, "X-AIP-Project": "b"}
    assert client.post("/v1/projects", json={"name": "b"}, headers=admin).status_code == 201

    name, version = OLD_DATASET
    assert [d["ref"] for d in client.get("/v1/datasets", headers=admin).json()["datasets"]] == [f"{name}@{version}"]
    assert client.get(f"/v1/datasets/{name}/{version}", headers=admin).status_code == 200
    assert client.get(f"/v1/datasets/{name}/{version}/profile", headers=admin).status_code == 200
    assert client.get("/v1/datasets", headers=in_b).json()["datasets"] == []
    for path in (f"/v1/datasets/{name}/{version}", f"/v1/datasets/{name}/{version}/profile"):
        hidden = client.get(path, headers=in_b)
        assert hidden.status_code == 404, (path, hidden.text)
    hidden = client.get(f"/v1/datasets/{name}/{version}/samples?split=train", headers=in_b)
    assert hidden.status_code == 404 and "not found" in hidden.json()["message"]

    archive = _zip(**{"bpkg/__init__.py": "", "bpkg/train.py": "def train(config):\n    pass\n"})
    zipped = {"Content-Type": "application/zip"}
    made = client.post("/v1/code", content=archive, headers={**in_b, **zipped})
    assert made.status_code == 201, made.text
    digest = made.json()["digest"]
    assert client.get(f"/v1/code/{digest}", headers=in_b).json()["members"] == ["bpkg/__init__.py", "bpkg/train.py"]
    assert client.get(f"/v1/code/{digest}", headers=admin).status_code == 404  # default has no such archive
    assert client.get(f"/v1/code/{OLD_CODE}", headers=in_b).status_code == 404
    assert client.get(f"/v1/code/{OLD_CODE}", headers=admin).status_code == 200
