"""Requests cannot be replayed or altered, and malformed ones are refused with BatchCompute JSON.

Against a real `batchyard serve` process (tests/security/conftest.py): a request without a
nonce, a request replayed after the server was killed, a body swapped under its signature,
broken HTTP and absurdly nested JSON.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from sqlalchemy.exc import OperationalError

from batchyard.adapters.credentials import AccessKey, NonceLedger
from batchyard.api import create_app
from batchyard.api.signature import authorization, signed_headers
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import Signer
from tests.api.test_errors import assert_error
from tests.security.conftest import ServeProcess, job, start_serve


def send(serve: ServeProcess, method: str, target: str, headers: dict[str, str],
         content: bytes = b"") -> httpx.Response:
    """One request exactly as given: no signing, no added headers but Host and length."""
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        return client.request(method, target, headers=headers, content=content)


def raw_request(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request that asks the server to close the connection."""
    lines = [f"{method} {target} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}",
             "connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + body


def exchange(serve: ServeProcess, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the server; its answer as (status, lower-case headers, body)."""
    address = urlsplit(serve.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(data)
        response = http.client.HTTPResponse(connection)
        response.begin()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()


def resigned(key: AccessKey, method: str, target: str, headers: dict[str, str]) -> dict[str, str]:
    """`headers` with a fresh Authorization for what they now hold."""
    return {**headers, "authorization": authorization(key.id, key.secret, method, target,
                                                      headers)}


def test_a_request_without_a_nonce_is_refused_so_it_cannot_be_replayed(
        serve: ServeProcess, alice_key: AccessKey) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs")
    del headers["x-acs-signature-nonce"]
    headers = resigned(alice_key, "GET", "/jobs", headers)
    for _ in range(2):  # the capture and its replay
        body = assert_error(send(serve, "GET", "/jobs", headers), 400, "MissingSignatureNonce")
        assert "x-acs-signature-nonce" in body["Message"]


def test_nonces_may_be_optional_for_old_clients(tmp_path: Path) -> None:
    server = start_serve(tmp_path / "data", env={"BATCHYARD_ALLOW_MISSING_NONCE": "true"})
    try:
        key = open_key_store(server.settings).create("old-client")
        headers = signed_headers(key.id, key.secret, "GET", "/jobs")
        del headers["x-acs-signature-nonce"]
        headers = resigned(key, "GET", "/jobs", headers)
        assert send(server, "GET", "/jobs", headers).status_code == 200
        assert send(server, "GET", "/jobs", headers).status_code == 200  # replayable, as asked
    finally:
        server.stop()


def test_a_request_replayed_right_after_a_kill_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = open_key_store(Settings(data_dir=data_dir)).create("victim")
    body = json.dumps(job("echo once", bucket="victim-logs")).encode()
    headers = signed_headers(key.id, key.secret, "POST", "/jobs")
    captured = raw_request("POST", "/jobs", {**headers, "content-type": "application/json"},
                           body)
    first = start_serve(data_dir)
    try:
        status, _, answer = exchange(first, captured)
    finally:
        first.process.kill()  # as soon as the answer arrived: nothing is written after it
        first.process.wait()
    assert status == 201, answer
    second = start_serve(data_dir)
    try:
        status, _, answer = exchange(second, captured)
        assert (status, json.loads(answer)["Code"]) == (403, "SignatureNonceUsed")
        with second.client(key) as client:
            assert len(client.get("/jobs").json()["Items"]) == 1
    finally:
        second.stop()


@contextmanager
def in_process(settings: Settings) -> Iterator[str]:
    """`create_app(settings)` on uvicorn in a thread of this process (to patch the server);
    its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        listener.close()


def test_a_request_whose_nonce_cannot_be_saved_is_not_processed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, slots=1)
    key = open_key_store(settings).create("unlucky")

    def database_gone(self: NonceLedger, nonces: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    with in_process(settings) as url, httpx.Client(
            base_url=url, auth=Signer(key.id, key.secret), timeout=30) as client:
        monkeypatch.setattr(NonceLedger, "remember", database_gone)
        response = client.post("/jobs", json=job("echo never"))
        assert_error(response, 503, "ServiceUnavailable")
        assert "disk" not in response.text
        monkeypatch.undo()
        assert client.get("/jobs").json()["Items"] == []
