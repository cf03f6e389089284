"""The control plane's HTTP surface: REST routers, error handlers, and the web UI's files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from aiplatform.api.body_limit import BodyLimitMiddleware
from aiplatform.api.deps import access_policy
from aiplatform.api.errors import install_error_handlers
from aiplatform.api.openapi import install_openapi
from aiplatform.api.routes import (
    access,
    alerts,
    analysis,
    batch,
    code,
    datasets,
    kinds,
    loops,
    models,
    monitoring,
    projects,
    quotas,
    results,
    sweeps,
    tasks,
    templates,
)
from aiplatform.api.security import AccessGuard
from aiplatform.errors import NotFound
from aiplatform.limits import MAX_REQUEST_BYTES  # an upload's own limit is lower: MAX_UPLOAD_BYTES, 10 MiB

STATIC_DIR = Path(__file__).parent / "static"
UI_MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ROUTERS = (
    templates.router,
    tasks.router,
    code.router,
    models.router,
    datasets.router,
    results.router,
    analysis.router,
    alerts.router,
    monitoring.router,
    sweeps.router,
    kinds.router,
    batch.router,
    access.router,
    loops.router,
    projects.router,
    quotas.router,
)


def include_api(app: FastAPI) -> None:
    """Add the REST API, the platform's error handlers, its access guard (host, origin, token:
    ``aiplatform.api.security``) and the UI (at ``/``) to ``app``."""
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_REQUEST_BYTES)
    app.add_middleware(AccessGuard, policy_of=access_policy)  # added last: it runs first
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/ui/{name}", include_in_schema=False)
    def ui_file(name: str) -> FileResponse:
        path = STATIC_DIR / name
        # Only the UI's own files: no sub-paths, no dotfiles, a known type.
        if "/" in name or name.startswith(".") or path.suffix not in UI_MEDIA_TYPES or not path.is_file():
            raise NotFound(f"UI file {name!r} not found")
        return FileResponse(path, media_type=UI_MEDIA_TYPES[path.suffix])


def create_api_app() -> FastAPI:
    """The control plane alone (without the inference routes), e.g. for tests and tools."""
    app = FastAPI(title="aiplatform API")
    include_api(app)
    return app
