"""Code archives: deterministic packing, hostile archives refused, stored and unpacked by digest."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from aiplatform.code_archives import MAX_MEMBERS, CodeArchives, check_archive, check_digest, pack_directory
from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.storage import open_storage, sha256_bytes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-mlp"


def _project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "train.py").write_text("def train_loop(config):\n    return config\n")
    (root / "notes.txt").write_text("kept")
    for skipped in (".git", "__pycache__", ".venv"):
        (root / skipped).mkdir()
        (root / skipped / "big.bin").write_bytes(b"x" * 1000)
    (root / "pkg" / "train.cpython-311.pyc").write_bytes(b"compiled")
    os.symlink("/etc/passwd", root / "pkg" / "link.txt")
    return root


def _zip(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_packing_is_deterministic_and_leaves_out_caches_vcs_and_links(tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    first = pack_directory(root)
    os.utime(root / "pkg" / "train.py", (1, 1))  # times do not change the digest
    assert pack_directory(root) == first
    names = sorted(zipfile.ZipFile(io.BytesIO(first)).namelist())
    assert names == ["notes.txt", "pkg/__init__.py", "pkg/train.py"]
    (root / "pkg" / "train.py").write_text("def train_loop(config):\n    return 1\n")
    assert sha256_bytes(pack_directory(root)) != sha256_bytes(first)  # content does
    assert check_archive(pack_directory(EXAMPLE)) >= 3


@pytest.mark.parametrize("archive, message", [
    (b"not a zip", "not a ZIP file"),
    (_zip({"../evil.py": b"x"}), "unsafe path"),
    (_zip({"/abs/evil.py": b"x"}), "unsafe path"),
    (_zip({"a\\..\\b.py": b"x"}), "unsafe path"),
    (_zip({"C:/x.py": b"x"}), "unsafe path"),
    (_zip({"ok.py": b"x"}, link="pkg/link.py"), "is a link"),
    (_zip({"readme.txt": b"no code"}), "holds no Python file"),
    (_zip({"ok.py": b"x", "bomb.bin": b"\0" * (8 * 2**20)}), "ZIP bomb"),
    (_zip({f"m{i}.py": b"" for i in range(MAX_MEMBERS + 1)}), "members; the most is"),
])
def test_hostile_archives_are_refused_by_name(archive: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_archive(archive)


def test_a_corrupt_member_is_refused() -> None:
    data = bytearray(_zip({"ok.py": b"print('hello world, this is the payload')" * 20}))
    offset = data.index(b"ok.py") + len(b"ok.py") + 5  # inside the first member's compressed data
    data[offset] ^= 0xFF
    with pytest.raises(InvalidArgument, match="corrupt|cannot be read|not a ZIP"):
        check_archive(bytes(data))


def test_stored_by_digest_unpacked_by_digest(tmp_path: Path) -> None:
    archives = CodeArchives(open_storage(f"file://{tmp_path / 'store'}"))
    data = pack_directory(_project(tmp_path / "project"))
    stored = archives.put(data)
    assert stored.digest == sha256_bytes(data) and stored.files == 3
    assert archives.put(data) == stored  # the same bytes: the same archive
    target = archives.extract(stored.digest, tmp_path / "out")
    assert (target / "pkg" / "train.py").read_text().startswith("def train_loop")
    with pytest.raises(NotFound, match="Code archive .* not found"):
        archives.require("0" * 64)
    for bad in ("../../etc/passwd", "ABC", "0" * 63):
        with pytest.raises(InvalidArgument, match="not a code archive digest"):
            check_digest(bad)
