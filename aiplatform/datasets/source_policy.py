"""Which dataset sources a caller of the API may name, and fetching ``http(s)`` ones safely.

A training task's ``dataset`` parameter comes from whoever can reach the API. Read as given, it
would make the head node read any local file (and show the start of it in an error) or fetch any
address it can reach, cloud metadata services included. So a source named through the API must be:

- a built-in source (``mnist``, ``tweets-sentiment``, the tables ``penguins``, ``breast-cancer``, ``wine``);
- a local path inside ``AIP_DATA_ROOT`` (after resolving ``..`` and symbolic links); a folder's
  every entry too, since readers list and read a folder's files (a link inside it may point out);
- an ``s3://`` location under one of ``AIP_DATASET_S3_PREFIXES``, its key without ``.``, ``..``
  or empty segments (S3 keeps them as written; a store or client that normalises paths would not);
- an ``http(s)://`` URL on one of ``AIP_DATASET_HTTP_HOSTS``, whose addresses are public (checked
  after DNS resolution, the connection made to the address that was checked, every redirect
  checked again) unless ``AIP_DATASET_PRIVATE_HOSTS`` allows private ones.

Never ``file://``, never fsspec's chained URLs (``simplecache::s3://...``), no other scheme.
Errors name the refused source and the rule; they never repeat anything read from it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from aiplatform.errors import InvalidArgument, NotFound, TooLarge, Unavailable
from aiplatform.settings import Settings

BUILT_IN_SOURCES = frozenset({"mnist", "tweets-sentiment", "penguins", "breast-cancer", "wine"})
SOURCE_KINDS = ("idx", "folder", "parquet", "csv", "jsonl")
MAX_REDIRECTS = 5
HTTP_TIMEOUT_S = 30.0
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)


@dataclass(frozen=True)
class SourcePolicy:
    """The allow-list (from settings) and the checks that apply it."""

    data_root: Path
    s3_prefixes: tuple[str, ...] = ()
    http_hosts: tuple[str, ...] = ()
    private_hosts: bool = False
    max_http_bytes: int = 512 * 1024**2

    @classmethod
    def from_settings(cls, settings: Settings) -> SourcePolicy:
        return cls(
            data_root=settings.resolved_data_root,
            s3_prefixes=tuple(p.rstrip("/") for p in settings.dataset_s3_prefixes),
            http_hosts=tuple(h.lower() for h in settings.dataset_http_hosts),
            private_hosts=settings.dataset_private_hosts,
            max_http_bytes=settings.max_http_source_bytes,
        )

    def check_source(self, source: str) -> str:
        """A template's ``dataset`` parameter (``mnist``, ``csv:<location>``...) as it is to be
        read: a local location becomes the absolute path it resolved to (relative ones are
        relative to the data root). Raises :class:`InvalidArgument` naming the source and the
        rule it breaks."""
        if source in BUILT_IN_SOURCES:
            return source
        kind, sep, location = source.partition(":")
        if not sep or kind not in SOURCE_KINDS or not location:
            raise InvalidArgument(
                f"Dataset source {source!r} is not allowed: use a built-in source or "
                f"{', '.join(k + ':<location>' for k in SOURCE_KINDS)}"
            )
        if kind == "folder" and location.lower().startswith(("http://", "https://")):
            raise InvalidArgument(
                f"Dataset source {source!r} is not allowed: an image folder must be a local "
                "path or s3:// (HTTP has no folders)"
            )
        return f"{kind}:{self.check_location(location, source)}"

    def check_location(self, location: str, source: str | None = None) -> str:
        """The location part of a source (a path, ``s3://`` or ``http(s)://`` URL), as it is to be read."""
        named = source or location
        if any(ord(c) < 32 or ord(c) == 127 for c in location):
            raise self._refused(named, "it contains control characters")
        if "::" in location:
            raise self._refused(named, "chained URLs (fsspec '::') are never read")
        scheme = location.split("://", 1)[0].lower() if "://" in location else ""
        if scheme == "s3":
            self._check_s3(location, named)
        elif scheme in ("http", "https"):
            self._check_http_url(location, named)
        elif scheme:
            raise self._refused(
                named, f"{scheme}:// sources are not read; use a path under the data root, s3:// or http(s)://"
            )
        else:
            return str(self.local_path(location, named))
        return location

    def local_path(self, location: str, named: str | None = None) -> Path:
        """The real path of a local location, which must lie inside the data root."""
        if location.startswith("~"):
            raise self._refused(
                named or location,
                f"'~' is not expanded; name a path inside the data root {self.data_root} (AIP_DATA_ROOT)",
            )
        root = self.data_root.resolve()
        path = Path(location)
        resolved = (path if path.is_absolute() else root / path).resolve()
        if not _inside(resolved, root):
            raise self._refused(named or location, f"local sources must be inside the data root {root} (AIP_DATA_ROOT)")
        if resolved.is_dir():
            self._check_folder_links(resolved, root, named or location)
        return resolved

    def _check_folder_links(self, folder: Path, root: Path, named: str) -> None:
        """Every entry under ``folder`` that is a symbolic link must resolve inside ``root``: the
        readers list a folder's files following links (fsspec does), so one link to a file or
        folder outside would be read. Folders reached through links are walked too, once each."""
        pending, seen = [(folder, "")], {folder}
        while pending:
            current, shown = pending.pop()
            try:
                with os.scandir(current) as entries:
                    found = [(entry, entry.is_symlink()) for entry in entries]
                for entry, is_link in found:
                    name = f"{shown}{entry.name}"
                    real = Path(entry.path).resolve() if is_link else Path(entry.path)
                    if is_link and not _inside(real, root):
                        raise self._refused(named, f"{name!r} in it links outside the data root {root} (AIP_DATA_ROOT)")
                    if entry.is_dir() and real not in seen:  # is_dir follows links, as the readers do
                        seen.add(real)
                        pending.append((real, f"{name}/"))
            except OSError as exc:
                raise InvalidArgument(f"Dataset source {named!r} cannot be listed ({type(exc).__name__})") from exc

    def _check_s3(self, location: str, named: str) -> None:
        bucket, _, key = location[len("s3://") :].partition("/")
        segments = key.rstrip("/").split("/") if key.rstrip("/") else []
        if not bucket or any(segment in ("", ".", "..") for segment in segments):
            raise self._refused(
                named, "its s3:// location needs a bucket and a key without '.', '..' or empty segments"
            )
        target = location.rstrip("/")
        if not any(target == prefix or target.startswith(prefix + "/") for prefix in self.s3_prefixes):
            raise self._refused(named, "its s3:// location is not under AIP_DATASET_S3_PREFIXES")

    def _check_http_url(self, url: str, named: str) -> str:
        """The URL's host once it is on the list; its addresses are checked when it is fetched."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise self._refused(named, "it is not an absolute http(s) URL")
        if parts.username or parts.password:
            raise self._refused(named, "credentials in URLs are not sent")
        if host not in self.http_hosts:
            raise self._refused(named, f"host {host!r} is not in AIP_DATASET_HTTP_HOSTS")
        return host

    def checked_addresses(self, host: str, port: int, named: str) -> list[str]:
        """The host's addresses once every one is allowed (all of them: DNS may answer either)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NotFound(f"Dataset source {named!r}: host {host!r} cannot be resolved") from exc
        addresses = sorted({info[4][0] for info in infos})
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if ip in METADATA_ADDRESSES or (not self.private_hosts and not ip.is_global):
                raise self._refused(
                    named, f"host {host!r} resolves to {address}, a loopback, private, link-local or metadata address"
                )
        return addresses

    def fetch(self, url: str, named: str | None = None) -> bytes:
        """GET an allowed URL: connected to an address that was checked, redirects followed only
        to allowed URLs, at most ``max_http_bytes`` read."""
        return b"".join(self.stream(url, named))

    def stream(self, url: str, named: str | None = None) -> Iterator[bytes]:
        named = named or url
        for _ in range(MAX_REDIRECTS + 1):
            host = self._check_http_url(url, named)
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = self.checked_addresses(host, port, named)[0]
            literal = f"[{address}]" if ":" in address else address
            pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
            try:
                with (
                    httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=False) as client,
                    client.stream("GET", pinned, headers=headers, extensions={"sni_hostname": host}) as response,
                ):
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code == 404:
                        raise NotFound(f"Dataset source {named!r} not found (HTTP 404)")
                    if response.status_code >= 400:
                        raise InvalidArgument(f"Dataset source {named!r} answered HTTP {response.status_code}")
                    received = 0
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > self.max_http_bytes:
                            raise TooLarge(
                                f"Dataset source {named!r} is over {self.max_http_bytes} bytes "
                                "(AIP_MAX_HTTP_SOURCE_BYTES)"
                            )
                        yield chunk
                    return
            except httpx.HTTPError as exc:
                raise Unavailable(f"Dataset source {named!r} cannot be fetched ({type(exc).__name__})") from exc
        raise self._refused(named, f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _refused(source: str, why: str) -> InvalidArgument:
        return InvalidArgument(f"Dataset source {source!r} is not allowed: {why}")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


HttpGet = Callable[[str, str], bytes]
"""(url, the source as named) -> the body: ``SourcePolicy.fetch`` or :func:`trusted_fetch`."""


def trusted_fetch(url: str, named: str | None = None) -> bytes:
    """GET for sources a trusted caller names (a cluster user's own job, library code): no
    allow-list, redirects followed, as any HTTP client would."""
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise Unavailable(f"Dataset source {named or url!r} cannot be fetched ({type(exc).__name__})") from exc
    if response.status_code == 404:
        raise NotFound(f"Dataset source {named or url!r} not found (HTTP 404)")
    if response.status_code >= 400:
        raise InvalidArgument(f"Dataset source {named or url!r} answered HTTP {response.status_code}")
    return response.content
