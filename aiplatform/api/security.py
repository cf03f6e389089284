"""Who may use the platform's HTTP surface, and from where (docs/SECURITY.md).

One plain ASGI middleware, before any route runs, in this order:

1. **Host**: the ``Host`` header must name one of ``AIP_ALLOWED_HOSTS`` (the port aside). A web
   page that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) sends its own name: refused.
2. **Origin**: a state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as coming
   from another origin (``Origin`` or ``Sec-Fetch-Site``) is refused (CSRF). Clients that are not
   browsers send neither header.
3. **Token**: with ``AIP_API_AUTH=token`` (the default) every request but the health probes and the
   UI's own files needs ``Authorization: Bearer <AIP_API_TOKEN>``; with no token configured, or no
   settings loaded yet, every such request is refused (the guard fails closed).

Every answer also carries headers that keep the UI out of frames and stop content sniffing; the
UI's page gets a Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiplatform.api.errors import Receive, Scope, Send, send_error
from aiplatform.settings import Settings

HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
PUBLIC_PATHS = HEALTH_PATHS | {"/", "/favicon.ico"}
PUBLIC_PREFIXES = ("/ui/",)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY_HOST = "*"
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
UI_CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


@dataclass(frozen=True)
class AccessPolicy:
    """What the guard enforces, from the platform's settings."""

    auth: str
    token: str | None
    allowed_hosts: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        token = settings.api_token.get_secret_value() if settings.api_token is not None else None
        return cls(settings.api_auth, token or None, tuple(h.lower() for h in settings.allowed_hosts))

    def host_allowed(self, host: str) -> bool:
        return ANY_HOST in self.allowed_hosts or _host_name(host) in self.allowed_hosts


def _host_name(netloc: str) -> str:
    """``127.0.0.1:8000`` -> ``127.0.0.1``; ``[::1]:8000`` -> ``::1``."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class AccessGuard:
    """The middleware; ``policy_of(scope)`` is read per request (None: settings not loaded, fail
    closed)."""

    def __init__(self, app: Any, policy_of: Callable[[Scope], AccessPolicy | None]) -> None:
        self.app = app
        self.policy_of = policy_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        refusal = self._refusal(scope, path)
        if refusal is not None:
            status, code, message, extra = refusal
            await send_error(scope, send, status, code, message, (*SECURITY_HEADERS, *extra))
            return
        await self.app(scope, receive, _with_security_headers(send, ui=path == "/" or path.startswith("/ui/")))

    def _refusal(self, scope: Scope, path: str) -> tuple[int, str, str, tuple[tuple[bytes, bytes], ...]] | None:
        try:
            policy = self.policy_of(scope)
        except Exception:
            policy = None
        if policy is None:
            if path in HEALTH_PATHS:
                return None  # health probes answer while the platform starts
            return (
                503,
                "unavailable",
                "The platform's access settings are not loaded yet; retry in a moment",
                ((b"retry-after", b"1"),),
            )
        host = _header(scope, b"host") or ""
        if not policy.host_allowed(host):
            return (
                400,
                "invalid_host",
                (
                    f"Host {host[:100]!r} is not a name this platform answers to; "
                    "the operator lists them in AIP_ALLOWED_HOSTS"
                ),
                (),
            )
        if scope.get("method", "GET").upper() in STATE_CHANGING:
            foreign = _foreign_origin(scope, host)
            if foreign is not None:
                return 403, "forbidden", f"Cross-origin request from {foreign[:100]!r} refused", ()
        if policy.auth == "off" or is_public(path):
            return None
        if policy.token is None:
            return (
                503,
                "unavailable",
                (
                    "No API token is configured: set AIP_API_TOKEN (`aip up` makes one) or "
                    "turn authentication off with AIP_API_AUTH=off"
                ),
                (),
            )
        if hmac.compare_digest((_header(scope, b"authorization") or "").encode(), f"Bearer {policy.token}".encode()):
            return None
        return (
            401,
            "unauthenticated",
            "This platform needs an API token: send 'Authorization: Bearer <token>' (AIP_API_TOKEN)",
            ((b"www-authenticate", b'Bearer realm="aiplatform"'),),
        )


def _foreign_origin(scope: Scope, host: str) -> str | None:
    """The origin a browser says a request comes from, when it is not this one."""
    origin = _header(scope, b"origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != host.strip().lower():
            return origin
    if (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site":
        return origin or "another site"
    return None


def _with_security_headers(send: Send, *, ui: bool) -> Send:
    async def send_with_headers(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {key.lower() for key, _ in headers}
            headers += [(key, value) for key, value in SECURITY_HEADERS if key not in present]
            if ui:
                headers.append((b"content-security-policy", UI_CONTENT_SECURITY_POLICY))
            message = {**message, "headers": headers}
        await send(message)

    return send_with_headers
