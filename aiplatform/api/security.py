"""Who may use the platform's HTTP surface, and from where (docs/SECURITY.md).

One plain ASGI middleware, before any route runs, in this order:

1. **Host**: the ``Host`` header must name one of ``AIP_ALLOWED_HOSTS`` (the port aside). A web
   page that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) sends its own name: refused.
2. **Origin**: a state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as coming
   from another origin (``Origin`` or ``Sec-Fetch-Site``) is refused (CSRF). Clients that are not
   browsers send neither header.
3. **Who**: with ``AIP_API_AUTH=token`` (the default) every request but the health probes and the
   UI's own files needs ``Authorization: Bearer <key>``: the operator's ``AIP_API_TOKEN`` (the
   platform admin) or a user's or service's API key (``aiplatform.access.store``); with no token
   configured, or no settings loaded yet, every such request is refused (the guard fails closed).
   A revoked or expired key, or a disabled user's, is a 401 naming why. Behind a sign-in proxy
   (oauth2-proxy) whose own address is in ``AIP_TRUSTED_PROXIES``, the user its headers name
   instead (``aiplatform.access.proxy``); those headers from any other peer are ignored.
4. **Where**: the project the request acts in: the one its path names (``/v1/projects/{p}``);
   for a request on a model (``/v1/models/{m}...``, ``/v2/models/{m}...``), the model's own
   project (so inference clients that name a model only keep working); else the
   ``X-AIP-Project`` header or ``?project=``; else the key's project; else ``default``.
5. **May they**: the request's action, from its method and path
   (``aiplatform.access.actions``), goes through the one authorization point
   (``aiplatform.access.roles.authorize``) in that project: 403 naming the role it needs, 404
   for a project the caller has no role in (or one that does not exist). The principal and the
   project are left in ``scope["state"]`` for the routes (``aiplatform.api.deps.PrincipalDep``,
   ``ProjectDep``).
6. **Audit**: every change (a POST, PUT, PATCH or DELETE that is not a read or a prediction) and
   every refusal of a known caller goes to the audit log with its principal, action, path,
   outcome and address; written off the event loop after the answer's status is known.

Every answer also carries headers that keep the UI out of frames and stop content sniffing; the
UI's page gets a Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiplatform.access import Action, AuditEntry, Principal, audited, authorize, request_action
from aiplatform.access.actions import RequestAction
from aiplatform.access.actor import access_store
from aiplatform.access.authenticate import principal_for
from aiplatform.access.protocols import AccessAPI
from aiplatform.access.proxy import NO_PROXIES, TrustedProxies
from aiplatform.access.roles import DEFAULT_PROJECT, PROJECT_HEADER
from aiplatform.access.store import KeyRefused, check_project_name
from aiplatform.api.errors import Receive, Scope, Send, send_error
from aiplatform.errors import HTTP_STATUS_BY_CODE, AIPError, NotFound, Unauthenticated
from aiplatform.registry import ModelProjects, model_projects
from aiplatform.runtime import on_head_node
from aiplatform.settings import Settings

logger = logging.getLogger(__name__)

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


MODEL_PATH = re.compile(r"/v[12]/models/(?P<name>[^/]+)(/.*)?")
"""A request on one model: it acts in the model's project."""
IN_A_PROJECT = frozenset({Action.READ, Action.INFER, Action.CREATE, Action.MANAGE})
"""Actions on a project's resources (the others are the platform's: users, keys, the audit log)."""


UNAUTHENTICATED = "This platform needs an API token: send 'Authorization: Bearer <token>' (AIP_API_TOKEN)"
WWW_AUTHENTICATE = ((b"www-authenticate", b'Bearer realm="aiplatform"'),)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


@dataclass(frozen=True)
class AccessPolicy:
    """What the guard enforces, from the platform's settings."""

    auth: str
    token: str | None
    allowed_hosts: tuple[str, ...]
    directory: AccessAPI | None = None
    """Users' and services' keys and the audit log (None: the bootstrap token alone)."""
    models: ModelProjects | None = None
    """Which project each model belongs to (None: every model is ``default``'s)."""
    proxies: TrustedProxies = NO_PROXIES
    """Sign-in proxies whose identity headers are believed (none: the headers are ignored)."""
    blocking: bool = False
    """Whether asking ``directory`` and ``models`` may wait on the head's actors (a gateway off
    the head node, ``aiplatform.access.actor``): the guard then asks from a worker thread."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        token = settings.api_token.get_secret_value() if settings.api_token is not None else None
        return cls(
            settings.api_auth,
            token or None,
            tuple(h.lower() for h in settings.allowed_hosts),
            access_store(settings),
            model_projects(settings),
            proxies=TrustedProxies.parse(
                settings.trusted_proxies, settings.sso_new_user_role, settings.sso_group_roles
            ),
            blocking=not on_head_node(),
        )

    def principal(self, authorization: str | None, scope: Scope | None = None) -> Principal:
        """Who ``authorization`` (the header's value) stands for: the bootstrap token is the
        platform admin; a key is its user (or service); on a connection from a trusted sign-in
        proxy (``scope``'s peer), the user it names. ``Unauthenticated`` otherwise."""
        signed_in = grants = None
        if scope is not None and self.auth != "off" and self.proxies.networks:
            client = scope.get("client")
            signed_in = self.proxies.signed_in_user(client[0] if client else None, scope.get("headers", []))
            grants = None if signed_in is None else self.proxies.granted(scope.get("headers", []))
        try:
            return principal_for(
                self.auth,
                self.token,
                self.directory,
                authorization,
                signed_in=signed_in,
                new_user_role=self.proxies.new_user_role,
                grants=grants,
            )
        except KeyRefused:
            raise
        except Unauthenticated:
            if signed_in is not None:
                raise
            raise Unauthenticated(UNAUTHENTICATED) from None

    def project(self, scope: Scope, path: str, action: RequestAction, principal: Principal) -> str:
        """The project the request acts in (the module docstring, step 4); ``InvalidArgument``
        for a malformed name, ``NotFound`` for a project that does not exist."""
        if action.project is not None:
            return check_project_name(unquote(action.project))
        model = MODEL_PATH.fullmatch(path)
        if model is not None and self.models is not None:
            owner = self.models.project_of(unquote(model["name"]))
            if owner is not None:
                return owner
        named = _header(scope, PROJECT_HEADER.encode())
        if named is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("project")
            named = query[0] if query else None
        if named is None:
            return principal.project or DEFAULT_PROJECT
        project = check_project_name(named.strip())
        if (
            principal.platform_admin
            and action.action in IN_A_PROJECT
            and project != DEFAULT_PROJECT
            and self.directory is not None
            and not self.directory.project_exists(project)
        ):
            raise NotFound(f"Project {project!r} not found")
        return project

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
        try:
            policy = self.policy_of(scope)
        except Exception:
            policy = None
        refusal = self._refusal(scope, path, policy)
        if refusal is not None:
            status, code, message, extra = refusal
            await send_error(scope, send, status, code, message, (*SECURITY_HEADERS, *extra))
            return
        send = _with_security_headers(send, ui=path == "/" or path.startswith("/ui/"))
        if policy is None or is_public(path):
            await self.app(scope, receive, send)
            return
        await self._authorized(policy, scope, receive, send, path)

    async def _authorized(self, policy: AccessPolicy, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """The request, when its principal may do its action; else its 401/403/404."""
        method = scope.get("method", "GET").upper()
        action = request_action(method, path)
        known: list[Principal] = []
        project = DEFAULT_PROJECT

        def identify() -> str:
            known.append(policy.principal(_header(scope, b"authorization"), scope))
            return policy.project(scope, path, action, known[0])

        try:
            project = await asyncio.to_thread(identify) if policy.blocking else identify()
            authorize(known[0], action.action, project=project, model=action.model, owner=action.owner)
        except AIPError as exc:
            status = HTTP_STATUS_BY_CODE.get(exc.code, 500)
            if known or isinstance(exc, KeyRefused):
                who = known[0].name if known else exc.user  # type: ignore[attr-defined]
                key = known[0].key_id if known else exc.key_id  # type: ignore[attr-defined]
                await self._audit(policy, scope, who, key, action.action, method, path, "denied", status, project)
            extra = WWW_AUTHENTICATE if status == 401 else ()
            await send_error(scope, send, status, exc.code, exc.message, extra)
            return
        principal = known[0]
        if (
            principal.key_id is not None
            and policy.directory is not None
            and policy.directory.needs_touch(principal.key_id)
        ):
            await asyncio.to_thread(policy.directory.touch, principal.key_id)
        state = scope.setdefault("state", {})
        state["principal"], state["project"] = principal, project
        if not audited(method, action):
            await self.app(scope, receive, send)
            return
        answered = [500]

        async def send_noting_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            outcome = "ok" if answered[0] < 400 else "failed"
            await self._audit(
                policy,
                scope,
                principal.name,
                principal.key_id,
                action.action,
                method,
                path,
                outcome,
                answered[0],
                project,
            )

    async def _audit(
        self,
        policy: AccessPolicy,
        scope: Scope,
        principal: str,
        key_id: str | None,
        action: str,
        method: str,
        path: str,
        outcome: str,
        status: int,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        if policy.directory is None:
            return
        client = scope.get("client")
        entry = AuditEntry(
            time.time(),
            principal,
            key_id,
            str(action),
            method,
            path[:1000],
            project,
            outcome,
            status,
            policy.proxies.client_address(client[0] if client else None, scope.get("headers", [])),
        )
        try:
            await asyncio.to_thread(policy.directory.record, entry)
        except Exception:  # the answer is sent; an unwritable log is the operator's to see
            logger.exception("could not write the audit entry for %s %s", method, path)

    def _refusal(
        self, scope: Scope, path: str, policy: AccessPolicy | None
    ) -> tuple[int, str, str, tuple[tuple[bytes, bytes], ...]] | None:
        """Host, origin, and whether authentication can be checked at all."""
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
        return None


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
