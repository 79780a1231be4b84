"""Bring a job's task and job states in line with its instances, inside one transaction."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from batchyard.domain.attempt import AttemptKey
from batchyard.domain.dag import ready_tasks
from batchyard.domain.derivation import Metrics, job_state, task_state
from batchyard.domain.states import ACTIVE, TERMINAL, State
from batchyard.orchestrator.caches import KnownJob
from batchyard.ports.store import KEEP, JobRow, StateTransaction, TaskRow


@dataclass
class Settlement:
    """What settling a job decided beyond plain state changes."""

    to_cancel: list[AttemptKey] = field(default_factory=list)
    finished: bool = False
    changed: bool = False
    moved_to: State | None = None


def settle_job(tx: StateTransaction, job_id: str, known: KnownJob, now: float,
               tasks: Collection[str] | None = None) -> Settlement:
    """Move the job's tasks and the job to the states their parts call for.

    `tasks`: the only tasks whose instances changed (None: any may have). Then only those
    tasks are read and settled, the job's task counts come from the database, and only
    their downstreams are checked for readiness: an outcome costs the same in a job of
    5,000 tasks as in a job of one.
    """
    result = Settlement()
    job = tx.job_row(job_id)
    if job is None or job.state not in ACTIVE:
        return result
    rows = {row.name: row for row in tx.task_rows(job_id, tasks)}
    counts = tx.instance_counts(job_id, tasks)
    states = {name: _settle_task(tx, row, counts.get(name, Metrics()),
                                 job.fail_on_instance_fail, now, result)
              for name, row in rows.items()}
    current = job.state
    target = _job_target(tx, job_id, current, states, rows, tasks)
    if target is State.FAILED:
        every = states if tasks is None else _task_states(tx, job_id)
        result.to_cancel = _fail_cascade(tx, job_id, every, now)
    if target is not current:
        _move_job(tx, job, target, now)
        result.changed = True
        result.moved_to = target
        result.finished = target is State.FINISHED
    if target in ACTIVE:
        _update_readiness(tx, job_id, known, states, rows, whole=tasks is None)
    return result


def _job_target(tx: StateTransaction, job_id: str, current: State, states: dict[str, State],
                rows: dict[str, TaskRow], tasks: Collection[str] | None) -> State:
    """The state the job should be in after its tasks settled. When only some tasks were
    read and none of them ended, the job's counts of ended tasks did not change, so it is
    Running once one of its tasks is (as at the last settle); else the database counts the
    job's tasks per state."""
    if tasks is None:
        return job_state(current, Metrics.of(states.values()))
    moved = [state for name, state in states.items() if state is not rows[name].state]
    if not any(state in TERMINAL for state in moved):
        return State.RUNNING if State.RUNNING in moved else current
    return job_state(current, tx.task_metrics(job_id))


def _task_states(tx: StateTransaction, job_id: str) -> dict[str, State]:
    return {row.name: row.state for row in tx.task_rows(job_id)}


def _settle_task(tx: StateTransaction, row: TaskRow, instances: Metrics, fail_fast: bool,
                 now: float, result: Settlement) -> State:
    current = row.state
    if current in TERMINAL:
        return current
    target = task_state(current, instances, fail_fast)
    if target is current:
        return current
    tx.move_task(row.job_id, row.name, target, now,
                 started=now if target is State.RUNNING and row.started is None else KEEP,
                 ended=now if target in TERMINAL else KEEP)
    result.changed = True
    return target


def _fail_cascade(tx: StateTransaction, job_id: str, states: dict[str, State],
                  now: float) -> list[AttemptKey]:
    """A failed instance fails the job: stop started tasks; tasks not started stay Waiting."""
    started = {name for name, state in states.items() if state is State.RUNNING}
    failed = {name for name, state in states.items() if state is State.FAILED}
    moved = tx.move_instances(job_id, State.STOPPED, now, tasks_only=started | failed, ended=now)
    for name in started:
        tx.move_task(job_id, name, State.STOPPED, now, ended=now)
        states[name] = State.STOPPED
    return [AttemptKey(job_id, row.task, row.instance_id, row.attempts)
            for row in moved if row.source is State.RUNNING]


def _move_job(tx: StateTransaction, job: JobRow, target: State, now: float) -> None:
    tx.move_job(job.id, target, now,
                started=now if target is State.RUNNING and job.started is None else KEEP,
                ended=now if target in TERMINAL else KEEP,
                message=failure_message(tx, job.id) if target is State.FAILED else KEEP)


def failure_message(tx: StateTransaction, job_id: str) -> str:
    row = tx.first_failure(job_id)
    if row is None:
        return "an instance failed"
    reason = row.error_message or f"exited with code {row.exit_code}"
    return (f"instance {row.task}/{row.instance_id} failed after {row.retry_count} "
            f"retr{'y' if row.retry_count == 1 else 'ies'}: {reason}")


def _update_readiness(tx: StateTransaction, job_id: str, known: KnownJob,
                      states: dict[str, State], rows: dict[str, TaskRow], whole: bool) -> None:
    """Set the `ready` flag of the tasks it changed for: of every task when `whole`, else of
    the settled tasks and the downstreams of those that just finished (no other task's
    readiness can have changed)."""
    if not whole:
        states, rows = _neighbourhood(tx, job_id, known, states, rows)
    graph = {name: known.upstreams[name] for name in states
             if known.upstreams[name] <= states.keys()}
    ready = ready_tasks(graph, states)
    became_ready = {name for name in ready if not rows[name].ready}
    not_ready = {name for name in graph if rows[name].ready and name not in ready}
    tx.set_ready(job_id, became_ready, True)
    tx.set_ready(job_id, not_ready, False)


def _neighbourhood(tx: StateTransaction, job_id: str, known: KnownJob, states: dict[str, State],
                   rows: dict[str, TaskRow]) -> tuple[dict[str, State], dict[str, TaskRow]]:
    """The states and rows of the settled tasks, the downstreams of those that just finished,
    and the upstreams of both (read from the store)."""
    finished = [name for name, state in states.items()
                if state is State.FINISHED and rows[name].state is not State.FINISHED]
    near = set(states).union(*(known.downstreams[name] for name in finished))
    around = near.union(*(known.upstreams[name] for name in near)) - rows.keys()
    rows = {**{row.name: row for row in tx.task_rows(job_id, around)}, **rows}
    return {name: states.get(name, row.state)
            for name, row in rows.items()}, rows
