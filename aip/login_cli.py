"""``aip login`` and ``aip logout``: the gateway, key and default project the CLI uses, kept in
its config file so that later commands need no environment.

The file (``~/.config/aip/login.json``, or ``$AIP_CLI_CONFIG``) is created readable by its owner
only (0600) and replaced whole, never edited in place. What a command uses, first found wins:
``--project``, then the ``AIP_*`` environment (``AIP_API_URL``, ``AIP_API_TOKEN``,
``AIP_PROJECT``), then the login. The login's key goes only to the login's gateway: with
``AIP_API_URL`` naming another one the key is not sent there. ``aip up`` and ``aip down`` (the
local platform) never read it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import SecretStr

from aip.api_client import PlatformAPI
from aiplatform.access.store import check_project_name
from aiplatform.errors import InvalidArgument
from aiplatform.settings import Settings

CONFIG_ENV = "AIP_CLI_CONFIG"
"""Where the login is kept instead of ``~/.config/aip/login.json`` (a test's own folder)."""
CONFIG_MODE = 0o600


def config_path(environ: dict[str, str] | None = None) -> Path:
    """The login file: ``$AIP_CLI_CONFIG``, else ``$XDG_CONFIG_HOME/aip/login.json`` (``~/.config``)."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    base = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "aip" / "login.json"


def read_login(path: Path) -> dict[str, Any]:
    """The stored login (``url``, ``key``, ``project``); empty when there is none.
    ``InvalidArgument`` naming the file for one that is not a login."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"The CLI's login file {path} cannot be read ({exc}); run `aip logout`") from None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise InvalidArgument(f"The CLI's login file {path} is not a login; run `aip logout` and log in again")
    return data


def write_login(path: Path, login: dict[str, Any]) -> None:
    """Write the login readable by its owner only: a new file made 0600 in the call that creates
    it, then moved over the old one (so a reader never sees half a file or a wider mode)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, CONFIG_MODE)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(login, handle, indent=2)
    os.replace(staging, path)


def _same_gateway(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def with_login(settings: Settings, login: dict[str, Any]) -> Settings:
    """``settings`` completed by the login where the environment set nothing: the gateway, the
    key (only for the login's own gateway) and the default project."""
    if not login:
        return settings
    update: dict[str, Any] = {}
    url = str(login["url"])
    if settings.api_url is None:
        update["api_url"] = url
    if settings.api_token is None and login.get("key") and _same_gateway(settings.api_url or url, url):
        update["api_token"] = SecretStr(str(login["key"]))
    if settings.project is None and login.get("project"):
        update["project"] = str(login["project"])
    return settings.model_copy(update=update) if update else settings


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"Gateway URL {url[:200]!r} must be http(s)://host[:port]")
    return url.rstrip("/")


def _read_key(given: str | None) -> str:
    """The key: ``--key -`` reads it from stdin, none asks for it without echo (a key on the
    command line stays in the shell's history and the process list)."""
    if given == "-":
        key = sys.stdin.readline()
    elif given is not None:
        key = given
    else:
        key = getpass.getpass("API key: ")
    key = key.strip()
    if not key:
        raise InvalidArgument("No API key given")
    return key


def cmd_login(args: argparse.Namespace, settings: Settings) -> None:
    """Check the key against the gateway (who it is; that the project is one of theirs), then keep it."""
    url = _check_url(args.url or settings.resolved_api_url)
    key = _read_key(args.key)
    project = None if args.login_project is None else check_project_name(args.login_project)
    api = PlatformAPI(settings.model_copy(update={"api_url": url, "api_token": SecretStr(key), "project": None}))
    me = api.get("/v1/whoami")
    if project is not None:
        api.get(f"/v1/projects/{quote(project, safe='')}")  # 404 naming it when it is not theirs
    path = config_path()
    write_login(path, {"url": url, "key": key, "project": project, "user": me["name"]})
    where = project or me.get("project") or "the key's project"
    print(f"logged in to {url} as {me['name']}; commands act in {where} (kept in {path})")


def cmd_logout(args: argparse.Namespace, settings: Settings) -> None:
    path = config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        print("not logged in")
        return
    print(f"logged out ({path} removed)")


def add_login_commands(commands: Any) -> None:
    login = commands.add_parser("login", help="keep the gateway, your key and a default project for later commands")
    login.add_argument("--url", help="the gateway (default: AIP_API_URL, else the local platform's)")
    login.add_argument("--key", help="your API key; '-' reads it from stdin (default: asked for, not echoed)")
    login.add_argument(
        "--project",
        "--default-project",
        dest="login_project",
        help="where later commands act when they name none (default: the key's project)",
    )
    login.set_defaults(run=cmd_login)
    commands.add_parser("logout", help="forget the login").set_defaults(run=cmd_logout)
