"""Read models: what the store returns about jobs, tasks and instances."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchyard.domain.derivation import Metrics
from batchyard.domain.pending import Pending
from batchyard.domain.states import State


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant: str
    name: str
    priority: int
    state: State
    message: str
    created: datetime
    started: datetime | None
    ended: datetime | None
    task_metrics: Metrics
    instance_metrics: Metrics
    description: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class TaskRecord:
    job_id: str
    name: str
    state: State
    started: datetime | None
    ended: datetime | None
    instance_metrics: Metrics
    pending: Pending | None = None
    """Why it has Waiting instances (when asked of the engine; see `domain.pending`)."""


@dataclass(frozen=True)
class InstanceRecord:
    job_id: str
    task: str
    instance_id: int
    state: State
    retry_count: int
    attempts: int
    started: datetime | None
    ended: datetime | None
    exit_code: int | None
    error_code: str
    error_message: str
    detail: str
    stdout_path: str
    stderr_path: str
    node: str
    pending: Pending | None = None
    """Why it is Waiting (when asked of the engine; see `domain.pending`)."""

    @property
    def progress(self) -> int:
        """0 until Finished, then 100 (reference §13 #20)."""
        return 100 if self.state is State.FINISHED else 0


@dataclass(frozen=True)
class AttemptRecord:
    job_id: str
    task: str
    instance_id: int
    attempt: int
    started: datetime | None
    ended: datetime | None
    exit_code: int | None
    error_code: str
    error_message: str
    stdout_path: str
    stderr_path: str
    worker: str = ""
    """The VM it ran on."""
    program_started: datetime | None = None
    """When its program started, after staging; None if it never did (or the attempt was
    recorded before batchyard kept it). See `domain.phases` for the times it gives."""


@dataclass(frozen=True)
class EventRecord:
    id: int
    job_id: str
    task: str
    instance_id: int | None
    kind: str
    """"job", "task" or "instance"."""
    source: str
    target: str
    time: datetime
    message: str
