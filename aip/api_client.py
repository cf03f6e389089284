"""The CLI's HTTP client for the platform's REST API; error bodies come back as platform errors."""

from __future__ import annotations

from typing import Any

import httpx

from aiplatform.errors import InvalidArgument, Unavailable, error_from_code
from aiplatform.settings import Settings

TIMEOUT_S = 60.0


class PlatformAPI:
    """``request()`` returns the decoded JSON body, or raises the error the API answered with."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.resolved_api_url
        self.headers = settings.api_auth_headers()

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float = TIMEOUT_S,
        answer_statuses: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """``answer_statuses``: error statuses whose body is an answer to return, not an error."""
        try:
            response = httpx.request(
                method,
                f"{self.base_url}{path}",
                timeout=timeout_s,
                headers={**self.headers, **kwargs.pop("headers", {})},
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"Cannot reach the platform at {self.base_url} ({exc}); is `aip up` running?") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 and response.status_code not in answer_statuses:
            if isinstance(body, dict) and "message" in body:
                raise error_from_code(str(body.get("error")), str(body["message"]))
            raise InvalidArgument(f"HTTP {response.status_code} from {path}: {response.text[:500]}")
        return body

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)
