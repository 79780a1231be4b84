"""The read port (`ports.reads.JobQueries`) on SQLAlchemy Core: every read of jobs, tasks,
instances, attempts and events, whole or by keyset page, for the API, the command line and
the engine. Rows become records here, and only here.

Each read runs on its own connection, outside any transaction the engine holds. What must be
of one moment is read by one statement: a job with its task and instance counts, a task with
its instance counts. A page is a keyset query fetching one row more than asked (to learn the
next marker), plus one grouped count query for the page's metrics, so a page costs the same
whatever the number of jobs or instances.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.engine import Row

from batchyard.adapters.schema import attempts, events, instances, jobs, tasks
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import (
    AttemptRecord,
    EventRecord,
    InstanceRecord,
    JobRecord,
    TaskRecord,
)
from batchyard.domain.states import State
from batchyard.ports.reads import InvalidMarker, Page, Window, instance_number

Item = TypeVar("Item")
JOB_ID = re.compile(r"^job-([0-9A-F]{16})[0-9A-F]{16}$")
_EPOCH = datetime.fromtimestamp(0, UTC)


def to_time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SqlReads:
    """Records read from the state store's database (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- jobs ----------------------------------------------------------------------------

    def job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """The job row and its task and instance counts in ONE statement: one round trip,
        and counts of the same moment as the state (the API's hottest read)."""
        statement = _JOB_WITH_COUNTS if tenant is None else _TENANT_JOB_WITH_COUNTS
        with self.engine.connect() as connection:
            rows = connection.execute(statement, {"b_job": job_id, "b_tenant": tenant}).all()
        head = next((row for row in rows if row.kind == "job"), None)
        if head is None:
            return None
        counts: dict[str, dict[State, int]] = {"task": {}, "instance": {}}
        for row in rows:
            if row.kind != "job":
                counts[row.kind][State(row.state)] = row.total
        return job_record(head, Metrics.from_counts(counts["task"]),
                          Metrics.from_counts(counts["instance"]), json.loads(head.description))

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
        query = _job_filter(select(jobs), tenant, state)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(jobs.c.created.desc(),
                                                     jobs.c.id.desc())).all()
            return _with_metrics(connection, rows, lambda row: json.loads(row.description))

    def list_jobs(self, tenant: str | None, window: Window) -> Page[JobRecord]:
        query = _job_filter(select(*_LISTED_JOB_COLUMNS), tenant, window.state)
        with self.engine.connect() as connection:
            if window.marker:
                query = query.where(_after_marker(connection, tenant, window))
            order = (jobs.c.created, jobs.c.id) if window.reverse else (
                jobs.c.created.desc(), jobs.c.id.desc())
            rows = connection.execute(query.order_by(*order).limit(window.limit + 1)).all()
            page, next_marker = _split(rows, window.limit, lambda row: row.id)
            return Page(_with_metrics(connection, page, lambda row: {}), next_marker)

    # ---- tasks ---------------------------------------------------------------------------

    def tasks(self, job_id: str, tenant: str | None = None) -> list[TaskRecord]:
        """The job's tasks with their instance counts, read by ONE statement: a task's state
        and its counts are of the same moment (two statements could straddle a commit and
        show a Waiting task with a running instance)."""
        query = _TASKS_WITH_COUNTS.where(_owned_by(job_id, tenant))
        with self.engine.connect() as connection:
            rows = connection.execute(query, {"b_job": job_id}).all()
        counts: dict[str, dict[State, int]] = {}
        found: dict[str, Row[Any]] = {}
        for row in rows:
            found.setdefault(row.name, row)
            if row.instance_state is not None:
                counts.setdefault(row.name, {})[State(row.instance_state)] = row.total
        return [task_record(row, Metrics.from_counts(counts.get(name, {})))
                for name, row in found.items()]

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
            counts = _task_counts(connection, job_id, [row.name for row in page])
        return Page([task_record(row, counts.get(row.name, Metrics())) for row in page],
                    next_marker)

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


# ---- rows to records ---------------------------------------------------------------------

def job_record(row: Row[Any], task_metrics: Metrics, instance_metrics: Metrics,
               description: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=row.id, tenant=row.tenant, name=row.name, priority=row.priority,
        state=State(row.state), message=row.message, created=to_time(row.created) or _EPOCH,
        started=to_time(row.started), ended=to_time(row.ended), task_metrics=task_metrics,
        instance_metrics=instance_metrics, description=description)


def task_record(row: Row[Any], instance_metrics: Metrics) -> TaskRecord:
    return TaskRecord(row.job_id, row.name, State(row.state), to_time(row.started),
                      to_time(row.ended), instance_metrics)


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
                         row.error_code, row.error_message, row.stdout_path, row.stderr_path)


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


def _job_filter(query: Select[Any], tenant: str | None, state: State | None) -> Select[Any]:
    if tenant is not None:
        query = query.where(jobs.c.tenant == tenant)
    if state is not None:
        query = query.where(jobs.c.state == state.value)
    return query


def _instances_of(job_id: str, task: str, tenant: str | None) -> Select[Any]:
    return select(instances).where(instances.c.job_id == job_id, instances.c.task == task,
                                   _owned_by(job_id, tenant))


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
    """Records of job rows, their counts read by one grouped query per table."""
    ids = [row.id for row in rows]
    task_counts = _counts(connection, tasks, ids)
    instance_counts = _counts(connection, instances, ids)
    return [job_record(row, task_counts.get(row.id, Metrics()),
                       instance_counts.get(row.id, Metrics()), description(row))
            for row in rows]


def _counts(connection: Connection, table: Any, job_ids: list[str]) -> dict[str, Metrics]:
    if not job_ids:
        return {}
    rows = connection.execute(
        select(table.c.job_id, table.c.state, func.count())
        .where(table.c.job_id.in_(job_ids)).group_by(table.c.job_id, table.c.state)).all()
    return _metrics_by_key(rows)


def _task_counts(connection: Connection, job_id: str, names: list[str]) -> dict[str, Metrics]:
    if not names:
        return {}
    rows = connection.execute(
        select(instances.c.task, instances.c.state, func.count())
        .where(instances.c.job_id == job_id, instances.c.task.in_(names))
        .group_by(instances.c.task, instances.c.state)).all()
    return _metrics_by_key(rows)


def _metrics_by_key(rows: Sequence[Sequence[Any]]) -> dict[str, Metrics]:
    """(key, state, count) rows as Metrics per key."""
    per_key: dict[str, dict[State, int]] = {}
    for key, state, count in rows:
        per_key.setdefault(key, {})[State(state)] = count
    return {key: Metrics.from_counts(counts) for key, counts in per_key.items()}


# ---- statements built once (values bound per call) ---------------------------------------

_LISTED_JOB_COLUMNS = [column for column in jobs.c if column.name != "description"]
"""A listing never shows descriptions (each holds every task: megabytes for big jobs)."""


def _counts_of(table: Any, kind: str) -> Select[Any]:
    """(kind, state, count) of a job's rows in `table`, padded to the job row's columns."""
    return (select(literal(kind), table.c.state, func.count(), *[null()] * 9)
            .where(table.c.job_id == bindparam("b_job")).group_by(table.c.state))


_JOB_HEAD = select(literal("job").label("kind"), jobs.c.state, literal(1).label("total"),
                   jobs.c.id, jobs.c.tenant, jobs.c.name, jobs.c.priority, jobs.c.message,
                   jobs.c.created, jobs.c.started, jobs.c.ended, jobs.c.description
                   ).where(jobs.c.id == bindparam("b_job"))
_JOB_WITH_COUNTS = union_all(_JOB_HEAD, _counts_of(tasks, "task"),
                             _counts_of(instances, "instance"))
_TENANT_JOB_WITH_COUNTS = union_all(
    _JOB_HEAD.where(jobs.c.tenant == bindparam("b_tenant")), _counts_of(tasks, "task"),
    _counts_of(instances, "instance"))
_TASKS_WITH_COUNTS = (
    select(tasks.c.job_id, tasks.c.name, tasks.c.state, tasks.c.started, tasks.c.ended,
           instances.c.state.label("instance_state"),
           func.count(instances.c.instance_id).label("total"))
    .select_from(tasks.outerjoin(instances, (instances.c.job_id == tasks.c.job_id)
                                 & (instances.c.task == tasks.c.name)))
    .where(tasks.c.job_id == bindparam("b_job"))
    .group_by(tasks.c.job_id, tasks.c.name, tasks.c.state, tasks.c.started, tasks.c.ended,
              instances.c.state)
    .order_by(tasks.c.name))


__all__ = ["SqlReads", "attempt_record", "event_record", "instance_record", "job_record",
           "task_record", "to_time"]
