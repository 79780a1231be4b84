"""`--json` documents of `jobs` and `job`: the REST API's own representations (its field
names, times and numbers), so a script reads the same JSON from the CLI and the API."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from batchyard.api.representation import instance_view, job_view, task_view
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord


def jobs_document(jobs: Sequence[JobRecord], next_marker: str) -> dict[str, Any]:
    """`{"Items": [job…], "NextMarker": ""}`: the shape of the API's ListJobs answer."""
    return {"Items": [job_view(job) for job in jobs], "NextMarker": next_marker}


def job_document(job: JobRecord, tasks: Sequence[TaskRecord]) -> dict[str, Any]:
    """The job (GetJob's fields) with its tasks under `Tasks`."""
    return {**job_view(job), "Tasks": [task_view(task) for task in tasks]}


def task_document(task: TaskRecord, instances: Sequence[InstanceRecord]) -> dict[str, Any]:
    """The task (GetTask's fields) with its (selected) instances under `Instances`."""
    return {**task_view(task), "Instances": [instance_view(one) for one in instances]}


def instance_document(instance: InstanceRecord) -> dict[str, Any]:
    """The instance as GetInstance answers it."""
    return instance_view(instance)


def print_json(document: Any) -> None:
    """One JSON document on stdout, indented: readable on a terminal, parsed whole by `jq`."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
