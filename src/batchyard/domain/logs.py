"""Where an instance's stdout and stderr are: one home for the names of log objects
(reference §4.4), used by the runner that writes them, and by the command line and the
console that read them.

An attempt's logs go to `<RedirectPath>/<stream>.<jobId>.<taskName>.<instanceId>`, uploaded
again every few seconds while it runs and once more when it ends; a retry replaces them. An
attempt that did not succeed also leaves copies named `<that object>.attempt-<n>` (n counts
the instance's attempts from 1), so the logs of every failed attempt outlive the retries.
"""

from __future__ import annotations

from typing import Any

from batchyard.domain.records import InstanceRecord

STREAMS = ("stdout", "stderr")
ATTEMPT_SUFFIX = ".attempt-"
"""`<log object>.attempt-<n>`: the copy of attempt n's log."""


def log_name(stream: str, job_id: str, task: str, instance_id: int) -> str:
    """`stdout.<jobId>.<taskName>.<instanceId>` (reference §4.4)."""
    return f"{stream}.{job_id}.{task}.{instance_id}"


def in_folder(folder: str, name: str) -> str:
    """`folder` + `name`, adding the `/` a redirect folder should have ended with."""
    return folder + name if folder.endswith("/") else f"{folder}/{name}"


def attempt_copy(url: str, attempt: int) -> str:
    """The object keeping attempt `attempt`'s copy of the log `url`."""
    return f"{url}{ATTEMPT_SUFFIX}{attempt}"


def instance_log(description: dict[str, Any], instance: InstanceRecord, stream: str,
                 attempt: int | None = None) -> str:
    """Where the instance's `stream` log is (or will be): the path recorded by its last
    attempt, else the one the runner will write from the job's `description`; with
    `attempt`, that attempt's copy. "" when the task has no redirect folder."""
    recorded = instance.stdout_path if stream == "stdout" else instance.stderr_path
    url = recorded or _planned(description, instance, stream)
    if url and attempt is not None:
        return attempt_copy(url, attempt)
    return url


def _planned(description: dict[str, Any], instance: InstanceRecord, stream: str) -> str:
    tasks = (description.get("DAG") or {}).get("Tasks") or {}
    parameters = (tasks.get(instance.task) or {}).get("Parameters") or {}
    folder = str(parameters.get(f"{stream.capitalize()}RedirectPath") or "")
    if not folder:
        return ""
    return in_folder(folder, log_name(stream, instance.job_id, instance.task,
                                      instance.instance_id))


__all__ = ["ATTEMPT_SUFFIX", "STREAMS", "attempt_copy", "in_folder", "instance_log",
           "log_name"]
