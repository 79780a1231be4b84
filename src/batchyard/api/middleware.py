"""ASGI middleware: a request id on every response, and JSON for unexpected failures."""

from __future__ import annotations

import json
import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = b"x-acs-request-id"


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
