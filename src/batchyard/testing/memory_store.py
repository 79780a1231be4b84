"""A state store in Python dicts, with the semantics of the SQL store (`ports.store`).

For tests of the engine's rules (and of anything built on the engine) that need no database:
the same transition tables guard every write, the same events are recorded, reads return
the same records. One contract suite (`tests/integration/test_state_store_contract.py`) runs
over this store, SQLite and PostgreSQL, so a test passing here means what it would mean there.

Concurrency is the database's, simplified: one writer at a time (a lock held for the whole
transaction), and readers that never wait and never see an uncommitted write. Rows are
frozen values; a transaction works on a draft that copies a job's tables the first time it
writes that job, and its commit swaps the draft in with one assignment. An exception inside
`with store.transaction()` drops the draft: nothing of it happened (the engine relies on
that: `StaleLaunchQueue`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING

from batchyard.domain import buckets as bucket_rules
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
from batchyard.domain.spec import bucket_of
from batchyard.domain.states import (
    ACTIVE,
    REPRIORITISABLE,
    Entity,
    State,
    Transition,
    allowed_sources,
    check,
)
from batchyard.errors import TokenTaken
from batchyard.ports.store import (
    KEEP,
    AttemptEnd,
    InstanceRow,
    JobRow,
    Keep,
    LaunchRow,
    MovedInstance,
    NewJob,
    Stamp,
    StateStore,
    StateTransaction,
    TaskRow,
    WaitingTask,
    given,
)
from batchyard.testing.memory_clusters import ClusterTables, MemoryClusterWrites


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)



# ---- rows ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Instance:
    task: str
    instance_id: int
    state: State
    retry_count: int = 0
    attempts: int = 0
    lost: int = 0
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    error_code: str = ""
    error_message: str = ""
    detail: str = ""
    stdout_path: str = ""
    stderr_path: str = ""
    node: str = ""


@dataclass(frozen=True)
class _Event:
    id: int
    job_id: str
    task: str
    instance_id: int | None
    kind: str
    source: str
    target: str
    time: float
    message: str


InstanceKey = tuple[str, int]
AttemptSlot = tuple[str, int, int]


class _Job:
    """One job's rows. A committed `_Job` is never changed: a transaction writes a copy."""

    __slots__ = ("attempts", "description", "instances", "row", "tasks")

    def __init__(self, row: JobRow, description: str, tasks: dict[str, TaskRow],
                 instances: dict[InstanceKey, _Instance],
                 attempts: dict[AttemptSlot, AttemptRecord]) -> None:
        self.row = row
        self.description = description
        """The description as JSON text, as the SQL store keeps it (each read parses it)."""
        self.tasks = tasks
        self.instances = instances
        self.attempts = attempts

    def copy(self) -> _Job:
        return _Job(self.row, self.description, dict(self.tasks), dict(self.instances),
                    dict(self.attempts))

    def task_instances(self, task: TaskRow) -> Iterator[_Instance]:
        """The task's instances by instance id (ids are 0 … InstanceCount - 1)."""
        for index in range(task.instance_count):
            yield self.instances[task.name, index]

    def counts(self, names: Collection[str] | None = None) -> dict[str, Metrics]:
        """Instances per state of each task (of those in `names`), tasks with none left out."""
        return {name: Metrics.of(i.state for i in self.task_instances(task))
                for name, task in self.tasks.items()
                if task.instance_count and (names is None or name in names)}

    def waiting(self, limit: int, cluster_id: str = "") -> list[LaunchRow]:
        """Up to `limit` Waiting instances of ready tasks on `cluster_id`, by task name and
        instance id."""
        rows: list[LaunchRow] = []
        for name in sorted(self.tasks):
            task = self.tasks[name]
            if not task.ready or task.cluster_id != cluster_id:
                continue
            rows += self.task_waiting(task, limit - len(rows))
            if len(rows) >= limit:
                return rows
        return rows

    def task_waiting(self, task: TaskRow, limit: int) -> list[LaunchRow]:
        """Up to `limit` Waiting instances of `task`, by instance id."""
        created = _time(self.row.created) or _EPOCH
        starts = State.WAITING in (task.state, self.row.state)
        waiting = (instance for instance in self.task_instances(task)
                   if instance.state is State.WAITING)
        return [LaunchRow(Candidate(self.row.id, self.row.priority, created, task.name,
                                    instance.instance_id, self.row.tenant),
                          instance.attempts, instance.retry_count, starts)
                for instance in islice(waiting, max(limit, 0))]


_EPOCH = datetime.fromtimestamp(0, UTC)
_ENTITIES = frozenset(entity.value for entity in Entity)


@dataclass(frozen=True)
class _Tables:
    """Everything committed, as one value (replaced whole by each commit, never changed)."""

    jobs: Mapping[str, _Job]
    events: Mapping[str, tuple[_Event, ...]]
    """By job id. Not deleted with the job's rows by anything but `delete_job` (as in SQL)."""
    buckets: Mapping[str, str]
    """Bucket name -> the tenant that claimed it."""
    tokens: Mapping[tuple[str, str, str], tuple[str, str]]
    """(tenant, kind, token) -> (digest, job id)."""
    events_made: int = 0
    clusters: ClusterTables = field(default_factory=ClusterTables)


# ---- the transaction -----------------------------------------------------------------------

class MemoryTransaction(MemoryClusterWrites):
    """All writes of one step or operation, on a draft of the store's tables (see module)."""

    def __init__(self, tables: _Tables) -> None:
        self._jobs = dict(tables.jobs)
        self._mine: set[str] = set()
        """Jobs whose `_Job` this draft copied (or made): only those may be changed."""
        self._events = dict(tables.events)
        self._buckets = dict(tables.buckets)
        self._tokens = dict(tables.tokens)
        self._made = tables.events_made
        self._open_clusters(tables.clusters)
        self._pending: list[_Event] = []
        self._flushed: list[_Event] = []

    def tables(self) -> _Tables:
        """The draft as the tables to commit."""
        return _Tables(self._jobs, self._events, self._buckets, self._tokens, self._made,
                       self._cluster_tables())

    def _job_clusters(self) -> Iterator[tuple[JobRow, Mapping[str, str]]]:
        return ((job.row, {name: task.cluster_id for name, task in job.tasks.items()})
                for job in self._jobs.values())

    def _write(self, job_id: str) -> _Job | None:
        """The job's draft rows, copied from the committed ones on the first write."""
        job = self._jobs.get(job_id)
        if job is not None and job_id not in self._mine:
            job = self._jobs[job_id] = job.copy()
            self._mine.add(job_id)
        return job

    # ---- events --------------------------------------------------------------------------

    @property
    def transitions(self) -> list[Transition]:
        """The state changes flushed so far, in order (other events are not transitions)."""
        return [Transition(Entity(event.kind), event.job_id, event.task, event.instance_id,
                           State(event.source) if event.source else None, State(event.target),
                           event.time, event.message)
                for event in self._flushed if event.kind in _ENTITIES]

    def flush_events(self) -> None:
        """Number the events recorded so far and add them to their jobs' events."""
        numbered = [replace(event, id=self._made + number)
                    for number, event in enumerate(self._pending, 1)]
        self._made += len(numbered)
        self._pending = []
        self._flushed += numbered
        by_job: dict[str, list[_Event]] = {}
        for event in numbered:
            by_job.setdefault(event.job_id, []).append(event)
        for job_id, events in by_job.items():
            self._events[job_id] = (*self._events.get(job_id, ()), *events)

    def event(self, job_id: str, kind: str, source: str, target: State, now: float,
              task: str = "", instance_id: int | None = None, message: str = "") -> None:
        self._pending.append(_Event(0, job_id, task, instance_id, kind, str(source),
                                    target.value, now, message))

    # ---- jobs ----------------------------------------------------------------------------

    def create_jobs(self, new_jobs: Sequence[NewJob]) -> None:
        """Insert jobs, their tasks and instances, all Waiting, after claiming their buckets
        and recording their tokens (BucketForbidden, TokenTaken: see `StateStore.create_job`)."""
        self._claim_buckets(new_jobs)
        self._record_tokens(new_jobs)
        for new in new_jobs:
            self._insert(new)

    def _insert(self, new: NewJob) -> None:
        spec, graph = new.spec, new.spec.graph()
        row = JobRow(new.job_id, new.tenant, spec.Name, spec.Priority, State.WAITING, "",
                     spec.JobFailOnInstanceFail, spec.AutoRelease, new.now, None, None)
        tasks = {name: TaskRow(new.job_id, name, State.WAITING, not graph[name],
                               task.InstanceCount, task.MaxRetryCount, None, None,
                               task.ClusterId)
                 for name, task in spec.DAG.Tasks.items()}
        instances = {(name, index): _Instance(name, index, State.WAITING)
                     for name, task in spec.DAG.Tasks.items()
                     for index in range(task.InstanceCount)}
        if new.job_id in self._jobs:
            raise ValueError(f"job {new.job_id} exists already")
        self._jobs[new.job_id] = _Job(row, json.dumps(spec.echo()), tasks, instances, {})
        self._mine.add(new.job_id)
        self.event(new.job_id, "job", "", State.WAITING, new.now, message="submitted")

    def _claim_buckets(self, new_jobs: Sequence[NewJob]) -> None:
        """Give each unowned bucket to the first job's tenant that names it; refuse a job
        whose tenant does not own a bucket it names (every such use listed)."""
        named = {bucket_of(use.url) for job in new_jobs for use in job.claims}
        for job in new_jobs:
            for use in job.claims:
                self._buckets.setdefault(bucket_of(use.url), job.tenant)
        grants = {name: bucket_rules.Grant(self._buckets[name]) for name in named}
        for job in new_jobs:
            bucket_rules.refuse(bucket_rules.problems(job.tenant, job.claims, grants))

    def _record_tokens(self, new_jobs: Sequence[NewJob]) -> None:
        for job in new_jobs:
            if job.token is None:
                continue
            key = (job.tenant, job.token.kind, job.token.token)
            if key in self._tokens:  # the caller's transaction is rolled back: no job, no claim
                raise TokenTaken("the IdempotentToken was used by a job already")
            self._tokens[key] = (job.token.digest, job.job_id)

    def job_row(self, job_id: str) -> JobRow | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.row

    def move_job(self, job_id: str, target: State, now: float, operation: str = "", *,
                 started: Stamp = KEEP, ended: Stamp = KEEP,
                 message: str | Keep = KEEP) -> bool:
        """Move the job to `target` from its current state, which the job table (narrowed by
        `operation`) must allow; False if the job is gone."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        source = job.row.state
        check(Entity.JOB, job_id, source, target, operation)
        job = self._write(job_id)
        assert job is not None
        job.row = replace(job.row, state=target,
                          **given(started=started, ended=ended, message=message))
        self.event(job_id, "job", source, target, now, message="" if message is KEEP else message)
        return True

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Change the priority of a job in a state that allows it; False if it is not."""
        job = self._jobs.get(job_id)
        if job is None or job.row.state not in REPRIORITISABLE:
            return False
        job = self._write(job_id)
        assert job is not None
        job.row = replace(job.row, priority=priority)
        return True

    def delete_job(self, job_id: str) -> None:
        """Delete the job with its tasks, instances, attempts and events."""
        self._jobs.pop(job_id, None)
        self._mine.discard(job_id)
        self._events.pop(job_id, None)

    def active_job_ids(self) -> list[str]:
        return [job_id for job_id, job in self._jobs.items() if job.row.state in ACTIVE]

    # ---- tasks ---------------------------------------------------------------------------

    def task_rows(self, job_id: str, names: Collection[str] | None = None) -> list[TaskRow]:
        job = self._jobs.get(job_id)
        if job is None:
            return []
        return [job.tasks[name] for name in sorted(job.tasks) if names is None or name in names]

    def instance_counts(self, job_id: str, names: Collection[str] | None = None
                        ) -> dict[str, Metrics]:
        job = self._jobs.get(job_id)
        return {} if job is None else job.counts(names)

    def task_metrics(self, job_id: str) -> Metrics:
        job = self._jobs.get(job_id)
        return Metrics() if job is None else Metrics.of(task.state for task in job.tasks.values())

    def move_task(self, job_id: str, task: str, target: State, now: float, operation: str = "",
                  *, started: Stamp = KEEP, ended: Stamp = KEEP) -> bool:
        """Like `move_job`, for a task and the task table."""
        job = self._jobs.get(job_id)
        row = None if job is None else job.tasks.get(task)
        if row is None:
            return False
        check(Entity.TASK, f"{job_id}/{task}", row.state, target, operation)
        job = self._write(job_id)
        assert job is not None
        job.tasks[task] = replace(row, state=target, **given(started=started, ended=ended))
        self.event(job_id, "task", row.state, target, now, task=task)
        return True

    def set_ready(self, job_id: str, names: Collection[str], ready: bool) -> None:
        job = self._write(job_id) if names else None
        if job is None:
            return
        for name in names:
            if name in job.tasks:
                job.tasks[name] = replace(job.tasks[name], ready=ready)

    # ---- instances -----------------------------------------------------------------------

    def launch_rows(self, limit: int, most_jobs: int | None = None, cluster_id: str = ""
                    ) -> list[LaunchRow]:
        """Waiting instances of ready tasks of active jobs, in launch order: of each tenant,
        at most `limit`, from at most `most_jobs` of its jobs that have any (each tenant's
        rows a prefix of its launch order)."""
        rows: dict[str, list[LaunchRow]] = {}
        jobs_with_rows: dict[str, int] = {}
        active = [job for job in self._jobs.values() if job.row.state in ACTIVE]
        for job in sorted(active, key=_launch_order) if limit > 0 else ():
            tenant = job.row.tenant
            mine = rows.setdefault(tenant, [])
            if len(mine) >= limit or jobs_with_rows.get(tenant, 0) == most_jobs:
                continue
            found = job.waiting(limit - len(mine), cluster_id)
            mine += found
            jobs_with_rows[tenant] = jobs_with_rows.get(tenant, 0) + bool(found)
        return sorted((row for mine in rows.values() for row in mine),
                      key=lambda row: row.candidate.order_key())

    def task_launch_rows(self, job_id: str, task: str, limit: int) -> list[LaunchRow]:
        """The first `limit` Waiting instances of one ready task of an active job."""
        job = self._jobs.get(job_id)
        row = None if job is None else job.tasks.get(task)
        if job is None or row is None or not row.ready or job.row.state not in ACTIVE:
            return []
        return job.task_waiting(row, limit)

    def waiting_tasks(self, limit: int) -> list[WaitingTask]:
        """Ready tasks on no cluster of active jobs with Waiting instances, in launch order."""
        found: list[WaitingTask] = []
        active = [job for job in self._jobs.values() if job.row.state in ACTIVE]
        for job in sorted(active, key=_launch_order):
            for name in sorted(job.tasks):
                task = job.tasks[name]
                waiting = job.counts({name}).get(name, Metrics()).waiting
                if task.ready and not task.cluster_id and waiting:
                    found.append(WaitingTask(job.row.id, name, job.row.tenant,
                                             job.row.priority, waiting))
        return found[:max(limit, 0)]

    def has_active_instances(self, job_id: str, task: str) -> bool:
        job = self._jobs.get(job_id)
        row = None if job is None else job.tasks.get(task)
        return job is not None and row is not None and any(
            instance.state in ACTIVE for instance in job.task_instances(row))

    def instance_row(self, job_id: str, task: str, instance_id: int) -> InstanceRow | None:
        instance = self._instance(job_id, task, instance_id)
        return None if instance is None else _instance_row(job_id, instance)

    def first_failure(self, job_id: str) -> InstanceRow | None:
        """The Failed instance that ended first (ties: task, instance id; no end time first)."""
        job = self._jobs.get(job_id)
        failed = [i for i in job.instances.values() if i.state is State.FAILED] if job else []
        if not failed:
            return None
        first = min(failed, key=lambda i: (i.ended is not None, i.ended or 0.0, i.task,
                                           i.instance_id))
        return _instance_row(job_id, first)

    def running_instances(self) -> list[InstanceRow]:
        return [_instance_row(job_id, instance) for job_id, job in self._jobs.items()
                for instance in job.instances.values() if instance.state is State.RUNNING]

    def _instance(self, job_id: str, task: str, instance_id: int) -> _Instance | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.instances.get((task, instance_id))

    def _put(self, job_id: str, instance: _Instance) -> None:
        job = self._write(job_id)
        assert job is not None
        job.instances[instance.task, instance.instance_id] = instance

    def move_instance(self, job_id: str, task: str, instance_id: int, target: State,
                      now: float, *, ended: Stamp = KEEP,
                      error_code: str | Keep = KEEP, error_message: str | Keep = KEEP,
                      lost: int | Keep = KEEP, message: str = "") -> bool:
        """Like `move_job`, for one instance; `message` goes to the event."""
        instance = self._instance(job_id, task, instance_id)
        if instance is None:
            return False
        check(Entity.INSTANCE, f"{job_id}/{task}/{instance_id}", instance.state, target)
        self._put(job_id, replace(instance, state=target, **given(
            ended=ended, error_code=error_code, error_message=error_message, lost=lost)))
        self.event(job_id, "instance", instance.state, target, now, task=task,
                   instance_id=instance_id, message=message)
        return True

    def move_instances(self, job_id: str, target: State, now: float, operation: str = "",
                       tasks_only: Collection[str] | None = None, *,
                       ended: Stamp = KEEP,
                       retry_count: int | Keep = KEEP) -> list[MovedInstance]:
        """Move every instance of the job (of `tasks_only`) whose state the instance table
        (narrowed by `operation`) allows to `target`; returns those it moved, by task and id."""
        sources = allowed_sources(Entity.INSTANCE, target, operation)
        job = self._jobs.get(job_id)
        chosen = [instance for _, instance in sorted(job.instances.items())
                  if instance.state in sources
                  and (tasks_only is None or instance.task in tasks_only)] if job else []
        fields = given(ended=ended, retry_count=retry_count)
        for instance in chosen:
            self._put(job_id, replace(instance, state=target, **fields))
            self.event(job_id, "instance", instance.state, target, now, task=instance.task,
                       instance_id=instance.instance_id)
        return [MovedInstance(i.task, i.instance_id, i.state, i.attempts) for i in chosen]

    def mark_running(self, rows: Sequence[LaunchRow], now: float) -> bool:
        """Waiting → Running with the next attempt number; False if any was not Waiting any
        more (the caller rolls back)."""
        moved = 0
        for row in rows:
            key = row.candidate
            instance = self._instance(key.job_id, key.task, key.instance_id)
            if instance is None or instance.state is not State.WAITING:
                continue
            self._put(key.job_id, replace(instance, state=State.RUNNING,
                                          attempts=row.attempts + 1, started=now, ended=None))
            self.event(key.job_id, "instance", State.WAITING, State.RUNNING, now,
                       task=key.task, instance_id=key.instance_id)
            moved += 1
        return moved == len(rows)

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> list[bool]:
        """Running → each one's target with the outcome, if it is still the instance's
        current attempt (compare-and-set; this store always knows which moved)."""
        targets = [end.moved_to() for end in ends]
        return [self._end(end, target, now) for end, target in zip(ends, targets, strict=True)]

    def _end(self, end: AttemptEnd, target: State, now: float) -> bool:
        key = end.key
        instance = self._instance(key.job_id, key.task, key.instance_id)
        if instance is None or (instance.state, instance.attempts) != (State.RUNNING,
                                                                        key.attempt):
            return False
        self._put(key.job_id, _ended(instance, end, target))
        self.event(key.job_id, "instance", State.RUNNING, target, now, task=key.task,
                   instance_id=key.instance_id, message=end.message)
        return True

    def record_attempts(self, ends: Sequence[tuple[AttemptKey, Outcome]]) -> None:
        """Keep each attempt's history row (once; not for a job that is gone)."""
        for key, outcome in ends:
            job = self._jobs.get(key.job_id)
            slot = (key.task, key.instance_id, key.attempt)
            if job is None or slot in job.attempts:
                continue
            job = self._write(key.job_id)
            assert job is not None
            job.attempts[slot] = _attempt_record(key, outcome)


def _launch_order(job: _Job) -> tuple[int, float, str]:
    return -job.row.priority, job.row.created, job.row.id


def _ended(instance: _Instance, end: AttemptEnd, target: State) -> _Instance:
    outcome = end.outcome
    started = outcome.started_at.timestamp() if outcome.started_at else instance.started
    return replace(instance, state=target, started=started, ended=end.ended,
                   exit_code=outcome.exit_code,
                   error_code=outcome.error_code.value, error_message=outcome.error_message,
                   detail=outcome.detail, stdout_path=outcome.stdout_path,
                   stderr_path=outcome.stderr_path, node=outcome.node,
                   retry_count=end.retry_count, **given(lost=end.lost))


def _stamp(value: datetime | None) -> datetime | None:
    """A runner's time as the SQL store returns it (UTC, through epoch seconds)."""
    return None if value is None else _time(value.timestamp())


def _attempt_record(key: AttemptKey, outcome: Outcome) -> AttemptRecord:
    return AttemptRecord(key.job_id, key.task, key.instance_id, key.attempt,
                         _stamp(outcome.started_at), _stamp(outcome.ended_at),
                         outcome.exit_code, outcome.error_code.value, outcome.error_message,
                         outcome.stdout_path, outcome.stderr_path, outcome.worker,
                         _stamp(outcome.program_started_at))


def _instance_row(job_id: str, instance: _Instance) -> InstanceRow:
    return InstanceRow(job_id, instance.task, instance.instance_id, instance.state,
                       instance.retry_count, instance.attempts, instance.lost,
                       instance.started,
                       instance.ended, instance.exit_code, instance.error_code,
                       instance.error_message)


# ---- the store -----------------------------------------------------------------------------

class MemoryStore:
    """Jobs, tasks, instances, attempts, events, bucket claims and idempotency tokens in
    memory (implements `ports.store.StateStore`); gone when the object is."""

    def __init__(self) -> None:
        self._tables = _Tables({}, {}, {}, {})
        self._writing = threading.Lock()
        self._writer: int | None = None

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        """One writer at a time; committed when the block ends, dropped if it raises."""
        if self._writer == threading.get_ident():  # would deadlock, or lose the outer writes
            raise RuntimeError("a transaction inside a transaction of the same thread")
        with self._writing:
            self._writer = threading.get_ident()
            try:
                tx = MemoryTransaction(self._tables)
                yield tx
                tx.flush_events()
                self._tables = tx.tables()
            finally:
                self._writer = None

    def create_job(self, job: NewJob) -> None:
        """Store a new job with its claims and token in one transaction (see the port)."""
        with self.transaction() as tx:
            tx.create_jobs([job])

    def owned_buckets(self, tenant: str) -> list[str]:
        return sorted(name for name, owner in self._tables.buckets.items() if owner == tenant)

    def claim(self) -> Callable[[], None]:
        """Nothing to claim: no other process can see this store."""
        return lambda: None

    def close(self) -> None:
        """Nothing to close (the tables stay readable)."""

    # ---- reads (any thread: each reads one committed version of the tables) --------------

    def job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        job = self._tables.jobs.get(job_id)
        if job is None or (tenant is not None and job.row.tenant != tenant):
            return None
        return _job_record(job)

    def job_state(self, job_id: str, tenant: str | None = None) -> State | None:
        job = self._tables.jobs.get(job_id)
        if job is None or (tenant is not None and job.row.tenant != tenant):
            return None
        return job.row.state

    def jobs(self, tenant: str | None = None, state: State | None = None) -> list[JobRecord]:
        """Jobs newest first."""
        found = [job for job in self._tables.jobs.values()
                 if (tenant is None or job.row.tenant == tenant)
                 and (state is None or job.row.state is state)]
        found.sort(key=lambda job: (job.row.created, job.row.id), reverse=True)
        return [_job_record(job) for job in found]

    def tasks(self, job_id: str) -> list[TaskRecord]:
        job = self._tables.jobs.get(job_id)
        if job is None:
            return []
        counts = job.counts()
        return [TaskRecord(job_id, name, task.state, _time(task.started), _time(task.ended),
                           counts.get(name, Metrics()))
                for name, task in sorted(job.tasks.items())]

    def instances(self, job_id: str, task: str) -> list[InstanceRecord]:
        job = self._tables.jobs.get(job_id)
        row = None if job is None else job.tasks.get(task)
        if job is None or row is None:
            return []
        return [_instance_record(job_id, instance) for instance in job.task_instances(row)]

    def attempts(self, job_id: str, task: str, instance_id: int) -> list[AttemptRecord]:
        job = self._tables.jobs.get(job_id)
        found = [] if job is None else [
            record for (name, index, _), record in job.attempts.items()
            if (name, index) == (task, instance_id)]
        return sorted(found, key=lambda record: record.attempt)

    def events(self, job_id: str) -> list[EventRecord]:
        return [EventRecord(event.id, event.job_id, event.task, event.instance_id, event.kind,
                            event.source, event.target, _time(event.time) or _EPOCH,
                            event.message)
                for event in self._tables.events.get(job_id, ())]


def _job_record(job: _Job) -> JobRecord:
    row = job.row
    return JobRecord(
        id=row.id, tenant=row.tenant, name=row.name, priority=row.priority, state=row.state,
        message=row.message, created=_time(row.created) or _EPOCH, started=_time(row.started),
        ended=_time(row.ended), task_metrics=Metrics.of(task.state for task in job.tasks.values()),
        instance_metrics=Metrics.of(i.state for i in job.instances.values()),
        description=json.loads(job.description))


def _instance_record(job_id: str, instance: _Instance) -> InstanceRecord:
    return InstanceRecord(
        job_id=job_id, task=instance.task, instance_id=instance.instance_id,
        state=instance.state, retry_count=instance.retry_count, attempts=instance.attempts,
        started=_time(instance.started), ended=_time(instance.ended),
        exit_code=instance.exit_code, error_code=instance.error_code,
        error_message=instance.error_message, detail=instance.detail,
        stdout_path=instance.stdout_path, stderr_path=instance.stderr_path, node=instance.node)


if TYPE_CHECKING:  # mypy proves that the port is implemented, signature by signature
    def _implements(store: MemoryStore, tx: MemoryTransaction
                    ) -> tuple[StateStore, StateTransaction]:
        return store, tx
