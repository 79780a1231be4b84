"""What the endpoints work with, built once per application run, and the request-level
dependencies that hand it out: the services and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

import sqlalchemy
from fastapi import Depends, Request

from batchyard.adapters.credentials import KeyStore, TokenLedger, master_key
from batchyard.api.authentication import Authenticator, Caller
from batchyard.orchestrator.engine import Engine
from batchyard.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    database: sqlalchemy.Engine
    keys: KeyStore
    tokens: TokenLedger
    authenticator: Authenticator


def build_services(settings: Settings, engine: Engine) -> Services:
    database = engine.store.engine
    keys = KeyStore(database, master_key(settings.data_dir.resolve()))
    return Services(settings, engine, database, keys, TokenLedger(database),
                    Authenticator(keys))


def services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


def raw_target(request: Request) -> str:
    """The request target exactly as sent: raw path plus `?` and the raw query, if any."""
    scope = request.scope
    path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


def header_map(request: Request) -> dict[str, str]:
    """Lower-case header names to their (first) value, as latin-1 text."""
    headers: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


def caller(request: Request) -> Caller:
    """The authenticated caller of this request (see `authentication`)."""
    authenticator = services(request).authenticator
    return authenticator.verify(request.method, raw_target(request), header_map(request))


ServicesDependency = Annotated[Services, Depends(services)]
CallerDependency = Annotated[Caller, Depends(caller)]
