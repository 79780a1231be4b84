"""The event stream against a real `batchyard serve`: `GET /events` pages and the
server-sent-events variant, per tenant, resumable from a cursor across a restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import (
    LiveServer,
    echo_task,
    job_body,
    live_server,
    signed_client,
    wait_for_state,
)

ENDED = {"Finished", "Failed", "Stopped"}


def dag_job(name: str = "events-dag") -> dict[str, Any]:
    """first (2 instances) -> second (1 instance)."""
    return {"Name": name, "Priority": 3, "Type": "DAG", "JobFailOnInstanceFail": True,
            "DAG": {"Tasks": {"first": echo_task("echo one", 2), "second": echo_task()},
                    "Dependencies": {"first": ["second"]}}}


def all_events(client: httpx.Client, since: str = "", job_id: str = "",
               page_size: int = 7) -> tuple[list[dict[str, Any]], str]:
    """Every event after `since` (of `job_id` if given), read in pages; the last cursor."""
    items: list[dict[str, Any]] = []
    cursor = since
    while True:
        answer = client.get("/events", params={"since": cursor, "MaxItemCount": page_size,
                                               "JobId": job_id})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["Items"]
        assert body["Cursor"] == (body["Items"][-1]["Id"] if body["Items"] else cursor)
        cursor = body["Cursor"]
        if not body["NextMarker"]:
            return items, cursor
        assert body["NextMarker"] == cursor


def submitted(client: httpx.Client, body: dict[str, Any]) -> str:
    answer = client.post("/jobs", json=body)
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["Id"]
    return job_id


def test_every_event_of_a_dag_job_in_order_with_seq(alice: httpx.Client) -> None:
    job_id = submitted(alice, dag_job())
    assert wait_for_state(alice, job_id, ENDED)["State"] == "Finished"
    items, _ = all_events(alice, job_id=job_id)
    assert [item["Seq"] for item in items] == list(range(1, len(items) + 1))
    ids = [int(item["Id"]) for item in items]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {item["JobId"] for item in items} == {job_id}
    assert {item["JobName"] for item in items} == {"events-dag"}
    names = [item["Type"] for item in items]
    assert names[0] == "OnJobWaiting" and names[-1] == "OnJobFinished"
    assert names.count("OnInstanceFinished") == 3 and names.count("OnTaskFinished") == 2
    assert names.count("OnJobRunning") == 1
    # the DAG's order: every event of `first` before `second` starts
    first_done = max(i for i, item in enumerate(items)
                     if item.get("TaskName") == "first" and item["Type"] == "OnTaskFinished")
    second_runs = min(i for i, item in enumerate(items)
                      if item.get("TaskName") == "second" and item["Type"] == "OnTaskRunning")
    assert first_done < second_runs
    instance = next(item for item in items if item["Type"] == "OnInstanceFinished")
    assert instance["Category"] == "Job" and instance["State"] == "Finished"
    assert isinstance(instance["InstanceId"], int) and instance["EndTime"] == instance["Time"]
    assert instance["Event"] == instance["Type"]
    assert instance["Time"].endswith("Z")


def test_a_priority_change_is_an_event(alice: httpx.Client) -> None:
    job_id = submitted(alice, job_body("events-priority", "exit 3", priority=5))
    assert wait_for_state(alice, job_id, ENDED)["State"] == "Failed"
    _, cursor = all_events(alice, job_id=job_id)
    assert alice.put(f"/jobs/{job_id}", json={"Priority": 7}).status_code == 200
    items, _ = all_events(alice, since=cursor, job_id=job_id)
    assert [(item["Type"], item["State"], item["Priority"]) for item in items] == [
        ("OnPriorityChange", "Failed", 7)]
    assert items[0]["Message"] == "priority 5 -> 7"


def test_another_tenant_sees_none_of_the_events(alice: httpx.Client, bob: httpx.Client
                                                ) -> None:
    _, bob_cursor = all_events(bob)
    job_id = submitted(alice, job_body("events-private"))
    wait_for_state(alice, job_id, ENDED)
    bob_items, _ = all_events(bob, since=bob_cursor)
    assert job_id not in {item["JobId"] for item in bob_items}
    alice_items, _ = all_events(alice)
    assert job_id in {item["JobId"] for item in alice_items}
    answer = bob.get("/events", params={"JobId": job_id})
    assert answer.status_code == 404 and answer.json()["Code"] == "InvalidResource.NotFound"


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "9" * 19, "99999999999"])
def test_a_cursor_the_server_never_gave_is_refused(alice: httpx.Client, cursor: str) -> None:
    for path in ("/events", "/events/stream"):
        answer = alice.get(path, params={"since": cursor})
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["Code"] == "InvalidMarker" and "cursor" in body["Message"]


def test_bad_page_sizes_and_unsigned_requests_are_refused(alice: httpx.Client,
                                                          anonymous: httpx.Client) -> None:
    answer = alice.get("/events", params={"MaxItemCount": 101})
    assert answer.status_code == 400 and answer.json()["Code"] == "InvalidMaxItemCount"
    for path in ("/events", "/events/stream"):
        assert anonymous.get(path).status_code in (401, 403)


def test_the_cursor_holds_across_a_server_restart(tmp_path: Path) -> None:
    with live_server(tmp_path) as first:
        key = first.keys.create("carol", "restart")
        with signed_client(first, key) as client:
            before = submitted(client, dag_job("before-restart"))
            wait_for_state(client, before, ENDED)
            read, cursor = all_events(client, page_size=3)
            # a partial read: stop in the middle of the job's events
            partial = read[:5]
            cursor = partial[-1]["Id"]
    with live_server(tmp_path) as second, signed_client(second, key) as client:
        after = submitted(client, job_body("after-restart"))
        wait_for_state(client, after, ENDED)
        rest, _ = all_events(client, since=cursor, page_size=4)
        everything, _ = all_events(client, page_size=100)
    assert [item["Id"] for item in partial + rest] == [item["Id"] for item in everything]
    assert {item["JobId"] for item in rest} == {before, after}
    assert next(item["Seq"] for item in rest if item["JobId"] == before) == 6


def test_a_deleted_jobs_event_ids_are_never_given_again(alice: httpx.Client) -> None:
    job_id = submitted(alice, job_body("events-deleted"))
    wait_for_state(alice, job_id, ENDED)
    _, cursor = all_events(alice)
    assert alice.delete(f"/jobs/{job_id}").status_code == 204
    later = submitted(alice, job_body("events-later"))
    wait_for_state(alice, later, ENDED)
    items, _ = all_events(alice, since=cursor)
    assert next(item["Seq"] for item in items if item["JobId"] == later) == 1
    assert {item["Type"] for item in items if item["JobId"] == later} >= {
        "OnJobWaiting", "OnJobFinished"}


# ---- server-sent events ---------------------------------------------------------------------


def sse_events(client: httpx.Client, count: int, headers: dict[str, str] | None = None,
               params: dict[str, str] | None = None, timeout: float = 30
               ) -> list[dict[str, str]]:
    """The first `count` events of `GET /events/stream` (each as its fields)."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with client.stream("GET", "/events/stream", headers=headers, params=params,
                       timeout=timeout) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            assert time.monotonic() < deadline, "the stream was too slow"
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
                if len(events) == count:
                    return events
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")
    raise AssertionError(f"the stream ended after {len(events)} events")


@pytest.fixture()
def dave(server: LiveServer) -> Iterator[httpx.Client]:
    key: AccessKey = server.keys.create("dave", "SSE tests")
    with signed_client(server, key) as client:
        yield client


def test_the_stream_pushes_events_as_they_commit_and_resumes(dave: httpx.Client) -> None:
    first = submitted(dave, job_body("sse-first"))
    wait_for_state(dave, first, ENDED)
    stored, _ = all_events(dave)
    # Waiting, Running and the end of a job, its task and its instance: six at least
    head = sse_events(dave, 3)
    assert [event["id"] for event in head] == [item["Id"] for item in stored[:3]]
    assert [json.loads(event["data"]) for event in head] == stored[:3]
    assert [event["event"] for event in head] == [item["Type"] for item in stored[:3]]
    resumed = sse_events(dave, len(stored) - 3, headers={"Last-Event-ID": head[-1]["id"]})
    assert [event["id"] for event in resumed] == [item["Id"] for item in stored[3:]]
    # live: a job submitted while the stream waits arrives on it
    found: list[dict[str, str]] = []
    reader = threading.Thread(target=lambda: found.extend(
        sse_events(dave, 1, params={"since": stored[-1]["Id"]})))
    reader.start()
    time.sleep(0.3)
    second = submitted(dave, job_body("sse-second"))
    reader.join(30)
    assert [json.loads(event["data"])["JobId"] for event in found] == [second]
    assert found[0]["event"] == "OnJobWaiting"
    wait_for_state(dave, second, ENDED)
