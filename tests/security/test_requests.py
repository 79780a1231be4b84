"""Requests cannot be replayed or altered, and malformed ones are refused with BatchCompute JSON.

Against a real `batchyard serve` process (tests/security/conftest.py): a request without a
nonce, a request replayed after the server was killed, a body swapped under its signature,
broken HTTP and absurdly nested JSON.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from batchyard.adapters.credentials import AccessKey
from batchyard.api.signature import authorization, signed_headers
from batchyard.cli.keys import open_key_store
from tests.api.test_errors import assert_error
from tests.security.conftest import ServeProcess, start_serve


def send(serve: ServeProcess, method: str, target: str, headers: dict[str, str],
         content: bytes = b"") -> httpx.Response:
    """One request exactly as given: no signing, no added headers but Host and length."""
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        return client.request(method, target, headers=headers, content=content)


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
