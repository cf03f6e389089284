"""What Serve's HTTP proxy gave every request, for an app served without it (the gateway's own
listener, ``aiplatform.serving.ingress``): back-pressure and a deadline.

Past ``limit`` requests in flight the answer is 503 with ``Retry-After`` at once, as Serve's
``max_ongoing_requests`` plus ``max_queued_requests`` did. A request that has not begun its answer
after ``timeout_s`` (Serve's ``request_timeout_s``) is cancelled and answered 504; an answer that has
begun (a log stream) runs on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiplatform.api.errors import Receive, Scope, Send, send_error


class Admission:
    """ASGI wrapper: at most ``limit`` HTTP requests in the app at once (the others get 503), each
    for at most ``timeout_s``."""

    def __init__(self, app: Any, limit: int, retry_after_s: int, timeout_s: float) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = str(retry_after_s).encode()
        self.timeout_s = timeout_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await send_error(
                scope,
                send,
                503,
                "unavailable",
                f"The gateway has {self.in_flight} requests in flight; retry in {self.retry_after.decode()} s",
                ((b"retry-after", self.retry_after),),
            )
            return
        # One timer per request, in the request's own task (no second task on the hot path): past
        # the deadline it cancels the request unless its answer has begun.
        state = {"begun": False, "timed_out": False}
        task = asyncio.current_task()

        def expire() -> None:
            if not state["begun"] and task is not None:
                state["timed_out"] = True
                task.cancel()

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["begun"] = True
            await send(message)

        self.in_flight += 1
        timer = asyncio.get_running_loop().call_later(self.timeout_s, expire)
        try:
            await self.app(scope, receive, tracked_send)
        except asyncio.CancelledError:
            if not state["timed_out"] or task is None:
                raise  # cancelled from outside (the client left): not ours to answer
            task.uncancel()
            await send_error(
                scope,
                send,
                504,
                "unavailable",
                f"The request took longer than {self.timeout_s:g} s (AIP_SERVE_REQUEST_TIMEOUT_S)",
            )
        finally:
            timer.cancel()
            self.in_flight -= 1
