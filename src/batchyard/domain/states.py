"""States of jobs, tasks and instances, and the transitions allowed between them.

BatchCompute uses the same five state names for all three objects (reference §6.1).
Each kind of object has its own transition table; the store applies a transition as a
compare-and-set from the allowed source states, so the tables are the single source of truth.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Lifecycle state of a job, task or instance."""

    WAITING = "Waiting"
    RUNNING = "Running"
    FINISHED = "Finished"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


MEANINGS: dict[State, str] = {
    State.WAITING: "Created or re-queued (retry, restart, lost attempt); not running yet.",
    State.RUNNING: "An attempt is executing (task/job: work has started and is not done).",
    State.FINISHED: "Completed (a task with JobFailOnInstanceFail=false: all instances ended).",
    State.FAILED: "Ended in failure after every retry was used.",
    State.STOPPED: "Stopped by the user, or (task/instance) because its job failed.",
}


ACTIVE: frozenset[State] = frozenset({State.WAITING, State.RUNNING})
TERMINAL: frozenset[State] = frozenset({State.FINISHED, State.FAILED, State.STOPPED})

_RESTARTABLE = frozenset({State.WAITING})

INSTANCE_TRANSITIONS: dict[State, frozenset[State]] = {
    # Waiting -> Running when launched; -> Stopped when the job is stopped or fails.
    State.WAITING: frozenset({State.RUNNING, State.STOPPED}),
    # Running -> Finished/Failed on outcome; -> Waiting on retry or when its attempt was lost;
    # -> Stopped when the job is stopped or fails while it runs.
    State.RUNNING: frozenset({State.FINISHED, State.FAILED, State.WAITING, State.STOPPED}),
    State.FINISHED: frozenset(),
    State.FAILED: _RESTARTABLE,
    State.STOPPED: _RESTARTABLE,
}

TASK_TRANSITIONS: dict[State, frozenset[State]] = {
    State.WAITING: frozenset({State.RUNNING, State.STOPPED}),
    State.RUNNING: frozenset({State.FINISHED, State.FAILED, State.STOPPED}),
    State.FINISHED: frozenset(),
    State.FAILED: _RESTARTABLE,
    State.STOPPED: _RESTARTABLE,
}

JOB_TRANSITIONS: dict[State, frozenset[State]] = {
    State.WAITING: frozenset({State.RUNNING, State.STOPPED}),
    State.RUNNING: frozenset({State.FINISHED, State.FAILED, State.STOPPED}),
    State.FINISHED: frozenset(),
    State.FAILED: _RESTARTABLE,
    State.STOPPED: _RESTARTABLE,
}


def sources_of(table: dict[State, frozenset[State]], target: State) -> frozenset[State]:
    """States from which `target` may be reached according to `table` (for compare-and-set)."""
    return frozenset(source for source, targets in table.items() if target in targets)


def can_move(table: dict[State, frozenset[State]], source: State, target: State) -> bool:
    return target in table[source]


# Operations a user may apply to a job, and the job states in which each is allowed (§6.5).
STOPPABLE: frozenset[State] = ACTIVE
STARTABLE: frozenset[State] = frozenset({State.STOPPED, State.FAILED})
DELETABLE: frozenset[State] = TERMINAL
REPRIORITISABLE: frozenset[State] = frozenset({State.STOPPED, State.FAILED})
