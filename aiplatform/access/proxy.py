"""Single sign-on through an authenticating reverse proxy (the oauth2-proxy convention).

The proxy signs the user in (OIDC and its own cookie) and forwards each request to the platform
with the user's identity in headers: ``X-Forwarded-Preferred-Username``, ``X-Forwarded-User``,
``X-Forwarded-Groups`` (and ``X-Forwarded-Email``, unused here). Anyone can send those headers,
so they are believed only on a connection whose own peer address (the socket's, never an
``X-Forwarded-For``) is one of ``AIP_TRUSTED_PROXIES``; from any other peer they are ignored and
the request needs a key like any other (docs/SECURITY.md, "Single sign-on").

The operator may map groups to roles (``AIP_SSO_GROUP_ROLES``, ``GROUP:PROJECT:ROLE``;
``GROUP:*:admin`` for platform admins): a signed-in user's groups then grant those roles
(``Grants``), kept in step with the groups the proxy names at each sign-in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiplatform.access.roles import ROLES
from aiplatform.access.store import NAME
from aiplatform.errors import Unauthenticated

USER_HEADERS = (b"x-forwarded-preferred-username", b"x-forwarded-user")
"""Where the proxy names the user, first found wins: oauth2-proxy's ``--pass-user-headers``."""
GROUPS_HEADER = b"x-forwarded-groups"
"""The user's groups, comma-separated (oauth2-proxy's ``--pass-user-headers``)."""
ALL_PROJECTS = "*"


@dataclass(frozen=True)
class Grants:
    """What a signed-in user's groups grant: a role per project, and whether platform admin."""

    roles: dict[str, str] = field(default_factory=dict)
    platform_admin: bool = False


def parse_group_roles(entries: Iterable[str]) -> tuple[tuple[str, str, str], ...]:
    """``GROUP:PROJECT:ROLE`` entries (checked by the setting) as ``(group, project, role)``."""
    return tuple((group, project, role) for group, project, role in (entry.split(":") for entry in entries))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` as an IP (an IPv4-mapped IPv6 address as its IPv4 one); None when it is none."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose identity headers sign a user in, and what happens to a user they name
    that the platform does not know yet (``new_user_role``: made with it; None: refused)."""

    networks: tuple[Network, ...] = ()
    new_user_role: str | None = None
    group_roles: tuple[tuple[str, str, str], ...] = ()
    """``(group, project, role)``: what each group grants (``*`` with ``admin``: platform admin)."""

    @classmethod
    def parse(
        cls, addresses: Iterable[str], new_user_role: str | None = None, group_roles: Iterable[str] = ()
    ) -> TrustedProxies:
        networks = tuple(ipaddress.ip_network(a.strip(), strict=False) for a in addresses)
        return cls(networks, new_user_role, parse_group_roles(group_roles))

    def granted(self, headers: Iterable[tuple[bytes, bytes]]) -> Grants | None:
        """What the groups the proxy names grant (the highest role per project); None when no
        groups are mapped (then a user's roles are only what admins gave them). Ask only for a
        request ``signed_in_user`` believed."""
        if not self.group_roles:
            return None
        groups = {
            group.strip()
            for key, value in headers
            if key == GROUPS_HEADER
            for group in value.decode("latin-1").split(",")
        }
        roles: dict[str, str] = {}
        admin = False
        for group, project, role in self.group_roles:
            if group not in groups:
                continue
            if project == ALL_PROJECTS:
                admin = True
            elif project not in roles or ROLES.index(role) > ROLES.index(roles[project]):
                roles[project] = role
        return Grants(roles, admin)

    def trusts(self, peer: str | None) -> bool:
        """Whether a connection from ``peer`` (the socket's address) is one of the proxies."""
        ip = peer_ip(peer)
        return ip is not None and any(ip.version == net.version and ip in net for net in self.networks)

    def signed_in_user(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The user a trusted proxy says the request is from; None when ``peer`` is no trusted
        proxy (its headers are ignored) or the proxy names nobody. ``Unauthenticated`` for a name
        that cannot be a platform user's."""
        if not self.networks or not self.trusts(peer):
            return None
        found = dict.fromkeys(USER_HEADERS)
        for key, value in headers:
            if key in found and found[key] is None:
                found[key] = value
        user = next((v.decode("latin-1").strip() for v in found.values() if v is not None and v.strip()), None)
        if user is None:
            return None
        if not NAME.fullmatch(user):
            raise Unauthenticated(
                f"The sign-in proxy named user {user[:80]!r}, which is not a platform user name "
                "(1-64 of a-z, 0-9, '.', '_', '-'): have it pass the user's preferred username"
            )
        return user

    def client_address(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """Where a request came from, for the audit log: behind a trusted proxy, the address the
        proxy saw (the last ``X-Forwarded-For`` entry: the one it appended); else the peer."""
        if not self.networks or not self.trusts(peer):
            return peer
        forwarded = [value for key, value in headers if key == b"x-forwarded-for"]
        last = forwarded[-1].decode("latin-1").rsplit(",", 1)[-1].strip() if forwarded else ""
        return last if peer_ip(last) is not None else peer


NO_PROXIES = TrustedProxies()
"""No sign-in proxy: identity headers are ignored from everyone."""
