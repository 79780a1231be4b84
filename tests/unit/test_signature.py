"""The BatchCompute signature against the reference's test vectors (§9.3)."""

from __future__ import annotations

import pytest

from batchyard.api.signature import (
    authorization,
    matches,
    parse_authorization,
    signature,
    signed_headers,
    string_to_sign,
)

VECTOR_HEADERS = {
    "date": "Mon, 02 Jan 2017 03:04:05 GMT",
    "x-acs-region-id": "local-1",
    "x-acs-access-key-id": "testid",
    "x-acs-signature-method": "HMAC-SHA1",
    "x-acs-signature-version": "1.0",
    "x-acs-version": "2015-11-11",
    "x-acs-signature-nonce": "11111111-2222-3333-4444-555555555555",
    "accept": "application/json",
    "content-type": "application/json",
}


@pytest.mark.parametrize(("method", "target", "expected"), [
    ("GET", "/jobs?Marker&MaxItemCount=50&State=Running",
     "acs testid:xkGQ0A76Jj3xDIiiV+LIaYMVSns="),
    ("POST", "/jobs/job-00000000000000000000000000000001/stop",
     "acs testid:zft/EUHoQkiztxhLm/aE6145fuA="),
])
def test_reference_vectors(method: str, target: str, expected: str) -> None:
    assert authorization("testid", "testsecret", method, target, VECTOR_HEADERS) == expected


def test_string_to_sign_layout() -> None:
    text = string_to_sign("GET", "/jobs", {**VECTOR_HEADERS, "content-md5": " abc ",
                                           "contentmd5": "ignored", "user-agent": "x"})
    lines = text.split("\n")
    assert lines[:5] == ["GET", "application/json", "abc", "application/json",
                         "Mon, 02 Jan 2017 03:04:05 GMT"]
    assert lines[5] == "x-acs-access-key-id:testid"
    assert lines[-1] == "x-acs-version:2015-11-11" or text.endswith("/jobs")
    assert text.endswith("x-acs-version:2015-11-11\n/jobs")
    assert "ignored" not in text and "user-agent" not in text


def test_parse_authorization() -> None:
    assert parse_authorization("acs id:c2lnbmF0dXJl") == ("id", "c2lnbmF0dXJl")
    assert parse_authorization("acs id:a:b") == ("id", "a:b")
    for broken in ("", "acs", "acs id", "acs :sig", "acs id:", "Basic id:sig"):
        assert parse_authorization(broken) is None


def test_signed_headers_verify() -> None:
    headers = signed_headers("id", "secret", "DELETE", "/jobs/job-1", now=0)
    assert headers["date"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    _, given = parse_authorization(headers["authorization"]) or ("", "")
    assert matches(signature("secret", string_to_sign("DELETE", "/jobs/job-1", headers)), given)
    assert not matches(signature("other", string_to_sign("DELETE", "/jobs/job-1", headers)),
                       given)
