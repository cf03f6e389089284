"""Secret tokens kept in files: the platform's API token that `aip up` makes when none is set.

A secret file is created with mode 0600 in the same system call that creates it (``O_EXCL``), so
there is no moment at which another user could open it; an existing file is read, never rewritten.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from aiplatform.errors import InvalidArgument
from aiplatform.settings import MIN_API_TOKEN_CHARS, Settings

TOKEN_BYTES = 32
API_TOKEN_FILE = "api_token"


def write_secret_file(path: Path, value: str) -> None:
    """Create ``path`` readable by its owner only and write ``value``; refuses an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value)


def read_or_create_secret(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(TOKEN_BYTES)) -> str:
    """The token in ``path``, made by ``make`` (0600) if the file does not exist yet."""
    try:
        write_secret_file(path, make())
    except FileExistsError:
        pass
    value = path.read_text().strip()
    if not value:
        raise InvalidArgument(f"Token file {path} is empty; delete it to have a new token made")
    return value


def api_token_path(settings: Settings) -> Path:
    return settings.resolved_state_dir / API_TOKEN_FILE


def with_api_token(settings: Settings, *, create: bool) -> Settings:
    """``settings`` with the platform's API token: the configured one, else the one `aip up` keeps
    in the state folder (made now when ``create``). Unchanged with authentication off."""
    if settings.api_auth == "off" or settings.api_token is not None:
        return settings
    path = api_token_path(settings)
    if not create and not path.exists():
        return settings
    token = read_or_create_secret(path)
    if len(token) < MIN_API_TOKEN_CHARS:  # model_copy does not validate: the setting's rule, checked here
        raise InvalidArgument(
            f"The API token in {path} is shorter than {MIN_API_TOKEN_CHARS} characters; "
            "delete the file to have a new token made"
        )
    return settings.model_copy(update={"api_token": SecretStr(token)})
