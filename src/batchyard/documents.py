"""Jobs, tasks and instances as BatchCompute REST JSON (reference §6.7, §9.9): numbers stay
numbers, objects are never null, times are `2016-11-01T15:25:02.837728Z` or `""`.

One home for the shape the API answers with and the command line's `--json` prints, so a
script sees the same field names from both. Imports neither sqlalchemy nor FastAPI.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from batchyard.domain.events import message
from batchyard.domain.pending import Pending
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.ports.reads import StreamedEvent


def time_text(moment: datetime | None) -> str:
    """`2016-11-01T15:25:02.837728Z` (UTC, always six digits of fraction), or `""`."""
    if moment is None:
        return ""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is three times faster than strftime; "+00:00" becomes "Z".
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@lru_cache(maxsize=1024)
def owner_id(tenant: str) -> int:
    """A stable number for a tenant (BatchCompute's `OwnerId` is the account's number)."""
    return int(hashlib.sha256(tenant.encode()).hexdigest()[:12], 16)


def job_view(job: JobRecord) -> dict[str, Any]:
    return {
        "Id": job.id, "Name": job.name, "Owner": job.tenant, "OwnerId": owner_id(job.tenant),
        "Priority": job.priority, "State": job.state.value, "Message": job.message,
        "CreationTime": time_text(job.created), "StartTime": time_text(job.started),
        "EndTime": time_text(job.ended), "TaskMetrics": job.task_metrics.as_api(),
        "InstanceMetrics": job.instance_metrics.as_api(),
    }


def task_view(task: TaskRecord) -> dict[str, Any]:
    return {
        "TaskName": task.name, "State": task.state.value, "StartTime": time_text(task.started),
        "EndTime": time_text(task.ended), "InstanceMetrics": task.instance_metrics.as_api(),
        **_pending(task.pending),
    }


def instance_view(instance: InstanceRecord) -> dict[str, Any]:
    return {
        "InstanceId": instance.instance_id, "State": instance.state.value,
        "StartTime": time_text(instance.started), "EndTime": time_text(instance.ended),
        "RetryCount": instance.retry_count, "Progress": instance.progress,
        "StdoutRedirectPath": instance.stdout_path, "StderrRedirectPath": instance.stderr_path,
        "Result": {"ExitCode": instance.exit_code, "ErrorCode": instance.error_code,
                   "ErrorMessage": instance.error_message, "Detail": instance.detail},
        "Error": {}, "Outputs": {}, "NodeIp": instance.node, **_pending(instance.pending),
    }


def _pending(reason: Pending | None) -> dict[str, Any]:
    """`PendingReason` (an extra field the official SDK ignores), when there is one."""
    return {} if reason is None else {"PendingReason": reason.as_api()}


def event_view(streamed: StreamedEvent) -> dict[str, Any]:
    """An item of the event stream (`GET /events`, `batchyard events --json`): the §10
    message of the event (`domain.events.message`) with its `Id` (the cursor after it),
    `Type` (the event name) and `Time`."""
    event = streamed.event
    fields = message(event, streamed.job_name, streamed.seq, time_text(event.time))
    return {"Id": streamed.cursor, "Type": fields["Event"], **fields}
