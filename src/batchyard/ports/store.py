"""The state-store port: what the orchestrator may ask of the store, in typed values.

Adapters implement it: `adapters.store.SqlStore` (SQLite, PostgreSQL) and
`batchyard.testing.MemoryStore`. One contract suite runs over all of them:
`tests/integration/test_state_store_contract.py`.

Rules every implementation keeps:

- Writes happen in a `StateTransaction`: everything in it commits together, or nothing does.
- Callers name only the target state. The allowed sources come from the transition tables of
  `domain.states` (narrowed by an operation such as RESTART). A current state the tables do
  not allow raises `ForbiddenTransition` (a bug of the caller); a row that moved on or went
  away between the read and the write (a race) makes the write return False.
- Every state change records an event with its source and target, in the same transaction;
  `transitions` lists them once flushed, for the listeners (after the commit).
- Times are UTC epoch seconds (float). No SQL column name crosses this boundary: writes take
  keyword arguments named here, reads return the frozen rows below.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from batchyard.domain.attempt import AttemptKey
from batchyard.domain.derivation import Metrics
from batchyard.domain.outcome import Outcome
from batchyard.domain.records import (
    AttemptRecord,
    EventRecord,
    InstanceRecord,
    JobRecord,
    TaskRecord,
)
from batchyard.domain.scheduling import Candidate
from batchyard.domain.spec import JobDescription, ObjectUse
from batchyard.domain.states import (
    INSTANCE_TRANSITIONS,
    Entity,
    ForbiddenTransition,
    State,
    Transition,
)
from batchyard.ports.clusters import ClusterTransaction
from batchyard.ports.writes import KEEP as KEEP  # re-exported: the stores' writes use them
from batchyard.ports.writes import IdempotencyToken as IdempotencyToken
from batchyard.ports.writes import Keep as Keep
from batchyard.ports.writes import Stamp as Stamp
from batchyard.ports.writes import given as given

# ---- values read ---------------------------------------------------------------------------

@dataclass(frozen=True)
class JobRow:
    """A job as the orchestrator sees it (without its description: that is in the spec cache)."""

    id: str
    tenant: str
    name: str
    priority: int
    state: State
    message: str
    fail_on_instance_fail: bool
    auto_release: bool
    created: float
    started: float | None
    ended: float | None


@dataclass(frozen=True)
class TaskRow:
    job_id: str
    name: str
    state: State
    ready: bool
    """All its upstream tasks are Finished (so its Waiting instances may launch)."""
    instance_count: int
    max_retry_count: int
    started: float | None
    ended: float | None
    cluster_id: str = ""
    """The cluster its instances run on ("": the default pool)."""


@dataclass(frozen=True)
class InstanceRow:
    job_id: str
    task: str
    instance_id: int
    state: State
    retry_count: int
    """User retries used (MaxRetryCount counts these)."""
    attempts: int
    """Attempts launched so far: the number of the current (or last) attempt."""
    lost: int
    """Attempts lost with their agent (re-run without using a retry, a bounded number)."""
    started: float | None
    ended: float | None
    exit_code: int | None
    error_code: str
    error_message: str


@dataclass(frozen=True)
class MovedInstance:
    """An instance a bulk move changed, with the state it left."""

    task: str
    instance_id: int
    source: State
    attempts: int


@dataclass(frozen=True)
class LaunchRow:
    """A launch candidate plus what the orchestrator needs to build its attempt."""

    candidate: Candidate
    attempts: int
    retry_count: int
    starts_task: bool = False
    """True when its task or job is not Running yet (so launching changes their state)."""


@dataclass(frozen=True)
class WaitingTask:
    """A ready task on no cluster, of an active job, with Waiting instances: under a provider
    that gives each such task VMs of its own (an AutoCluster), a launch pool of its own."""

    job_id: str
    task: str
    tenant: str
    priority: int
    """Its job's priority."""
    waiting: int
    """Its instances in the Waiting state (from the task's counts)."""


# ---- values written ------------------------------------------------------------------------

class NewJob(NamedTuple):
    """A job to insert: id, tenant, parsed description, submission time; the idempotency
    token it was sent with; the uses of buckets that nobody may have claimed yet."""

    job_id: str
    tenant: str
    spec: JobDescription
    now: float
    token: IdempotencyToken | None = None
    claims: tuple[ObjectUse, ...] = ()


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, as its instance records it: the Outcome, the instance's
    RetryCount after this attempt, and when it ended (the Outcome's time, else `now`)."""

    key: AttemptKey
    outcome: Outcome
    retry_count: int
    ended: float
    lost: int | Keep = KEEP
    """The instance's count of lost attempts, when this attempt changes it."""
    target: State | None = State.FINISHED
    """The instance's state after this attempt (one the table allows after Running; None:
    it stays as it is, for `end_attempts` callers filter those out)."""
    message: str = ""
    """The transition's message (its event row)."""

    def moved_to(self) -> State:
        """`target`, checked: ValueError for None, ForbiddenTransition for a state the
        instance table does not allow after Running."""
        target, key = self.target, self.key
        if target is None:
            raise ValueError(f"the end of attempt {key} moves its instance nowhere")
        if target not in INSTANCE_TRANSITIONS[State.RUNNING]:
            raise ForbiddenTransition(Entity.INSTANCE, f"{key.job_id}/{key.task}/"
                                      f"{key.instance_id}", State.RUNNING, target)
        return target


class StaleBatch(Exception):
    """`end_attempts` cannot tell which attempts of a batch were current: roll the
    transaction back and end them one at a time."""


# ---- the port ------------------------------------------------------------------------------

class StateTransaction(ClusterTransaction, Protocol):
    """All writes of one orchestrator step or operation, committed together (clusters and
    VMs too: see `ports.clusters`)."""

    @property
    def transitions(self) -> list[Transition]:
        """The state changes flushed so far, in order (handed to listeners after commit)."""
        ...

    def flush_events(self) -> None:
        """Write the events recorded so far (they are written at commit anyway)."""
        ...

    def event(self, job_id: str, kind: str, source: str, target: State, now: float,
              task: str = "", instance_id: int | None = None, message: str = "") -> None:
        """Record an event that is not a state change (a new priority)."""
        ...

    # jobs
    def create_jobs(self, new_jobs: Sequence[NewJob]) -> None:
        """Insert jobs with their tasks and instances, all Waiting (see `StateStore.create_job`)."""
        ...

    def job_row(self, job_id: str) -> JobRow | None: ...

    def move_job(self, job_id: str, target: State, now: float, operation: str = "", *,
                 started: Stamp = KEEP, ended: Stamp = KEEP,
                 message: str | Keep = KEEP) -> bool:
        """Move the job to `target` from its current state, which the job table (narrowed by
        `operation`) must allow; False if the job is gone or moved on meanwhile."""
        ...

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Change the priority of a job in a state that allows it; False if it is not."""
        ...

    def delete_job(self, job_id: str) -> None:
        """Delete the job with its tasks, instances, attempts and events."""
        ...

    def active_job_ids(self) -> list[str]:
        """Jobs Waiting or Running."""
        ...

    # tasks
    def task_rows(self, job_id: str, names: Collection[str] | None = None) -> list[TaskRow]:
        """The job's tasks; only those named in `names` unless it is None."""
        ...

    def instance_counts(self, job_id: str, names: Collection[str] | None = None
                        ) -> dict[str, Metrics]:
        """Instances per state of each task of the job (of the tasks in `names` if given);
        a task with no instance in any state may be left out."""
        ...

    def task_metrics(self, job_id: str) -> Metrics:
        """The job's tasks per state."""
        ...

    def move_task(self, job_id: str, task: str, target: State, now: float, operation: str = "",
                  *, started: Stamp = KEEP,
                  ended: Stamp = KEEP) -> bool:
        """Like `move_job`, for a task and the task table."""
        ...

    def set_ready(self, job_id: str, names: Collection[str], ready: bool) -> None: ...

    # instances
    def launch_rows(self, limit: int, most_jobs: int | None = None, cluster_id: str = ""
                    ) -> list[LaunchRow]:
        """Waiting instances of ready tasks of active jobs, best first (job priority, job
        creation, job id, task, instance id), at most `limit`, from at most `most_jobs` jobs
        that have any (None: no such bound). Whatever the bounds, a prefix of that order."""
        ...

    def task_launch_rows(self, job_id: str, task: str, limit: int) -> list[LaunchRow]:
        """The first `limit` Waiting instances of one task, by instance id, as `launch_rows`
        gives them; none unless the task is ready and its job active (none for limit <= 0)."""
        ...

    def waiting_tasks(self, limit: int) -> list[WaitingTask]:
        """Ready tasks on no cluster (ClusterId "") of active jobs that have Waiting
        instances, in launch order (job priority, job creation, job id, task name), at most
        `limit`."""
        ...

    def has_active_instances(self, job_id: str, task: str) -> bool:
        """Whether some instance of the task is still Waiting or Running."""
        ...

    def instance_row(self, job_id: str, task: str, instance_id: int) -> InstanceRow | None: ...

    def first_failure(self, job_id: str) -> InstanceRow | None:
        """The Failed instance of the job that ended first (ties: task, instance id)."""
        ...

    def running_instances(self) -> list[InstanceRow]:
        """Every Running instance of every job."""
        ...

    def move_instance(self, job_id: str, task: str, instance_id: int, target: State,
                      now: float, *, ended: Stamp = KEEP,
                      error_code: str | Keep = KEEP, error_message: str | Keep = KEEP,
                      lost: int | Keep = KEEP, message: str = "") -> bool:
        """Like `move_job`, for one instance; `message` goes to the event."""
        ...

    def move_instances(self, job_id: str, target: State, now: float, operation: str = "",
                       tasks_only: Collection[str] | None = None, *,
                       ended: Stamp = KEEP,
                       retry_count: int | Keep = KEEP) -> list[MovedInstance]:
        """Move every instance of a job (of `tasks_only`) whose state the instance table
        (narrowed by `operation`) allows to `target`; returns those it moved. The others
        are left as they are: a bulk move selects its rows, so nothing here is forbidden."""
        ...

    def mark_running(self, rows: Sequence[LaunchRow], now: float) -> bool:
        """Waiting → Running for these instances, each with its next attempt number and
        `started`; False if any was not Waiting any more (a race: the caller rolls back)."""
        ...

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> list[bool]:
        """Move the instance of each attempt from Running to its `target`, recording the
        outcome, if that attempt is still the instance's current one (compare-and-set);
        whether each moved (False: a late report, a race the caller expects). A store may
        raise StaleBatch instead when, in a batch of several, some attempt was not current
        (it wrote the others: the caller rolls the transaction back and goes one by one).
        A `target` the table forbids after Running raises (`AttemptEnd.moved_to`)."""
        ...

    def record_attempts(self, ends: Sequence[tuple[AttemptKey, Outcome]]) -> None:
        """Keep the history row of each attempt (one already recorded is left as it is).
        Callers pass only attempts of jobs that still exist: the SQL store's foreign keys
        refuse the others."""
        ...


class StateStore(Protocol):
    """Jobs, tasks, instances, attempts and events, and the buckets tenants claimed."""

    def transaction(self) -> AbstractContextManager[StateTransaction]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        ...

    def create_job(self, job: NewJob) -> None:
        """Store a new job, claim its buckets and record its idempotency token, all in one
        transaction; committed on return. Thread-safe; needs no engine lock.

        Raises BucketForbidden if it names a bucket another tenant owns, and TokenTaken if
        its token made a job already (nothing is stored then).
        """
        ...

    def owned_buckets(self, tenant: str) -> list[str]:
        """The buckets `tenant` claimed, sorted (configured ones are not here)."""
        ...

    def claim(self) -> Callable[[], None]:
        """Make this process the only engine on a shared database; returns the release."""
        ...

    def close(self) -> None: ...

    # reads (any thread, no transaction)
    def job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """One job with its metrics (None: no such job, or not `tenant`'s)."""
        ...

    def job_state(self, job_id: str, tenant: str | None = None) -> State | None:
        """Just the state (None: no such job, or not `tenant`'s): no counts, no description."""
        ...

    def jobs(self, tenant: str | None = None, state: State | None = None) -> list[JobRecord]:
        """Jobs newest first."""
        ...

    def tasks(self, job_id: str) -> list[TaskRecord]:
        """The job's tasks with their instance counts, as of one moment."""
        ...

    def instances(self, job_id: str, task: str) -> list[InstanceRecord]: ...

    def attempts(self, job_id: str, task: str, instance_id: int) -> list[AttemptRecord]: ...

    def events(self, job_id: str) -> list[EventRecord]: ...
