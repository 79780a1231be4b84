"""Schemathesis drives every operation of the served OpenAPI document with generated input,
signed like the official SDK; the server must never answer 5xx, and errors are JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from requests.auth import AuthBase

from batchyard.api.signature import signed_headers
from tests.api.conftest import LiveServer


class SdkSigner(AuthBase):
    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id, self.secret = key_id, secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        method = request.method or "GET"
        body = request.body or b""
        request.headers.update(signed_headers(
            self.key_id, self.secret, method, request.path_url,
            body=body.encode() if isinstance(body, str) else body))
        return request


@pytest.fixture(scope="module")
def fuzz_session(server: LiveServer) -> Iterator[requests.Session]:
    key = server.keys.create("fuzz", "schemathesis")
    with requests.Session() as session:
        session.auth = SdkSigner(key.id, key.secret)
        yield session


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")
STATUSES: Counter[int] = Counter()
STREAMS = {"/events/stream"}
"""Operations answering with server-sent events that run until the client leaves."""


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_for_any_generated_request(case: schemathesis.Case,
                                                   fuzz_session: requests.Session) -> None:
    # an event stream never ends: read what comes in the first second (cut short then)
    timeout = 1.0 if case.operation.path in STREAMS else None
    response = case.call(session=fuzz_session, timeout=timeout)
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert {"Code", "Message", "RequestId", "HostId"} <= set(body), body
    assert response.headers.get("x-acs-request-id")


def test_the_generated_requests_got_past_authentication() -> None:
    """Guards the test above: signed requests must reach the handlers, not stop at 403."""
    assert sum(STATUSES.values()) > 50, STATUSES
    assert sum(n for status, n in STATUSES.items() if status < 300) > 10, STATUSES
    assert sum(n for status, n in STATUSES.items() if status in (400, 404)) > 10, STATUSES
