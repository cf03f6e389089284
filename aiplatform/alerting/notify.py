"""Webhook notifications: each alert change is POSTed as JSON to every configured URL, retried
with exponential backoff until it is accepted (2xx) or ``MAX_ATTEMPTS`` have failed. The outbox
is the alert store, so deliveries survive a restart of the alert engine."""

from __future__ import annotations

import logging
import time

import httpx

from aiplatform.alerting.store import AlertStore, redacted_url

logger = logging.getLogger(__name__)
TIMEOUT_S = 5.0
MAX_ATTEMPTS = 6
BASE_DELAY_S = 1.0
MAX_DELAY_S = 300.0


def retry_delay_s(attempts: int, base_s: float = BASE_DELAY_S) -> float:
    """1, 2, 4, ... seconds (capped) after the ``attempts``-th failure."""
    return min(MAX_DELAY_S, base_s * 2 ** max(0, attempts - 1))


class WebhookNotifier:
    def __init__(
        self,
        store: AlertStore,
        *,
        timeout_s: float = TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay_s: float = BASE_DELAY_S,
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s

    def deliver_due(self, now: float | None = None) -> int:
        """Send every delivery that is due; returns how many were accepted."""
        accepted = 0
        now = time.time() if now is None else now
        for delivery in self.store.due_deliveries(now):
            error = self._post(delivery["url"], delivery["payload"])
            if error is None:
                self.store.delivery_done(delivery["id"], now)
                accepted += 1
                continue
            attempts = int(delivery["attempts"]) + 1
            retry_at = now + retry_delay_s(attempts, self.base_delay_s) if attempts < self.max_attempts else None
            if retry_at is None:
                logger.warning(
                    "webhook %s gave up after %d attempts: %s", redacted_url(delivery["url"]), attempts, error
                )
            self.store.delivery_failed(delivery["id"], error, retry_at, now)
        return accepted

    def _post(self, url: str, payload: str) -> str | None:
        """None when accepted, else what went wrong: the error's kind or the HTTP status, never
        the exception text or the response body (either may repeat the URL's token)."""
        try:
            response = httpx.post(
                url, content=payload, headers={"Content-Type": "application/json"}, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
