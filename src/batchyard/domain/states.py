"""States of jobs, tasks and instances, and the transitions allowed between them.

BatchCompute uses the same five state names for all three objects (reference §6.1).
Each kind of object (`Entity`) has its own transition table in `TRANSITIONS`. The store asks
it for the allowed sources of every state write (callers name only the target), raises
ForbiddenTransition for any other source, and applies the write as a compare-and-set; so the
tables are the single source of truth. Committed writes reach listeners as `Transition`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from batchyard.errors import BatchyardError


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
    State.WAITING: ("Created or re-queued (retry, restart, lost attempt, taken back from an "
                    "agent's queue); not running yet."),
    State.RUNNING: ("An attempt is leased to an agent: executing, or (short attempts) next in "
                    "its queue (task/job: work has started and is not done)."),
    State.FINISHED: "Completed (a task with JobFailOnInstanceFail=false: all instances ended).",
    State.FAILED: "Ended in failure after every retry was used (or lost 3 times with its agent).",
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


class Entity(StrEnum):
    """What a state belongs to (the `kind` of its event rows)."""

    JOB = "job"
    TASK = "task"
    INSTANCE = "instance"


TRANSITIONS: dict[Entity, dict[State, frozenset[State]]] = {
    Entity.JOB: JOB_TRANSITIONS,
    Entity.TASK: TASK_TRANSITIONS,
    Entity.INSTANCE: INSTANCE_TRANSITIONS,
}
"""The table that guards every state write of each entity (the store asks it, callers don't)."""

RESTART = "restart"
OPERATION_SOURCES: dict[str, frozenset[State]] = {
    # A restart re-queues only what ended badly: the instance table also lets Running go
    # back to Waiting, but only for a retry or a lost attempt, never for a restart.
    RESTART: frozenset({State.FAILED, State.STOPPED}),
}
"""Operations that may move only from some of the sources the tables allow."""


def sources_of(table: dict[State, frozenset[State]], target: State) -> frozenset[State]:
    """States from which `target` may be reached according to `table` (for compare-and-set)."""
    return frozenset(source for source, targets in table.items() if target in targets)


def can_move(table: dict[State, frozenset[State]], source: State, target: State) -> bool:
    return target in table[source]


def allowed_sources(entity: Entity, target: State, operation: str = "") -> frozenset[State]:
    """The states a write of `entity` to `target` may start from (narrowed by `operation`)."""
    sources = sources_of(TRANSITIONS[entity], target)
    return sources & OPERATION_SOURCES.get(operation, sources)


class ForbiddenTransition(BatchyardError):
    """A state write whose current state is not an allowed source of its target: a bug in
    the caller, never a race (a race shows as a compare-and-set that moved nothing)."""

    def __init__(self, entity: Entity, ids: str, source: State, target: State,
                 operation: str = "") -> None:
        why = f" by {operation}" if operation else ""
        super().__init__(f"{entity.value} {ids} may not move from {source.value} to "
                         f"{target.value}{why}")
        self.entity, self.ids, self.source, self.target = entity, ids, source, target


def check(entity: Entity, ids: str, source: State, target: State, operation: str = "") -> None:
    """Raise ForbiddenTransition unless `source` -> `target` is allowed for `entity`."""
    if source not in allowed_sources(entity, target, operation):
        raise ForbiddenTransition(entity, ids, source, target, operation)


@dataclass(frozen=True, slots=True)
class Transition:
    """One committed state change, as handed to the transition listeners."""

    entity: Entity
    job_id: str
    task: str
    """"" for a job."""
    instance_id: int | None
    """None for a job or a task."""
    source: State | None
    """None when the object was created (submitted)."""
    target: State
    time: float
    message: str = ""


# Operations a user may apply to a job, and the job states in which each is allowed (§6.5).
STOPPABLE: frozenset[State] = ACTIVE
STARTABLE: frozenset[State] = frozenset({State.STOPPED, State.FAILED})
DELETABLE: frozenset[State] = TERMINAL
REPRIORITISABLE: frozenset[State] = frozenset({State.STOPPED, State.FAILED})
