"""Versions over the streaming size: built from read to write and trained from storage every
epoch (no global shuffle, nothing cached in the object store), with the same rows as a small one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from aiplatform.datasets import DatasetManager
from aiplatform.settings import Settings
from aiplatform.storage import open_storage
from aiplatform.training.catalog import get_template
from aiplatform.training.engine import SharedSplits, run_training
from tests.factories import make_digit_images, png_bytes


def _class_sorted_folder(root: Path, count: int) -> None:
    """Real digits in one sub-folder per class: listed in order, a block would hold one class."""
    images, labels = make_digit_images(count)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(png_bytes(image))


def test_a_version_over_the_streaming_size_has_the_same_rows_mixed_and_trains_from_storage(
    ray_session: None, tmp_path: Path
) -> None:
    root = tmp_path / "digits"
    _class_sorted_folder(root, 1500)
    template = get_template("cnn-classification")
    params = template.parse_params(
        {"dataset": f"folder:{root}", "epochs": 3, "batch_size": 32, "val_fraction": 0.1, "conv_channels": [8, 16]}
    )
    spec = template.dataset_spec(params)
    storage = open_storage(str(tmp_path / "artifacts"))
    streaming = DatasetManager(storage, streaming_bytes=0)
    streamed = streaming.build(spec)
    shuffled = DatasetManager(open_storage(str(tmp_path / "shuffled"))).build(spec)
    assert streamed.manifest["content_hash"] == shuffled.manifest["content_hash"]
    assert streamed.manifest["splits"]["train"]["per_class"] == shuffled.manifest["splits"]["train"]["per_class"]
    # No global shuffle, yet the folder's files were read in a seeded random order: every file
    # written holds digits of every class, not one class per block.
    for entry in streamed.files("train"):
        table = pq.read_table(storage.arrow_path(entry["key"]), filesystem=storage.arrow_filesystem())
        assert len(np.unique(table.column("label").to_numpy())) == 10, entry["key"]

    assert streaming.streams(streamed) and not DatasetManager(storage).streams(streamed)
    assert not SharedSplits.read(spec, streaming, seed=3).cached
    outcome = run_training(
        template,
        params,
        settings=Settings(home=tmp_path, dataset_streaming_bytes=0),
        storage=storage,
        datasets=streaming,
        run_name="streamed",
    )
    assert outcome.dataset.ref == streamed.ref  # the version built above, read from storage each epoch
    assert [m["epoch"] for m in outcome.history] == [1, 2, 3]
    assert outcome.test_metrics["test_samples"] == streamed.rows("test")
    assert outcome.test_metrics["test_accuracy"] > 0.7
