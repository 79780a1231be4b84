"""BatchCompute event names, the §10 message of a stored event, and `Notification.Topic.Events`
checked at submission (jobs and clusters). Pure rules: no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from batchcompute.resources.cluster import Notification as SdkNotification

from batchyard.documents import event_view
from batchyard.domain.clusters import ClusterSpecError, parse_cluster
from batchyard.domain.events import (
    CLUSTER_EVENTS,
    JOB_EVENTS,
    EventName,
    event_name,
    message,
    new_priority,
    priority_message,
)
from batchyard.domain.records import EventRecord
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.errors import SpecError
from batchyard.ports.reads import StreamedEvent
from tests.unit.test_cluster_rules import body as cluster_body
from tests.unit.test_spec import job

REFERENCE_JOB_EVENTS = [
    "OnJobWaiting", "OnJobRunning", "OnJobStopped", "OnJobFinished", "OnJobFailed",
    "OnTaskWaiting", "OnTaskRunning", "OnTaskStopped", "OnTaskFinished", "OnTaskFailed",
    "OnInstanceWaiting", "OnInstanceRunning", "OnInstanceStopped", "OnInstanceFinished",
    "OnInstanceFailed", "OnPriorityChange"]
"""Reference §3.3, copied as written."""
REFERENCE_CLUSTER_EVENTS = ["OnClusterDeleted", "OnInstanceCreated", "OnInstanceActive"]


def test_the_names_are_the_references() -> None:
    assert sorted(JOB_EVENTS) == sorted(REFERENCE_JOB_EVENTS)
    assert sorted(CLUSTER_EVENTS) == sorted(REFERENCE_CLUSTER_EVENTS)
    assert set(EventName) == JOB_EVENTS | CLUSTER_EVENTS


@pytest.mark.parametrize(("kind", "target", "name"), [
    ("job", State.WAITING, "OnJobWaiting"), ("job", "Finished", "OnJobFinished"),
    ("task", State.RUNNING, "OnTaskRunning"), ("task", State.STOPPED, "OnTaskStopped"),
    ("instance", State.FAILED, "OnInstanceFailed"), ("instance", "Waiting", "OnInstanceWaiting"),
    ("priority", State.STOPPED, "OnPriorityChange"), ("priority", "Failed", "OnPriorityChange"),
])
def test_a_stored_event_is_named(kind: str, target: State | str, name: str) -> None:
    assert event_name(kind, target) == name


@pytest.mark.parametrize(("kind", "target"), [("cluster", "Waiting"), ("job", "Deleted"),
                                             ("", "Running")])
def test_other_rows_have_no_name(kind: str, target: str) -> None:
    assert event_name(kind, target) is None


def test_the_priority_message_reads_back() -> None:
    assert priority_message(5, 70) == "priority 5 -> 70"
    assert new_priority(priority_message(5, 70)) == 70
    assert new_priority("priority 5 -> ") is None and new_priority("") is None


MOMENT = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


def record(kind: str, target: str, task: str = "", instance: int | None = None,
           text: str = "") -> EventRecord:
    return EventRecord(42, "job-1", task, instance, kind, "", target, MOMENT, text)


def test_messages_carry_the_reference_fields() -> None:
    time = "2026-12-01T08:30:00.000000Z"
    assert message(record("job", "Running"), "demo", 2, time) == {
        "Category": "Job", "JobId": "job-1", "JobName": "demo", "Event": "OnJobRunning",
        "State": "Running", "Seq": 2, "Time": time, "StartTime": time}
    failed = message(record("instance", "Failed", "count", 3, "exit 1"), "demo", 9, time)
    assert failed == {"Category": "Job", "JobId": "job-1", "JobName": "demo",
                      "Event": "OnInstanceFailed", "State": "Failed", "Seq": 9, "Time": time,
                      "TaskName": "count", "InstanceId": 3, "EndTime": time,
                      "Message": "exit 1"}
    task = message(record("task", "Waiting", "count"), "demo", 1, time)
    assert task["TaskName"] == "count" and "InstanceId" not in task
    assert "StartTime" not in task and "EndTime" not in task
    priority = message(record("priority", "Stopped", text="priority 1 -> 8"), "demo", 5, time)
    assert (priority["Event"], priority["Priority"], priority["State"]) == (
        "OnPriorityChange", 8, "Stopped")
    assert "EndTime" not in priority


def test_the_stream_item_adds_id_and_type() -> None:
    item = event_view(StreamedEvent(record("job", "Finished"), "demo", 4))
    assert item["Id"] == "42" and item["Type"] == "OnJobFinished" == item["Event"]
    assert item["Time"] == "2026-12-01T08:30:00.000000Z" == item["EndTime"]


# ---- Notification.Topic.Events at submission ------------------------------------------------


def topic(events: Any) -> dict[str, Any]:
    return {"Topic": {"Name": "t", "Endpoint": "http://127.0.0.1:9/", "Events": events}}


def job_problems(raw: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    return [(p.code, p.path, p.value, p.rule) for p in caught.value.problems]


def test_unknown_event_names_are_refused_by_their_json_path() -> None:
    raw = job(Notification=topic(["OnJobFinished", "OnJobFailed", "OnJobExploded", 7,
                                  "OnClusterDeleted"]))
    found = job_problems(raw)
    assert [(code, path, value) for code, path, value, _ in found] == [
        ("InvalidNotification", "Notification.Topic.Events[2]", "OnJobExploded"),
        ("InvalidNotification", "Notification.Topic.Events[3]", 7),
        ("InvalidNotification", "Notification.Topic.Events[4]", "OnClusterDeleted")]
    assert all("OnJobFinished" in rule and "OnPriorityChange" in rule
               and "OnClusterDeleted" not in rule for *_, rule in found)
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    error = caught.value
    assert "Notification.Topic.Events[2]" in str(error) and "OnJobExploded" in str(error)


@pytest.mark.parametrize("events", ["OnJobFinished", {"OnJobFinished": 1}, 3])
def test_events_must_be_a_list(events: Any) -> None:
    assert [(code, path) for code, path, *_ in job_problems(job(Notification=topic(events)))
            ] == [("InvalidNotification", "Notification.Topic.Events")]


@pytest.mark.parametrize("notification", [
    None, {}, {"Topic": {}}, {"Topic": {"Events": None}}, {"Topic": "free-form"},
    topic([]), topic(REFERENCE_JOB_EVENTS),
    json.loads(SdkNotification().dump()),
])
def test_every_valid_batchcompute_notification_is_kept(notification: Any) -> None:
    raw = job() if notification is None else job(Notification=notification)
    echoed = parse_job(raw).echo()
    assert echoed.get("Notification") == notification


def test_the_sdks_own_notification_is_accepted() -> None:
    sdk = SdkNotification()
    sdk.Topic.Name = "my-topic"
    sdk.Topic.Events = ["OnJobFinished", "OnInstanceFailed"]
    raw = json.loads(sdk.dump())
    assert raw["Topic"]["UserTemplate"] == ""  # the SDK's defaults come along
    assert parse_job(job(Notification=raw)).echo()["Notification"] == raw


def cluster_problems(raw: dict[str, Any]) -> list[tuple[str, str, Any]]:
    with pytest.raises(ClusterSpecError) as caught:
        parse_cluster(raw)
    return [(p.code, p.path, p.value) for p in caught.value.problems]


def test_a_cluster_notification_names_only_cluster_events() -> None:
    raw = cluster_body(Notification=topic(["OnClusterDeleted", "OnJobFinished",
                                            "OnInstanceActive"]))
    assert cluster_problems(raw) == [
        ("InvalidNotification", "Notification.Topic.Events[1]", "OnJobFinished")]
    kept = parse_cluster(cluster_body(Notification=topic(REFERENCE_CLUSTER_EVENTS)))
    assert kept.echo()["Notification"] == topic(REFERENCE_CLUSTER_EVENTS)
