from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch

from aiplatform.errors import IntegrityError, InvalidArgument
from aiplatform.packaging import load_package, read_package_files
from tests.factories import make_package


def _rezip(data: bytes, mutate) -> bytes:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {i.filename: archive.read(i) for i in archive.infolist()}
    mutate(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_package_round_trips_and_predicts_like_the_original() -> None:
    package = load_package(make_package(seed=1))
    again = load_package(make_package(seed=1))
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(package.model(x), again.model(x))
    assert package.labels == ["0", "1", "2"]
    assert set(package.manifest["files"]) == {"model.json", "weights.safetensors"}
    assert package.manifest["versions"]["torch"] == torch.__version__
    assert not package.model.training


def test_tampered_weights_fail_verification() -> None:
    def flip(files):  # type: ignore[no-untyped-def]
        weights = bytearray(files["weights.safetensors"])
        weights[-1] ^= 0xFF
        files["weights.safetensors"] = bytes(weights)

    with pytest.raises(IntegrityError, match="'weights.safetensors' fails verification"):
        load_package(_rezip(make_package(), flip))


@pytest.mark.parametrize("entry", ["../evil.txt", "/etc/passwd", "a/../../b"])
def test_unsafe_entry_names_are_refused(entry: str) -> None:
    data = _rezip(make_package(), lambda files: files.__setitem__(entry, b"x"))
    with pytest.raises(IntegrityError, match="unsafe path"):
        load_package(data)


def test_missing_files_are_named() -> None:
    data = _rezip(make_package(), lambda files: files.pop("model.json"))
    with pytest.raises(IntegrityError, match=r"missing \['model.json'\]"):
        load_package(data)


def test_unlisted_files_are_refused() -> None:
    data = _rezip(make_package(), lambda files: files.__setitem__("extra.py", b"import os"))
    with pytest.raises(IntegrityError, match="'extra.py' is not listed"):
        load_package(data)


def test_oversized_entries_and_packages_are_refused() -> None:
    data = make_package()
    with pytest.raises(IntegrityError, match="over the limit"):
        read_package_files(data, max_entry_bytes=100)
    with pytest.raises(InvalidArgument, match="over the limit"):
        read_package_files(data, max_package_bytes=10)


def test_the_directory_and_the_manifest_are_checked_before_anything_is_decompressed() -> None:
    data = make_package()  # deflated: it unpacks to more than its own size
    with pytest.raises(IntegrityError, match="unpacks to .* over the limit"):
        read_package_files(data, max_package_bytes=len(data) + 10)

    def resize(files):  # type: ignore[no-untyped-def]
        manifest = json.loads(files["manifest.json"])
        manifest["files"]["weights.safetensors"]["size"] = 10  # what a smaller, swapped file would say
        files["manifest.json"] = json.dumps(manifest).encode()

    with pytest.raises(IntegrityError, match="'weights.safetensors' is .* bytes in the archive but 10"):
        load_package(_rezip(make_package(), resize))


def test_not_a_zip_is_refused() -> None:
    with pytest.raises(IntegrityError, match="not a valid ZIP"):
        load_package(b"definitely not a zip")


def test_weights_that_do_not_fit_the_architecture_are_refused() -> None:
    def widen(files):  # type: ignore[no-untyped-def]
        config = json.loads(files["model.json"])
        config["architecture"]["hidden_units"] = 16
        files["model.json"] = json.dumps(config).encode()
        manifest = json.loads(files["manifest.json"])
        import hashlib

        manifest["files"]["model.json"]["sha256"] = hashlib.sha256(files["model.json"]).hexdigest()
        manifest["files"]["model.json"]["size"] = len(files["model.json"])
        files["manifest.json"] = json.dumps(manifest).encode()

    with pytest.raises(IntegrityError, match="do not fit its architecture"):
        load_package(_rezip(make_package(), widen))


def test_weights_are_safetensors_not_pickles() -> None:
    with zipfile.ZipFile(io.BytesIO(make_package())) as archive:
        weights = archive.read("weights.safetensors")
    header_len = int.from_bytes(weights[:8], "little")
    assert json.loads(weights[8 : 8 + header_len])  # a JSON header, no pickle opcodes
