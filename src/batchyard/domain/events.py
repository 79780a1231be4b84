"""BatchCompute's event names (reference §3.3, §10) and the message each event carries.

Every committed change of a job, task or instance is a row of the events table (written in
the transaction of the change); `event_name` names a stored row the way BatchCompute named
its notifications, and `message` builds the §10 fields a subscriber receives. A job's
`Notification.Topic.Events` may name only `JOB_EVENTS`, a cluster's only `CLUSTER_EVENTS`
(`notification_problems`, used by `spec.parse_job` and `clusters.parse_cluster`). Pure: no
I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from enum import StrEnum
from typing import Any

from batchyard.domain.records import EventRecord
from batchyard.domain.states import Entity, State
from batchyard.errors import Problem


class EventName(StrEnum):
    """Every event name BatchCompute published (reference §3.3)."""

    JOB_WAITING = "OnJobWaiting"
    JOB_RUNNING = "OnJobRunning"
    JOB_STOPPED = "OnJobStopped"
    JOB_FINISHED = "OnJobFinished"
    JOB_FAILED = "OnJobFailed"
    TASK_WAITING = "OnTaskWaiting"
    TASK_RUNNING = "OnTaskRunning"
    TASK_STOPPED = "OnTaskStopped"
    TASK_FINISHED = "OnTaskFinished"
    TASK_FAILED = "OnTaskFailed"
    INSTANCE_WAITING = "OnInstanceWaiting"
    INSTANCE_RUNNING = "OnInstanceRunning"
    INSTANCE_STOPPED = "OnInstanceStopped"
    INSTANCE_FINISHED = "OnInstanceFinished"
    INSTANCE_FAILED = "OnInstanceFailed"
    PRIORITY_CHANGE = "OnPriorityChange"
    CLUSTER_DELETED = "OnClusterDeleted"
    VM_CREATED = "OnInstanceCreated"
    """A cluster VM (BatchCompute called them instances too) was created."""
    VM_ACTIVE = "OnInstanceActive"
    """A cluster VM became ready for work."""


PRIORITY_KIND = "priority"
"""The `kind` of the event row a priority change writes: not a state transition (its row's
`target` is the job's unchanged state), so listeners are never told of it as one."""

_NAMES: dict[tuple[str, State], EventName] = {
    (entity.value, state): EventName(f"On{entity.value.capitalize()}{state.value}")
    for entity in Entity for state in State
}
JOB_EVENTS: frozenset[EventName] = frozenset(
    {*_NAMES.values(), EventName.PRIORITY_CHANGE})
"""The names a job's `Notification.Topic.Events` may list."""
CLUSTER_EVENTS: frozenset[EventName] = frozenset(
    {EventName.CLUSTER_DELETED, EventName.VM_CREATED, EventName.VM_ACTIVE})
"""The names a cluster's `Notification.Topic.Events` may list."""

CODE = "InvalidNotification"
PRIORITY_CHANGE = re.compile(r"^priority (?P<old>[0-9]+) -> (?P<new>[0-9]+)\Z")


def event_name(kind: str, target: State | str) -> EventName | None:
    """The name of a stored event: its `kind` (job, task, instance or priority) and the
    state it moved to; None for a row of any other kind."""
    if kind == PRIORITY_KIND:
        return EventName.PRIORITY_CHANGE
    try:
        return _NAMES.get((kind, State(target)))
    except ValueError:
        return None


def priority_message(old: int, new: int) -> str:
    """The message of a priority change's event row (read back by `new_priority`)."""
    return f"priority {old} -> {new}"


def new_priority(message: str) -> int | None:
    """The priority a priority change's message moved to (None: not such a message)."""
    found = PRIORITY_CHANGE.match(message)
    return int(found.group("new")) if found else None


def message(event: EventRecord, job_name: str, seq: int, time: str) -> dict[str, Any]:
    """The §10 fields of a job's event (`time`: its moment as API text): what a subscriber
    of the job's `Notification` receives, and each item of the event stream.

    `Seq` numbers the job's events 1, 2, 3 … in the order they were committed. The moment
    is `StartTime` when the object started running, `EndTime` when it ended, `Time` always.
    """
    name = event_name(event.kind, event.target)
    fields: dict[str, Any] = {
        "Category": "Job", "JobId": event.job_id, "JobName": job_name,
        "Event": name.value if name else "", "State": event.target, "Seq": seq, "Time": time,
    }
    if event.kind in (Entity.TASK.value, Entity.INSTANCE.value):
        fields["TaskName"] = event.task
    if event.kind == Entity.INSTANCE.value:
        fields["InstanceId"] = event.instance_id
    if event.kind == PRIORITY_KIND:
        fields["Priority"] = new_priority(event.message)
    elif event.target == State.RUNNING.value:
        fields["StartTime"] = time
    elif event.target in {state.value for state in (State.FINISHED, State.FAILED,
                                                     State.STOPPED)}:
        fields["EndTime"] = time
    if event.message:
        fields["Message"] = event.message
    return fields


def notification_problems(notification: Any, allowed: Collection[EventName],
                          clip: Callable[[Any], Any]) -> list[Problem]:
    """What is wrong with a `Notification` object's `Topic.Events`: not a list, or naming an
    event outside `allowed` (each such name reported at `Notification.Topic.Events[i]`).
    Everything else of a Notification is BatchCompute's free-form object, kept as sent.
    `clip`: how the caller shortens a value it shows (its description's rule)."""
    topic = notification.get("Topic") if isinstance(notification, dict) else None
    if not isinstance(topic, dict) or topic.get("Events") is None:
        return []
    events = topic["Events"]
    path = "Notification.Topic.Events"
    if not isinstance(events, list):
        return [Problem(CODE, path, clip(events), "must be a list of event names, e.g. "
                        '["OnJobFinished", "OnJobFailed"]')]
    names = {name.value for name in allowed}
    rule = "must be one of " + ", ".join(sorted(names))
    return [Problem(CODE, f"{path}[{index}]", clip(name), rule)
            for index, name in enumerate(events) if not isinstance(name, str)
            or name not in names]

