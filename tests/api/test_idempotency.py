"""IdempotentToken on POST /jobs (reference §9.7): one job per token and body, per tenant."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.api.conftest import job_body
from tests.api.test_errors import assert_error


def create(client: httpx.Client, token: str, name: str = "idem") -> httpx.Response:
    return client.post("/jobs", params={"IdempotentToken": token}, json=job_body(name=name))


def fresh_token() -> str:
    return uuid.uuid4().hex


def test_same_token_and_body_give_the_same_job(alice: httpx.Client) -> None:
    token = fresh_token()
    first, again = create(alice, token), create(alice, token)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    names = [job["Id"] for job in alice.get("/jobs?MaxItemCount=100").json()["Items"]]
    assert names.count(first.json()["Id"]) == 1


def test_same_token_with_another_body_is_refused(alice: httpx.Client) -> None:
    token = fresh_token()
    assert create(alice, token).status_code == 201
    assert_error(create(alice, token, name="different"), 400, "IdempotentTokenMismatch")


def test_key_order_and_spacing_do_not_make_another_body(alice: httpx.Client) -> None:
    token = fresh_token()
    body = job_body(name="ordered")
    first = alice.post("/jobs", params={"IdempotentToken": token}, json=body)
    shuffled = dict(reversed(list(body.items())))
    content = httpx.Request("POST", "/", json=shuffled).content.replace(b",", b" ,  ")
    again = alice.post("/jobs", params={"IdempotentToken": token}, content=content)
    assert again.status_code == 201 and again.json() == first.json()


def test_tokens_are_scoped_per_tenant(alice: httpx.Client, bob: httpx.Client) -> None:
    token = fresh_token()
    alices, bobs = create(alice, token), create(bob, token)
    assert alices.status_code == bobs.status_code == 201
    assert alices.json()["Id"] != bobs.json()["Id"]


def test_a_rejected_description_does_not_use_up_the_token(alice: httpx.Client) -> None:
    token = fresh_token()
    bad = job_body()
    bad["Priority"] = -3
    assert_error(alice.post("/jobs", params={"IdempotentToken": token}, json=bad), 400,
                 "InvalidPriority")
    assert create(alice, token).status_code == 201


def test_concurrent_requests_with_one_token_create_one_job(alice: httpx.Client) -> None:
    token = fresh_token()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: create(alice, token), range(8)))
    assert {response.status_code for response in responses} == {201}
    assert len({response.json()["Id"] for response in responses}) == 1
