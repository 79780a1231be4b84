"""ASGI middleware: a request id on every response, JSON for unexpected failures, one log
line per request, and the shortcut of `GET /jobs/{id}` (see `Front`)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
request_log = logging.getLogger("batchyard.requests")
REQUEST_ID_HEADER = b"x-acs-request-id"
UNLOGGED_QUERY = ("signature", "accesskey", "secret", "nonce", "token", "timestamp")
"""Query parameters left out of the request log: credentials and per-request noise."""


def new_request_id() -> str:
    """A random (version 4) UUID in upper case, as BatchCompute's request ids; built from
    16 random bytes directly, a third of what `str(uuid.uuid4()).upper()` costs."""
    random = bytearray(os.urandom(16))
    random[6] = random[6] & 0x0F | 0x40  # version 4
    random[8] = random[8] & 0x3F | 0x80  # RFC 4122 variant
    text = random.hex().upper()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""A whole response: status, headers, body."""
Shortcut = Callable[[Scope, str], Awaitable[Answer]]
"""`GET /jobs/{id}` answered straight from the scope (see `Front`)."""
JOB_PATH = re.compile(r"/jobs/([^/]+)")
"""The path of `GET /jobs/{job_id}`, as the router matches it (a segment without `/`)."""


class Front:
    """The one middleware of the API: a request id, its log line, JSON for unexpected
    failures — and a shortcut for the hottest route.

    Each request gets an id (`scope["state"]["request_id"]`), sent as `x-acs-request-id`.
    An exception nothing else handled becomes a 500 `InternalError` JSON body here, so even
    that response carries the id; the traceback is logged, never sent. Once answered, the
    request is logged as one INFO line (this replaces uvicorn's access log):
    `GET /jobs?Marker=job-… 200 3.1ms tenant=alice key=BY… request=…` — the path with its
    query minus credentials and per-request noise (`UNLOGGED_QUERY`), the status, the
    duration, and who asked when the signature held (`scope["state"]["caller"]`). Never a
    header, a body, a secret or a signature.

    With `get_job` (see `application.Api`), `GET /jobs/{job_id}` — what clients poll — goes
    to `get_job` directly instead of through FastAPI's routing, exception middleware and
    dependency solving, which cost more than the request's own work; `get_job` answers
    exactly as the route does (errors included).
    """

    def __init__(self, app: ASGIApp, get_job: Shortcut | None = None) -> None:
        self.app = app
        self.get_job = get_job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.monotonic()
        identifier = new_request_id()
        scope.setdefault("state", {})["request_id"] = identifier
        stamp = (REQUEST_ID_HEADER, identifier.encode())
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), stamp]
            await send(message)

        try:
            shortcut = self._shortcut(scope)
            if shortcut is None:
                await self.app(scope, receive, send_with_id)
            else:
                status, headers, body = await shortcut
                headers.append(stamp)
                started = True
                await send({"type": "http.response.start", "status": status,
                            "headers": headers})
                await send({"type": "http.response.body", "body": body})
        except Exception:
            log.exception("request %s failed", identifier)
            if started:
                raise
            await _internal_error(send_with_id, identifier, scope)
        finally:
            if request_log.isEnabledFor(logging.INFO):
                request_log.info("%s", request_line(scope, status, time.monotonic() - began))

    def _shortcut(self, scope: Scope) -> Awaitable[Answer] | None:
        if self.get_job is None or scope["method"] != "GET" or scope.get("root_path"):
            return None
        matched = JOB_PATH.fullmatch(scope["path"])
        return None if matched is None else self.get_job(scope, matched.group(1))


async def _internal_error(send: Send, identifier: str, scope: Scope) -> None:
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
    body = json.dumps({"Code": "InternalError", "Message": "unexpected server error; the "
                       "server log has details under this RequestId", "RequestId": identifier,
                       "HostId": host}).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def request_line(scope: Scope, status: int, seconds: float) -> str:
    """The log line of one answered request (see `Front`)."""
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
