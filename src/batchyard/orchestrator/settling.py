"""Bring a job's task and job states in line with its instances, inside one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchyard.adapters.store import StoreTransaction
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.dag import ready_tasks
from batchyard.domain.derivation import Metrics, job_state, task_state
from batchyard.domain.spec import JobDescription
from batchyard.domain.states import ACTIVE, TERMINAL, State


@dataclass
class Settlement:
    """What settling a job decided beyond plain state changes."""

    to_cancel: list[AttemptKey] = field(default_factory=list)
    finished: bool = False
    changed: bool = False
    moved_to: State | None = None


def settle_job(tx: StoreTransaction, job_id: str, spec: JobDescription, now: float) -> Settlement:
    result = Settlement()
    job = tx.job_row(job_id)
    if job is None or State(job.state) not in ACTIVE:
        return result
    rows = {row.name: row for row in tx.task_rows(job_id)}
    counts = tx.instance_counts(job_id)
    states = {name: _settle_task(tx, row, counts.get(name, Metrics()),
                                 job.fail_on_instance_fail, now, result)
              for name, row in rows.items()}
    current = State(job.state)
    target = job_state(current, Metrics.of(states.values()))
    if target is State.FAILED:
        result.to_cancel = _fail_cascade(tx, job_id, states, now)
    if target is not current:
        tx.move_job(job_id, target, now, **_job_fields(tx, job, target, now))
        result.changed = True
        result.moved_to = target
        result.finished = target is State.FINISHED
    if target in ACTIVE:
        _update_readiness(tx, job_id, spec, states, rows)
    return result


def _settle_task(tx: StoreTransaction, row: Any, instances: Metrics, fail_fast: bool,
                 now: float, result: Settlement) -> State:
    current = State(row.state)
    if current in TERMINAL:
        return current
    target = task_state(current, instances, fail_fast)
    if target is current:
        return current
    fields: dict[str, Any] = {}
    if target is State.RUNNING and row.started is None:
        fields["started"] = now
    if target in TERMINAL:
        fields["ended"] = now
    tx.move_task(row.job_id, row.name, target, now, **fields)
    result.changed = True
    return target


def _fail_cascade(tx: StoreTransaction, job_id: str, states: dict[str, State],
                  now: float) -> list[AttemptKey]:
    """A failed instance fails the job: stop started tasks; tasks not started stay Waiting."""
    started = {name for name, state in states.items() if state is State.RUNNING}
    failed = {name for name, state in states.items() if state is State.FAILED}
    moved = tx.move_instances(job_id, State.STOPPED, now, tasks_only=started | failed, ended=now)
    for name in started:
        tx.move_task(job_id, name, State.STOPPED, now, ended=now)
        states[name] = State.STOPPED
    return [AttemptKey(job_id, row.task, row.instance_id, row.attempts)
            for row in moved if row.state == State.RUNNING.value]


def _job_fields(tx: StoreTransaction, job: Any, target: State, now: float) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if target is State.RUNNING and job.started is None:
        fields["started"] = now
    if target in TERMINAL:
        fields["ended"] = now
    if target is State.FAILED:
        fields["message"] = failure_message(tx, job.id)
    return fields


def failure_message(tx: StoreTransaction, job_id: str) -> str:
    row = tx.first_failure(job_id)
    if row is None:
        return "an instance failed"
    reason = row.error_message or f"exited with code {row.exit_code}"
    return (f"instance {row.task}/{row.instance_id} failed after {row.retry_count} "
            f"retr{'y' if row.retry_count == 1 else 'ies'}: {reason}")


def _update_readiness(tx: StoreTransaction, job_id: str, spec: JobDescription,
                      states: dict[str, State], rows: dict[str, Any]) -> None:
    ready = ready_tasks(spec.graph(), states)
    became_ready = {name for name in ready if not rows[name].ready}
    not_ready = {name for name, row in rows.items() if row.ready and name not in ready}
    tx.set_ready(job_id, became_ready, True)
    tx.set_ready(job_id, not_ready, False)
