"""Text dataset versions on the session's Ray Data from generic sources (the tweets corpus is built
and checked in test_text_model.py, which trains on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiplatform.datasets import DatasetManager, TextDatasetSpec
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.storage import open_storage


@pytest.fixture()
def manager(ray_session: None, tmp_path: Path) -> DatasetManager:
    return DatasetManager(open_storage(str(tmp_path / "artifacts")))


def test_csv_cleaning_deduplication_and_columns(manager: DatasetManager, tmp_path: Path) -> None:
    rows = ["review,stars"]
    rows += [f"great product number {i},good" for i in range(30)]
    rows += [f"awful thing number {i},bad" for i in range(30)]
    rows += [
        "GREAT   product number 1,good",
        "  great product number 2 ,good",  # duplicates
        ",good",
        "x,good",
        "fine text,",
    ]  # empty / too short / unlabelled
    source = tmp_path / "reviews.csv"
    source.write_text("\n".join(rows) + "\n")
    spec = TextDatasetSpec(source=f"csv:{source}", text_column="review", label_column="stars", min_chars=2)
    version = manager.build(spec)
    assert version.name == "csv-reviews" and version.labels == ["bad", "good"]
    assert version.manifest["cleaning"] == {
        "source_rows": 65,
        "dropped_short_or_unlabelled": 3,
        "duplicates_removed": 2,
        "rows": 60,
    }
    assert [version.manifest["splits"][s]["per_class"]["good"] for s in ("train", "val", "test")] == [24, 3, 3]
    bad_reviews = manager.samples(version, "train", label="bad", limit=4)
    assert len(bad_reviews) == 4 and all(s["text"].startswith("awful thing number") for s in bad_reviews)
    again = manager.build(spec)  # content-addressed: reused, not rebuilt
    assert again.version == version.version and again.manifest["created_at"] == version.manifest["created_at"]

    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"body": f"text {i} {'yes' if i % 2 else 'no'}", "y": i % 2}) for i in range(40))
    )
    from_jsonl = manager.build(TextDatasetSpec(source=f"jsonl:{jsonl}", text_column="body", label_column="y"))
    assert from_jsonl.labels == ["0", "1"] and from_jsonl.rows("train") == 32

    with pytest.raises(InvalidArgument, match=r"no column\(s\) \['sentiment'\] \(it has 2 columns\)"):
        manager.build(TextDatasetSpec(source=f"csv:{source}", text_column="review", label_column="sentiment"))
    with pytest.raises(NotFound, match="not found"):
        manager.build(TextDatasetSpec(source=f"csv:{tmp_path / 'missing.csv'}"))
    with pytest.raises(ValueError, match="unknown text source"):
        TextDatasetSpec(source="xml:foo")
