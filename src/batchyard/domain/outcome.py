"""What one attempt of an instance produced, as reported by a runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ErrorCode(StrEnum):
    """Values of `Result.ErrorCode` for attempts that did not succeed."""

    NONE = ""
    EXIT_CODE = "NonZeroExitCode"
    """The program exited with a code other than 0."""
    TIMEOUT = "InstanceTimeout"
    """The attempt ran longer than the task's Timeout and was killed."""
    PACKAGE = "PackageError"
    """PackagePath could not be downloaded or safely extracted."""
    UPLOAD = "UploadError"
    """stdout/stderr (or outputs) could not be uploaded to the object store."""
    MAPPING = "MappingError"
    """An InputMapping or Mounts source could not be staged, or the sandbox not built."""
    LAUNCH = "LaunchError"
    """The program could not be started at all."""
    STOPPED = "InstanceStopped"
    """The attempt was killed because its job was stopped (or failed)."""
    LOST = "AttemptLost"
    """The worker running the attempt went away (e.g. the server restarted)."""
    DISK = "DiskLimitExceeded"
    """The program wrote more than the attempt's disk limit and was killed."""
    MEMORY = "MemoryLimitExceeded"
    """The program used more than the attempt's memory limit and the kernel killed it."""


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt. Runners return it; only the orchestrator changes state."""

    exit_code: int | None
    error_code: ErrorCode = ErrorCode.NONE
    error_message: str = ""
    detail: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stdout_path: str = ""
    stderr_path: str = ""
    node: str = field(default="")
    worker: str = ""
    """The VM it ran on (its BATCH_COMPUTE_WORKER_ID; set by the engine from the lease)."""
    program_started_at: datetime | None = None
    """When its program's process was started, after staging (the package, the mapped
    paths, the sandbox); None if the program never started (staging failed, stopped or lost
    first). `started_at` → this is staging, this → `ended_at` is running (`domain.phases`).
    (Last, and defaulted: a report pickled by an older agent, without it, reads as None.)"""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.error_code is ErrorCode.NONE
