"""Dataset versions built on the session's Ray from every kind of source."""

from __future__ import annotations

import functools
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from aiplatform.datasets import AugmentSpec, DatasetManager, ImageDatasetSpec, image_builder
from aiplatform.errors import IntegrityError, InvalidArgument, NotFound
from aiplatform.storage import ObjectInfo, open_storage
from tests.factories import free_port, make_digit_images, png_bytes, write_idx


@pytest.fixture()
def manager(tmp_path: Path) -> DatasetManager:
    return DatasetManager(open_storage(str(tmp_path / "artifacts")))


@pytest.fixture()
def idx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "idx"
    folder.mkdir()
    train_x, train_y = make_digit_images(300, seed=0)
    test_x, test_y = make_digit_images(100, seed=5)
    write_idx(folder / "train-images-idx3-ubyte.gz", train_x, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_y, gz=True)
    write_idx(folder / "t10k-images-idx3-ubyte", test_x)
    write_idx(folder / "t10k-labels-idx1-ubyte", test_y)
    return folder


@pytest.fixture()
def http_root(idx_folder: Path) -> Iterator[str]:
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(idx_folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_builtin_mnist_builds_versioned_parquet_with_manifest(ray_session: None, manager: DatasetManager) -> None:
    spec = ImageDatasetSpec(source="mnist", max_rows=600, val_fraction=0.1)
    version = manager.build(spec)
    m = version.manifest
    assert m["name"] == "mnist" and m["labels"] == [str(d) for d in range(10)]
    assert version.rows("train") + version.rows("val") == 600
    assert version.rows("test") == 600
    assert sum(m["splits"]["test"]["per_class"].values()) == 600
    assert 0.1 < m["profile"]["train"]["mean_intensity"] < 0.16
    assert m["spec"]["max_rows"] == 600
    for split in ("train", "val", "test"):
        for entry in version.files(split):
            assert manager.storage.info(entry["key"]).sha256 == entry["sha256"]
    # Same spec -> same version, reused (no rebuild: created_at unchanged).
    again = manager.build(spec)
    assert again.version == version.version and again.manifest["created_at"] == m["created_at"]
    assert (
        manager.build(ImageDatasetSpec(source="mnist", max_rows=600, val_fraction=0.1, seed=1)).version
        != version.version
    )
    rows = manager.read_split(version, "val").take_all()
    assert len(rows) == version.rows("val")
    assert len(rows[0]["image"]) == 28 * 28
    listed = [v.version for v in manager.list_versions("mnist")]
    assert version.version in listed and len(listed) == 2
    assert manager.get_ref(version.ref).version == version.version
    # A version this small is profiled in the building process; Ray Data's pass (the one larger
    # versions take) finds the same figures.
    files = [
        ObjectInfo(key=e["key"], size=e["size"], sha256=e["sha256"], uri="")
        for split in ("train", "val", "test")
        for e in version.files(split)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_builder, "LOCAL_STATISTICS_BYTES", -1)
        by_ray_data = image_builder.statistics(manager.storage, files, 10)
    assert by_ray_data == image_builder.statistics(manager.storage, files, 10) and set(by_ray_data) == {
        "train",
        "val",
        "test",
    }
    assert {s: (by_ray_data[s]["count"], by_ray_data[s]["mean"]) for s in by_ray_data} == {
        s: (version.rows(s), m["profile"][s]["mean_intensity"]) for s in ("train", "val", "test")
    }
    # Samples to look at: one class's images as PNGs, or rows by id in the order asked.
    sevens = manager.samples(version, "test", label="7", limit=6)
    assert len(sevens) == 6 and {s["label"] for s in sevens} == {"7"}
    assert all(s["image"].startswith("data:image/png;base64,") for s in sevens)
    wanted = [sevens[3]["id"], sevens[0]["id"], "no-such-row"]
    assert [s["id"] for s in manager.samples(version, "test", ids=wanted)] == wanted[:2]
    for bad, message in [
        ({"label": "cat"}, "has no class 'cat'"),
        ({"limit": 0}, "1 to 100 samples"),
        ({"limit": 101}, "1 to 100 samples"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            manager.samples(version, "test", **bad)


def test_split_is_deterministic_and_leak_free(ray_session: None, manager: DatasetManager, tmp_path: Path) -> None:
    version = manager.build(ImageDatasetSpec(source="mnist", max_rows=800, val_fraction=0.2, seed=3))
    ids = {s: {r["id"] for r in manager.read_split(version, s).take_all()} for s in ("train", "val")}
    assert not ids["train"] & ids["val"]
    other = DatasetManager(open_storage(str(tmp_path / "elsewhere"))).build(
        ImageDatasetSpec(source="mnist", max_rows=800, val_fraction=0.2, seed=3)
    )
    assert other.manifest["content_hash"] == version.manifest["content_hash"]


def test_augmentation_adds_copies_to_train_only(ray_session: None, manager: DatasetManager) -> None:
    plain = manager.build(ImageDatasetSpec(source="mnist", max_rows=400))
    augmented = manager.build(ImageDatasetSpec(source="mnist", max_rows=400, augment=AugmentSpec(copies=2)))
    assert augmented.rows("train") == 3 * plain.rows("train")
    assert augmented.rows("val") == plain.rows("val")
    assert augmented.rows("test") == plain.rows("test")
    variants = {r["variant"] for r in manager.read_split(augmented, "train").take_all()}
    assert variants == {0, 1, 2}


def test_idx_files_locally_and_over_http_give_the_same_content(
    ray_session: None, manager: DatasetManager, idx_folder: Path, http_root: str
) -> None:
    local = manager.build(ImageDatasetSpec(source=f"idx:{idx_folder}", name="digits"))
    remote = manager.build(ImageDatasetSpec(source=f"idx:{http_root}/", name="digits-http"))
    assert local.rows("test") == remote.rows("test") == 100
    assert local.rows("train") + local.rows("val") == 300
    assert local.manifest["content_hash"] == remote.manifest["content_hash"]
    assert local.manifest["splits"]["test"]["per_class"] == remote.manifest["splits"]["test"]["per_class"]


def test_image_folder_with_mixed_sizes_and_modes(ray_session: None, manager: DatasetManager, tmp_path: Path) -> None:
    images, labels = make_digit_images(60)
    root = tmp_path / "folder"
    for i, (image, label) in enumerate(zip(images, labels)):
        cls = root / ("even" if label % 2 == 0 else "odd")
        cls.mkdir(parents=True, exist_ok=True)
        big = np.kron(image, np.ones((2, 2), dtype=np.uint8))  # 56x56
        (cls / f"{i}.png").write_bytes(png_bytes(big, "RGB" if i % 3 else "L"))
    version = manager.build(ImageDatasetSpec(source=f"folder:{root}", val_fraction=0.2, test_fraction=0.2))
    assert version.labels == ["even", "odd"]
    assert sum(version.rows(s) for s in ("train", "val", "test")) == 60
    assert version.image_shape == (28, 28, 1)
    expected_even = int((labels % 2 == 0).sum())
    assert (
        sum(version.manifest["splits"][s]["per_class"].get("even", 0) for s in ("train", "val", "test"))
        == expected_even
    )


def test_parquet_source_with_string_labels(ray_session: None, manager: DatasetManager, tmp_path: Path) -> None:
    images, labels = make_digit_images(50)
    path = tmp_path / "digits.parquet"
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    pq.write_table(pa.table({"image": [png_bytes(i) for i in images], "label": list(names[labels])}), path)
    version = manager.build(ImageDatasetSpec(source=f"parquet:{path}", test_fraction=0.2))
    assert set(version.labels) <= set(names)
    assert sum(version.rows(s) for s in ("train", "val", "test")) == 50


def test_a_parquet_read_lists_its_footers_on_one_actor(ray_session: None, tmp_path: Path) -> None:
    """The session's Ray starts as the platform starts one on one machine
    (``aiplatform.runtime.ONE_MACHINE_ENV``): a parquet read lists its files' row groups on one
    footer-reading actor, not Ray Data's pool of 32, each a worker process started for it."""
    from ray.util.state import list_actors

    def footer_readers() -> int:
        return len(
            list_actors(filters=[("class_name", "=", "FooterReader")], limit=10_000, raise_on_missing_output=False)
        )

    folder = tmp_path / "rows"
    folder.mkdir()
    for part in range(3):
        pq.write_table(pa.table({"x": [part]}), folder / f"{part}.parquet")
    before = footer_readers()
    assert sorted(row["x"] for row in ray.data.read_parquet(str(folder)).take_all()) == [0, 1, 2]
    assert footer_readers() - before == 1


def test_bad_sources_fail_clearly_and_store_nothing(ray_session: None, manager: DatasetManager, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="Image folder .* not found"):
        manager.build(ImageDatasetSpec(source=f"folder:{tmp_path / 'nope'}"))
    bad = tmp_path / "bad" / "cat"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InvalidArgument, match="broken.png.* not a readable PNG/JPEG"):
        manager.build(ImageDatasetSpec(source=f"folder:{tmp_path / 'bad'}"))
    with pytest.raises(NotFound, match="no train-images-idx3-ubyte"):
        manager.build(ImageDatasetSpec(source=f"idx:{tmp_path}"))
    table = tmp_path / "nolabel.parquet"
    pq.write_table(pa.table({"image": [b"x"]}), table)
    with pytest.raises(InvalidArgument, match=r"lacks column\(s\) \['label'\]"):
        manager.build(ImageDatasetSpec(source=f"parquet:{table}"))
    assert manager.storage.list("datasets") == []
    with pytest.raises(NotFound, match=r"Dataset version \(name=mnist, version=abc\) not found"):
        manager.get("mnist", "abc")


def test_corrupt_dataset_file_is_refused_before_training(ray_session: None, manager: DatasetManager) -> None:
    version = manager.build(ImageDatasetSpec(source="mnist", max_rows=200))
    key = version.files("val")[0]["key"]
    path = Path(manager.storage.arrow_path(key))
    path.write_bytes(path.read_bytes()[:-20] + b"\x00" * 20)
    with pytest.raises(IntegrityError, match="is corrupt"):
        manager.read_split(version, "val")


def test_builds_of_one_version_at_once_keep_each_others_files(
    ray_session: None, manager: DatasetManager, tmp_path: Path
) -> None:
    """A sweep's trials build their dataset at the same moment: each build writes a folder of its
    own and commits with its manifest, so each reads whole files and the version stays readable."""
    spec = ImageDatasetSpec(source="mnist", max_rows=200)

    @ray.remote(num_cpus=0.5)
    def build_and_read(root: str) -> tuple[str, int]:
        builder = DatasetManager(open_storage(root))
        built = builder.build(spec)
        return built.version, sum(builder.read_split(built, split).count() for split in ("train", "val", "test"))

    results = ray.get([build_and_read.remote(str(tmp_path / "artifacts")) for _ in range(2)])
    assert results == [(results[0][0], 400)] * 2, results  # 200 rows in train and val, 200 in test, in each
    version = manager.get("mnist", results[0][0])
    assert sum(manager.read_split(version, split).count() for split in ("train", "val", "test")) == 400

    # A build that starts while another one's files have no manifest yet leaves them alone; what a
    # killed build left a day ago, and the shared folder of builds before build folders, it removes.
    root = f"datasets/mnist/{version.version}"
    in_progress = version.files("train")[0]["key"]
    manager.storage.delete(f"{root}/manifest.json")
    manager.storage.put_bytes(f"{root}/build-1000-deadbeef/data/split=train/x.parquet", b"left by a killed build")
    manager.storage.put_bytes(f"{root}/data/split=train/y.parquet", b"left by an older build")
    rebuilt = manager.build(spec)
    assert manager.storage.exists(in_progress) and rebuilt.files("train")[0]["key"] != in_progress
    left = manager.storage.find_unsealed(root)
    assert not [k for k in left if "/build-1000-" in k or k.startswith(f"{root}/data/")], left
    assert manager.read_split(rebuilt, "train").count() == version.rows("train")


def test_datasets_in_s3_storage(ray_session: None, s3_server: str, s3_bucket: str) -> None:
    storage = open_storage(
        f"{s3_bucket}/platform", endpoint_url=s3_server, access_key_id="testing", secret_access_key="testing"
    )
    manager = DatasetManager(storage)
    version = manager.build(ImageDatasetSpec(source="mnist", max_rows=300))
    assert storage.exists(f"datasets/mnist/{version.version}/manifest.json")
    assert manager.read_split(version, "test").count() == 300
    assert (
        manager.build(ImageDatasetSpec(source="mnist", max_rows=300)).manifest["created_at"]
        == version.manifest["created_at"]
    )


def test_profile_of_mnist_with_mean_image_charts_and_no_leakage(
    ray_session: None,
    manager: DatasetManager,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from PIL import Image

    from aiplatform.analysis.report import analyze_dataset, read_chart
    from jobs import analyze

    version = manager.build(ImageDatasetSpec(source="mnist", max_rows=600))
    profile = analyze_dataset(manager, manager.storage, version.ref)
    assert {s: p["rows"] for s, p in profile["splits"].items()} == {s: version.rows(s) for s in profile["splits"]}
    assert sum(profile["class_balance"]["shares"].values()) == pytest.approx(1.0, abs=1e-4)
    mean_image = np.array(profile["splits"]["train"]["mean_image"])
    assert mean_image.shape == (28, 28, 1) and mean_image[10:18, 10:18].mean() > 5 * mean_image[:3, :3].mean()
    assert sum(profile["splits"]["train"]["intensity_histogram"]["shares"]) == pytest.approx(1.0, abs=1e-4)
    assert profile["leakage"]["inputs_in_several_splits"] == 0
    png, media_type = read_chart(manager.storage, profile["charts"]["mean_image_train"])
    assert media_type == "image/png" and Image.open(io.BytesIO(png)).size == (112, 112)
    svg, media_type = read_chart(manager.storage, profile["charts"]["class_balance"])
    assert media_type == "image/svg+xml" and ElementTree.fromstring(svg).tag.endswith("svg")
    with pytest.raises(InvalidArgument, match="not an analysis chart"):
        read_chart(manager.storage, version.files("train")[0]["key"])

    monkeypatch.setenv("AIP_HOME", str(tmp_path))  # the manager's storage is <home>/artifacts
    assert analyze.main(["profile", "--dataset", version.ref, "--out", str(tmp_path / "out")]) == 0
    assert "leakage between splits" in capsys.readouterr().out
    assert (tmp_path / "out" / "mean_image_train.png").read_bytes() == png
    assert analyze.main(["profile", "--dataset", "mnist@nope"]) == 2
    assert "not found" in capsys.readouterr().err


def test_profile_finds_duplicates_and_leakage(ray_session: None, manager: DatasetManager, tmp_path: Path) -> None:
    from aiplatform.analysis.report import analyze_dataset

    images, labels = make_digit_images(40)
    root = tmp_path / "folder"
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / str(label % 2)).mkdir(parents=True, exist_ok=True)
        (root / str(label % 2) / f"{i}.png").write_bytes(png_bytes(image))
    for copy in range(6):  # one image six more times under other names
        (root / str(labels[0] % 2) / f"copy{copy}.png").write_bytes(png_bytes(images[0]))
    version = manager.build(ImageDatasetSpec(source=f"folder:{root}", val_fraction=0.3, test_fraction=0.3))
    profile = analyze_dataset(manager, manager.storage, version.ref)
    within = sum(profile["duplicates"].values())
    across = profile["leakage"]["inputs_in_several_splits"]
    assert within + across >= 3  # seven equal images: copies within a split, or the same image in several
