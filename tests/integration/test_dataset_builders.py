"""The dataset builder contract: every registered builder builds a small real dataset through the
manager, and the version it leaves is what readers and training rely on, whatever its format.

A new builder joins ``builders.BUILDERS`` and gives ``EXAMPLES`` a small source of its format; the
same checks then run on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from aiplatform.datasets import DatasetManager, ImageDatasetSpec, TabularDatasetSpec, TextDatasetSpec
from aiplatform.datasets.builders import BUILDERS, builder_for
from aiplatform.datasets.spec import SPLITS
from aiplatform.kinds import kind_class
from aiplatform.storage import open_storage


def image_example(tmp_path: Path) -> ImageDatasetSpec:
    """The built-in digits, cut short (as test_datasets.py builds them)."""
    return ImageDatasetSpec(source="mnist", max_rows=200)


def text_example(tmp_path: Path) -> TextDatasetSpec:
    """Two classes of short reviews in a CSV (as test_text_datasets.py writes them)."""
    rows = ["review,stars"]
    rows += [f"great product number {i},good" for i in range(30)]
    rows += [f"awful thing number {i},bad" for i in range(30)]
    source = tmp_path / "reviews.csv"
    source.write_text("\n".join(rows) + "\n")
    return TextDatasetSpec(source=f"csv:{source}", text_column="review", label_column="stars")


def table_example(tmp_path: Path) -> TabularDatasetSpec:
    """The built-in penguins table (test_tabular.py trains on it)."""
    return TabularDatasetSpec(source="penguins")


EXAMPLES: dict[type[BaseModel], Callable[[Path], BaseModel]] = {
    ImageDatasetSpec: image_example,
    TextDatasetSpec: text_example,
    TabularDatasetSpec: table_example,
}


def test_every_registered_builder_has_an_example() -> None:
    assert set(EXAMPLES) == set(BUILDERS), "give EXAMPLES a small source for each builder in BUILDERS"


@pytest.mark.parametrize("spec_type", list(BUILDERS), ids=lambda spec_type: spec_type.__name__)
def test_builder_contract(ray_session: None, tmp_path: Path, spec_type: type[BaseModel]) -> None:
    manager = DatasetManager(open_storage(str(tmp_path / "artifacts")))
    spec = EXAMPLES[spec_type](tmp_path)
    builder = builder_for(spec)
    version = manager.build(spec)
    m = version.manifest

    # The manifest's common header, written by the manager for every format.
    assert (m["format"], m["kind"]) == (builder.manifest_format, builder.kind)
    assert m["name"] == spec.dataset_name and m["version"] == spec.version_id(m["source_fingerprint"])  # type: ignore[attr-defined]
    assert m["spec"] == spec.model_dump(mode="json") and m["build_seconds"] >= 0
    assert len(m["labels"]) >= 2 and len(m["content_hash"]) == 64

    # The layout: the manifest at the version's root names every parquet file its build wrote,
    # each under the build's folder, partitioned by split.
    root = f"datasets/{version.name}/{version.version}"
    assert json.loads(manager.storage.get_bytes(f"{root}/manifest.json")) == m
    named = {entry["key"]: entry for split in SPLITS for entry in version.files(split)}
    written = {key for key in manager.storage.find_unsealed(root) if key.endswith(".parquet")}
    assert written == set(named), "files written and files named differ"
    for split in SPLITS:
        for entry in version.files(split):
            folder = entry["key"][len(root) + 1 :].split("/", 1)[0]
            assert folder.startswith("build-") and f"/data/split={split}/" in entry["key"], entry["key"]

    # Each file as sealed: its bytes hash to the manifest's sha256 and have its size.
    filesystem = manager.storage.arrow_filesystem()
    for key, entry in named.items():
        with filesystem.open_input_file(manager.storage.arrow_path(key)) as handle:
            data = handle.readall()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["size"]), key
        assert manager.storage.recorded_sha256(key) == entry["sha256"]

    # Row counts: what the manifest says is what a reader finds, in the columns the kind reads.
    assert version.rows("train") > 0
    for split in SPLITS:
        rows = version.rows(split)
        assert sum(m["splits"][split]["per_class"].values()) == rows
        assert set(m["splits"][split]["per_class"]) <= set(m["labels"])
        if rows:
            table = manager.read_split_table(version, split)
            assert table.num_rows == rows, split
            assert table.column_names == list(kind_class(version.kind).dataset_columns)
            assert set(table.column("label").to_pylist()) <= set(range(len(m["labels"])))

    # Content-addressed: the same spec over the same source is the committed version, not a rebuild.
    again = manager.build(spec)
    assert again.version == version.version and again.manifest["created_at"] == m["created_at"]
    assert [v.ref for v in manager.list_versions(version.name)] == [version.ref]
