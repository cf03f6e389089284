from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiplatform.datasets import AugmentSpec, ImageDatasetSpec
from aiplatform.datasets.augment import hash_uniform, random_affine
from aiplatform.datasets.image_builder import assign_splits
from aiplatform.datasets.sources import parse_idx
from aiplatform.errors import InvalidArgument
from aiplatform.imaging import decode_image
from tests.factories import make_digit_images, png_bytes, write_idx


def test_spec_rejects_unknown_sources_and_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset source 'cifar'"):
        ImageDatasetSpec(source="cifar")
    with pytest.raises(ValueError, match="needs a location"):
        ImageDatasetSpec(source="idx:")
    with pytest.raises(ValueError, match="must be lowercase"):
        ImageDatasetSpec(source="mnist", name="Bad Name")


def test_version_id_is_content_addressed() -> None:
    a = ImageDatasetSpec(source="mnist", seed=1)
    assert a.version_id("f1") == ImageDatasetSpec(source="mnist", seed=1).version_id("f1")
    assert a.version_id("f1") != a.version_id("f2")
    assert a.version_id("f1") != ImageDatasetSpec(source="mnist", seed=2).version_id("f1")


def test_hash_uniform_is_deterministic_and_uniform() -> None:
    ids = np.arange(100_000)
    u = hash_uniform(3, ids, 7)
    assert np.array_equal(u, hash_uniform(3, ids, 7))
    assert not np.array_equal(u, hash_uniform(4, ids, 7))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01


def test_random_affine_is_seeded_per_row_not_per_batch() -> None:
    images, _ = make_digit_images(8)
    images = images[..., None]
    ids = np.arange(8)
    spec = AugmentSpec(rotation_deg=20, shift_frac=0.1, scale_frac=0.1)
    whole = random_affine(images, ids, 0, spec, seed=5)
    halves = np.concatenate(
        [random_affine(images[:3], ids[:3], 0, spec, 5), random_affine(images[3:], ids[3:], 0, spec, 5)]
    )
    assert np.array_equal(whole, halves)
    assert whole.shape == images.shape and whole.dtype == np.uint8
    assert not np.array_equal(whole, images)
    # Still the same digit: most ink stays where it was.
    overlap = ((whole > 64) & (images > 64)).sum() / max(1, (images > 64).sum())
    assert overlap > 0.3


def test_assign_splits_keeps_source_test_and_adds_augmented_copies() -> None:
    n = 2000
    batch = {
        "id": np.arange(n),
        "image": np.array([bytes(784)] * n, dtype=object),
        "label": np.zeros(n, dtype=np.int64),
        "source_split": np.array(["train"] * (n - 100) + ["test"] * 100, dtype=object),
    }
    spec = ImageDatasetSpec(source="mnist", val_fraction=0.1, augment=AugmentSpec(copies=1))
    out = assign_splits(batch, spec)
    originals = out["variant"] == 0
    assert (out["split"][originals][-100:] == "test").all()
    val = (out["split"] == "val").sum()
    assert 130 < val < 250
    train = ((out["split"] == "train") & originals).sum()
    assert (out["variant"] == 1).sum() == train


def test_parse_idx_plain_gzip_and_corrupt(tmp_path: Path) -> None:
    images, _ = make_digit_images(5)
    write_idx(tmp_path / "a", images)
    write_idx(tmp_path / "b", images, gz=True)
    assert np.array_equal(parse_idx((tmp_path / "a").read_bytes(), "a"), images)
    assert np.array_equal(parse_idx((tmp_path / "b").read_bytes(), "b"), images)
    with pytest.raises(InvalidArgument, match="header promises"):
        parse_idx((tmp_path / "a").read_bytes()[:-10], "truncated file")
    with pytest.raises(InvalidArgument, match="bad magic"):
        parse_idx(b"PK\x03\x04garbage", "zip file")


def test_normalize_image_handles_any_size_and_mode() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    out = decode_image(png_bytes(rgb, "RGB"), 28, 1, "x")
    assert out.shape == (28, 28, 1) and out.dtype == np.uint8
    assert decode_image(png_bytes(rgb, "RGB"), 16, 3, "x").shape == (16, 16, 3)
    with pytest.raises(InvalidArgument, match="not a readable PNG/JPEG"):
        decode_image(b"\x89PNG\r\n\x1a\n broken", 28, 1, "Image 'x.png'")


def test_a_duplicate_group_keeps_the_same_row_whatever_order_its_copies_arrive_in() -> None:
    import itertools

    from aiplatform.datasets.text_builder import deduplicate

    copies = [
        (7, "Great day", "positive"),
        (7, "great day", "neutral"),
        (7, "GREAT DAY", "positive"),
        (3, "alone", "neutral"),
        (9, "twice", "negative"),
        (9, "Twice", "negative"),
    ]
    kept = set()
    for order in itertools.permutations(copies):
        block = {
            "id": np.array([i for i, _, _ in order], dtype=np.int64),
            "text": np.array([t for _, t, _ in order], dtype=object),
            "label_name": np.array([lab for _, _, lab in order], dtype=object),
        }
        rows = deduplicate(block)
        kept.add(tuple(sorted(zip(rows["id"].tolist(), rows["text"], rows["label_name"]))))
    # one row per id: the majority label, then the smallest text; a row without copies as it was
    assert kept == {((3, "alone", "neutral"), (7, "GREAT DAY", "positive"), (9, "Twice", "negative"))}
    empty = {"id": np.array([], dtype=np.int64), "text": np.array([], dtype=object)}
    assert deduplicate(empty) is empty


def test_only_png_and_jpeg_are_decoded_and_huge_images_are_refused_before_decoding() -> None:
    import io

    from PIL import Image

    from aiplatform.errors import TooLarge

    def encoded(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    small = Image.new("L", (8, 8), 200)
    assert decode_image(encoded(small, "JPEG"), 8, 1, "x").shape == (8, 8, 1)
    for fmt, name in (("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WebP")):
        with pytest.raises(InvalidArgument, match=f"is {name}, not a PNG or JPEG image"):
            decode_image(encoded(small, fmt), 8, 1, "Upload")
    # A decompression bomb: a few KB of PNG that claims 20,000 x 20,000 pixels.
    bomb = encoded(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(TooLarge, match="the limit is 50,000,000"):
        decode_image(bomb, 28, 1, "Upload")
    with pytest.raises(TooLarge, match="is 400x300 pixels; the limit is 100,000"):
        decode_image(encoded(Image.new("L", (400, 300)), "PNG"), 28, 1, "Upload", max_pixels=100_000)


def test_builders_are_found_by_spec_type_and_name_a_known_kind() -> None:
    from aiplatform.datasets import TabularDatasetSpec, TextDatasetSpec
    from aiplatform.datasets.builders import BUILDERS, DatasetBuilder, builder_for
    from aiplatform.kinds import KINDS

    for spec in (
        ImageDatasetSpec(source="mnist"),
        TextDatasetSpec(source="tweets-sentiment"),
        TabularDatasetSpec(source="penguins"),
    ):
        builder = builder_for(spec)
        assert isinstance(builder, DatasetBuilder) and builder is BUILDERS[type(spec)]
        assert builder.kind in KINDS
    assert len({builder.kind for builder in BUILDERS.values()}) == len(BUILDERS)
    with pytest.raises(InvalidArgument, match=r"No dataset builder for AugmentSpec; builders exist for \["):
        builder_for(AugmentSpec())


def test_manifests_without_a_kind_are_read_as_the_image_builds_that_wrote_them() -> None:
    from aiplatform.datasets import DatasetVersion
    from aiplatform.datasets.image_builder import ImageBuilder

    assert DatasetVersion({"name": "mnist", "version": "v"}).kind == ImageBuilder.kind
    assert DatasetVersion({"name": "t", "version": "v", "kind": "text"}).kind == "text"
