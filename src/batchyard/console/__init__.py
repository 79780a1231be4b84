"""The web console that `batchyard serve` serves at `/console` (docs/console.md).

Server-rendered pages (Jinja2, autoescaped) over the same read service and operations as the
REST API, signed in with the API's access keys; htmx (vendored, no build step) swaps page
fragments when a server-sent event says a job changed. Every page reads without JavaScript.

Modules: `web` (templates, security headers, HTML errors), `sessions` (sign-in, cookie,
CSRF), `jobs` (jobs list, job page, heat-map, actions), `instances` (instance page, logs),
`clusters`, `submission`, `drawing` (the DAG and heat-map as SVG), `live` (the change hub),
`logs` (the log tail).
"""

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
