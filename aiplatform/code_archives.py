"""Users' training code, kept in storage as ZIP archives named by their sha256.

A task that runs a user's own code names its archive by digest, so the task, the registry
version's lineage and "run again" all point at exactly the code that ran. Archives come from
callers we do not trust (``POST /v1/code``): before one is kept, every member is checked (no
absolute or ``..`` paths, no control characters in names, no links, bounded count, size and
compression ratio), and it is extracted only through the same checks. An archive's bytes never
change under its digest, so each process checks and lists a digest once and remembers the
verdict (``_Verdicts``): uploading it again, naming it in a task, describing it cost no second
decompression. ``pack_directory`` builds them deterministically (sorted members, fixed times and
modes), so the same tree always has the same digest. Archives belong to a project: each
project keeps its own under its storage prefix, and another project's digest is not found.
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
import unicodedata
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from aiplatform.errors import Forbidden, InvalidArgument, NotFound, TooLarge
from aiplatform.limits import MAX_REQUEST_BYTES
from aiplatform.storage import Storage, sha256_bytes
from aiplatform.storage.projects import DEFAULT_PROJECT, project_prefix

if TYPE_CHECKING:
    from aiplatform.settings import Settings

MAX_ARCHIVE_BYTES = MAX_REQUEST_BYTES
"""What one request may carry; a project larger than this belongs in a package or an image."""
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_RATIO = 200
"""Unpacked/packed size above which a member of over 1 MiB is taken for a ZIP bomb."""
DIGEST = re.compile(r"[0-9a-f]{64}")
SKIPPED_DIRECTORIES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".venv",
        "venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        "node_modules",
        ".tox",
    }
)
SKIPPED_SUFFIXES = (".pyc", ".pyo")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
"""Unicode categories refused in member names: control and format characters (newlines, bidi
overrides) and line separators, which forge lines in logs and listings or disguise a name."""
REMEMBERED_VERDICTS = 256
REMEMBERED_NAME_CHARS = 16 * 2**20
"""Bounds of what a process remembers of checked archives (their member names, at most the
archive's size each, are what takes room)."""


def users_code_refusal(settings: Settings) -> str | None:
    """Why this platform does not run callers' own code (naming ``AIP_USER_CODE``), or None when it
    does. With authentication off it is off unless the operator sets it on."""
    if settings.user_code:
        return None
    if settings.api_auth == "off" and "user_code" not in settings.model_fields_set:
        return (
            "this platform does not run callers' own code: authentication is off (AIP_API_AUTH=off), "
            "which turns AIP_USER_CODE off unless the operator sets AIP_USER_CODE=true"
        )
    return "this platform does not run callers' own code (AIP_USER_CODE=false)"


def require_users_code(settings: Settings, what: str) -> None:
    """:class:`Forbidden` (``<what>: this platform does not run callers' own code ...``) unless it does."""
    refusal = users_code_refusal(settings)
    if refusal is not None:
        raise Forbidden(f"{what}: {refusal}")


@dataclass(frozen=True)
class CodeArchive:
    """A stored archive: its digest (what tasks name), size and file count."""

    digest: str
    bytes: int
    files: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pack_directory(directory: str | Path) -> bytes:
    """``directory`` as a deterministic ZIP (caches, VCS folders and links left out);
    :class:`InvalidArgument` when it is not a folder, holds no Python file or is too large."""
    root = Path(directory)
    if not root.is_dir():
        raise InvalidArgument(f"--working-dir {str(directory)!r} is not a folder")
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in _files(root):
            data = path.read_bytes()
            total += len(data)
            if total > MAX_UNPACKED_BYTES:
                raise InvalidArgument(
                    f"{root} holds over {MAX_UNPACKED_BYTES // 2**20} MiB of files; "
                    "training code is sent with the task, data goes in a dataset"
                )
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=FIXED_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = buffer.getvalue()
    check_archive(data)
    return data


def _files(root: Path) -> list[Path]:
    found = []
    for folder, directories, names in os.walk(root):
        directories[:] = sorted(
            d for d in directories if d not in SKIPPED_DIRECTORIES and not (Path(folder) / d).is_symlink()
        )
        for name in sorted(names):
            path = Path(folder) / name
            if not name.endswith(SKIPPED_SUFFIXES) and path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def check_archive(data: bytes) -> int:
    """The number of files in a well-formed, safe archive; :class:`InvalidArgument` names the
    first problem."""
    return len(_checked_names(data))


def _checked_names(data: bytes) -> list[str]:
    """The file names of a well-formed, safe archive (what :func:`check_archive` counts)."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise TooLarge(f"The code archive is {len(data)} bytes; the most is {MAX_ARCHIVE_BYTES}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InvalidArgument(f"The code archive is not a ZIP file: {exc}") from None
    if len(members) > MAX_MEMBERS:
        raise InvalidArgument(f"The code archive has {len(members)} members; the most is {MAX_MEMBERS}")
    files: list[str] = []
    unpacked = 0
    for member in members:
        _check_member_name(member.filename)
        mode = member.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InvalidArgument(f"The code archive's member {member.filename!r} is a link; links are not accepted")
        if member.is_dir():
            continue
        unpacked += member.file_size
        if unpacked > MAX_UNPACKED_BYTES:
            raise InvalidArgument(f"The code archive unpacks to over {MAX_UNPACKED_BYTES // 2**20} MiB")
        if member.file_size > 2**20 and member.file_size > MAX_RATIO * max(1, member.compress_size):
            raise InvalidArgument(
                f"The code archive's member {member.filename!r} expands {MAX_RATIO}x or more (a ZIP bomb?)"
            )
        files.append(member.filename)
    if not any(m.filename.endswith(".py") for m in members):
        raise InvalidArgument("The code archive holds no Python file")
    try:
        broken = archive.testzip()
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        raise InvalidArgument(f"The code archive cannot be read: {exc}") from None
    if broken is not None:
        raise InvalidArgument(f"The code archive's member {broken!r} is corrupt (CRC mismatch)")
    return files


def _check_member_name(name: str) -> None:
    if any(unicodedata.category(char) in CONTROL_CATEGORIES for char in name):
        raise InvalidArgument(f"The code archive's member {name!r} has a control character in its name")
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or path.is_absolute()
        or ".." in path.parts
        or re.match(r"[A-Za-z]:", name)
    ):
        raise InvalidArgument(f"The code archive's member {name!r} has an unsafe path")


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise InvalidArgument(f"{digest!r} is not a code archive digest (64 lowercase hex digits, its sha256)")
    return digest


@dataclass(frozen=True)
class _Listing:
    archive: CodeArchive
    names: tuple[str, ...]


class _Verdicts:
    """Each digest's verdict, checked once per process: its listing, or why it was refused
    (a digest names fixed bytes, so the verdict cannot change). Least recently used go first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verdicts: OrderedDict[str, _Listing | str] = OrderedDict()
        self._chars = 0

    def of(self, data: bytes, digest: str | None = None) -> _Listing:
        """``data``'s listing; :class:`InvalidArgument` (remembered too) when it is refused."""
        digest = digest or sha256_bytes(data)
        known = self._get(digest)
        if known is None:
            if len(data) > MAX_ARCHIVE_BYTES:  # size is the request's limit, not the archive's verdict
                raise TooLarge(f"The code archive is {len(data)} bytes; the most is {MAX_ARCHIVE_BYTES}")
            try:
                names = _checked_names(data)
            except InvalidArgument as exc:
                known = exc.message
            else:
                known = _Listing(CodeArchive(digest=digest, bytes=len(data), files=len(names)), tuple(names))
            self._put(digest, known)
        if isinstance(known, str):
            raise InvalidArgument(known)
        return known

    def known(self, digest: str) -> _Listing | None:
        found = self._get(digest)
        return found if isinstance(found, _Listing) else None

    def _get(self, digest: str) -> _Listing | str | None:
        with self._lock:
            found = self._verdicts.get(digest)
            if found is not None:
                self._verdicts.move_to_end(digest)
            return found

    def _put(self, digest: str, verdict: _Listing | str) -> None:
        size = _chars(verdict)
        if size > REMEMBERED_NAME_CHARS:
            return
        with self._lock:
            if digest in self._verdicts:
                return
            self._verdicts[digest] = verdict
            self._chars += size
            while len(self._verdicts) > REMEMBERED_VERDICTS or self._chars > REMEMBERED_NAME_CHARS:
                _, dropped = self._verdicts.popitem(last=False)
                self._chars -= _chars(dropped)


def _chars(verdict: _Listing | str) -> int:
    return len(verdict) if isinstance(verdict, str) else sum(map(len, verdict.names)) + len(verdict.names)


VERDICTS = _Verdicts()


class CodeArchives:
    """A project's archives in storage, under ``code/<sha256>.zip`` of its prefix
    (``projects/<p>/code/...``; ``default``'s at the root, where they were before projects)."""

    def __init__(self, storage: Storage, project: str = DEFAULT_PROJECT) -> None:
        self.storage = storage
        self.project = project
        self._prefix = project_prefix(project)

    def key(self, digest: str) -> str:
        return f"{self._prefix}code/{check_digest(digest)}.zip"

    def put(self, data: bytes) -> CodeArchive:
        """Check and keep ``data``; the same bytes again are the same archive (nothing rewritten)."""
        listing = VERDICTS.of(data)
        if not self.storage.exists(self.key(listing.archive.digest)):
            self.storage.put_bytes(self.key(listing.archive.digest), data)
        return listing.archive

    def contents(self, digest: str) -> tuple[CodeArchive, list[str]]:
        """The stored archive and the names of its files: read and checked once per process
        (blocking: call it from a worker thread in an event loop)."""
        self.require(digest)
        listing = VERDICTS.known(digest) or VERDICTS.of(self.storage.get_bytes(self.key(digest)), digest)
        return listing.archive, list(listing.names)

    def require(self, digest: str) -> None:
        """:class:`NotFound` unless the archive is stored (a task must not name missing code)."""
        if not self.storage.exists(self.key(digest)):
            raise NotFound(
                f"Code archive {digest} not found: upload it first (POST /v1/code, or `aip tasks submit --working-dir`)"
            )

    def get(self, digest: str) -> bytes:
        self.require(digest)
        return self.storage.get_bytes(self.key(digest))  # checked against its recorded sha256

    def extract(self, digest: str, directory: str | Path) -> Path:
        """Unpack the archive into ``directory`` (created), each member checked again."""
        data = self.get(digest)
        check_archive(data)
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                destination = (target / member.filename).resolve()
                if not destination.is_relative_to(target.resolve()):
                    raise InvalidArgument(f"The code archive's member {member.filename!r} leaves its folder")
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as sink:
                    sink.write(source.read(MAX_UNPACKED_BYTES + 1))
        return target
