"""User operations on a job (reference §6.5), each applied inside one store transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchyard.domain.attempt import AttemptKey
from batchyard.domain.events import PRIORITY_KIND, priority_message
from batchyard.domain.states import (
    DELETABLE,
    OPERATION_SOURCES,
    REPRIORITISABLE,
    RESTART,
    STARTABLE,
    STOPPABLE,
    TERMINAL,
    State,
)
from batchyard.errors import BatchyardError, StateConflict
from batchyard.ports.store import JobRow, StateTransaction


@dataclass(frozen=True)
class Result:
    cancel: list[AttemptKey] = field(default_factory=list)
    """Attempts the agents must kill."""
    settle: bool = True
    """Whether task/job states must be settled afterwards."""


class InvalidPriority(BatchyardError):
    code = "InvalidPriority"
    status = 400


def _require(job: JobRow, allowed: frozenset[State], verb: str) -> None:
    state = job.state
    if state not in allowed:
        names = " or ".join(sorted(s.value for s in allowed))
        raise StateConflict(f"job {job.id} is {state.value}; only {names} jobs can be {verb}")


STOPPED_BY_USER = "stopped by the user"


def stop(tx: StateTransaction, job: JobRow, now: float, message: str = STOPPED_BY_USER) -> Result:
    """Kill running instances; every part that is not done becomes Stopped."""
    _require(job, STOPPABLE, "stopped")
    moved = tx.move_instances(job.id, State.STOPPED, now, ended=now)
    for row in tx.task_rows(job.id):
        if row.state not in TERMINAL:
            tx.move_task(job.id, row.name, State.STOPPED, now, ended=now)
    tx.move_job(job.id, State.STOPPED, now, ended=now, message=message)
    cancel = [AttemptKey(job.id, row.task, row.instance_id, row.attempts)
              for row in moved if row.source is State.RUNNING]
    return Result(cancel=cancel, settle=False)


def restart(tx: StateTransaction, job: JobRow, now: float) -> Result:
    """Re-queue what did not finish; Finished instances and tasks are kept (§6.5, §13 #5)."""
    _require(job, STARTABLE, "started")
    tx.move_instances(job.id, State.WAITING, now, RESTART, retry_count=0)
    for row in tx.task_rows(job.id):
        if row.state in OPERATION_SOURCES[RESTART]:
            tx.move_task(job.id, row.name, State.WAITING, now, RESTART, ended=None)
    tx.move_job(job.id, State.WAITING, now, RESTART, ended=None, message="")
    return Result()


def delete(tx: StateTransaction, job: JobRow, now: float) -> Result:
    _require(job, DELETABLE, "deleted")
    tx.delete_job(job.id)
    return Result(settle=False)


def change_priority(tx: StateTransaction, job: JobRow, now: float, priority: Any) -> Result:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1000:
        raise InvalidPriority(f"Priority must be an integer in [0, 1000], got {priority!r}")
    _require(job, REPRIORITISABLE, "re-prioritised")
    tx.set_priority(job.id, priority)
    tx.event(job.id, PRIORITY_KIND, str(job.priority), job.state, now,
             message=priority_message(job.priority, priority))
    return Result(settle=False)
