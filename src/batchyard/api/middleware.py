"""ASGI middleware: a request id on every response, JSON for unexpected failures, and one
log line per request."""

from __future__ import annotations

import json
import logging
import time
import uuid
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
request_log = logging.getLogger("batchyard.requests")
REQUEST_ID_HEADER = b"x-acs-request-id"
UNLOGGED_QUERY = ("signature", "accesskey", "secret", "nonce", "token", "timestamp")
"""Query parameters left out of the request log: credentials and per-request noise."""


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


class RequestIds:
    """Gives each request an id (`scope["state"]["request_id"]`), sent as `x-acs-request-id`.

    An exception nothing else handled becomes a 500 `InternalError` JSON body here, so even
    that response carries the id; the traceback is logged, never sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identifier = new_request_id()
        scope.setdefault("state", {})["request_id"] = identifier
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                message["headers"] = [*headers, (REQUEST_ID_HEADER, identifier.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed", identifier)
            if started:
                raise
            await _internal_error(send_with_id, identifier, scope)


async def _internal_error(send: Send, identifier: str, scope: Scope) -> None:
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
    body = json.dumps({"Code": "InternalError", "Message": "unexpected server error; the "
                       "server log has details under this RequestId", "RequestId": identifier,
                       "HostId": host}).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestLog:
    """Logs one INFO line per request once it is answered (this replaces uvicorn's access log).

    `GET /jobs?Marker=job-… 200 3.1ms tenant=alice key=BY… request=…`: the path with its
    query minus credentials and per-request noise (`UNLOGGED_QUERY`), the status, the
    duration, and who asked when the signature held (`scope["state"]["caller"]`). Never a
    header, a body, a secret or a signature.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.monotonic()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            if request_log.isEnabledFor(logging.INFO):
                request_log.info("%s", request_line(scope, status, time.monotonic() - began))


def request_line(scope: Scope, status: int, seconds: float) -> str:
    """The log line of one answered request (see `RequestLog`)."""
    state = scope.get("state", {})
    caller = state.get("caller")
    who = f" tenant={caller.tenant} key={caller.key_id}" if caller is not None else ""
    return (f"{scope['method']} {_logged_target(scope)} {status} {seconds * 1000:.1f}ms{who} "
            f"request={state.get('request_id', '-')}")


def _logged_target(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    kept = [(name, value) for name, value in parse_qsl(query, keep_blank_values=True)
            if not any(word in name.lower() for word in UNLOGGED_QUERY)]
    return f"{scope['path']}?{urlencode(kept)}" if kept else str(scope["path"])
