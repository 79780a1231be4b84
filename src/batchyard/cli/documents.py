"""The JSON documents `--json` prints: one document on stdout, with the BatchCompute REST
field names (the views of `batchyard.documents`) so a script sees the API's shape."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from batchyard.cli.progress import JobView, TaskSummary
from batchyard.documents import instance_view, job_view, task_view
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord


def submitted_document(job_id: str) -> dict[str, Any]:
    """`{"Id": "job-…"}`, as the API answers a CreateJob."""
    return {"Id": job_id}


def run_document(view: JobView, summaries: Sequence[TaskSummary],
                 failed: Sequence[InstanceRecord], logs: Sequence[str],
                 status: int) -> dict[str, Any]:
    """The job, its tasks, every failed instance (with its TaskName), the log folders and
    the command's exit status."""
    return {"Job": job_view(view.job), "Tasks": [task_view(one.task) for one in summaries],
            "FailedInstances": [{"TaskName": instance.task, **instance_view(instance)}
                                for instance in failed],
            "Logs": list(logs), "ExitStatus": status}


def json_text(document: dict[str, Any]) -> str:
    """Indented, keys in a stable order, non-ASCII kept as is; one trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def json_line(document: dict[str, Any]) -> str:
    """One document on one line (JSON lines, for streams such as `jobs --watch --json`)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"


def print_json(document: Any) -> None:
    """One JSON document on stdout: readable on a terminal, parsed whole by `jq`."""
    sys.stdout.write(json_text(document))
    sys.stdout.flush()


def jobs_document(jobs: Sequence[JobRecord], next_marker: str) -> dict[str, Any]:
    """`{"Items": [job…], "NextMarker": ""}`: the shape of the API's ListJobs answer."""
    return {"Items": [job_view(job) for job in jobs], "NextMarker": next_marker}


def job_document(job: JobRecord, tasks: Sequence[TaskRecord]) -> dict[str, Any]:
    """The job (GetJob's fields) with its tasks under `Tasks`."""
    return {**job_view(job), "Tasks": [task_view(task) for task in tasks]}


def task_document(task: TaskRecord, instances: Sequence[InstanceRecord]) -> dict[str, Any]:
    """The task (GetTask's fields) with its (selected) instances under `Instances`."""
    return {**task_view(task), "Instances": [instance_view(one) for one in instances]}
