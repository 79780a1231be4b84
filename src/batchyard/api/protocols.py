"""uvicorn's HTTP protocols, answering requests they cannot parse with BatchCompute JSON.

A request uvicorn cannot parse (a malformed request line, a bad or oversized Content-Length,
invalid header bytes) never reaches the application: uvicorn answers it itself, with a plain
text 400 that the SDK reports as a "Json Error". These subclasses send that 400 as the error
body of every other failure, `{"Code", "Message", "RequestId", "HostId"}` with an
`x-acs-request-id` header (reference §9.8). `batchyard serve` passes `http_protocol()` to
uvicorn; `create_app` is unchanged, so an embedding server keeps uvicorn's own answer.
"""

from __future__ import annotations

import asyncio
import json
from importlib.util import find_spec

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from batchyard.api.middleware import REQUEST_ID_HEADER, new_request_id

CODE = "InvalidHttpRequest"
MESSAGE = ("the request is not valid HTTP/1.1 (its request line, a header or Content-Length "
           "is malformed), so it was not processed")


def bad_request(headers: list[tuple[bytes, bytes]], default_headers: list[tuple[bytes, bytes]]
                ) -> bytes:
    """The whole 400 response, for the headers parsed so far; it closes the connection."""
    identifier = new_request_id()
    host = dict(headers).get(b"host", b"").decode("latin-1")
    body = json.dumps({"Code": CODE, "Message": MESSAGE, "RequestId": identifier,
                       "HostId": host}).encode()
    fields = [*default_headers, (b"content-type", b"application/json"),
              (b"content-length", str(len(body)).encode()),
              (REQUEST_ID_HEADER, identifier.encode()), (b"connection", b"close")]
    head = b"".join(name + b": " + value + b"\r\n" for name, value in fields)
    return b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body


class JsonBadRequest:
    """Replaces uvicorn's `send_400_response` (the same for both of its parsers)."""

    transport: asyncio.Transport
    server_state: ServerState
    headers: list[tuple[bytes, bytes]]

    def send_400_response(self, msg: str) -> None:
        """Answer, then close: the parser cannot find where the next request starts."""
        parsed = [(name.lower(), value) for name, value in self.headers or []]
        self.transport.write(bad_request(parsed, list(self.server_state.default_headers)))
        self.transport.close()


class JsonH11Protocol(JsonBadRequest, H11Protocol):
    """uvicorn's pure-Python (h11) protocol."""


if find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class JsonHttpToolsProtocol(JsonBadRequest, HttpToolsProtocol):
        """uvicorn's fast (httptools) protocol."""


def http_protocol() -> type[asyncio.Protocol]:
    """The class for `uvicorn.run(http=...)`: httptools when installed, as uvicorn's "auto"
    picks, else h11."""
    if find_spec("httptools") is not None:
        return JsonHttpToolsProtocol
    return JsonH11Protocol
