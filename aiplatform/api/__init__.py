"""The platform's REST API and web UI (FastAPI), mounted in the Serve gateway."""

from aiplatform.api.app import create_api_app, include_api
from aiplatform.api.deps import Platform, PlatformDep, get_platform, set_platform

__all__ = ["Platform", "PlatformDep", "create_api_app", "get_platform", "include_api", "set_platform"]
