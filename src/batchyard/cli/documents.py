"""The JSON documents `--json` prints: one document on stdout, with the BatchCompute REST
field names (the views of `batchyard.documents`) so a script sees the API's shape."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from batchyard.cli.progress import JobView, TaskSummary
from batchyard.documents import instance_view, job_view, task_view
from batchyard.domain.records import InstanceRecord


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
