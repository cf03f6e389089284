"""The storage contract: validated keys under a root, atomic writes, a sha256 for every object.

Each object ``key`` has a digest sidecar at ``.sha256/<key>`` written after the object itself.
An object without its digest is an unfinished write and does not exist for readers; an object
whose bytes do not match its digest raises :class:`IntegrityError` on read.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiplatform.errors import IntegrityError, InvalidArgument, NotFound, Unavailable

if TYPE_CHECKING:
    import fsspec
    import pyarrow.fs

DIGEST_PREFIX = ".sha256"
_KEY_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=+@-]*")
MAX_KEY_CHARS = 1024
CHUNK_BYTES = 1024 * 1024
F = TypeVar("F", bound=Callable[..., Any])


def _reachable(method: F) -> F:
    """A storage backend that cannot be reached (connection refused, timed out) raises
    :class:`Unavailable` naming the storage, not the client library's own error."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Storage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except self.unreachable_errors() as exc:
            raise Unavailable(
                f"Storage at {self.root_uri} cannot be reached ({type(exc).__name__}: {exc}); "
                "a write it interrupted is never recorded as complete; retry when it is back"
            ) from exc

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class ObjectInfo:
    """What storage knows about one object."""

    key: str
    size: int
    sha256: str
    uri: str


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidArgument`.

    Rejected: absolute paths, ``..``, ``.``, empty parts (``a//b``), backslashes, parts that
    start with a dot (reserved for storage metadata) and characters outside ``[A-Za-z0-9._=+@-]``.
    """
    if not isinstance(key, str):
        raise InvalidArgument(f"Storage key must be a string, got {type(key).__name__}")
    if key == "" and allow_empty:
        return key
    problem = None
    if key == "":
        problem = "is empty"
    elif len(key) > MAX_KEY_CHARS:
        problem = f"is longer than {MAX_KEY_CHARS} characters"
    elif key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        problem = "is absolute; keys are relative to the storage root"
    elif "\\" in key:
        problem = "contains a backslash; use '/' between parts"
    else:
        for part in key.rstrip("/").split("/") if allow_empty else key.split("/"):
            if part in ("", ".", ".."):
                problem = f"has an empty, '.' or '..' part ({part!r})"
                break
            if not _KEY_PART.fullmatch(part):
                problem = f"has an invalid part {part!r} (allowed: letters, digits, '._=+@-', not starting with '.')"
                break
    if problem:
        raise InvalidArgument(f"Storage key {key!r} {problem}")
    return key


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Storage(ABC):
    """Artifact storage over an fsspec filesystem rooted at ``root`` (a path inside ``fs``)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, root_uri: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.root_uri = root_uri.rstrip("/")

    # -- backend hooks -------------------------------------------------------------------
    @abstractmethod
    def _write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` so that readers see all of it or none of it."""

    @abstractmethod
    def _upload_atomic(self, path: str, local_path: str) -> None:
        """Copy a local file to ``path`` atomically."""

    @abstractmethod
    def arrow_filesystem(self) -> pyarrow.fs.FileSystem:
        """A pyarrow filesystem for Ray Data and Ray Train to read and write under the root."""

    def _refresh(self) -> None:
        """Drop cached listings (remote backends cache them)."""

    # -- paths ---------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return f"{self.root}/{validate_key(key)}"

    def _digest_path(self, key: str) -> str:
        return f"{self.root}/{DIGEST_PREFIX}/{validate_key(key)}"

    def unreachable_errors(self) -> tuple[type[BaseException], ...]:
        """Errors that mean the backend cannot be reached (backends add their client's)."""
        return (ConnectionError, TimeoutError)

    def uri(self, key: str) -> str:
        """The full URI of a key (``file:///...`` or ``s3://...``)."""
        return f"{self.root_uri}/{validate_key(key)}"

    def arrow_path(self, key: str = "") -> str:
        """The path of a key inside :meth:`arrow_filesystem`."""
        return self.root if key == "" else self._path(key)

    # -- writes --------------------------------------------------------------------------
    @_reachable
    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing it), then record its sha256."""
        path = self._path(key)
        self._write_atomic(path, data)
        digest = sha256_bytes(data)
        self._write_atomic(self._digest_path(key), digest.encode())
        return ObjectInfo(key, len(data), digest, self.uri(key))

    @_reachable
    def put_file(self, key: str, local_path: str | Path) -> ObjectInfo:
        """Upload a local file under ``key``, then record its sha256."""
        path = self._path(key)
        digest = sha256_file(local_path)
        size = Path(local_path).stat().st_size
        self._upload_atomic(path, str(local_path))
        self._write_atomic(self._digest_path(key), digest.encode())
        return ObjectInfo(key, size, digest, self.uri(key))

    @_reachable
    def seal(self, key: str) -> ObjectInfo:
        """Record the sha256 of an object written by another writer (Ray Data, Ray Train)."""
        path = self._path(key)
        self._refresh()
        if not self.fs.isfile(path):
            raise NotFound(f"Storage object {key!r} not found")
        digest = hashlib.sha256()
        size = 0
        with self.fs.open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(chunk)
                size += len(chunk)
        self._write_atomic(self._digest_path(key), digest.hexdigest().encode())
        return ObjectInfo(key, size, digest.hexdigest(), self.uri(key))

    def copy(self, src: str, dst: str) -> ObjectInfo:
        """Copy a verified object to a new key."""
        return self.put_bytes(dst, self.get_bytes(src))

    @_reachable
    def delete(self, key: str) -> None:
        """Delete an object and its digest; deleting a missing key raises :class:`NotFound`."""
        if not self.exists(key):
            raise NotFound(f"Storage object {key!r} not found")
        # The digest goes first: a crash in between leaves an unfinished write, never a
        # digest that vouches for bytes that are gone.
        self.fs.rm(self._digest_path(key))
        self.fs.rm(self._path(key))
        self._refresh()

    @_reachable
    def remove_tree(self, prefix: str) -> None:
        """Remove everything under ``prefix``, finished or not (cleanup of an aborted build)."""
        for path in (self._path(prefix), self._digest_path(prefix)):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        self._refresh()

    @_reachable
    def find_unsealed(self, prefix: str) -> list[str]:
        """Keys of objects under ``prefix`` written by other writers, sealed or not."""
        self._refresh()
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        return sorted(
            f"{prefix.rstrip('/')}/{posixpath.relpath(_strip_protocol(p), _strip_protocol(base))}"
            for p in self.fs.find(base)
        )

    @_reachable
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (a key or folder); returns how many."""
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    # -- reads ---------------------------------------------------------------------------
    @_reachable
    def exists(self, key: str) -> bool:
        self._refresh()
        return self.fs.isfile(self._path(key)) and self.fs.isfile(self._digest_path(key))

    @_reachable
    def recorded_sha256(self, key: str) -> str:
        self._refresh()
        digest_path = self._digest_path(key)
        if not self.fs.isfile(self._path(key)) or not self.fs.isfile(digest_path):
            raise NotFound(f"Storage object {key!r} not found")
        return self.fs.cat_file(digest_path).decode().strip()

    @_reachable
    def info(self, key: str) -> ObjectInfo:
        """Size and recorded sha256 of an object (not re-hashed)."""
        digest = self.recorded_sha256(key)
        size = int(self.fs.info(self._path(key))["size"])
        return ObjectInfo(key, size, digest, self.uri(key))

    @_reachable
    def get_bytes(self, key: str) -> bytes:
        """Read an object, checking its bytes against the recorded sha256."""
        expected = self.recorded_sha256(key)
        data = self.fs.cat_file(self._path(key))
        actual = sha256_bytes(data)
        if actual != expected:
            raise IntegrityError(
                f"Storage object {key!r} is corrupt: sha256 {actual} does not match the recorded {expected}"
            )
        return data

    @_reachable
    def get_file(self, key: str, local_path: str | Path) -> ObjectInfo:
        """Download an object to a local file, verified; a corrupt download is removed."""
        expected = self.recorded_sha256(key)
        self.fs.get_file(self._path(key), str(local_path))
        actual = sha256_file(local_path)
        if actual != expected:
            Path(local_path).unlink(missing_ok=True)
            raise IntegrityError(
                f"Storage object {key!r} is corrupt: sha256 {actual} does not match the recorded {expected}"
            )
        return ObjectInfo(key, Path(local_path).stat().st_size, actual, self.uri(key))

    @_reachable
    def list(self, prefix: str = "") -> list[str]:
        """Keys of the complete objects under ``prefix`` (a folder or key), sorted."""
        prefix = validate_key(prefix.rstrip("/"), allow_empty=True) if prefix else ""
        self._refresh()
        base = f"{self.root}/{DIGEST_PREFIX}"
        start = f"{base}/{prefix}" if prefix else base
        if not self.fs.exists(start):
            return []
        if self.fs.isfile(start):
            candidates = [start]
        else:
            candidates = self.fs.find(start)
        keys = []
        for path in candidates:
            key = posixpath.relpath(_strip_protocol(path), _strip_protocol(base))
            if posixpath.basename(key).startswith("."):  # a sidecar being written (its temporary file)
                continue
            if self.fs.isfile(self._path(key)):
                keys.append(key)
        return sorted(keys)


def _strip_protocol(path: str) -> str:
    return path.split("://", 1)[-1]
