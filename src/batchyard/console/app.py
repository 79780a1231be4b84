"""`install(app)`: the console's routes and static files, mounted on the REST API."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from batchyard.console import clusters, instances, jobs, sessions, submission
from batchyard.console.web import HERE, PREFIX


def install(app: FastAPI) -> None:
    """Serve the console at /console on `app` (the REST API of `api.create_app`)."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    for part in (sessions.router, jobs.router, instances.router, clusters.router,
                 submission.router):
        router.include_router(part)

    @router.get("", include_in_schema=False)
    @router.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/jobs", status_code=303)

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="console")


__all__ = ["install"]
