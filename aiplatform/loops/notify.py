"""The decision webhook: each run's end (promoted, rolled back, rejected, failed) POSTed as JSON to
the alert webhooks, signed with ``AIP_LOOP_WEBHOOK_SECRET`` when it is set, retried with the
alert webhooks' backoff (``aiplatform.alerting.notify``). The outbox is ``loops.sqlite``: a
delivery is queued in the transaction that ends the run, so a restart loses none.

The signature: ``X-AIP-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with the
timestamp in ``X-AIP-Timestamp`` (a receiver refuses an old one: no replays).
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import httpx

from aiplatform.alerting.notify import MAX_ATTEMPTS, TIMEOUT_S, retry_delay_s
from aiplatform.alerting.store import redacted_url
from aiplatform.loops.store import LoopStore

logger = logging.getLogger(__name__)
SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-AIP-Signature", "X-AIP-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` over ``timestamp.body``: what a receiver recomputes and compares."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send_due(store: LoopStore, secret: str | None, now: float, timeout_s: float = TIMEOUT_S) -> int:
    """Send every decision that is due; returns how many were accepted (2xx)."""
    accepted = 0
    for delivery in store.due_deliveries(now):
        body = delivery["payload"].encode()
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(int(now))}
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, headers[TIMESTAMP_HEADER], body)
        try:
            response = httpx.post(delivery["url"], content=body, headers=headers, timeout=timeout_s)
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__  # never the text: it may repeat the URL's token
        if error is None:
            store.delivery_done(delivery["id"], now)
            accepted += 1
            continue
        attempts = int(delivery["attempts"]) + 1
        retry_at = now + retry_delay_s(attempts) if attempts < MAX_ATTEMPTS else None
        if retry_at is None:
            logger.warning(
                "loop webhook %s gave up after %d attempts: %s", redacted_url(delivery["url"]), attempts, error
            )
        store.delivery_failed(delivery["id"], error, retry_at)
    return accepted
