"""Shipping an attempt's stdout and stderr to the task's redirect folders (reference §4.4).

Objects are named `<dir>stdout.<jobId>.<taskName>.<instanceId>` (and `stderr.…`); a retry
overwrites them, as BatchCompute does. So that the logs of every failed attempt survive the
retries, a failed attempt also uploads copies named `<that name>.attempt-<n>`
(the names: `domain.logs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchyard.domain.attempt import AttemptRequest
from batchyard.domain.logs import attempt_copy
from batchyard.domain.logs import in_folder as log_url
from batchyard.errors import ObjectStoreError
from batchyard.ports import ObjectStore
from batchyard.runner.workspace import Workspace


@dataclass(frozen=True)
class LogUpload:
    """Where the logs went, and what could not be uploaded (one message per object)."""

    stdout_url: str
    stderr_url: str
    problems: list[str] = field(default_factory=list)


def upload_logs(objects: ObjectStore, request: AttemptRequest, workspace: Workspace,
                failed: bool) -> LogUpload:
    """Upload both logs (even empty ones); on failure also their `.attempt-<n>` copies."""
    stdout_url = log_url(request.stdout_dir, request.log_name("stdout"))
    stderr_url = log_url(request.stderr_dir, request.log_name("stderr"))
    problems: list[str] = []
    for local, url in ((workspace.stdout, stdout_url), (workspace.stderr, stderr_url)):
        _upload(objects, local, url, problems)
        if failed:
            _upload(objects, local, attempt_copy(url, request.key.attempt), problems)
    return LogUpload(stdout_url, stderr_url, problems)


def append_note(workspace: Workspace, note: str) -> None:
    """Add a line from batchyard to the captured stderr, so the log says why it stopped."""
    with open(workspace.stderr, "a", encoding="utf-8") as stream:
        stream.write(f"batchyard: {note}\n")


def ensure_logs(workspace: Workspace) -> None:
    """Create empty log files for a program that never started: they are uploaded anyway."""
    for path in (workspace.stdout, workspace.stderr):
        open(path, "ab").close()


def _upload(objects: ObjectStore, local: str, url: str, problems: list[str]) -> None:
    """Hand `local` over as `url`; what went wrong is added to `problems`."""
    try:
        objects.put_file(local, url, handed_over=True)
    except ObjectStoreError as error:
        problems.append(error.message)
    except Exception as error:  # any other adapter's failure is still an upload failure
        problems.append(f"cannot write {url}: {type(error).__name__}: {error}")
