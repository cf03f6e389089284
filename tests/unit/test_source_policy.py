"""The dataset-source allow-list: what an API caller may name, and how http(s) sources are
fetched (a real HTTP server on 127.0.0.1; no traffic leaves the machine: refused addresses are
refused before any connection)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiplatform.datasets.source_policy import SourcePolicy
from aiplatform.errors import InvalidArgument, TooLarge
from tests.factories import free_port

pytestmark = pytest.mark.unit


@pytest.fixture()
def policy(tmp_path: Path) -> SourcePolicy:
    root = tmp_path / "data"
    (root / "digits").mkdir(parents=True)
    return SourcePolicy(data_root=root, s3_prefixes=("s3://team-data/datasets",), http_hosts=("localhost",))


@pytest.mark.parametrize(
    "source",
    [
        "mnist",
        "tweets-sentiment",
        "idx:digits",
        "csv:digits/reviews.csv",
        "folder:{root}/digits",
        "parquet:s3://team-data/datasets/x.parquet",
        "csv:s3://team-data/datasets",
        "csv:https://localhost/x.csv",
    ],
)
def test_allowed_sources(policy: SourcePolicy, source: str) -> None:
    policy.check_source(source.format(root=policy.data_root))


@pytest.mark.parametrize(
    "source, reason",
    [
        ("csv:~/.ray/auth_token", "is not expanded"),
        ("csv:/etc/passwd", "inside the data root"),
        ("idx:../../..", "inside the data root"),
        ("csv:file:///etc/passwd", "file:// sources are not read"),
        ("parquet:simplecache::s3://team-data/datasets/x", "chained URLs"),
        ("csv:s3://other-bucket/x.csv", "not under AIP_DATASET_S3_PREFIXES"),
        ("csv:s3://team-data/datasets-evil/x.csv", "not under AIP_DATASET_S3_PREFIXES"),
        ("csv:http://169.254.169.254/latest/meta-data/", "not in AIP_DATASET_HTTP_HOSTS"),
        ("csv:https://user:pw@localhost/x.csv", "credentials in URLs"),
        ("csv:gs://bucket/x.csv", "gs:// sources are not read"),
        ("csv:digits/x.csv\nother", "control characters"),
        ("folder:https://localhost/images", "HTTP has no folders"),
        ("cifar10", "use a built-in source"),
    ],
)
def test_refused_sources_name_the_source_and_the_rule(policy: SourcePolicy, source: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match="is not allowed") as refused:
        policy.check_source(source)
    assert reason in refused.value.message and repr(source) in refused.value.message


def test_a_symbolic_link_out_of_the_data_root_is_refused(policy: SourcePolicy, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text("token\nabc\n")
    (policy.data_root / "innocent.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(InvalidArgument, match="inside the data root"):
        policy.check_source("csv:innocent.csv")


@pytest.fixture()
def server() -> Iterator[tuple[int, list[str]]]:
    """Serves /data.csv, redirects /hop to a URL named in the query, logs the paths asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if self.path.startswith("/hop?to="):
                self.send_response(302)
                self.send_header("Location", self.path.split("=", 1)[1])
                self.end_headers()
                return
            body = b"text,label\nhello,1\n" * (100 if self.path == "/data.csv" else 10_000)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], asked
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_listed_host_that_resolves_to_loopback_is_refused_unless_private_hosts_are_allowed(
    policy: SourcePolicy, server: tuple[int, list[str]]
) -> None:
    port, asked = server
    with pytest.raises(InvalidArgument, match="resolves to 127.0.0.1, a loopback, private"):
        policy.fetch(f"http://localhost:{port}/data.csv")
    assert asked == []  # refused before connecting
    lab = SourcePolicy(data_root=policy.data_root, http_hosts=("localhost",), private_hosts=True)
    assert lab.fetch(f"http://localhost:{port}/data.csv").startswith(b"text,label\n")


def test_redirects_are_followed_only_to_listed_hosts(policy: SourcePolicy, server: tuple[int, list[str]]) -> None:
    port, asked = server
    lab = SourcePolicy(data_root=policy.data_root, http_hosts=("localhost",), private_hosts=True)
    assert lab.fetch(f"http://localhost:{port}/hop?to=/data.csv").startswith(b"text,label")
    with pytest.raises(InvalidArgument, match="host '127.0.0.1' is not in AIP_DATASET_HTTP_HOSTS"):
        lab.fetch(f"http://localhost:{port}/hop?to=http://127.0.0.1:{port}/data.csv")
    assert asked[-1].startswith("/hop")  # the redirect's target was never asked for


def test_metadata_addresses_are_refused_even_where_private_hosts_are_allowed(tmp_path: Path) -> None:
    lab = SourcePolicy(data_root=tmp_path, http_hosts=("169.254.169.254",), private_hosts=True)
    with pytest.raises(InvalidArgument, match="metadata address"):
        lab.fetch("http://169.254.169.254/latest/meta-data/iam/security-credentials/")


def test_an_http_source_is_read_no_further_than_its_limit(policy: SourcePolicy, server: tuple[int, list[str]]) -> None:
    port, _ = server
    small = SourcePolicy(
        data_root=policy.data_root, http_hosts=("localhost",), private_hosts=True, max_http_bytes=10_000
    )
    with pytest.raises(TooLarge, match="over 10000 bytes"):
        small.fetch(f"http://localhost:{port}/big.csv")


def test_a_local_source_is_read_where_it_was_checked(policy: SourcePolicy) -> None:
    assert policy.check_source("idx:digits") == f"idx:{policy.data_root.resolve() / 'digits'}"
    assert policy.check_source("mnist") == "mnist"
