"""One contract suite for every storage backend: local directory and a real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform.errors import IntegrityError, InvalidArgument, NotFound
from aiplatform.storage import Storage, open_storage, sha256_bytes
from aiplatform.storage.base import DIGEST_PREFIX
from aiplatform.storage.local import LocalStorage


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path) -> Storage:  # type: ignore[no-untyped-def]
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_server")
    return open_storage(
        f"{bucket}/prefix",
        endpoint_url=endpoint,
        access_key_id="testing",
        secret_access_key="testing",
    )


def test_put_then_get_round_trips_and_records_sha256(storage: Storage) -> None:
    info = storage.put_bytes("models/a/v1.zip", b"hello")
    assert info.sha256 == sha256_bytes(b"hello")
    assert info.size == 5
    assert storage.get_bytes("models/a/v1.zip") == b"hello"
    assert storage.info("models/a/v1.zip").sha256 == info.sha256
    assert storage.exists("models/a/v1.zip")


def test_overwrite_replaces_content_and_digest(storage: Storage) -> None:
    storage.put_bytes("k", b"one")
    storage.put_bytes("k", b"two")
    assert storage.get_bytes("k") == b"two"
    assert storage.info("k").sha256 == sha256_bytes(b"two")


def test_put_file_and_get_file(storage: Storage, tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 3_000_000)
    info = storage.put_file("blobs/big.bin", source)
    assert info.size == 3_000_000
    target = tmp_path / "out.bin"
    storage.get_file("blobs/big.bin", target)
    assert target.read_bytes() == source.read_bytes()


def test_list_is_recursive_sorted_and_hides_digests(storage: Storage) -> None:
    for key in ["d/b/2", "d/a", "d/b/1", "other"]:
        storage.put_bytes(key, key.encode())
    assert storage.list("d") == ["d/a", "d/b/1", "d/b/2"]
    assert storage.list("d/b/") == ["d/b/1", "d/b/2"]
    assert storage.list() == ["d/a", "d/b/1", "d/b/2", "other"]
    assert storage.list("nothing-here") == []


def test_a_sidecar_being_written_is_not_listed(storage: Storage) -> None:
    """A write in progress leaves a temporary file among the digests (local storage writes each
    file as ``.tmp-*`` then renames it): a listing at that moment shows complete objects only."""
    storage.put_bytes("logs/attempt-1.log", b"one")
    if not isinstance(storage, LocalStorage):
        return  # S3 objects appear whole: no temporary file to see
    (Path(storage.root) / DIGEST_PREFIX / "logs" / ".tmp-0x7iuxkx").write_text("partial")
    assert storage.list("logs") == ["logs/attempt-1.log"]


def test_delete_and_delete_prefix(storage: Storage) -> None:
    storage.put_bytes("p/1", b"1")
    storage.put_bytes("p/2", b"2")
    storage.put_bytes("q", b"q")
    storage.delete("q")
    assert not storage.exists("q")
    with pytest.raises(NotFound, match="'q' not found"):
        storage.delete("q")
    assert storage.delete_prefix("p") == 2
    assert storage.list() == []


def test_copy_verifies_and_duplicates(storage: Storage) -> None:
    storage.put_bytes("src", b"payload")
    info = storage.copy("src", "dst/copy")
    assert storage.get_bytes("dst/copy") == b"payload"
    assert info.sha256 == sha256_bytes(b"payload")


def test_missing_key_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound, match="'missing/key' not found"):
        storage.get_bytes("missing/key")
    assert not storage.exists("missing/key")


def test_corruption_is_detected_on_read(storage: Storage) -> None:
    storage.put_bytes("c", b"good bytes")
    storage.fs.pipe_file(storage._path("c"), b"evil bytes")  # tamper behind storage's back
    with pytest.raises(IntegrityError, match="'c' is corrupt"):
        storage.get_bytes("c")


def test_object_without_digest_is_an_unfinished_write(storage: Storage) -> None:
    storage.fs.pipe_file(storage._path("partial"), b"half")
    assert not storage.exists("partial")
    assert "partial" not in storage.list()
    info = storage.seal("partial")
    assert storage.get_bytes("partial") == b"half"
    assert info.sha256 == sha256_bytes(b"half")


@pytest.mark.parametrize(
    "key, reason",
    [
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("/abs/path", "absolute"),
        ("a//b", "empty"),
        ("", "empty"),
        ("a\\b", "backslash"),
        (".sha256/x", "not starting with '.'"),
        ("a/./b", "'.'"),
    ],
)
def test_bad_keys_are_rejected_with_a_clear_error(storage: Storage, key: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match="Storage key") as excinfo:
        storage.put_bytes(key, b"x")
    assert reason in str(excinfo.value)
    assert storage.list() == []


def test_uri_names_the_backend(storage: Storage) -> None:
    uri = storage.uri("a/b")
    assert uri.endswith("/a/b")
    assert uri.startswith(("file://", "s3://"))
