"""``aip users``, ``aip keys``, ``aip audit``, ``aip whoami``: people and their API keys, the
audit log, and who the CLI is talking as (it sends ``AIP_API_TOKEN``: the operator's token or a
user's key)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aip.api_client import PlatformAPI
from aip.results_cli import parse_since
from aiplatform.access.roles import ROLES
from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _user_or_me(api: PlatformAPI, user: str | None) -> str:
    """``--user``, else the user whose key the CLI sends."""
    if user is not None:
        return user
    me = api.get("/v1/whoami")
    if me["kind"] != "user":
        raise InvalidArgument("Name the user with --user (the CLI is not using a user's key)")
    return str(me["name"])


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> None:
    body = {"name": args.name, "role": args.role, "platform_admin": args.platform_admin}
    user = PlatformAPI(settings).post("/v1/users", json=body)
    print(json.dumps(user) if args.json else f"user {user['name']} created ({args.role} in default)")


def cmd_users_list(args: argparse.Namespace, settings: Settings) -> None:
    users = PlatformAPI(settings).get("/v1/users")["users"]
    if args.json:
        print(json.dumps(users))
        return
    if not users:
        print("no users")
    for user in users:
        roles = ", ".join(f"{role} in {project}" for project, role in user["roles"].items())
        flags = (" platform-admin" if user["platform_admin"] else "") + (" DISABLED" if user["disabled_at"] else "")
        print(f"{user['name']:<24} {roles:<24} keys={user['live_keys']}{flags}")


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> None:
    user = PlatformAPI(settings).post(f"/v1/users/{quote(args.name, safe='')}/disable")
    print(json.dumps(user) if args.json else f"user {user['name']} disabled: their keys no longer work")


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    api = PlatformAPI(settings)
    user = _user_or_me(api, args.user)
    body: dict[str, Any] = {"name": args.name, "expires_in_days": args.expires_in_days}
    if args.models is not None:
        body["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    key = api.post(f"/v1/users/{quote(user, safe='')}/keys", json=body)
    if args.json:
        print(json.dumps(key))
        return
    scope = f"inference on {', '.join(key['models'])}" if key["models"] else "the user's roles"
    print(f"key {key['id']} ({key['name']}) of {user}: {scope}; expires {_when(key['expires_at'])}")
    print(key["secret"])
    print("this is the only time the key is shown: keep it (AIP_API_TOKEN=... for the CLI)")


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
    api = PlatformAPI(settings)
    user = _user_or_me(api, args.user)
    keys = api.get(f"/v1/users/{quote(user, safe='')}/keys")["keys"]
    if args.json:
        print(json.dumps(keys))
        return
    if not keys:
        print(f"{user} has no keys")
    for key in keys:
        state = "revoked" if key["revoked_at"] else f"expires {_when(key['expires_at'])}"
        scope = f" models={','.join(key['models'])}" if key["models"] else ""
        print(
            f"{key['id']}  {key['name']:<20} {key['kind']:<8} {state:<26} last used {_when(key['last_used_at'])}{scope}"
        )


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    api = PlatformAPI(settings)
    user = _user_or_me(api, args.user)
    key = api.request("DELETE", f"/v1/users/{quote(user, safe='')}/keys/{quote(args.id, safe='')}")
    print(json.dumps(key) if args.json else f"key {key['id']} of {user} revoked")


def cmd_audit(args: argparse.Namespace, settings: Settings) -> None:
    params: dict[str, Any] = {"limit": args.limit}
    for name, value in (
        ("principal", args.principal),
        ("action", args.action),
        ("outcome", args.outcome),
        ("since", parse_since(args.since)),
        ("before", args.before),
    ):
        if value is not None:
            params[name] = value
    page = PlatformAPI(settings).get("/v1/audit", params=params)
    if args.json:
        print(json.dumps(page))
        return
    if not page["entries"]:
        print("no audit entries")
    for e in page["entries"]:
        print(
            f"{_when(e['at'])}  {e['principal']:<16} {e['outcome']:<7} {e['status']} {e['method']:<6} "
            f"{e['resource']}  ({e['action']}, from {e['address'] or '-'})"
        )
    if page["next_before"] is not None:
        print(f"more: --before {page['next_before']}")


def cmd_whoami(args: argparse.Namespace, settings: Settings) -> None:
    me = PlatformAPI(settings).get("/v1/whoami")
    if args.json:
        print(json.dumps(me))
        return
    if me["kind"] == "service":
        print(f"{me['name']} (service key {me['key_id']}): inference on {', '.join(me['models'])}")
    elif me["platform_admin"]:
        print(f"{me['name']}: platform admin")
    else:
        roles = ", ".join(f"{role} in {project}" for project, role in me["roles"].items()) or "no role"
        print(f"{me['name']} (key {me['key_id']}): {roles}")


def add_access_commands(commands: Any) -> None:
    users = commands.add_parser("users", help="people (platform admins)").add_subparsers(dest="users", required=True)
    create = users.add_parser("create", help="a user with a role in the default project")
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, default="viewer")
    create.add_argument("--platform-admin", action="store_true", help="may manage users, keys and read the audit log")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=cmd_users_create)
    listing = users.add_parser("list")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_users_list)
    disable = users.add_parser("disable", help="every key of the user stops working")
    disable.add_argument("name")
    disable.add_argument("--json", action="store_true")
    disable.set_defaults(run=cmd_users_disable)

    keys = commands.add_parser("keys", help="API keys (yours, or --user's)").add_subparsers(dest="keys", required=True)
    make = keys.add_parser("create", help="a new key, shown once")
    make.add_argument("name")
    make.add_argument("--user", help="whose key (default: the user the CLI's key belongs to)")
    make.add_argument("--expires-in-days", type=float)
    make.add_argument("--models", help="a service key: inference on these models only (comma-separated)")
    make.add_argument("--json", action="store_true")
    make.set_defaults(run=cmd_keys_create)
    shown = keys.add_parser("list", help="keys without their secrets")
    shown.add_argument("--user")
    shown.add_argument("--json", action="store_true")
    shown.set_defaults(run=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="the key stops working at once")
    revoke.add_argument("id")
    revoke.add_argument("--user")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(run=cmd_keys_revoke)

    audit = commands.add_parser("audit", help="who changed what, and what was refused (platform admins)")
    audit.add_argument("--principal")
    audit.add_argument("--action", help="create, manage, administer, own_keys...")
    audit.add_argument("--outcome", choices=["ok", "failed", "denied"])
    audit.add_argument("--since", help="an age (30m, 2h, 7d) or an ISO time")
    audit.add_argument("--before", type=int, help="the cursor a previous page printed")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(run=cmd_audit)

    whoami = commands.add_parser("whoami", help="who the CLI's token or key stands for")
    whoami.add_argument("--json", action="store_true")
    whoami.set_defaults(run=cmd_whoami)
