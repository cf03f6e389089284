"""Webhook deliveries against a real HTTP server on loopback: retried with backoff until
accepted, given up after the last attempt, and an unreachable URL is only a failed attempt."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiplatform.alerting.notify import WebhookNotifier, retry_delay_s
from aiplatform.alerting.store import AlertStore
from aiplatform.errors import InvalidArgument
from tests.factories import free_port

pytestmark = pytest.mark.unit
SECRET_PATH = "T0KEN-in-the-url"


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[dict], list[int]]]:  # type: ignore[type-arg]
    """A webhook receiver answering with the statuses queued in ``statuses`` (then 200)."""
    received: list[dict] = []  # type: ignore[type-arg]
    statuses: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = statuses.pop(0) if statuses else 200
            if status == 200:
                received.append(json.loads(body))
            self.send_response(status)
            self.end_headers()
            if status != 200:  # a service that repeats what it was sent, token included
                self.wfile.write(f"rejected {self.path}".encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/{SECRET_PATH}", received, statuses
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_webhook_is_retried_with_backoff_until_accepted(tmp_path: Path, receiver) -> None:  # type: ignore[no-untyped-def]
    url, received, statuses = receiver
    store = AlertStore(tmp_path / "alerts.sqlite")
    statuses.extend([500, 503])
    alert, _ = store.open_alert(
        "error-rate-high", "error_rate{model=m}", {"model": "m"}, "critical", "boom", 0.4, [url], now=100.0
    )
    notifier = WebhookNotifier(store)
    assert notifier.deliver_due(now=100.0) == 0  # 500
    assert notifier.deliver_due(now=100.5) == 0  # not due yet: the next try is at 101
    assert notifier.deliver_due(now=101.0) == 0  # 503
    assert notifier.deliver_due(now=102.5) == 0  # the next is 2 s later
    assert notifier.deliver_due(now=103.0) == 1
    [delivery] = store.deliveries(alert.id)
    assert delivery["attempts"] == 3 and delivery["delivered_at"] == 103.0 and delivery["last_error"] == "HTTP 503"
    # What the API shows of a delivery names neither the URL's secret nor what the service answered.
    assert delivery["url"] == f"http://127.0.0.1:{url.split(':')[2].split('/')[0]}/..."
    assert SECRET_PATH not in json.dumps(store.deliveries())
    assert received == [{"event": "firing", "alert": alert.to_dict()}]
    assert [retry_delay_s(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 300.0]


def test_an_unreachable_webhook_gives_up_after_the_last_attempt(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.sqlite")
    store.open_alert("r", "s", {}, "warning", "m", 1.0, [f"http://127.0.0.1:{free_port()}/nobody"], now=0.0)
    notifier = WebhookNotifier(store, timeout_s=1, max_attempts=3)
    for now in (0.0, 1.0, 3.0, 7.0):
        notifier.deliver_due(now=now)
    [delivery] = store.deliveries()
    assert delivery["attempts"] == 3 and delivery["failed_at"] is not None and delivery["delivered_at"] is None
    assert "ConnectError" in delivery["last_error"]
    assert store.due_deliveries(now=10_000.0) == []


def test_alerts_page_by_cursor_through_every_filter_on_an_index(tmp_path: Path) -> None:
    from aiplatform.alerting.store import alerts_cursor

    store = AlertStore(tmp_path / "alerts.sqlite")
    for i in range(9):
        store.open_alert(
            "latency" if i % 3 else "errors", f"series-{i}", {}, "warning", "m", 1.0, [], now=1000.0 + i // 2
        )
        if i % 2:
            store.resolve("latency" if i % 3 else "errors", f"series-{i}", [], now=2000.0)
    pages, before = [], None
    while True:
        page = store.query(rule="latency", limit=2, before=before)
        pages.extend(a.series for a in page)
        if len(page) < 2:
            break
        before = alerts_cursor(page)
    expected = [
        a.series
        for a in sorted(
            (a for a in store.query(limit=100) if a.rule == "latency"), key=lambda a: (a.started_at, a.id), reverse=True
        )
    ]
    assert pages == expected and len(pages) == 6
    with pytest.raises(InvalidArgument, match="cursor"):
        store.query(before="x~y")
    for filters, index in (({"state": "firing"}, "alerts_by_state"), ({"rule": "errors"}, "alerts_by_rule")):
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        store.query(limit=10, **filters)
        store._db.set_trace_callback(None)
        select = next(s for s in statements if s.startswith("SELECT * FROM alerts"))
        plan = " ".join(row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {select}"))
        assert f"USING INDEX {index}" in plan and "TEMP B-TREE" not in plan, plan
