"""The application factory: `create_app(settings)` builds the BatchCompute REST API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from batchyard import __version__
from batchyard.api import clusters, errors, events, jobs, metrics, quotas, tasks, webhooks
from batchyard.api.middleware import JOB_PATH, Front
from batchyard.api.services import build_services
from batchyard.lock import note_work
from batchyard.orchestrator.engine import Engine
from batchyard.settings import Settings


def create_app(settings: Settings, engine: Engine | None = None, address: str = "") -> FastAPI:
    """The API for `settings`; opens (and closes) its own engine unless one is given.

    `address`: the URL it is served at, written in the data dir's lock file so that client
    commands pointed at the data dir say which --endpoint to use instead.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = engine if engine is not None else await run_in_threadpool(_open, settings)
        if engine is None and address:
            note_work(settings.data_dir.resolve(), address)
        services = outbox = None
        try:
            services = app.state.services = build_services(settings, running)
            app.state.metrics = metrics.attach(running, settings)
            app.state.webhooks, outbox = webhooks.start_outbox(running, settings, services,
                                                               app.state.metrics)
            yield
        finally:
            if outbox is not None:  # before the engine: it reads the engine's database
                await run_in_threadpool(outbox.close)
            if services is not None:  # the signature nonces not yet saved
                await run_in_threadpool(services.authenticator.nonces.close)
            if engine is None:
                await run_in_threadpool(running.close)

    app = Api(title="batchyard", version=__version__, lifespan=lifespan,
              summary="Alibaba Cloud BatchCompute REST API (version 2015-11-11)")
    routers = (jobs.router, tasks.router, quotas.router, clusters.router, events.router,
               webhooks.router, metrics.router)
    for router in routers:
        app.include_router(router)
    app.state.api_routes = [route for router in routers for route in router.routes]
    errors.install(app)
    app.add_middleware(Front)
    return app


class Api(FastAPI):
    """FastAPI, but `GET /jobs/{id}` goes straight to `Front`'s shortcut.

    FastAPI puts three layers of its own around every middleware (its server-error
    middleware, OpenTelemetry hooks that look up their providers on every request, a body
    limit); the shortcut needs none of them: `Front` answers unexpected errors itself, and
    it never reads a body.
    """

    _front: Front | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET" and not self.root_path
                and not scope.get("root_path") and JOB_PATH.fullmatch(scope["path"])):
            if self._front is None:
                self._front = Front(super().__call__, get_job=jobs.job_answer)
            scope["app"] = self
            await self._front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _open(settings: Settings) -> Engine:
    from batchyard.service import open_engine

    return open_engine(settings, serving=True)
