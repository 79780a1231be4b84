"""The fast paths of the API (GET /jobs/{id}, POST /jobs): same checks as every other route,
and the pieces they rest on (key lookups, short reads, grouped job inserts)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import KeyStore, master_key, open_database
from batchyard.adapters.store import GroupCommit, NewJob, SqlStore
from batchyard.api.services import Services
from batchyard.api.signature import signed_headers
from batchyard.domain.spec import parse_job
from batchyard.ids import new_job_id
from tests.api.conftest import LiveServer, job_body, wait_for_state
from tests.api.test_errors import assert_error


def send(server: LiveServer, method: str, target: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.request(method, target, headers=headers)


def test_get_job_checks_the_signature_like_every_route(server: LiveServer, alice: httpx.Client,
                                                        alice_key: Any, bob_key: Any) -> None:
    job_id = alice.post("/jobs", json=job_body(command="true")).json()["Id"]
    target = f"/jobs/{job_id}"
    assert_error(send(server, "GET", target, {}), 403, "MissingAuthorization")
    headers = signed_headers(alice_key.id, alice_key.secret, "GET", target)
    assert send(server, "GET", target, headers).status_code == 200
    assert_error(send(server, "GET", target, headers), 403, "SignatureNonceUsed")
    forged = signed_headers(alice_key.id, "not-the-secret", "GET", target)
    assert_error(send(server, "GET", target, forged), 400, "InvalidSignature")
    stale = signed_headers(alice_key.id, alice_key.secret, "GET", target, now=time.time() - 3600)
    assert_error(send(server, "GET", target, stale), 403, "RequestTimeTooSkewed")
    other = signed_headers(bob_key.id, bob_key.secret, "GET", target)
    assert_error(send(server, "GET", target, other), 404, "InvalidResource.NotFound")


def test_a_key_revoked_by_another_store_is_refused_at_once(server: LiveServer) -> None:
    key = server.keys.create("dave")
    job_target = "/jobs/job-0000000000000000000000000000000A"
    first = send(server, "GET", job_target, signed_headers(key.id, key.secret, "GET", job_target))
    assert_error(first, 404, "InvalidResource.NotFound")  # authenticated: the job is just missing
    other_store = KeyStore(server.keys.database, master_key(server.settings.data_dir))
    other_store.revoke(key.id)
    headers = signed_headers(key.id, key.secret, "GET", job_target)
    assert_error(send(server, "GET", job_target, headers), 403, "InvalidAccessKeyId.Inactive")


def test_concurrent_creates_all_land(alice: httpx.Client) -> None:
    def create(index: int) -> str:
        response = alice.post("/jobs", json=job_body(name=f"burst-{index}", command="true"))
        assert response.status_code == 201, response.text
        return str(response.json()["Id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(create, range(40)))
    assert len(set(ids)) == 40
    for job_id in ids:
        job = alice.get(f"/jobs/{job_id}").json()
        assert job["Id"] == job_id and job["Name"].startswith("burst-")
        assert job["InstanceMetrics"]["WaitingCount"] + job["InstanceMetrics"]["RunningCount"] \
            + job["InstanceMetrics"]["FinishedCount"] == 1


def test_lookup_decrypts_a_secret_once_and_again_when_it_changes(tmp_path: Path) -> None:
    store = KeyStore(open_database(f"sqlite:///{tmp_path / 'state.db'}"), master_key(tmp_path))
    key = store.create("erin")
    calls = 0
    decrypt = store.cipher.decrypt

    def counting(token: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return decrypt(token)

    store.cipher.decrypt = counting  # type: ignore[method-assign]
    for _ in range(3):
        found = store.lookup(key.id)
        assert found is not None and found.secret == key.secret and found.active
    assert calls == 1
    from batchyard.adapters.credentials import access_keys

    with store.database.begin() as connection:
        connection.execute(access_keys.update().where(access_keys.c.id == key.id).values(
            secret=store.cipher.encrypt(b"rotated").decode("ascii")))
    found = store.lookup(key.id)
    assert found is not None and found.secret == "rotated" and calls == 2


@pytest.mark.parametrize("inline", [True, False])
def test_short_reads_run_inline_only_when_asked(inline: bool) -> None:
    services = Services(None, None, None, None, None, None,  # type: ignore[arg-type]
                        inline_reads=inline)

    async def where() -> tuple[int, int]:
        return threading.get_ident(), await services.read(threading.get_ident)

    loop_thread, read_thread = asyncio.run(where())
    assert (loop_thread == read_thread) is inline


def test_group_commit_batches_concurrent_writes_and_isolates_failures() -> None:
    batches: list[list[int]] = []
    entered = threading.Event()
    release = threading.Event()

    def write(items: list[int]) -> None:
        if items == [0]:
            entered.set()
            release.wait(10)
        if 13 in items:
            raise ValueError("thirteen")
        batches.append(items)

    group = GroupCommit[int](write)
    errors: dict[int, BaseException] = {}

    def one(item: int) -> None:
        try:
            group.write(item)
        except ValueError as error:
            errors[item] = error

    first = threading.Thread(target=one, args=(0,))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=one, args=(item,)) for item in range(10, 16)]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # they all queue behind the batch being written
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert batches[0] == [0]
    written = sorted(item for batch in batches for item in batch)
    assert written == [0, 10, 11, 12, 14, 15]
    assert list(errors) == [13] and str(errors[13]) == "thirteen"
    assert len(batches) <= 6  # the retry after the failed batch goes item by item


def test_create_jobs_in_one_transaction(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'state.db'}")
    spec = parse_job(job_body(count=3))
    ids = [new_job_id() for _ in range(4)]

    def create(job_id: str) -> None:
        store.create_job(NewJob(job_id, "frank", spec, time.time()))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, ids))
    for job_id in ids:
        record = store.job(job_id, "frank")
        assert record is not None and record.instance_metrics.waiting == 3
        assert record.task_metrics.waiting == 1 and store.events(job_id)[0].message == "submitted"
    assert store.job(ids[0], "someone-else") is None
    store.close()


def test_post_jobs_parses_the_description_once_at_the_edge(
        alice: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API parses the body and hands the JobDescription on: the engine's own parser is
    never called (it would validate the same dict a second time)."""
    def second_parse(raw: Any) -> Any:
        raise AssertionError("the engine parsed a description the API had parsed")

    monkeypatch.setattr("batchyard.orchestrator.engine.parse_job", second_parse)
    answer = alice.post("/jobs", json=job_body(command="true"))
    assert answer.status_code == 201, answer.text
    invalid = alice.post("/jobs", json={**job_body(command="true"), "Priority": -1})
    assert invalid.status_code == 400, invalid.text  # refused at the edge, not a 500


def test_the_status_read_is_the_job_without_its_description(server: LiveServer,
                                                             alice: httpx.Client) -> None:
    """`GET /jobs/{id}` reads `job_status` (no description), on a plain sqlite3 connection."""
    from dataclasses import replace

    from batchyard.adapters.reads import SqlReads

    job_id = alice.post("/jobs", json=job_body(command="true")).json()["Id"]
    assert wait_for_state(alice, job_id, {"Finished"})["State"] == "Finished"  # (unchanging)
    database = open_database(server.settings.resolved_database_url)
    try:
        plain, through_sqlalchemy = SqlReads(database), SqlReads(database)
        through_sqlalchemy._file = None  # as with PostgreSQL
        for reads in (plain, through_sqlalchemy):
            job = reads.job(job_id, "alice")
            assert job is not None and job.description
            assert reads.job_status(job_id, "alice") == replace(job, description={})
            assert reads.job_status(job_id) == replace(job, description={})
            assert reads.job_status(job_id, "bob") is None
            assert reads.job_status("job-0000000000000000000000000000000A", "alice") is None
        assert plain.job(job_id, "alice") == through_sqlalchemy.job(job_id, "alice")
    finally:
        database.dispose()


@pytest.mark.parametrize("text", ["plain", "naïve ☃ 😀", 'quote " backslash \\ slash /',
                                  "\x00\x01\x1f\x7f\n\t\r\b\f", "\u2028\u2029 </script>", ""])
def test_status_bodies_are_the_bytes_json_dumps_writes(text: str) -> None:
    """orjson writes job views (strings, integers, objects) exactly as JSONResponse did."""
    from batchyard.api.representation import json_bytes, status_json

    view = {"Id": text, "Name": text, "Message": text, "OwnerId": 2**48 - 1, "Priority": 1000,
            "Big": -(2**63), "TaskMetrics": {"WaitingCount": 0, text: 2**63 - 1}, "Nothing": None,
            "Yes": True}
    assert status_json(view) == json_bytes(view)


def test_times_are_written_as_strftime_wrote_them() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from batchyard.documents import time_text

    for stamp in (0.0, 1.5, 1764658732.627572, 1764658732.0, 4102444800.000001):
        for zone in (UTC, timezone(timedelta(hours=-7))):
            moment = datetime.fromtimestamp(stamp, zone)
            assert time_text(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert time_text(None) == ""
