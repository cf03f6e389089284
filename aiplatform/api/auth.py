"""Bearer-token authentication for the platform's HTTP surface (API, inference, UI data).

With ``AIP_API_TOKEN`` set, every request needs ``Authorization: Bearer <token>`` except the
health probes and the UI's own static files (the page must load to ask for the token); without
it the surface is open, as on a laptop. A plain ASGI middleware: a request that passes costs one
constant-time comparison.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Optional

from aiplatform.api.errors import Receive, Scope, Send, send_error

PUBLIC_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/favicon.ico"})
PUBLIC_PREFIXES = ("/ui/",)
UNAUTHENTICATED = "unauthenticated"

def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class BearerTokenMiddleware:
    """Refuses requests without the token with 401 and ``WWW-Authenticate: Bearer``.
    ``token_of`` is read per request (the token comes with the platform's settings)."""

    def __init__(self, app: Any, token_of: Callable[[], Optional[str]]) -> None:
        self.app = app
        self.token_of = token_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = self.token_of()
        path = scope.get("path", "")
        if not token or is_public(path) or _authorized(scope, token):
            await self.app(scope, receive, send)
            return
        await send_error(scope, send, 401, UNAUTHENTICATED,
                         "This platform needs an API token: send 'Authorization: Bearer <token>' (AIP_API_TOKEN)",
                         ((b"www-authenticate", b'Bearer realm="aiplatform"'),))


def _authorized(scope: Scope, token: str) -> bool:
    supplied = b""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            supplied = value
            break
    return hmac.compare_digest(supplied, f"Bearer {token}".encode())
