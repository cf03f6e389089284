"""S3 (or S3-compatible) storage through s3fs; a single PUT is atomic in S3."""

from __future__ import annotations

import pyarrow.fs
import s3fs

from aiplatform.errors import InvalidArgument
from aiplatform.storage.base import Storage


class S3Storage(Storage):
    """Artifacts under ``s3://bucket/prefix``; ``endpoint_url`` selects a non-AWS server."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        if not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise InvalidArgument(f"S3 storage URI must look like s3://bucket/prefix, got {uri!r}")
        root = uri[len("s3://") :].strip("/")
        client_kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
        self._fs_kwargs = {
            "key": access_key_id,
            "secret": secret_access_key,
            "client_kwargs": client_kwargs,
            "use_listings_cache": False,
            "skip_instance_cache": True,
        }
        super().__init__(s3fs.S3FileSystem(**self._fs_kwargs), root, f"s3://{root}")

    def unreachable_errors(self) -> tuple[type[BaseException], ...]:
        import aiohttp
        import botocore.exceptions

        return (
            *super().unreachable_errors(),
            botocore.exceptions.ConnectionError,
            botocore.exceptions.ReadTimeoutError,
            aiohttp.ClientConnectionError,
        )

    def _write_atomic(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)

    def _upload_atomic(self, path: str, local_path: str) -> None:
        self.fs.put_file(local_path, path)

    def _refresh(self) -> None:
        self.fs.invalidate_cache()

    def arrow_filesystem(self) -> pyarrow.fs.FileSystem:
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(s3fs.S3FileSystem(**self._fs_kwargs)))
