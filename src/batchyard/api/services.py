"""What the endpoints work with, built once per application run, and the request-level
dependencies that hand it out: the services and the authenticated caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated, ParamSpec, TypeVar, cast

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from batchyard.adapters.credentials import KeyStore, NonceLedger, TokenLedger, master_key
from batchyard.adapters.store import SqlStore
from batchyard.api.authentication import Authenticator, Caller, NonceRegistry, Verified
from batchyard.api.errors import Unavailable
from batchyard.domain.records import JobRecord
from batchyard.orchestrator.engine import Engine
from batchyard.ports.reads import JobQueries
from batchyard.settings import Settings

Params = ParamSpec("Params")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    """Submissions and operations (writes)."""
    reads: JobQueries
    """Every read of jobs, tasks and instances (the command line and the console read alike)."""
    keys: KeyStore
    tokens: TokenLedger
    authenticator: Authenticator
    job_status: Callable[[str, str | None], JobRecord | None] | None = None
    """A job without its description (`SqlReads.job_status`), for `GET /jobs/{id}`; None:
    `reads.job`."""
    inline_reads: bool = False
    """Run short indexed reads on the event loop (SQLite: in-process, never waits on the
    writer in WAL mode) instead of handing them to the thread pool (PostgreSQL: a network
    round trip)."""

    async def read(self, function: Callable[Params, Result], *args: Params.args,
                   **kwargs: Params.kwargs) -> Result:
        """`function(*args)`: a short read of the database (one or a few indexed rows).

        With SQLite it runs right here, on the event loop: a hop through the thread pool
        costs more than the read itself. Anything that writes, or may read many rows, goes
        through `run_in_threadpool` instead.
        """
        if self.inline_reads:
            return function(*args, **kwargs)
        return await run_in_threadpool(function, *args, **kwargs)


def build_services(settings: Settings, engine: Engine) -> Services:
    store = engine.store
    if not isinstance(store, SqlStore):
        raise TypeError("the API needs the SQL store (its keys and nonces live beside it)")
    database = store.engine
    keys = KeyStore(database, master_key(settings.data_dir.resolve()))
    sqlite = database.dialect.name == "sqlite"
    nonces = NonceRegistry(ledger=NonceLedger.beside(database), inline=sqlite)
    reads = store.reads
    return Services(settings, engine, reads, keys, TokenLedger(database),
                    Authenticator(keys, nonces=nonces,
                                  allow_missing_nonce=settings.allow_missing_nonce),
                    job_status=reads.job_status, inline_reads=sqlite)


def services_of(request: Request) -> Services:
    return cast(Services, request.app.state.services)


async def services(request: Request) -> Services:
    return services_of(request)


def raw_target(scope: Scope) -> str:
    """The request target exactly as sent: raw path plus `?` and the raw query, if any."""
    path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


def header_map(scope: Scope) -> dict[str, str]:
    """Lower-case header names to their (first) value, as latin-1 text."""
    # Reversed, so that the first of repeated names is the one that stays.
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in reversed(scope["headers"])}


async def authenticate(request: Request) -> Caller:
    """The authenticated caller of this request (see `authentication`), once its nonce is saved.

    Verifying is CPU work plus one indexed read of the access key (to see a revocation at
    once, even one made by another process), so it runs as a `Services.read`. Then the
    request waits until its nonce is committed, so that it cannot be replayed after a crash
    (not even one right after its response); it is refused with 503 if that fails.
    """
    verified = await verify(services_of(request), request.scope)
    await nonce_committed(verified)
    return verified.caller


async def verify(running: Services, scope: Scope) -> Verified:
    """The signature of the request of `scope` checked, the nonce on its way to the database
    (not yet committed).

    Only a request that changes nothing may be processed meanwhile, and its response must
    wait for `nonce_committed` (see `jobs.job_answer`): a change made before its nonce is
    committed could be made again by a replay after a crash."""
    verified: Verified = await running.read(running.authenticator.verify, scope["method"],
                                            raw_target(scope), header_map(scope))
    scope.setdefault("state", {})["caller"] = verified.caller  # for the request log
    return verified


async def nonce_committed(verified: Verified) -> None:
    """Return once the request's nonce is committed (503 if it cannot be)."""
    await _saved(verified.nonce_saved)


async def _saved(nonce_saved: Future[None]) -> None:
    """Return once the nonce is committed; 503 `ServiceUnavailable` if it cannot be."""
    try:
        if not nonce_saved.done():
            await asyncio.wrap_future(nonce_saved)  # done by the writer thread
        nonce_saved.result()
    except Exception:  # logged by the writer thread
        raise Unavailable("the request's signature nonce could not be saved, so the request "
                          "was not processed (the state database is unavailable; the server "
                          "log has details); sign it anew and try again later") from None


async def caller(request: Request) -> Caller:
    """The `CallerDependency`: `authenticate` as a FastAPI dependency."""
    return await authenticate(request)


ServicesDependency = Annotated[Services, Depends(services)]
CallerDependency = Annotated[Caller, Depends(caller)]
