"""The state store on SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL by URL.

Writes happen in a `StoreTransaction` (one database transaction, one commit). Callers name
only the target state; the allowed sources come from the transition tables of
`domain.states`. Every state change is a compare-and-set (`UPDATE … WHERE state = source`)
and records an event row (source and target) in the same transaction, so a crash never leaves
a transition half-recorded. Two outcomes are kept apart: a current state the tables do not
allow raises ForbiddenTransition (a bug of the caller); a row that moved on or went away
between the read and the write (a race) makes the write return False.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from batchyard.adapters.clusters import SqlClusterWrites
from batchyard.adapters.credentials import idempotency_tokens
from batchyard.adapters.database import insert_ignoring_duplicates, open_engine
from batchyard.adapters.reads import SqlReads, to_time
from batchyard.adapters.schema import (
    COUNT_COLUMNS,
    TASK_COUNT_COLUMNS,
    attempts,
    buckets,
    events,
    instances,
    job_descriptions,
    jobs,
    tasks,
)
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
from batchyard.domain.spec import JobDescription, bucket_of
from batchyard.domain.states import (
    ACTIVE,
    REPRIORITISABLE,
    Entity,
    State,
    Transition,
    allowed_sources,
    check,
)
from batchyard.errors import BatchyardError, TokenTaken
from batchyard.ports.store import (
    KEEP,
    AttemptEnd,
    IdempotencyToken,
    InstanceRow,
    JobRow,
    Keep,
    LaunchRow,
    MovedInstance,
    NewJob,
    StaleBatch,
    Stamp,
    TaskRow,
    WaitingTask,
    given,
)


class DatabaseBusy(BatchyardError):
    code = "DatabaseBusy"
    status = 409


Item = TypeVar("Item")


class GroupCommit(Generic[Item]):
    """Writes items handed in by concurrent threads, many per transaction.

    `write(item)` returns once `item` is committed. While one batch is being written, the
    items that arrive wait, and the first of their threads to get the turn writes all of
    them in one go: under load, one transaction (and one wait for SQLite's single writer)
    per batch instead of per item. A failed batch is retried item by item, so an error
    reaches only the caller whose item caused it.
    """

    def __init__(self, write_batch: Callable[[list[Item]], None]) -> None:
        self._write_batch = write_batch
        self._pending: list[_Entry[Item]] = []
        self._queue = threading.Lock()
        self._turn = threading.Lock()

    def write(self, item: Item) -> None:
        entry = _Entry(item)
        with self._queue:
            self._pending.append(entry)
        with self._turn:
            if not entry.done:
                with self._queue:
                    batch, self._pending = self._pending, []
                self._flush(batch)
        if entry.error is not None:
            raise entry.error

    def _flush(self, batch: list[_Entry[Item]]) -> None:
        try:
            self._write_batch([entry.item for entry in batch])
        except BaseException as error:
            if len(batch) == 1:
                batch[0].error = error
            else:
                for entry in batch:
                    try:
                        self._write_batch([entry.item])
                    except BaseException as own:
                        entry.error = own
        finally:
            for entry in batch:
                entry.done = True


class _Entry(Generic[Item]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class _Many:
    """One statement run with many parameter sets (executemany) in a step's transaction.

    With SQLite it goes to the driver's cursor directly, compiled once per set of keys: the
    statements of a step are the same every time, and SQLAlchemy's execution machinery (an
    execution context, parameters processed per row, a result object) costs more than
    SQLite's own work on them. The columns it writes need no type conversion (numbers,
    text, booleans). Other databases take SQLAlchemy's way.
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, ...], tuple[str, list[str], list[Any]]] = {}

    def run(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run it once per row; returns the rows it changed in all."""
        if connection.dialect.name != "sqlite":
            return connection.execute(self.statement, list(rows)).rowcount
        keys = tuple(rows[0])
        compiled = self._compiled.get(keys)
        if compiled is None:
            compiled = self._compiled[keys] = self._compile(connection, keys)
        sql, names, constants = compiled
        given = [(index, name) for index, name in enumerate(names) if name]
        parameters = []
        for row in rows:
            values = constants.copy()
            for index, name in given:
                values[index] = row[name]
            parameters.append(values)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, parameters)
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _compile(self, connection: Connection, keys: tuple[str, ...]
                 ) -> tuple[str, list[str], list[Any]]:
        """The SQL text, the row key of each positional parameter ("" for a value the
        statement holds itself, such as a state in its WHERE) and those values."""
        done = self.statement.compile(dialect=connection.dialect, column_keys=list(keys))
        order = list(done.positiontup or ())
        held = done.params
        names = [name if name in keys else "" for name in order]
        return done.string, names, [None if name in keys else held[name] for name in order]


class SqlStore:
    """State of jobs, tasks, instances, attempts and events in a SQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)
        self._writing: AbstractContextManager[Any] = (
            threading.RLock() if self.engine.dialect.name == "sqlite" else nullcontext())
        """SQLite has one writer at a time, and a writer that finds the database locked
        sleeps in growing steps (1, 2, 5, 10 … 100 ms) before it tries again; the writers of
        this process (the engine's steps, the API's submissions) queue on this lock instead."""
        self._creations = GroupCommit[NewJob](self._create_jobs)

    def create_job(self, job: NewJob) -> None:
        """Store a new job, claim its buckets and record its idempotency token, all in one
        transaction; committed on return (concurrent calls share a transaction).

        Raises BucketForbidden if it names a bucket another tenant owns, and TokenTaken if
        its token made a job already.
        """
        self._creations.write(job)

    def owned_buckets(self, tenant: str) -> list[str]:
        """The buckets `tenant` claimed (configured ones are not here)."""
        with self.engine.connect() as connection:
            return list(connection.execute(_OWNED, {"b_owner": tenant}).scalars())

    def _create_jobs(self, new_jobs: list[NewJob]) -> None:
        with self.transaction() as tx:
            tx.create_jobs(new_jobs)

    def close(self) -> None:
        self.engine.dispose()

    def claim(self) -> Callable[[], None]:
        """Make this process the only engine on a shared (PostgreSQL) database.

        Returns the function that gives the claim back. Two engines on one database would
        each re-queue the other's running instances when they start; SQLite databases are
        claimed through their data directory's lock instead.
        """
        if self.engine.dialect.name != "postgresql":
            return lambda: None
        connection = self.engine.connect()
        if not connection.execute(_TRY_CLAIM).scalar():
            connection.close()
            raise DatabaseBusy("another batchyard engine is using this database; stop it "
                               "first (one engine per database)")

        def release() -> None:
            connection.execute(_RELEASE_CLAIM)
            connection.commit()
            connection.close()

        connection.commit()
        return release

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        with self._writing, self.engine.begin() as connection:
            tx = StoreTransaction(connection)
            yield tx
            tx.flush_events()  # events not flushed by the caller still commit with the change

    # ---- reads: delegated to the one read service (adapters.reads) ----------------------

    @cached_property
    def reads(self) -> SqlReads:
        """Every read of jobs, tasks, instances, attempts and events (`ports.reads`)."""
        return SqlReads(self.engine)

    def job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        return self.reads.job(job_id, tenant)

    def job_state(self, job_id: str, tenant: str | None = None) -> State | None:
        return self.reads.job_state(job_id, tenant)

    def jobs(self, tenant: str | None = None, state: State | None = None) -> list[JobRecord]:
        return self.reads.jobs(tenant, state)

    def tasks(self, job_id: str) -> list[TaskRecord]:
        return self.reads.tasks(job_id)

    def instances(self, job_id: str, task: str) -> list[InstanceRecord]:
        return self.reads.instances(job_id, task)

    def attempts(self, job_id: str, task: str, instance_id: int) -> list[AttemptRecord]:
        return self.reads.attempts(job_id, task, instance_id)

    def events(self, job_id: str) -> list[EventRecord]:
        return self.reads.events(job_id)


class StoreTransaction(SqlClusterWrites):
    """All writes of one orchestrator step, committed together (clusters and VMs too)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._events: list[dict[str, Any]] = []
        self._flushed: list[dict[str, Any]] = []
        self._counts: Counter[tuple[str, str, State]] = Counter()
        """Changes to the tasks' instance counts not written yet: (job, task, state) -> n."""
        self._task_counts: Counter[tuple[str, State]] = Counter()
        """Changes to the jobs' task counts not written yet: (job, state) -> n."""

    def flush_events(self) -> None:
        """Write the events and count changes recorded so far (at commit at the latest)."""
        if self._events:
            _INSERT_EVENTS.run(self.connection, self._events)
            self._flushed += self._events
            self._events = []
        self._flush_counts()

    def _count(self, job_id: str, task: str, source: State | str, target: State) -> None:
        """One instance of the task moved from `source` to `target`."""
        self._counts[job_id, task, State(source)] -= 1
        self._counts[job_id, task, target] += 1

    def _flush_counts(self) -> None:
        """One UPDATE per task (and job) whose counts changed, all its five counts at once."""
        if self._counts:
            _ADD_COUNTS.run(self.connection, _count_changes(self._counts))
            self._counts.clear()
        if self._task_counts:
            _ADD_TASK_COUNTS.run(self.connection, _count_changes(
                {(job_id, "", state): delta
                 for (job_id, state), delta in self._task_counts.items()}))
            self._task_counts.clear()

    def event(self, job_id: str, kind: str, source: str, target: State, now: float,
              task: str = "", instance_id: int | None = None, message: str = "") -> None:
        self._events.append({"job_id": job_id, "task": task, "instance_id": instance_id,
                             "kind": kind, "source": source, "target": target.value,
                             "time": now, "message": message})

    @property
    def transitions(self) -> list[Transition]:
        """The state changes this transaction recorded, in order (for the listeners, once
        it committed; other events, such as a new priority, are not transitions)."""
        return [Transition(Entity(row["kind"]), row["job_id"], row["task"], row["instance_id"],
                           State(row["source"]) if row["source"] else None,
                           State(row["target"]), row["time"], row["message"])
                for row in self._flushed if row["kind"] in _ENTITIES]

    # ---- jobs ----------------------------------------------------------------------------

    def create_job(self, job_id: str, tenant: str, spec: JobDescription, now: float) -> None:
        self.create_jobs([NewJob(job_id, tenant, spec, now)])

    def create_jobs(self, new_jobs: Sequence[NewJob]) -> None:
        """Insert jobs, their tasks and instances (one multi-row insert per table), after
        claiming their buckets and recording their tokens (see `SqlStore.create_job`)."""
        self._claim_buckets(new_jobs)
        self._record_tokens(new_jobs)
        job_rows, task_rows, instance_rows, description_rows = [], [], [], []
        for job_id, tenant, spec, now, _, _ in new_jobs:
            graph = spec.graph()
            job_rows.append({
                "id": job_id, "tenant": tenant, "name": spec.Name, "priority": spec.Priority,
                "state": State.WAITING.value, "message": "",
                "fail_on_instance_fail": spec.JobFailOnInstanceFail,
                "auto_release": spec.AutoRelease, "created": now,
                TASK_COUNT_COLUMNS[State.WAITING]: len(spec.DAG.Tasks),
            })
            description_rows.append({"job_id": job_id, "description": json.dumps(spec.echo())})
            task_rows += [
                {"job_id": job_id, "name": name, "state": State.WAITING.value,
                 "ready": not graph[name], "instance_count": task.InstanceCount,
                 "max_retry_count": task.MaxRetryCount, "cluster_id": task.ClusterId,
                 COUNT_COLUMNS[State.WAITING]: task.InstanceCount}
                for name, task in spec.DAG.Tasks.items()
            ]
            instance_rows += [
                {"job_id": job_id, "task": name, "instance_id": index,
                 "state": State.WAITING.value, "retry_count": 0, "attempts": 0}
                for name, task in spec.DAG.Tasks.items() for index in range(task.InstanceCount)
            ]
            self.event(job_id, "job", "", State.WAITING, now, message="submitted")
        self.connection.execute(jobs.insert(), job_rows)
        self.connection.execute(job_descriptions.insert(), description_rows)
        self.connection.execute(tasks.insert(), task_rows)
        self.connection.execute(instances.insert(), instance_rows)

    def _claim_buckets(self, new_jobs: Sequence[NewJob]) -> None:
        """Give each unowned bucket to the first job's tenant; refuse a job whose tenant
        does not own a bucket it names (every such use listed)."""
        named = sorted({bucket_of(use.url) for job in new_jobs for use in job.claims})
        if not named:
            return
        owners = self._owners(named)
        unowned = {bucket_of(use.url): job.tenant for job in reversed(new_jobs)
                   for use in job.claims if bucket_of(use.url) not in owners}
        if unowned:  # usually not: a tenant keeps using its buckets
            self.connection.execute(insert_ignoring_duplicates(self.connection, buckets), [
                {"name": name, "owner": owner, "created": new_jobs[0].now}
                for name, owner in unowned.items()])
            owners = self._owners(named)
        for job in new_jobs:
            bucket_rules.refuse(bucket_rules.problems(job.tenant, job.claims, owners))

    def _owners(self, names: list[str]) -> dict[str, bucket_rules.Grant]:
        return {row.name: bucket_rules.Grant(row.owner)
                for row in self.connection.execute(_OWNERS, {"b_names": names})}

    def _record_tokens(self, new_jobs: Sequence[NewJob]) -> None:
        rows = [{"tenant": job.tenant, "kind": job.token.kind, "token": job.token.token,
                 "digest": job.token.digest, "resource_id": job.job_id, "created": job.now}
                for job in new_jobs if job.token is not None]
        if not rows:
            return
        try:
            self.connection.execute(idempotency_tokens.insert(), rows)
        except IntegrityError:  # the whole transaction is rolled back: no job, no claim
            raise TokenTaken("the IdempotentToken was used by a job already") from None

    def job_row(self, job_id: str) -> JobRow | None:
        """The job's row without its description (which holds every task: a megabyte for a
        job of thousands, read on every settle otherwise)."""
        row = self.connection.execute(_JOB_ROW, {"b_id": job_id}).first()
        return None if row is None else JobRow(
            row.id, row.tenant, row.name, row.priority, State(row.state), row.message,
            row.fail_on_instance_fail, row.auto_release, row.created, row.started, row.ended)

    def move_job(self, job_id: str, target: State, now: float, operation: str = "", *,
                 started: Stamp = KEEP, ended: Stamp = KEEP,
                 message: str | Keep = KEEP) -> bool:
        """Move the job to `target` from its current state, which the job table (narrowed
        by `operation`) must allow; False if the job is gone or moved on meanwhile."""
        source = self.connection.execute(_JOB_STATE, {"b_id": job_id}).scalar()
        if source is None:
            return False
        check(Entity.JOB, job_id, State(source), target, operation)
        fields = given(started=started, ended=ended, message=message)
        result = self.connection.execute(
            jobs.update().where(jobs.c.id == job_id, jobs.c.state == source)
            .values(state=target.value, **fields))
        moved = bool(result.rowcount)
        if moved:
            self.event(job_id, "job", source, target, now, message=str(fields.get("message", "")))
        return moved

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Change the priority of a job in a state that allows it; False if it is not."""
        result = self.connection.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state.in_([s.value for s in REPRIORITISABLE]))
            .values(priority=priority))
        return bool(result.rowcount)

    def delete_job(self, job_id: str) -> None:
        for table in (events, attempts, instances, tasks, job_descriptions):
            self.connection.execute(table.delete().where(table.c.job_id == job_id))
        self.connection.execute(jobs.delete().where(jobs.c.id == job_id))

    def active_job_ids(self) -> list[str]:
        rows = self.connection.execute(
            select(jobs.c.id).where(jobs.c.state.in_([s.value for s in ACTIVE])))
        return [row.id for row in rows]

    # ---- tasks ---------------------------------------------------------------------------

    def task_rows(self, job_id: str, names: Collection[str] | None = None) -> list[TaskRow]:
        """The job's task rows; only those named in `names` unless it is None."""
        if names is not None and not names:
            return []
        rows = [row for row in self.connection.execute(*_of_tasks(_TASK_ROWS, job_id, names))
                if names is None or row.name in names]
        return [TaskRow(row.job_id, row.name, State(row.state), row.ready, row.instance_count,
                        row.max_retry_count, row.started, row.ended, row.cluster_id)
                for row in rows]

    def instance_counts(self, job_id: str, names: Collection[str] | None = None
                        ) -> dict[str, Metrics]:
        """Instances per state of each task of the job (of the tasks in `names` if given),
        as kept in the task rows: one row read per task, whatever its instance count."""
        self._flush_counts()
        return {row.name: _metrics(row)
                for row in self.connection.execute(*_of_tasks(_TASK_COUNTS, job_id, names))
                if names is None or row.name in names}

    def task_metrics(self, job_id: str) -> Metrics:
        """The job's tasks per state, as kept in its row (one row, whatever its tasks)."""
        self._flush_counts()
        row = self.connection.execute(_JOB_TASK_COUNTS, {"b_id": job_id}).first()
        return Metrics() if row is None else Metrics.from_counts(
            {state: row._mapping[column] for state, column in TASK_COUNT_COLUMNS.items()})

    def move_task(self, job_id: str, task: str, target: State, now: float, operation: str = "",
                  *, started: Stamp = KEEP, ended: Stamp = KEEP) -> bool:
        """Like `move_job`, for a task and the task table."""
        source = self.connection.execute(_TASK_STATE, {"b_job": job_id, "b_task": task}).scalar()
        if source is None:
            return False
        check(Entity.TASK, f"{job_id}/{task}", State(source), target, operation)
        fields = given(started=started, ended=ended)
        result = self.connection.execute(_MOVE_TASK, {
            "b_job": job_id, "b_task": task, "b_source": source, "state": target.value,
            **fields})
        moved = bool(result.rowcount)
        if moved:
            self._task_counts[job_id, State(source)] -= 1
            self._task_counts[job_id, target] += 1
            self.event(job_id, "task", source, target, now, task=task)
        return moved

    def set_ready(self, job_id: str, names: Collection[str], ready: bool) -> None:
        if names:
            self.connection.execute(_SET_READY, {"b_job": job_id, "b_names": sorted(names),
                                                 "ready": ready})

    # ---- instances -----------------------------------------------------------------------

    def launch_rows(self, limit: int, most_jobs: int | None = None, cluster_id: str = ""
                    ) -> list[LaunchRow]:
        """Waiting instances of ready tasks of active jobs, in launch order: of each tenant,
        at most `limit`, from at most `most_jobs` of its jobs that have any (None: no such
        bound).

        Walks active jobs in priority order and asks each for its first waiting instances
        through the (state, job, task, instance) index, so a step costs O(limit) per tenant,
        not O(waiting instances). Whatever the bounds, each tenant's rows are a prefix of its
        launch order.
        """
        if limit <= 0:
            return []
        tenants = set(self.connection.execute(_ACTIVE_TENANTS).scalars())
        rows: dict[str, list[LaunchRow]] = {}
        jobs_with_rows: Counter[str] = Counter()
        full: set[str] = set()
        active = (self.connection.execute(_ACTIVE_JOBS) if not cluster_id else
                  self.connection.execute(_ACTIVE_JOBS_ON, {"b_cluster": cluster_id}))
        for job in active:
            if job.tenant in full:
                continue
            mine = rows.setdefault(job.tenant, [])
            found = self._waiting_of(job, limit - len(mine), cluster_id)
            mine += found
            jobs_with_rows[job.tenant] += bool(found)
            if len(mine) >= limit or jobs_with_rows[job.tenant] == most_jobs:
                full.add(job.tenant)
                if full >= tenants:
                    break
        return sorted((row for mine in rows.values() for row in mine),
                      key=lambda row: row.candidate.order_key())

    def _waiting_of(self, job: Any, limit: int, cluster_id: str) -> list[LaunchRow]:
        """The first `limit` waiting instances of ready tasks on `cluster_id` of `job` (an
        active-jobs row)."""
        created = to_time(job.created) or _EPOCH
        return [LaunchRow(Candidate(job.id, job.priority, created, row.task, row.instance_id,
                                    job.tenant),
                          row.attempts, row.retry_count,
                          State.WAITING.value in (row.task_state, job.state))
                for row in self.connection.execute(
                    _WAITING_OF_JOB, {"b_job": job.id, "b_limit": limit,
                                      "b_cluster": cluster_id})]

    def task_launch_rows(self, job_id: str, task: str, limit: int) -> list[LaunchRow]:
        """The first `limit` Waiting instances of one ready task of an active job, by
        instance id, through the (state, job, task, instance) index: O(limit)."""
        if limit <= 0:
            return []
        return [LaunchRow(Candidate(job_id, row.priority, to_time(row.created) or _EPOCH, task,
                                    row.instance_id, row.tenant),
                          row.attempts, row.retry_count,
                          State.WAITING.value in (row.task_state, row.job_state))
                for row in self.connection.execute(
                    _WAITING_OF_TASK, {"b_job": job_id, "b_task": task, "b_limit": limit})]

    def waiting_tasks(self, limit: int) -> list[WaitingTask]:
        """Ready tasks on no cluster of active jobs with Waiting instances (as the tasks'
        counts say), in launch order: the active jobs' rows and their tasks' rows only."""
        if limit <= 0:
            return []
        self._flush_counts()
        return [WaitingTask(row.job_id, row.name, row.tenant, row.priority, row.waiting)
                for row in self.connection.execute(_WAITING_TASKS, {"b_limit": limit})]

    def has_active_instances(self, job_id: str, task: str) -> bool:
        """Whether some instance of the task is still Waiting or Running (index lookup)."""
        return self.connection.execute(
            _ACTIVE_INSTANCE, {"b_job": job_id, "b_task": task}).first() is not None

    def instance_row(self, job_id: str, task: str, instance_id: int) -> InstanceRow | None:
        row = self.connection.execute(
            _INSTANCE_ROW, {"b_job": job_id, "b_task": task, "b_index": instance_id}).first()
        return None if row is None else _instance_row(row)

    def move_instance(self, job_id: str, task: str, instance_id: int, target: State,
                      now: float, *, ended: Stamp = KEEP, error_code: str | Keep = KEEP,
                      error_message: str | Keep = KEEP, lost: int | Keep = KEEP,
                      message: str = "") -> bool:
        """Like `move_job`, for one instance and the instance table."""
        keys = {"b_job": job_id, "b_task": task, "b_index": instance_id}
        source = self.connection.execute(_INSTANCE_STATE, keys).scalar()
        if source is None:
            return False
        check(Entity.INSTANCE, f"{job_id}/{task}/{instance_id}", State(source), target)
        fields = given(ended=ended, error_code=error_code, error_message=error_message,
                        lost=lost)
        result = self.connection.execute(_MOVE_INSTANCE, {
            **keys, "b_source": source, "state": target.value, **fields})
        moved = bool(result.rowcount)
        if moved:
            self._count(job_id, task, source, target)
            self.event(job_id, "instance", source, target, now, task=task,
                       instance_id=instance_id, message=message)
        return moved

    def move_instances(self, job_id: str, target: State, now: float, operation: str = "",
                       tasks_only: Collection[str] | None = None, *, ended: Stamp = KEEP,
                       retry_count: int | Keep = KEEP) -> list[MovedInstance]:
        """Move every instance of a job (of `tasks_only`) whose state the instance table
        (narrowed by `operation`) allows to `target`; returns the rows it moved. The others
        are left as they are: a bulk move selects its rows, so nothing here is forbidden."""
        sources = allowed_sources(Entity.INSTANCE, target, operation)
        where = [instances.c.job_id == job_id,
                 instances.c.state.in_([s.value for s in sources])]
        if tasks_only is not None:
            where.append(instances.c.task.in_(sorted(tasks_only)))
        rows = self.connection.execute(
            select(instances.c.task, instances.c.instance_id, instances.c.state,
                   instances.c.attempts).where(*where)).all()
        if rows:
            fields = given(ended=ended, retry_count=retry_count)
            self.connection.execute(
                instances.update().where(*where).values(state=target.value, **fields))
        for row in rows:
            self._count(job_id, row.task, row.state, target)
            self.event(job_id, "instance", row.state, target, now, task=row.task,
                       instance_id=row.instance_id)
        return [MovedInstance(row.task, row.instance_id, State(row.state), row.attempts)
                for row in rows]

    def mark_running(self, rows: Sequence[LaunchRow], now: float) -> bool:
        """Waiting → Running for these instances (the only source the instance table allows
        for Running); False if any was not Waiting any more (a race: the engine rolls back)."""
        if not rows:
            return True
        moved = _MARK_RUNNING.run(self.connection, [
            {"b_job": row.candidate.job_id, "b_task": row.candidate.task,
             "b_index": row.candidate.instance_id, "state": State.RUNNING.value,
             "attempts": row.attempts + 1, "started": now, "ended": None}
            for row in rows])
        for row in rows:
            candidate = row.candidate
            self._count(candidate.job_id, candidate.task, State.WAITING, State.RUNNING)
            self.event(candidate.job_id, "instance", State.WAITING.value, State.RUNNING, now,
                       task=candidate.task, instance_id=candidate.instance_id)
        return moved == len(rows)

    def first_failure(self, job_id: str) -> InstanceRow | None:
        row = self.connection.execute(
            select(instances).where(instances.c.job_id == job_id,
                                    instances.c.state == State.FAILED.value)
            .order_by(instances.c.ended, instances.c.task, instances.c.instance_id)
            .limit(1)).first()
        return None if row is None else _instance_row(row)

    def running_instances(self) -> list[InstanceRow]:
        return [_instance_row(row) for row in self.connection.execute(
            select(instances).where(instances.c.state == State.RUNNING.value))]

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> list[bool]:
        """Each attempt's instance from Running to its target, compare-and-set; one
        statement for the whole batch. Raises StaleBatch when some attempt of a batch of
        several was not current (the others were written: the caller rolls back)."""
        targets = [end.moved_to() for end in ends]
        if not ends:
            return []
        count = _END_ATTEMPT.run(self.connection, [_end_values(end) for end in ends])
        if len(ends) == 1:
            moved = [bool(count)]
        elif count == len(ends):
            moved = [True] * len(ends)
        else:
            raise StaleBatch(f"{len(ends) - count} of {len(ends)} attempts were not current")
        for end, target, ended in zip(ends, targets, moved, strict=True):
            if ended:
                key = end.key
                self._count(key.job_id, key.task, State.RUNNING, target)
                self.event(key.job_id, "instance", State.RUNNING.value, target, now,
                           task=key.task, instance_id=key.instance_id, message=end.message)
        return moved

    def record_attempts(self, ends: Sequence[tuple[AttemptKey, Outcome]]) -> None:
        """Insert attempt rows (a row already recorded is left as it is)."""
        if ends:
            _inserting_attempts(self.connection).run(
                self.connection, [_attempt_values(key, outcome) for key, outcome in ends])


MOST_NAMES = 500
"""Task names sent in one IN list; for more, the job's rows are read and filtered."""
_EPOCH = datetime.fromtimestamp(0, UTC)
_ENTITIES = frozenset(entity.value for entity in Entity)

# Statements on the hot path, built once (values bound per call).
_ONE_INSTANCE = (instances.c.job_id == bindparam("b_job"), instances.c.task == bindparam("b_task"),
                 instances.c.instance_id == bindparam("b_index"))
_JOB_STATE = select(jobs.c.state).where(jobs.c.id == bindparam("b_id"))
_JOB_ROW = select(jobs).where(
    jobs.c.id == bindparam("b_id"))
_OWNERS = select(buckets.c.name, buckets.c.owner).where(
    buckets.c.name.in_(bindparam("b_names", expanding=True)))
_OWNED = select(buckets.c.name).where(buckets.c.owner == bindparam("b_owner")).order_by(
    buckets.c.name)
_INSTANCE_ROW = select(instances).where(*_ONE_INSTANCE)
_INSTANCE_STATE = select(instances.c.state).where(*_ONE_INSTANCE)
_TASK_STATE = select(tasks.c.state).where(tasks.c.job_id == bindparam("b_job"),
                                          tasks.c.name == bindparam("b_task"))
_MOVE_INSTANCE = instances.update().where(
    *_ONE_INSTANCE, instances.c.state == bindparam("b_source"))
_MARK_RUNNING = _Many(instances.update().where(
    *_ONE_INSTANCE, instances.c.state == State.WAITING.value).values(
    {name: bindparam(name) for name in ("state", "attempts", "started", "ended")}))
_INSERT_EVENTS = _Many(events.insert())
_INSERT_ATTEMPTS: dict[str, _Many] = {}


def _inserting_attempts(connection: Connection) -> _Many:
    """An attempt's row unless it is there, in the connection's dialect (built once)."""
    dialect = connection.dialect.name
    many = _INSERT_ATTEMPTS.get(dialect)
    if many is None:
        many = _INSERT_ATTEMPTS[dialect] = _Many(insert_ignoring_duplicates(connection, attempts))
    return many
# Session advisory lock key: "batchyar" as a 64-bit integer.
_ENGINE_CLAIM = int.from_bytes(b"batchyar", "big") - 2**63
_TRY_CLAIM = text(f"SELECT pg_try_advisory_lock({_ENGINE_CLAIM})")
_RELEASE_CLAIM = text(f"SELECT pg_advisory_unlock({_ENGINE_CLAIM})")
_ACTIVE_TENANTS = select(jobs.c.tenant).where(
    jobs.c.state.in_([s.value for s in ACTIVE])).distinct()
_ACTIVE_JOBS = (select(jobs.c.id, jobs.c.tenant, jobs.c.priority, jobs.c.created, jobs.c.state)
                .where(jobs.c.state.in_([s.value for s in ACTIVE]))
                .order_by(jobs.c.priority.desc(), jobs.c.created, jobs.c.id))
_ACTIVE_JOBS_ON = (
    select(jobs.c.id, jobs.c.tenant, jobs.c.priority, jobs.c.created, jobs.c.state)
    .where(jobs.c.state.in_([s.value for s in ACTIVE]),
           jobs.c.id.in_(select(tasks.c.job_id).where(
               tasks.c.cluster_id == bindparam("b_cluster"), tasks.c.ready)))
    .order_by(jobs.c.priority.desc(), jobs.c.created, jobs.c.id))
"""Active jobs with a ready task on one cluster (through the tasks' cluster index): a
cluster's launch queue walks only those."""
_WAITING_OF_JOB = (
    select(instances.c.task, instances.c.instance_id, instances.c.attempts,
           instances.c.retry_count, tasks.c.state.label("task_state"))
    .join(tasks, (tasks.c.job_id == instances.c.job_id) & (tasks.c.name == instances.c.task))
    .where(instances.c.state == State.WAITING.value, instances.c.job_id == bindparam("b_job"),
           tasks.c.ready, tasks.c.cluster_id == bindparam("b_cluster"))
    .order_by(instances.c.task, instances.c.instance_id)
    .limit(bindparam("b_limit")))
_WAITING_OF_TASK = (
    select(instances.c.instance_id, instances.c.attempts, instances.c.retry_count,
           tasks.c.state.label("task_state"), jobs.c.tenant, jobs.c.priority, jobs.c.created,
           jobs.c.state.label("job_state"))
    .join(tasks, (tasks.c.job_id == instances.c.job_id) & (tasks.c.name == instances.c.task))
    .join(jobs, jobs.c.id == instances.c.job_id)
    .where(instances.c.state == State.WAITING.value, instances.c.job_id == bindparam("b_job"),
           instances.c.task == bindparam("b_task"), tasks.c.ready,
           jobs.c.state.in_([s.value for s in ACTIVE]))
    .order_by(instances.c.instance_id)
    .limit(bindparam("b_limit")))
"""One ready task's first waiting instances, if its job is active (an AutoCluster's pool)."""
_WAITING = tasks.c[COUNT_COLUMNS[State.WAITING]]
_WAITING_TASKS = (
    select(tasks.c.job_id, tasks.c.name, jobs.c.tenant, jobs.c.priority,
           _WAITING.label("waiting"))
    .join(jobs, jobs.c.id == tasks.c.job_id)
    .where(jobs.c.state.in_([s.value for s in ACTIVE]),
           func.coalesce(tasks.c.cluster_id, "") == "", tasks.c.ready, _WAITING > 0)
    .order_by(jobs.c.priority.desc(), jobs.c.created, jobs.c.id, tasks.c.name)
    .limit(bindparam("b_limit")))
"""Ready tasks on no cluster of active jobs that have Waiting instances, in launch order.
Walked from the active jobs (jobs' state index, then each one's tasks by key): "" is the
cluster of every task ever submitted without one, so its cluster index is kept out of it
(through a coalesce that changes nothing: the column is never NULL)."""
_ACTIVE_INSTANCE = select(instances.c.instance_id).where(
    instances.c.job_id == bindparam("b_job"), instances.c.task == bindparam("b_task"),
    instances.c.state.in_([State.WAITING.value, State.RUNNING.value])).limit(1)
_COUNTS = [tasks.c[column] for column in COUNT_COLUMNS.values()]
_COUNT_BINDS = {state: f"b_{column}" for state, column in COUNT_COLUMNS.items()}
_ADD_COUNTS = _Many(tasks.update().where(
    tasks.c.job_id == bindparam("b_job"), tasks.c.name == bindparam("b_task")).values(
    {tasks.c[column]: tasks.c[column] + bindparam(_COUNT_BINDS[state])
     for state, column in COUNT_COLUMNS.items()}))
_ADD_TASK_COUNTS = _Many(jobs.update().where(jobs.c.id == bindparam("b_job")).values(
    {jobs.c[column]: jobs.c[column] + bindparam(_COUNT_BINDS[state])
     for state, column in TASK_COUNT_COLUMNS.items()}))
_JOB_TASK_COUNTS = select(*(jobs.c[column] for column in TASK_COUNT_COLUMNS.values())).where(
    jobs.c.id == bindparam("b_id"))
_OF_JOB = tasks.c.job_id == bindparam("b_job")
_NAMED = tasks.c.name.in_(bindparam("b_names", expanding=True))
_TASK_ROWS = (select(tasks).where(_OF_JOB), select(tasks).where(_OF_JOB, _NAMED))
"""A job's task rows: all of them, or those named."""
_TASK_COUNTS = (select(tasks.c.name, *_COUNTS).where(_OF_JOB),
                select(tasks.c.name, *_COUNTS).where(_OF_JOB, _NAMED))
"""A job's tasks' instance counts: of all of them, or of those named."""
_MOVE_TASK = tasks.update().where(_OF_JOB, tasks.c.name == bindparam("b_task"),
                                  tasks.c.state == bindparam("b_source"))
_SET_READY = tasks.update().where(_OF_JOB, _NAMED)
_END_ATTEMPT = _Many(instances.update().where(
    *_ONE_INSTANCE, instances.c.state == State.RUNNING.value,
    instances.c.attempts == bindparam("b_attempt")).values(
    {name: bindparam(name) for name in (
        "state", "ended", "exit_code", "error_code", "error_message", "detail", "stdout_path",
        "stderr_path", "node", "retry_count")}
    | {"started": func.coalesce(bindparam("b_started"), instances.c.started),
       "lost": func.coalesce(bindparam("b_lost"), instances.c.lost)}))
"""An attempt's end: the same parameters for every attempt, so a batch is one executemany
(`started` is the attempt's own start, which a queued lease has later than its Running;
`lost` changes only for a lost attempt)."""


def _instance_counts(connection: Connection, job_id: str,
                     names: Collection[str] | None = None) -> dict[str, Metrics]:
    query = select(instances.c.task, instances.c.state, func.count()).where(
        instances.c.job_id == job_id)
    if names is not None:
        query = query.where(instances.c.task.in_(sorted(names)))
    rows = connection.execute(query.group_by(instances.c.task, instances.c.state)).all()
    per_task: dict[str, dict[State, int]] = {}
    for task, state, count in rows:
        per_task.setdefault(task, {})[State(state)] = count
    return {task: Metrics.from_counts(counts) for task, counts in per_task.items()}


def _of_tasks(statements: tuple[Any, Any], job_id: str, names: Collection[str] | None
              ) -> tuple[Any, dict[str, Any]]:
    """The statement and parameters reading a job's tasks: the named ones (up to MOST_NAMES
    of them in one IN list), or all of them (callers drop those they did not name)."""
    if names is None or len(names) > MOST_NAMES:
        return statements[0], {"b_job": job_id}
    return statements[1], {"b_job": job_id, "b_names": sorted(names)}


def _count_changes(deltas: Mapping[tuple[str, str, State], int]) -> list[dict[str, Any]]:
    """The parameters of one counts UPDATE per (job, task): the change of each count."""
    changes: dict[tuple[str, str], dict[str, Any]] = {}
    for (job_id, task, state), delta in deltas.items():
        row = changes.setdefault((job_id, task), {
            "b_job": job_id, "b_task": task, **dict.fromkeys(_COUNT_BINDS.values(), 0)})
        row[_COUNT_BINDS[state]] += delta
    return list(changes.values())


def _metrics(row: Row[Any]) -> Metrics:
    """A task's instance counts, from its row's count columns."""
    return Metrics.from_counts({state: row._mapping[column]
                                for state, column in COUNT_COLUMNS.items()})



def _instance_row(row: Row[Any]) -> InstanceRow:
    return InstanceRow(row.job_id, row.task, row.instance_id, State(row.state),
                       row.retry_count, row.attempts, row.lost, row.started, row.ended,
                       row.exit_code,
                       row.error_code, row.error_message)


def _end_values(end: AttemptEnd) -> dict[str, Any]:
    """The parameters of `_END_ATTEMPT` for one attempt."""
    key, outcome = end.key, end.outcome
    return {
        "b_job": key.job_id, "b_task": key.task, "b_index": key.instance_id,
        "b_attempt": key.attempt, "state": end.moved_to().value,
        "ended": end.ended, "exit_code": outcome.exit_code,
        "error_code": outcome.error_code.value, "error_message": outcome.error_message,
        "detail": outcome.detail, "stdout_path": outcome.stdout_path,
        "stderr_path": outcome.stderr_path, "node": outcome.node,
        "retry_count": end.retry_count,
        "b_started": outcome.started_at.timestamp() if outcome.started_at else None,
        "b_lost": None if end.lost is KEEP else end.lost,
    }


def _attempt_values(key: AttemptKey, outcome: Outcome) -> dict[str, Any]:
    """An attempts-table row."""
    return {
        "job_id": key.job_id, "task": key.task, "instance_id": key.instance_id,
        "attempt": key.attempt,
        "started": outcome.started_at.timestamp() if outcome.started_at else None,
        "ended": outcome.ended_at.timestamp() if outcome.ended_at else None,
        "exit_code": outcome.exit_code, "error_code": outcome.error_code.value,
        "error_message": outcome.error_message, "stdout_path": outcome.stdout_path,
        "stderr_path": outcome.stderr_path, "worker": outcome.worker,
        "program_started": (outcome.program_started_at.timestamp()
                            if outcome.program_started_at else None),
    }


__all__ = ["GroupCommit", "IdempotencyToken", "LaunchRow", "NewJob", "SqlStore",
           "StoreTransaction", "TokenTaken", "to_time"]
