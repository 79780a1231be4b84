"""The read port (`ports.reads.JobQueries`) on SQLAlchemy Core: every read of jobs, tasks,
instances, attempts and events, whole or by keyset page, for the API, the command line and
the engine. Rows become records here, and only here.

Each read runs on its own connection, outside any transaction the engine holds. What must be
of one moment is read by one statement: a job with its task and instance counts, a task with
its instance counts. Counts are kept in rows by the store, in the same transaction as the
states they count: a task's instances per state in the task row (`schema.COUNT_COLUMNS`), a
job's tasks per state in the job row (`schema.TASK_COUNT_COLUMNS`). So no read counts rows: a
job of 100,000 instances costs what a job of one does (its instances per state are the sum
over its task rows). A page is a keyset query fetching one row more than asked (to learn the
next marker), plus one grouped query over the page's tasks for the jobs' instance counts, so
a page costs the same whatever the number of jobs or instances.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Row
from sqlalchemy.sql.compiler import SQLCompiler

from batchyard.adapters.schema import (
    COUNT_COLUMNS,
    TASK_COUNT_COLUMNS,
    attempts,
    events,
    instances,
    job_descriptions,
    jobs,
    tasks,
)
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import (
    AttemptRecord,
    EventRecord,
    InstanceRecord,
    JobRecord,
    TaskRecord,
)
from batchyard.domain.states import State
from batchyard.ports.reads import (
    EventPage,
    InvalidMarker,
    Page,
    StreamedEvent,
    Window,
    event_cursor,
    instance_number,
)

JOB_ID = re.compile(r"^job-([0-9A-F]{16})[0-9A-F]{16}$")
_EPOCH = datetime.fromtimestamp(0, UTC)


def to_time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SqliteFile:
    """Plain `sqlite3` connections to the SQLite database file behind an engine, one per
    thread, for the few reads every API request makes (a job, an access key).

    SQLAlchemy's way to a row — a pool checkout, an execution context, a result object —
    costs several times the statement itself (about 70 µs against 15 µs for the job read).
    These connections autocommit: each statement reads the newest committed state (WAL
    mode), exactly as a fresh pooled connection would, and holds no snapshot afterwards.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    @classmethod
    def behind(cls, engine: Engine) -> SqliteFile | None:
        """The file of `engine`, or None when it is not a plain SQLite file (PostgreSQL,
        memory, or a URL with options such as `?mode=ro&uri=true`: SQLAlchemy's way then)."""
        path = engine.url.database
        if (engine.dialect.name != "sqlite" or not path or path == ":memory:"
                or engine.url.query):
            return None
        return cls(path)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, closed with this object)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                         cached_statements=32)
            self._local.connection = connection
        return connection


class CompiledQuery:
    """A SELECT compiled once for SQLite, run on a `SqliteFile` connection; its rows are
    named tuples with the statement's column names, read like SQLAlchemy rows (`row.id`)."""

    def __init__(self, statement: Select[Any], dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self.parameters = list(compiled.positiontup or [])
        self.row: Any = namedtuple("row", list(statement.selected_columns.keys()))  # type: ignore[misc]

    def first(self, file: SqliteFile, values: dict[str, Any]) -> Any:
        """The first row for the bound `values`, or None."""
        cursor = file.connection().execute(self.sql, [values[name] for name in self.parameters])
        try:
            found = cursor.fetchone()
        finally:
            cursor.close()  # ends the read: no snapshot is held until the next statement
        return None if found is None else self.row._make(found)


class SqlReads:
    """Records read from the state store's database (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._file = SqliteFile.behind(engine)

    # ---- jobs ----------------------------------------------------------------------------

    def job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """The job row with its task and instance counts in ONE statement: one round trip,
        and counts of the same moment as the state (the API's hottest read; on a plain
        sqlite3 connection with SQLite, see `SqliteFile`)."""
        statement = _JOB_WITH_TOTALS if tenant is None else _TENANT_JOB_WITH_TOTALS
        values = {"b_job": job_id, "b_tenant": tenant}
        if self._file is not None:
            row = _SQLITE_JOB[tenant is not None].first(self._file, values)
        else:
            with self.engine.connect() as connection:
                row = connection.execute(statement, values).first()
        if row is None:
            return None
        return job_record(row, *_job_metrics(row, row), json.loads(row.description))

    def job_status(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """`job` without the description (`{}`): what `GET /jobs/{id}` shows, without
        reading a description of possibly megabytes and parsing it for nothing."""
        values = {"b_job": job_id, "b_tenant": tenant}
        if self._file is not None:
            row = _SQLITE_JOB_STATUS[tenant is not None].first(self._file, values)
        else:
            statement = _JOB_STATUS if tenant is None else _TENANT_JOB_STATUS
            with self.engine.connect() as connection:
                row = connection.execute(statement, values).first()
        return None if row is None else job_record(row, *_job_metrics(row, row), {})

    def job_state(self, job_id: str, tenant: str | None = None) -> State | None:
        query = select(jobs.c.state).where(jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        with self.engine.connect() as connection:
            state = connection.execute(query).scalar()
        return None if state is None else State(state)

    def owns_job(self, job_id: str, tenant: str) -> bool:
        return self.job_state(job_id, tenant) is not None

    def jobs(self, tenant: str | None = None, state: State | None = None) -> list[JobRecord]:
        """Every job newest first: one query for the jobs, one per table for their counts."""
        query = _job_filter(select(jobs, job_descriptions.c.description).select_from(
            jobs.join(job_descriptions, job_descriptions.c.job_id == jobs.c.id)), tenant, state)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(jobs.c.created.desc(),
                                                     jobs.c.id.desc())).all()
            return _with_metrics(connection, rows, lambda row: json.loads(row.description))

    def list_jobs(self, tenant: str | None, window: Window) -> Page[JobRecord]:
        query = _job_filter(select(*_LISTED_JOB_COLUMNS), tenant, window.state, window.name)
        with self.engine.connect() as connection:
            if window.marker:
                query = query.where(_after_marker(connection, tenant, window))
            order = (jobs.c.created, jobs.c.id) if window.reverse else (
                jobs.c.created.desc(), jobs.c.id.desc())
            rows = connection.execute(query.order_by(*order).limit(window.limit + 1)).all()
            page, next_marker = _split(rows, window.limit, lambda row: row.id)
            return Page(_with_metrics(connection, page, lambda row: {}), next_marker)

    def job_counts(self, tenant: str | None, name: str = "") -> dict[State, int]:
        query = _job_filter(select(jobs.c.state, func.count()), tenant, None, name)
        with self.engine.connect() as connection:
            rows = connection.execute(query.group_by(jobs.c.state)).all()
        counts = dict.fromkeys(State, 0)
        for state, count in rows:
            counts[State(state)] = count
        return counts

    def tenant_of(self, job_id: str) -> str | None:
        values = {"b_job": job_id}
        if self._file is not None:
            row = _SQLITE_TENANT.first(self._file, values)
        else:
            with self.engine.connect() as connection:
                row = connection.execute(_TENANT_OF, values).first()
        return None if row is None else str(row.tenant)

    # ---- tasks ---------------------------------------------------------------------------

    def tasks(self, job_id: str, tenant: str | None = None) -> list[TaskRecord]:
        """The job's tasks with their instance counts: each task's state and counts are one
        row, so of the same moment (two statements could straddle a commit and show a
        Waiting task with a running instance)."""
        query = (select(tasks).where(tasks.c.job_id == job_id, _owned_by(job_id, tenant))
                 .order_by(tasks.c.name))
        with self.engine.connect() as connection:
            return [task_record(row) for row in connection.execute(query)]

    def has_task(self, job_id: str, task: str, tenant: str | None = None) -> bool:
        query = select(tasks.c.name).where(tasks.c.job_id == job_id, tasks.c.name == task,
                                           _owned_by(job_id, tenant))
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def list_tasks(self, job_id: str, window: Window, names: Collection[str] | None = None,
                   tenant: str | None = None) -> Page[TaskRecord]:
        query = select(tasks).where(tasks.c.job_id == job_id, tasks.c.name >= window.marker,
                                    _owned_by(job_id, tenant))
        if window.state is not None:
            query = query.where(tasks.c.state == window.state.value)
        if names is not None:
            query = query.where(tasks.c.name.in_(sorted(names)))
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(tasks.c.name).limit(window.limit + 1)).all()
        page, next_marker = _split(rows, window.limit, lambda row: row.name)
        return Page([task_record(row) for row in page], next_marker)

    # ---- instances -----------------------------------------------------------------------

    def instances(self, job_id: str, task: str,
                  tenant: str | None = None) -> list[InstanceRecord]:
        query = _instances_of(job_id, task, tenant).order_by(instances.c.instance_id)
        with self.engine.connect() as connection:
            return [instance_record(row) for row in connection.execute(query)]

    def list_instances(self, job_id: str, task: str, window: Window,
                       tenant: str | None = None) -> Page[InstanceRecord]:
        query = _instances_of(job_id, task, tenant).where(
            instances.c.instance_id >= _instance_marker(window.marker))
        if window.state is not None:
            query = query.where(instances.c.state == window.state.value)
        with self.engine.connect() as connection:
            rows = connection.execute(
                query.order_by(instances.c.instance_id).limit(window.limit + 1)).all()
        page, next_marker = _split(rows, window.limit, lambda row: row.instance_id)
        return Page([instance_record(row) for row in page], next_marker)

    def instance(self, job_id: str, task: str, instance_id: int,
                 tenant: str | None = None) -> InstanceRecord | None:
        query = _instances_of(job_id, task, tenant).where(
            instances.c.instance_id == instance_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else instance_record(row)

    # ---- history -------------------------------------------------------------------------

    def attempts(self, job_id: str, task: str, instance_id: int,
                 tenant: str | None = None) -> list[AttemptRecord]:
        query = (select(attempts)
                 .where(attempts.c.job_id == job_id, attempts.c.task == task,
                        attempts.c.instance_id == instance_id, _owned_by(job_id, tenant))
                 .order_by(attempts.c.attempt))
        with self.engine.connect() as connection:
            return [attempt_record(row) for row in connection.execute(query)]

    def events(self, job_id: str, tenant: str | None = None) -> list[EventRecord]:
        query = (select(events).where(events.c.job_id == job_id, _owned_by(job_id, tenant))
                 .order_by(events.c.id))
        with self.engine.connect() as connection:
            return [event_record(row) for row in connection.execute(query)]

    def events_since(self, tenant: str | None, cursor: str, limit: int,
                     job_id: str | None = None) -> EventPage:
        """A keyset read on the event id (the primary key), joined to the jobs for the tenant
        and job name; then one indexed count per job on the page for its first `Seq`.

        On PostgreSQL, writers commit concurrently (a submission beside an engine step), so
        a smaller id could commit after a larger one was read, behind a reader's cursor. The
        read holds a SHARE lock on the events table for its few milliseconds: it waits for
        every transaction that inserted an event to end, and no insert starts meanwhile, so
        every id below the newest it sees is settled (committed or rolled back). SQLite's
        writers commit one at a time, in id order."""
        after = event_cursor(cursor)
        query = (select(events, jobs.c.name.label("job_name"))
                 .select_from(events.join(jobs, jobs.c.id == events.c.job_id))
                 .where(events.c.id > after))
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        if job_id is not None:
            query = query.where(events.c.job_id == job_id)
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(_SETTLE_EVENTS)
            rows = connection.execute(query.order_by(events.c.id).limit(limit + 1)).all()
            if not rows and after > _last_event_id(connection):
                raise InvalidMarker(f"the cursor {cursor!r} is past every event this server "
                                    "recorded (a cursor of another server?): start again "
                                    "without one")
            page = rows[:limit]
            seqs = _seqs(connection, page)
        items = [StreamedEvent(event_record(row), row.job_name, seq)
                 for row, seq in zip(page, seqs, strict=True)]
        return EventPage(items, items[-1].cursor if items else cursor, len(rows) > limit)


# ---- rows to records ---------------------------------------------------------------------

def job_record(row: Row[Any], task_metrics: Metrics, instance_metrics: Metrics,
               description: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=row.id, tenant=row.tenant, name=row.name, priority=row.priority,
        state=State(row.state), message=row.message, created=to_time(row.created) or _EPOCH,
        started=to_time(row.started), ended=to_time(row.ended), task_metrics=task_metrics,
        instance_metrics=instance_metrics, description=description)


def task_record(row: Row[Any]) -> TaskRecord:
    """A tasks-table row, with the instance counts it keeps."""
    return TaskRecord(row.job_id, row.name, State(row.state), to_time(row.started),
                      to_time(row.ended), _counted(row, INSTANCE_COUNTS))


def instance_record(row: Row[Any]) -> InstanceRecord:
    return InstanceRecord(
        job_id=row.job_id, task=row.task, instance_id=row.instance_id, state=State(row.state),
        retry_count=row.retry_count, attempts=row.attempts, started=to_time(row.started),
        ended=to_time(row.ended), exit_code=row.exit_code, error_code=row.error_code,
        error_message=row.error_message, detail=row.detail, stdout_path=row.stdout_path,
        stderr_path=row.stderr_path, node=row.node)


def attempt_record(row: Row[Any]) -> AttemptRecord:
    return AttemptRecord(row.job_id, row.task, row.instance_id, row.attempt,
                         to_time(row.started), to_time(row.ended), row.exit_code,
                         row.error_code, row.error_message, row.stdout_path, row.stderr_path,
                         row.worker, to_time(row.program_started))


def event_record(row: Row[Any]) -> EventRecord:
    return EventRecord(row.id, row.job_id, row.task, row.instance_id, row.kind, row.source,
                       row.target, datetime.fromtimestamp(row.time, UTC), row.message)


# ---- query parts -------------------------------------------------------------------------

def _owned_by(job_id: str, tenant: str | None) -> ColumnElement[bool]:
    """Every row when `tenant` is None; else none unless the job is `tenant`'s (so another
    tenant's job reads exactly like a missing one)."""
    if tenant is None:
        return true()
    return exists().where(jobs.c.id == job_id, jobs.c.tenant == tenant)


def _job_filter(query: Select[Any], tenant: str | None, state: State | None,
                name: str = "") -> Select[Any]:
    if tenant is not None:
        query = query.where(jobs.c.tenant == tenant)
    if state is not None:
        query = query.where(jobs.c.state == state.value)
    if name:  # `%` and `_` match themselves (escaped); any case (lower() on SQLite)
        query = query.where(jobs.c.name.icontains(name, autoescape=True))
    return query


def _instances_of(job_id: str, task: str, tenant: str | None) -> Select[Any]:
    return select(instances).where(instances.c.job_id == job_id, instances.c.task == task,
                                   _owned_by(job_id, tenant))


def _seqs(connection: Connection, rows: Sequence[Row[Any]]) -> list[int]:
    """Each event's place among its job's events (1-based, in id order): the events of its
    job before the page's first one of that job, counted once (index (job_id, id)), then one
    more per event of the job on the page (a page holds every event of a job in its range)."""
    seen: dict[str, int] = {}
    seqs = []
    for row in rows:
        if row.job_id not in seen:
            seen[row.job_id] = connection.execute(
                _EARLIER_EVENTS, {"b_job": row.job_id, "b_id": row.id}).scalar_one()
        seen[row.job_id] += 1
        seqs.append(seen[row.job_id])
    return seqs


def _last_event_id(connection: Connection) -> int:
    """The largest event id ever handed out (deleted rows included where the database
    keeps it: SQLite's AUTOINCREMENT, PostgreSQL's sequence), 0 when none was."""
    if connection.dialect.name == "sqlite":
        issued = connection.execute(text(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'")).scalar()
    elif connection.dialect.name == "postgresql":
        issued = connection.execute(text(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'id'))")).scalar()
    else:
        issued = None
    newest = connection.execute(select(func.max(events.c.id))).scalar()
    return max(issued or 0, newest or 0)


def _split(rows: Sequence[Row[Any]], limit: int,
           marker_of: Callable[[Row[Any]], object]) -> tuple[list[Row[Any]], str]:
    if len(rows) > limit:
        return list(rows[:limit]), str(marker_of(rows[limit]))
    return list(rows), ""


def _after_marker(connection: Connection, tenant: str | None,
                  window: Window) -> ColumnElement[bool]:
    """Rows at or past the marker job in the listing order."""
    marker = select(jobs.c.created).where(jobs.c.id == window.marker)
    if tenant is not None:
        marker = marker.where(jobs.c.tenant == tenant)
    created = connection.execute(marker).scalar()
    if created is None:
        created = _created_from_id(window.marker)
    if window.reverse:
        return or_(jobs.c.created > created,
                   and_(jobs.c.created == created, jobs.c.id >= window.marker))
    return or_(jobs.c.created < created,
               and_(jobs.c.created == created, jobs.c.id <= window.marker))


def _created_from_id(job_id: str) -> float:
    """A deleted marker job still has a place in the order: its id starts with its time."""
    match = JOB_ID.match(job_id)
    if match is None:
        raise InvalidMarker(f"Marker {job_id!r} is not a job id")
    return int(match.group(1), 16) / 1e9


def _instance_marker(marker: str) -> int:
    if not marker:
        return 0
    number = instance_number(marker)
    if number is None:
        raise InvalidMarker(f"Marker must be an instance id (an integer >= 0), got {marker!r}")
    return number


def _with_metrics(connection: Connection, rows: Sequence[Row[Any]],
                  description: Callable[[Row[Any]], dict[str, Any]]) -> list[JobRecord]:
    """Records of job rows, their instance counts summed over their task rows by one query."""
    totals: dict[str, Row[Any]] = {}
    if rows:
        query = _TOTALS.where(tasks.c.job_id.in_([row.id for row in rows]))
        totals = {total.job_id: total for total in connection.execute(query)}
    return [job_record(row, *_job_metrics(row, totals.get(row.id, row)), description(row))
            for row in rows]


def _job_metrics(row: Row[Any], totals: Row[Any]) -> tuple[Metrics, Metrics]:
    """A job's tasks per state (its row's counts) and instances per state (`totals`: summed
    over its task rows)."""
    return _counted(row, TASK_COUNTS), _counted(totals, INSTANCE_COUNTS)


def _counted(row: Any, columns: dict[State, str]) -> Metrics:
    """Metrics from a row's count columns (a sum over no task is NULL: 0; a row without
    them — a job none of whose tasks were summed — counts 0 too)."""
    return Metrics.from_counts({state: getattr(row, column, None) or 0
                                for state, column in columns.items()})


# ---- statements built once (values bound per call) ---------------------------------------

_LISTED_JOB_COLUMNS = list(jobs.c)
"""A listing never shows descriptions (each holds every task: megabytes for big jobs)."""


INSTANCE_COUNTS = COUNT_COLUMNS
"""The tasks-table column counting a task's instances in each state."""
TASK_COUNTS = TASK_COUNT_COLUMNS
"""The jobs-table column counting a job's tasks in each state."""
_TOTALS = (
    select(tasks.c.job_id,
           *[func.sum(tasks.c[column]).label(column) for column in INSTANCE_COUNTS.values()])
    .group_by(tasks.c.job_id))
"""Per job: its instances in each state (the sums of its tasks' counts)."""
_JOB_TOTALS = _TOTALS.where(tasks.c.job_id == bindparam("b_job")).subquery()
_JOB_WITH_TOTALS = (
    select(jobs, job_descriptions.c.description,
           *[column for column in _JOB_TOTALS.c if column.name != "job_id"])
    .select_from(jobs.join(job_descriptions, job_descriptions.c.job_id == jobs.c.id)
                 .outerjoin(_JOB_TOTALS, _JOB_TOTALS.c.job_id == jobs.c.id))
    .where(jobs.c.id == bindparam("b_job")))
_TENANT_JOB_WITH_TOTALS = _JOB_WITH_TOTALS.where(jobs.c.tenant == bindparam("b_tenant"))
_JOB_STATUS = (
    select(jobs, *[column for column in _JOB_TOTALS.c if column.name != "job_id"])
    .select_from(jobs.outerjoin(_JOB_TOTALS, _JOB_TOTALS.c.job_id == jobs.c.id))
    .where(jobs.c.id == bindparam("b_job")))
_TENANT_JOB_STATUS = _JOB_STATUS.where(jobs.c.tenant == bindparam("b_tenant"))
_SQLITE_JOB = {tenanted: CompiledQuery(statement, sqlite_dialect.dialect())
               for tenanted, statement in ((False, _JOB_WITH_TOTALS),
                                           (True, _TENANT_JOB_WITH_TOTALS))}
_SQLITE_JOB_STATUS = {tenanted: CompiledQuery(statement, sqlite_dialect.dialect())
                      for tenanted, statement in ((False, _JOB_STATUS),
                                                  (True, _TENANT_JOB_STATUS))}
"""The same statements, compiled once for `SqliteFile` connections."""
_SETTLE_EVENTS = text("LOCK TABLE events IN SHARE MODE")
_EARLIER_EVENTS = (select(func.count()).select_from(events)
                   .where(events.c.job_id == bindparam("b_job"), events.c.id < bindparam("b_id")))
_TENANT_OF = select(jobs.c.tenant).where(jobs.c.id == bindparam("b_job"))
_SQLITE_TENANT = CompiledQuery(_TENANT_OF, sqlite_dialect.dialect())


__all__ = ["CompiledQuery", "SqlReads", "SqliteFile", "attempt_record", "event_record",
           "instance_record", "job_record", "task_record", "to_time"]
