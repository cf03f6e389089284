"""Code archives: deterministic packing, hostile archives refused, stored and unpacked by digest."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from aiplatform.code_archives import (
    MAX_MEMBERS,
    CodeArchives,
    check_archive,
    check_digest,
    pack_directory,
    require_users_code,
    users_code_refusal,
)
from aiplatform.errors import Forbidden, InvalidArgument, NotFound
from aiplatform.settings import Settings
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


@pytest.mark.parametrize(
    "archive, message",
    [
        (b"not a zip", "not a ZIP file"),
        (_zip({"../evil.py": b"x"}), "unsafe path"),
        (_zip({"/abs/evil.py": b"x"}), "unsafe path"),
        (_zip({"a\\..\\b.py": b"x"}), "unsafe path"),
        (_zip({"C:/x.py": b"x"}), "unsafe path"),
        (_zip({"ok.py": b"x"}, link="pkg/link.py"), "is a link"),
        (_zip({"readme.txt": b"no code"}), "holds no Python file"),
        (_zip({"ok.py": b"x", "bomb.bin": b"\0" * (8 * 2**20)}), "ZIP bomb"),
        (_zip({f"m{i}.py": b"" for i in range(MAX_MEMBERS + 1)}), "members; the most is"),
    ],
)
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


@pytest.mark.parametrize(
    "name",
    [
        "pkg/evil\n.py",
        "pkg/a\rb.py",
        "esc\x1b[31m.py",
        "tab\there.py",
        "del\x7f.py",
        "c1\x85.py",
        "rlo\u202egnp.py",
        "line\u2028sep.py",
    ],
)
def test_member_names_with_control_characters_are_refused_by_their_escaped_name(name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_archive(_zip({"ok.py": b"x", name: b"x"}))
    message = refused.value.message
    assert f"member {name!r} has a control character in its name" in message
    assert "\n" not in message and "\x1b" not in message  # the raw characters never reach a log line


def test_names_in_other_scripts_are_kept() -> None:
    assert check_archive(_zip({"paquet/modèle.py": b"x", "数据/读取.py": b"x"})) == 2


class _CountingStorage:
    """A real storage that counts the archive reads (``get_bytes``)."""

    def __init__(self, storage: object) -> None:
        self.storage, self.reads, self.threads = storage, 0, []  # type: ignore[var-annotated]

    def get_bytes(self, key: str) -> bytes:
        import threading

        self.reads += 1
        self.threads.append(threading.current_thread())
        return self.storage.get_bytes(key)  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self.storage, name)


def test_a_digest_is_read_and_checked_once_per_process(tmp_path: Path) -> None:
    """An archive never changes under its digest: describing it, or naming it in one task after
    another, reads and decompresses it once; a refused archive stays refused without a second look."""
    storage = _CountingStorage(open_storage(f"file://{tmp_path / 'store'}"))
    data = _zip({"own_pkg_once/__init__.py": b"", "own_pkg_once/train.py": b"def fn(config): pass\n"})
    digest = sha256_bytes(data)
    storage.put_bytes(f"code/{digest}.zip", data)  # kept by another process: not yet known here
    archives = CodeArchives(storage)  # type: ignore[arg-type]
    first = archives.contents(digest)
    assert first[1] == ["own_pkg_once/__init__.py", "own_pkg_once/train.py"] and first[0].files == 2
    for _ in range(3):
        assert archives.contents(digest) == first
    assert storage.reads == 1
    storage.delete(f"code/{digest}.zip")  # remembered, but a missing archive is still missing
    with pytest.raises(NotFound):
        archives.contents(digest)
    bomb = _zip({"ok.py": b"x", "bomb.bin": b"\0" * (8 * 2**20)})
    for _ in range(2):
        with pytest.raises(InvalidArgument, match="ZIP bomb"):
            archives.put(bomb)
    assert not storage.exists(f"code/{sha256_bytes(bomb)}.zip")


def test_users_code_follows_authentication_unless_set() -> None:
    """Unset, AIP_USER_CODE is on with token authentication and off without; set, it is what it says."""
    assert Settings(api_auth="token").user_code is True
    assert Settings(api_auth="off").user_code is False
    assert Settings(api_auth="off", user_code=True).user_code is True
    assert Settings(api_auth="token", user_code=False).user_code is False
    assert Settings(api_auth="off").to_env()["AIP_USER_CODE"] == "false"  # what a job is given
    assert users_code_refusal(Settings(api_auth="off", user_code=True)) is None
    with pytest.raises(Forbidden, match="AIP_API_AUTH=off.*AIP_USER_CODE=true"):
        require_users_code(Settings(api_auth="off"), "POST /v1/code keeps code")
    with pytest.raises(Forbidden, match=r"AIP_USER_CODE=false\)"):
        require_users_code(Settings(user_code=False), "POST /v1/code keeps code")


def _inflating_archive(megabytes: int) -> bytes:
    """A small archive that unpacks to ``megabytes`` MiB, in members of 1 MiB (each under the
    ZIP-bomb ratio check, which only looks at members over 1 MiB): every check of it decompresses
    it all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("heavy_pkg/__init__.py", b"def fn(config):\n    pass\n")
        for index in range(megabytes - 1):
            archive.writestr(f"heavy_pkg/blob{index:03d}.bin", b"\0" * 2**20)
    return buffer.getvalue()


def test_creating_a_task_checks_its_archive_off_the_event_loop(tmp_path: Path) -> None:
    """A task naming an archive this process has not checked yet reads and decompresses it on a
    worker thread, not on the API's event loop (which serves every other request meanwhile)."""
    import asyncio
    import threading

    from aiplatform.tasks.manager import TaskManager
    from aiplatform.tasks.queue.store import TaskStore

    data = _inflating_archive(32)
    storage = _CountingStorage(open_storage(f"file://{tmp_path / 'store'}"))
    digest = sha256_bytes(data)
    storage.put_bytes(f"code/{digest}.zip", data)  # kept by another replica: this one checks it anew
    store = TaskStore(tmp_path / "tasks.sqlite")

    class Queue:  # the queue actor's async face, over a real store
        async def create_async(self, template: str, params: dict, **options: object) -> object:
            return store.create(template, params, **options)  # type: ignore[arg-type]

    manager = TaskManager(
        Queue(),
        None,
        Settings(home=tmp_path, autoscaling=True, user_code=True),  # type: ignore[arg-type]
        storage=storage,
    )  # type: ignore[arg-type]

    async def create() -> tuple[object, threading.Thread]:
        return await manager.create_async(
            "user-code", {"entry": "heavy_pkg:fn", "code": digest}
        ), threading.current_thread()

    task, loop_thread = asyncio.run(create())
    assert task.params["code"] == digest  # type: ignore[attr-defined]
    assert storage.reads == 1 and storage.threads[0] is not loop_thread, storage.threads
