"""Signature verification (reference §9.3) over the wire, with hand-built requests."""

from __future__ import annotations

import stat
import subprocess
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from batchyard.api.signature import authorization, signed_headers
from tests.api.conftest import LiveServer
from tests.api.test_errors import assert_error


def send(server: LiveServer, method: str, target: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.request(method, target, headers=headers)


def test_a_signed_request_passes(server: LiveServer, alice_key: AccessKey) -> None:
    target = "/jobs?Marker&MaxItemCount=50&State=Running"
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", target)
    response = send(server, "GET", target, headers)
    assert response.status_code == 200, response.text


def test_the_raw_target_is_verified_not_a_reencoded_one(server: LiveServer,
                                                        alice_key: AccessKey) -> None:
    target = "/jobs?Marker&MaxItemCount=50&ProjectId=a%2Fb%20c"
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", target)
    assert send(server, "GET", target, headers).status_code == 200
    tampered = target.replace("50", "49")
    assert_error(send(server, "GET", tampered, headers), 400, "InvalidSignature")


def test_missing_and_malformed_authorization(server: LiveServer, alice_key: AccessKey) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs")
    for broken in ("", "acs", f"acs {alice_key.id}", "Bearer abc:def", f"acs :{alice_key.id}"):
        headers["authorization"] = broken
        assert_error(send(server, "GET", "/jobs", headers), 403, "MissingAuthorization")


def test_key_id_headers_must_agree(server: LiveServer, alice_key: AccessKey,
                                  bob_key: AccessKey) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs")
    headers["x-acs-access-key-id"] = bob_key.id
    assert_error(send(server, "GET", "/jobs", headers), 400, "InvalidSignature")


def test_unknown_and_revoked_keys(server: LiveServer) -> None:
    headers = signed_headers("BYNOSUCHKEY0000000000", "secret", "GET", "/jobs")
    assert_error(send(server, "GET", "/jobs", headers), 403, "InvalidAccessKeyId.NotFound")
    key = server.keys.create("carol")
    assert send(server, "GET", "/jobs",
                signed_headers(key.id, key.secret, "GET", "/jobs")).status_code == 200
    server.keys.revoke(key.id)
    headers = signed_headers(key.id, key.secret, "GET", "/jobs")
    assert_error(send(server, "GET", "/jobs", headers), 403, "InvalidAccessKeyId.Inactive")


@pytest.mark.parametrize("offset", [-16 * 60, 16 * 60])
def test_dates_out_of_the_window(server: LiveServer, alice_key: AccessKey,
                                 offset: int) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs",
                             now=time.time() + offset)
    assert_error(send(server, "GET", "/jobs", headers), 403, "RequestTimeTooSkewed")


def test_date_inside_the_window_and_x_acs_date(server: LiveServer, alice_key: AccessKey) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs",
                             now=time.time() - 14 * 60)
    assert send(server, "GET", "/jobs", headers).status_code == 200
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs")
    del headers["date"]
    headers["x-acs-date"] = formatdate(time.time(), usegmt=True)
    headers["authorization"] = authorization(alice_key.id, alice_key.secret, "GET", "/jobs",
                                             headers)
    assert send(server, "GET", "/jobs", headers).status_code == 200


def test_missing_or_unreadable_date(server: LiveServer, alice_key: AccessKey) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs")
    del headers["date"]
    headers["authorization"] = authorization(alice_key.id, alice_key.secret, "GET", "/jobs",
                                             headers)
    assert_error(send(server, "GET", "/jobs", headers), 400, "MissingDate")
    headers["date"] = "yesterday"
    headers["authorization"] = authorization(alice_key.id, alice_key.secret, "GET", "/jobs",
                                             headers)
    assert_error(send(server, "GET", "/jobs", headers), 400, "InvalidDate")


def test_a_replayed_request_is_refused(server: LiveServer, alice_key: AccessKey) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/quotas")
    assert send(server, "GET", "/quotas", headers).status_code == 200
    assert_error(send(server, "GET", "/quotas", headers), 403, "SignatureNonceUsed")


def test_unknown_api_version(server: LiveServer, alice_key: AccessKey) -> None:
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", "/jobs")
    headers["x-acs-version"] = "2099-01-01"
    headers["authorization"] = authorization(alice_key.id, alice_key.secret, "GET", "/jobs",
                                             headers)
    assert_error(send(server, "GET", "/jobs", headers), 403, "InvalidVersion.NotFound")


def bytes_of(path: Path) -> bytes:
    """A file's bytes, read by another process: closing a descriptor of the database in this
    one would drop every POSIX lock the server (in this process) holds on it, and the next
    process to close the database would then take it for the last user and delete its WAL
    and shared memory under the server's feet (SQLite's lock semantics)."""
    return subprocess.run(["cat", str(path)], capture_output=True, check=False).stdout


def test_secrets_are_encrypted_at_rest(server: LiveServer, alice_key: AccessKey) -> None:
    stored = b"".join(bytes_of(server.settings.data_dir / name)
                      for name in ("batchyard.db", "batchyard.db-wal"))
    assert alice_key.id.encode() in stored
    assert alice_key.secret.encode() not in stored
    master = server.settings.data_dir / "master.key"
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
