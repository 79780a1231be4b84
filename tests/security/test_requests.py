"""Requests cannot be replayed or altered, and malformed ones are refused with BatchCompute JSON.

Against a real `batchyard serve` process (tests/security/conftest.py): a request without a
nonce, a request replayed after the server was killed, a body swapped under its signature,
broken HTTP and absurdly nested JSON. Requests are signed like the official SDK (no signed
body digest) unless a test is about that digest.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from batchyard.adapters.credentials import AccessKey, NonceLedger, open_database
from batchyard.api.signature import authorization, signed_headers, string_to_sign
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import serving
from tests.api.test_errors import assert_error
from tests.security.conftest import ServeProcess, job, start_serve

DEPTH_LIMIT = 64
"""The deepest nesting of arrays and objects a body may have (docs/rest-api.md)."""


def send(serve: ServeProcess | str, method: str, target: str, headers: dict[str, str],
         content: bytes = b"") -> httpx.Response:
    """One request exactly as given: no signing, no added headers but Host and length."""
    url = serve if isinstance(serve, str) else serve.url
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.request(method, target, headers=headers, content=content)


def call(serve: ServeProcess | str, key: AccessKey, method: str, target: str,
         content: bytes = b"") -> httpx.Response:
    """One request signed like the official SDK (a nonce, no Content-MD5)."""
    headers = signed_headers(key.id, key.secret, method, target)
    return send(serve, method, target, headers, content)


def job_names(serve: ServeProcess | str, key: AccessKey) -> list[str]:
    return [item["Name"] for item in call(serve, key, "GET", "/jobs").json()["Items"]]


def raw_request(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request that asks the server to close the connection."""
    lines = [f"{method} {target} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}",
             "connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + body


def exchange(serve: ServeProcess | str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the server; its answer as (status, lower-case headers, body)."""
    address = urlsplit(serve if isinstance(serve, str) else serve.url)
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
        assert status == 403 and json.loads(answer)["Code"] == "SignatureNonceUsed", answer
        assert len(job_names(second, key)) == 1
    finally:
        second.stop()


def test_a_request_whose_nonce_cannot_be_saved_is_not_processed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, slots=1)
    key = open_key_store(settings).create("unlucky")

    def database_gone(self: NonceLedger, nonces: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    with serving(settings) as url:
        monkeypatch.setattr(NonceLedger, "remember", database_gone)
        response = call(url, key, "POST", "/jobs", json.dumps(job("echo never")).encode())
        assert_error(response, 503, "ServiceUnavailable")
        assert "disk" not in response.text
        monkeypatch.undo()
        assert job_names(url, key) == []


def signed_post(key: AccessKey, body: bytes, **extra: str) -> dict[str, str]:
    """Headers of POST /jobs signed for `body`, plus `extra` (signed too)."""
    headers = {**signed_headers(key.id, key.secret, "POST", "/jobs", body=body), **extra}
    return resigned(key, "POST", "/jobs", headers)


def test_our_clients_sign_a_digest_of_the_body() -> None:
    body = b'{"Priority": 1}'
    headers = signed_headers("id", "secret", "PUT", "/jobs/job-1", body=body)
    assert headers["content-md5"] == base64.b64encode(hashlib.md5(body).digest()).decode()
    assert headers["content-md5"] in string_to_sign("PUT", "/jobs/job-1", headers)
    assert "content-md5" not in signed_headers("id", "secret", "GET", "/jobs")


def test_a_body_swapped_under_a_signed_content_md5_is_refused(
        serve: ServeProcess, alice_key: AccessKey) -> None:
    honest = json.dumps({**job("echo honest", bucket="alice-logs"), "Name": "honest"}).encode()
    forged = json.dumps({**job("echo forged", bucket="alice-logs"), "Name": "forged"}).encode()
    headers = signed_post(alice_key, honest)
    body = assert_error(send(serve, "POST", "/jobs", headers, forged), 400, "InvalidContentMD5")
    assert "Content-MD5" in body["Message"]
    assert "forged" not in job_names(serve, alice_key)
    replayed = send(serve, "POST", "/jobs", headers, honest)
    assert_error(replayed, 403, "SignatureNonceUsed")  # the nonce was used up by the forgery
    response = send(serve, "POST", "/jobs", signed_post(alice_key, honest), honest)
    assert response.status_code == 201, response.text


def test_content_md5_may_be_hex_and_must_spell_a_digest(
        serve: ServeProcess, alice_key: AccessKey) -> None:
    body = json.dumps(job("echo hex", bucket="alice-logs")).encode()
    hex_digest = hashlib.md5(body).hexdigest()
    for value in (hex_digest, hex_digest.upper()):
        headers = signed_post(alice_key, body, **{"content-md5": value})
        assert send(serve, "POST", "/jobs", headers, body).status_code == 201
    for value in ("not a digest", base64.b64encode(b"short").decode(), hex_digest[:-2]):
        headers = signed_post(alice_key, body, **{"content-md5": value})
        assert_error(send(serve, "POST", "/jobs", headers, body), 400, "InvalidContentMD5")


def test_the_sdks_unsigned_content_md5_must_match_too(
        serve: ServeProcess, alice_key: AccessKey) -> None:
    sent = json.dumps({**job("echo damaged", bucket="alice-logs"), "Name": "damaged"}).encode()
    sdk_like = signed_headers(alice_key.id, alice_key.secret, "POST", "/jobs")  # no Content-MD5
    other = hashlib.md5(sent + b" ").hexdigest()
    response = send(serve, "POST", "/jobs", {**sdk_like, "contentMd5": other}, sent)
    assert_error(response, 400, "InvalidContentMD5")
    assert "damaged" not in job_names(serve, alice_key)
    sdk_like = signed_headers(alice_key.id, alice_key.secret, "POST", "/jobs")
    response = send(serve, "POST", "/jobs",
                    {**sdk_like, "contentMd5": hashlib.md5(sent).hexdigest()}, sent)
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server with `require_body_digest` on."""
    server = start_serve(tmp_path_factory.mktemp("strict") / "data",
                         env={"BATCHYARD_REQUIRE_BODY_DIGEST": "true"})
    yield server
    server.stop()


def test_a_required_body_digest_must_be_sent(strict: ServeProcess) -> None:
    key = open_key_store(strict.settings).create("strict")
    body = json.dumps(job("echo strict")).encode()
    sdk_like = signed_headers(key.id, key.secret, "POST", "/jobs")
    sdk_like["contentMd5"] = hashlib.md5(body).hexdigest()  # unsigned: not enough
    body_error = assert_error(send(strict, "POST", "/jobs", sdk_like, body), 400,
                              "MissingContentMD5")
    assert "Content-MD5" in body_error["Message"]
    assert send(strict, "POST", "/jobs", signed_post(key, body), body).status_code == 201
    with strict.client(key) as client:  # batchyard's own clients sign the digest
        assert client.post("/jobs", json=job("echo own")).status_code == 201
        assert client.get("/jobs").status_code == 200  # no body, no digest needed


BROKEN_HTTP = {
    "request line": b"GARBAGE\r\n\r\n",
    "request line, bad version": b"GET /jobs HTTP/9\r\nhost: x\r\n\r\n",
    "Content-Length not a number": b"POST /jobs HTTP/1.1\r\nhost: x\r\ncontent-length: 1x\r\n\r\n",
    "Content-Length overflowing": (b"POST /jobs HTTP/1.1\r\nhost: x\r\n"
                                   b"content-length: 99999999999999999999999999\r\n\r\n"),
    "Content-Length twice": (b"POST /jobs HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n"
                             b"content-length: 3\r\n\r\n{}"),
    "space in a header name": b"GET /jobs HTTP/1.1\r\nhost: x\r\nbad header: 1\r\n\r\n",
    "control byte in a header": b"GET /jobs HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\n\r\n",
}


def assert_json_400(answer: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = answer
    assert status == 400, body
    assert headers["content-type"] == "application/json", body
    error = json.loads(body)
    assert error["Code"] == "InvalidHttpRequest" and "not valid HTTP" in error["Message"]
    assert error["RequestId"] == headers["x-acs-request-id"]
    assert set(error) == {"Code", "Message", "RequestId", "HostId"}


@pytest.mark.parametrize("broken", BROKEN_HTTP.values(), ids=BROKEN_HTTP.keys())
def test_broken_http_is_answered_with_json(serve: ServeProcess, broken: bytes) -> None:
    assert_json_400(exchange(serve, broken))


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_both_http_parsers_answer_json(tmp_path: Path, protocol: str) -> None:
    from batchyard.api import protocols

    classes = {"h11": protocols.JsonH11Protocol, "httptools": protocols.http_protocol()}
    with serving(Settings(data_dir=tmp_path, slots=1), classes[protocol]) as url:
        for broken in BROKEN_HTTP.values():
            assert_json_400(exchange(url, broken))


def deep_job(depth: int, command: str = "echo deep") -> bytes:
    """A job body nested `depth` levels deep in all (objects and arrays in turn, from the
    top-level object down through a field `Extra` of the job)."""
    levels = range(depth - 1)
    opening = "".join('{"deeper": ' if level % 2 else "[" for level in levels)
    closing = "".join("}" if level % 2 else "]" for level in reversed(levels))
    text = json.dumps({**job(command, bucket="alice-logs"), "Extra": "HERE"})
    return text.replace('"HERE"', opening + '"bottom"' + closing).encode()


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deeply_nested_bodies_are_refused_with_400(serve: ServeProcess, alice_key: AccessKey,
                                                    depth: int) -> None:
    response = call(serve, alice_key, "POST", "/jobs", deep_job(depth))
    error = assert_error(response, 400, "InvalidJsonFormat")
    assert f"deeper than {DEPTH_LIMIT}" in error["Message"]


def test_the_nesting_bound_is_exact_and_ignores_strings(serve: ServeProcess,
                                                        alice_key: AccessKey) -> None:
    for depth, status in ((DEPTH_LIMIT, 201), (DEPTH_LIMIT + 1, 400)):
        response = call(serve, alice_key, "POST", "/jobs", deep_job(depth))
        assert response.status_code == status, response.text
    brackets_in_strings = deep_job(DEPTH_LIMIT, "echo '" + "[{" * 500 + '\\"[' + "'")
    response = call(serve, alice_key, "POST", "/jobs", brackets_in_strings)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("text", "deep"), [
    ('["a\\\\", ["\\"[[[[", {"k": "\\\\\\"[[["}]]', 3),
    ('"[[[[[[" [[[', 3),  # a string's brackets do not count
    ('[["[[[[[[', 8),  # an unterminated string's do (the text is invalid anyway)
    ('["\\u005c"' + ",[" * 5, 6),
])
def test_the_nesting_scan(text: str, deep: int) -> None:
    from batchyard.api.bodies import check_nesting

    check_nesting(text.encode(), text, limit=deep)
    with pytest.raises(ValueError, match="nested deeper"):
        check_nesting(text.encode(), text, limit=deep - 1)


def test_sqlite_servers_keep_nonces_in_a_file_of_their_own(tmp_path: Path) -> None:
    """Committing a nonce must not wait behind the engine's writes (one writer per file)."""
    state = open_database(f"sqlite:///{tmp_path / 'batchyard.db'}")
    expires = time.time() + 600
    NonceLedger(state).remember([(("KEY", "saved-by-an-older-version"), expires)])
    ledger = NonceLedger.beside(state)
    try:
        assert (tmp_path / "batchyard-nonces.db").exists()
        assert ledger.database is not state
        assert (("KEY", "saved-by-an-older-version"), expires) in ledger.recent()
    finally:
        ledger.close()
        state.dispose()


def test_a_nonce_used_again_after_its_window_is_kept_for_the_new_one(tmp_path: Path) -> None:
    """Expired nonces are deleted once a minute (SQLite): one used again before its old row
    is gone must be stored with the later expiry, or a restart would forget it too early."""
    now = [1_000_000.0]
    ledger = NonceLedger(open_database(f"sqlite:///{tmp_path / 'nonces.db'}"), lambda: now[0])
    try:
        entry = ("KEY", "used-twice")
        ledger.remember([(entry, now[0] + 10)])  # (and the minute's purge runs)
        now[0] += 20  # its window is over, its row not yet deleted
        ledger.remember([(entry, now[0] + 900)])
        now[0] += 300
        assert (entry, now[0] - 300 + 900) in ledger.recent()
        now[0] += 3600  # past the new window too: the next commit's purge deletes it
        ledger.remember([(("KEY", "other"), now[0] + 900)])
        assert [nonce for nonce, _ in ledger.recent()] == [("KEY", "other")]
    finally:
        ledger.close()
        ledger.database.dispose()


@pytest.mark.parametrize("inline", [False, True], ids=["writer-thread", "inline"])
def test_nonces_that_could_not_be_saved_are_saved_later(tmp_path: Path, inline: bool) -> None:
    """Their requests were refused (503), but a copy must be refused after a restart too."""
    from batchyard.api.authentication import NonceRegistry

    ledger = NonceLedger(open_database(f"sqlite:///{tmp_path / 'nonces.db'}"))
    failures = [OperationalError("INSERT", {}, Exception("database is locked"))]
    remember = ledger.remember

    def flaky(nonces: list[Any]) -> None:
        if failures:
            raise failures.pop()
        remember(nonces)

    ledger.remember = flaky  # type: ignore[method-assign]
    registry = NonceRegistry(ledger=ledger, inline=inline)
    try:
        saved = registry.use("KEY", "refused-once", time.time())
        assert saved is not None
        with pytest.raises(OperationalError):
            saved.result(timeout=10)
        deadline = time.monotonic() + 10
        while not any(entry[0] == "KEY" for entry, _ in ledger.recent()):
            assert time.monotonic() < deadline, "the nonce was never saved"
            time.sleep(0.05)
    finally:
        registry.close()
        ledger.database.dispose()
