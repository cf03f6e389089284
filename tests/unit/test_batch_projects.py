"""A batch job's dataset input is its task's project's (without Ray): two projects each with a
dataset of the same name, and a job of each reads its own; a project without one finds none."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aiplatform.batch.checks import check_stored_input
from aiplatform.batch.params import BatchInputSpec, BatchParams
from aiplatform.batch.sources import dataset_version, resolve_source
from aiplatform.datasets import DatasetManager
from aiplatform.errors import NotFound
from aiplatform.storage import open_storage, sha256_bytes

pytestmark = pytest.mark.unit

BEFORE_PROJECTS = Path(__file__).resolve().parents[1] / "data" / "state-before-projects" / "storage"
NAME = "old-penguins"


def test_a_dataset_input_resolves_in_the_jobs_project(tmp_path: Path) -> None:
    shutil.copytree(BEFORE_PROJECTS, tmp_path / "storage")
    storage = open_storage(str(tmp_path / "storage"))
    old = DatasetManager(storage).list_versions(NAME)[0]
    # b's dataset of the same name: its test split is default's train split (23 rows, not 5)
    train = storage.get_bytes(old.files("train")[0]["key"])
    key = f"projects/b/datasets/{NAME}/other/data/test.parquet"
    storage.put_bytes(key, train)
    splits = {
        **old.manifest["splits"],
        "test": {"rows": old.rows("train"), "files": [{"key": key, "sha256": sha256_bytes(train)}]},
    }
    manifest = {**old.manifest, "version": "other", "splits": splits}
    storage.put_bytes(f"projects/b/datasets/{NAME}/other/manifest.json", json.dumps(manifest).encode())

    spec = BatchInputSpec(dataset=NAME)
    params = BatchParams.model_validate({"model": "m", "input": {"dataset": NAME}})
    assert dataset_version(spec, storage).ref == old.ref  # default's, as before projects
    assert dataset_version(spec, storage, "b").ref == f"{NAME}@other"
    assert resolve_source(spec, storage).describe == f"{old.ref}:test"
    mine = resolve_source(spec, storage, "b")
    assert (mine.describe, mine.files, mine.rows) == (f"{NAME}@other:test", [(key, old.rows("train"))], 23)
    assert (check_stored_input(params, storage), check_stored_input(params, storage, "b")) == (5, 23)
    # a project without the dataset finds none, by name or by version
    with pytest.raises(NotFound):
        resolve_source(spec, storage, "c")
    with pytest.raises(NotFound):
        dataset_version(BatchInputSpec(dataset=NAME, dataset_version=old.version), storage, "b")
