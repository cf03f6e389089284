"""Local-directory storage: atomic writes through a temporary file and ``os.replace``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs
from fsspec.implementations.local import LocalFileSystem

from aiplatform.storage.base import Storage


class LocalStorage(Storage):
    """Artifacts in a directory on this machine (the default on one machine)."""

    def __init__(self, root: str | Path) -> None:
        root_path = Path(root).expanduser().resolve()
        root_path.mkdir(parents=True, exist_ok=True)
        super().__init__(LocalFileSystem(), str(root_path), root_path.as_uri())

    def _write_atomic(self, path: str, data: bytes) -> None:
        with self._temp_beside(path) as (handle, temp_path):
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)

    def _upload_atomic(self, path: str, local_path: str) -> None:
        with self._temp_beside(path) as (handle, temp_path):
            with open(local_path, "rb") as source:
                shutil.copyfileobj(source, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)

    def arrow_filesystem(self) -> pyarrow.fs.FileSystem:
        return pyarrow.fs.LocalFileSystem()

    @staticmethod
    def _temp_beside(path: str) -> _TempFile:
        return _TempFile(path)


class _TempFile:
    """A temporary file in the target's directory (same filesystem, so ``os.replace`` is atomic)."""

    def __init__(self, path: str) -> None:
        self.directory = os.path.dirname(path)

    def __enter__(self):  # type: ignore[no-untyped-def]
        os.makedirs(self.directory, exist_ok=True)
        fd, self.temp_path = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        self.handle = os.fdopen(fd, "wb")
        return self.handle, self.temp_path

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        self.handle.close()
        if exc_type is not None:
            Path(self.temp_path).unlink(missing_ok=True)
