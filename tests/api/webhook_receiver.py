"""A real webhook receiver for the tests: a threaded HTTP server on 127.0.0.1 that verifies
every request's signature with `standardwebhooks` and keeps what it received."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    id: str
    headers: dict[str, str]
    body: dict[str, Any]
    path: str


@dataclass
class Receiver:
    """Answers `status` (and `headers`) to every POST; `secrets`: the signing secrets any one
    of which must verify a request (a request that verifies with none is counted in
    `unverified` and answered 400)."""

    secrets: list[str] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        """Listen (again, on the same port once it had one)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.take(self.path, dict(self.headers.items()), data)
                with receiver._lock:
                    status, headers = receiver.status, dict(receiver.headers)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def take(self, path: str, headers: dict[str, str], data: bytes) -> None:
        body = None
        for secret in self.secrets:
            try:
                body = Webhook(secret).verify(data, headers)
                break
            except Exception:
                continue
        with self._lock:
            if body is None:
                self.unverified.append(headers.get("webhook-id", "?"))
            else:
                lower = {name.lower(): value for name, value in headers.items()}
                self.received.append(Received(lower["webhook-id"], lower, body, path))

    def answer(self, status: int, **headers: str) -> None:
        with self._lock:
            self.status, self.headers = status, headers

    def unique(self) -> list[Received]:
        """What arrived, each `webhook-id` once (the first arrival), in arrival order."""
        seen: set[str] = set()
        found = []
        with self._lock:
            for item in self.received:
                if item.id not in seen:
                    seen.add(item.id)
                    found.append(item)
        return found

    def wait_for(self, ids: set[str], timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.unique()
            if ids <= {item.id for item in got}:
                return got
            assert time.monotonic() < deadline, (
                f"not received: {sorted(ids - {item.id for item in got})}; "
                f"unverified: {self.unverified}")
            time.sleep(0.05)
