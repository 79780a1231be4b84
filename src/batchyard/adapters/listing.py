"""Paged reads of jobs, tasks and instances for the REST API (reference §9.6), in SQL.

Each page is a keyset query (`Marker` = the first item of the page, inclusive) fetching one
row more than asked to learn the next marker, plus one grouped count query per page for the
metrics — so a page costs the same whatever the number of jobs or instances.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, and_, func, or_, select
from sqlalchemy.engine import Row

from batchyard.adapters.schema import instances, jobs, tasks
from batchyard.adapters.store import instance_record, to_time
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import State
from batchyard.errors import BatchyardError

Item = TypeVar("Item")
JOB_ID = re.compile(r"^job-([0-9A-F]{16})[0-9A-F]{16}$")
INSTANCE_ID = re.compile(r"^[0-9]{1,9}$")
_EPOCH = datetime.fromtimestamp(0, UTC)


class InvalidMarker(BatchyardError):
    code = "InvalidMarker"
    status = 400


@dataclass(frozen=True)
class Page(Generic[Item]):
    items: list[Item]
    next_marker: str
    """The first item of the next page; "" on the last page."""


@dataclass(frozen=True)
class Window:
    """Which part of a listing to return."""

    marker: str = ""
    limit: int = 50
    state: State | None = None
    reverse: bool = False


def _split(rows: Sequence[Row[Any]], limit: int, marker_of: Any) -> tuple[list[Row[Any]], str]:
    if len(rows) > limit:
        return list(rows[:limit]), str(marker_of(rows[limit]))
    return list(rows), ""


# ---- jobs -------------------------------------------------------------------------------


def list_jobs(database: Engine, tenant: str | None, window: Window) -> Page[JobRecord]:
    """A tenant's jobs (every tenant's with None: the local command line), newest first
    (oldest first when `window.reverse`).

    The records carry no description (`description` is `{}`): lists never show it.
    """
    columns = [column for column in jobs.c if column.name != "description"]
    query = select(*columns)
    if tenant is not None:
        query = query.where(jobs.c.tenant == tenant)
    if window.state is not None:
        query = query.where(jobs.c.state == window.state.value)
    with database.connect() as connection:
        if window.marker:
            query = query.where(_after_marker(connection, tenant, window))
        order = (jobs.c.created, jobs.c.id) if window.reverse else (
            jobs.c.created.desc(), jobs.c.id.desc())
        rows = connection.execute(query.order_by(*order).limit(window.limit + 1)).all()
        page, next_marker = _split(rows, window.limit, lambda row: row.id)
        task_counts = _counts(connection, tasks, [row.id for row in page])
        instance_counts = _counts(connection, instances, [row.id for row in page])
    return Page([_job(row, task_counts.get(row.id, Metrics()),
                      instance_counts.get(row.id, Metrics())) for row in page], next_marker)


def _after_marker(connection: Connection, tenant: str | None, window: Window) -> Any:
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


def _counts(connection: Connection, table: Any, job_ids: list[str]) -> dict[str, Metrics]:
    if not job_ids:
        return {}
    rows = connection.execute(
        select(table.c.job_id, table.c.state, func.count())
        .where(table.c.job_id.in_(job_ids)).group_by(table.c.job_id, table.c.state)).all()
    per_job: dict[str, dict[State, int]] = {}
    for job_id, state, count in rows:
        per_job.setdefault(job_id, {})[State(state)] = count
    return {job_id: Metrics.from_counts(counts) for job_id, counts in per_job.items()}


def _job(row: Row[Any], task_metrics: Metrics, instance_metrics: Metrics) -> JobRecord:
    return JobRecord(
        id=row.id, tenant=row.tenant, name=row.name, priority=row.priority,
        state=State(row.state), message=row.message, created=to_time(row.created) or _EPOCH,
        started=to_time(row.started), ended=to_time(row.ended), task_metrics=task_metrics,
        instance_metrics=instance_metrics, description={})


# ---- tasks ------------------------------------------------------------------------------


def owns_job(database: Engine, job_id: str, tenant: str) -> bool:
    with database.connect() as connection:
        return connection.execute(select(jobs.c.id).where(
            jobs.c.id == job_id, jobs.c.tenant == tenant)).first() is not None


def list_tasks(database: Engine, job_id: str, window: Window,
               names: Iterable[str] | None = None) -> Page[TaskRecord]:
    """A job's tasks by name; `names` restricts them (e.g. to those on one cluster)."""
    query = select(tasks).where(tasks.c.job_id == job_id, tasks.c.name >= window.marker)
    if window.state is not None:
        query = query.where(tasks.c.state == window.state.value)
    if names is not None:
        query = query.where(tasks.c.name.in_(sorted(names)))
    with database.connect() as connection:
        rows = connection.execute(query.order_by(tasks.c.name).limit(window.limit + 1)).all()
        page, next_marker = _split(rows, window.limit, lambda row: row.name)
        counts = _task_counts(connection, job_id, [row.name for row in page])
    return Page([TaskRecord(row.job_id, row.name, State(row.state), to_time(row.started),
                            to_time(row.ended), counts.get(row.name, Metrics()))
                 for row in page], next_marker)


def _task_counts(connection: Connection, job_id: str, names: list[str]) -> dict[str, Metrics]:
    if not names:
        return {}
    rows = connection.execute(
        select(instances.c.task, instances.c.state, func.count())
        .where(instances.c.job_id == job_id, instances.c.task.in_(names))
        .group_by(instances.c.task, instances.c.state)).all()
    per_task: dict[str, dict[State, int]] = {}
    for task, state, count in rows:
        per_task.setdefault(task, {})[State(state)] = count
    return {task: Metrics.from_counts(counts) for task, counts in per_task.items()}


# ---- instances --------------------------------------------------------------------------


def list_instances(database: Engine, job_id: str, task: str,
                   window: Window) -> Page[InstanceRecord]:
    """A task's instances by id, from the instance id in `window.marker` ("" = 0)."""
    first = _instance_marker(window.marker)
    query = select(instances).where(instances.c.job_id == job_id, instances.c.task == task,
                                    instances.c.instance_id >= first)
    if window.state is not None:
        query = query.where(instances.c.state == window.state.value)
    with database.connect() as connection:
        rows = connection.execute(
            query.order_by(instances.c.instance_id).limit(window.limit + 1)).all()
    page, next_marker = _split(rows, window.limit, lambda row: row.instance_id)
    return Page([instance_record(row) for row in page], next_marker)


def instance(database: Engine, job_id: str, task: str, instance_id: int) -> InstanceRecord | None:
    with database.connect() as connection:
        row = connection.execute(select(instances).where(
            instances.c.job_id == job_id, instances.c.task == task,
            instances.c.instance_id == instance_id)).first()
    return None if row is None else instance_record(row)


def has_task(database: Engine, job_id: str, task: str) -> bool:
    with database.connect() as connection:
        return connection.execute(select(tasks.c.name).where(
            tasks.c.job_id == job_id, tasks.c.name == task)).first() is not None


def instance_number(text: str) -> int | None:
    """An instance id written in ASCII digits (at most 9), or None."""
    return int(text) if INSTANCE_ID.match(text) else None


def _instance_marker(marker: str) -> int:
    if not marker:
        return 0
    number = instance_number(marker)
    if number is None:
        raise InvalidMarker(f"Marker must be an instance id (an integer >= 0), got {marker!r}")
    return number
