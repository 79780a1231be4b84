"""The read port: what the API, the command line (and later the console) may ask about jobs.

One service answers every read of jobs, tasks, instances, attempts and events, whole or by
page, so that the REST API, `batchyard job/jobs/log` on a data directory and the engine's
`run` progress all read the same way (implemented by `adapters.reads.SqlReads`).

Rules every implementation keeps:

- Reads take no lock and write nothing: any thread may call them while an engine works.
- `tenant=None` reads every tenant's jobs (the local command line, the engine). With a
  tenant, a job of another tenant reads exactly like a job that does not exist: None, False
  or nothing listed, for every method — attempts and events included.
- A task's state and its instance counts come from one moment (one statement), so a page
  never shows a Waiting task with a running instance.
- Pages are keyset pages (`Window.marker` is the first item of the page, inclusive): a page
  costs the same whatever the number of jobs or instances before it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from batchyard.domain.records import (
    AttemptRecord,
    EventRecord,
    InstanceRecord,
    JobRecord,
    TaskRecord,
)
from batchyard.domain.states import State
from batchyard.errors import BatchyardError

Item = TypeVar("Item")
INSTANCE_ID = re.compile(r"^[0-9]{1,9}$")
EVENT_CURSOR = re.compile(r"^[0-9]{1,18}\Z")


class InvalidMarker(BatchyardError):
    """A `Marker` that is not an item of the listing it pages (400)."""

    code = "InvalidMarker"
    status = 400


@dataclass(frozen=True)
class Page(Generic[Item]):
    items: list[Item]
    next_marker: str
    """The first item of the next page; "" on the last page."""


@dataclass(frozen=True)
class Window:
    """Which part of a listing to return: from `marker` (inclusive; "" = the start), at most
    `limit` items, only those in `state` if given, in reverse order if `reverse` (jobs only:
    oldest first), only jobs whose Name contains `name` if given (jobs only; any case —
    ASCII letters only on SQLite; `%` and `_` are plain characters)."""

    marker: str = ""
    limit: int = 50
    state: State | None = None
    reverse: bool = False
    name: str = ""


@dataclass(frozen=True)
class StreamedEvent:
    """An event as the event stream shows it: the stored row, its job's name, and `seq`,
    its place among its job's events (1 for the submission, then 2, 3 … in commit order)."""

    event: EventRecord
    job_name: str
    seq: int

    @property
    def cursor(self) -> str:
        """Where a stream that has read this event resumes."""
        return str(self.event.id)


@dataclass(frozen=True)
class EventPage:
    items: list[StreamedEvent]
    cursor: str
    """Where to resume: the last item's cursor, or the cursor asked with (no new event)."""
    more: bool
    """Whether more events were there already (read again at once)."""


def event_cursor(text: str) -> int:
    """The event id a cursor names ("" = before the first event); InvalidMarker if it is
    not one (cursors are opaque to clients: they only pass back what they were given)."""
    if not text:
        return 0
    if not EVENT_CURSOR.match(text):
        raise InvalidMarker(f"the cursor {text[:40]!r} is not one the event stream gave: "
                            "pass back the Cursor (or the SSE id) of an earlier answer, or "
                            "none to start at the oldest event")
    return int(text)


def instance_number(text: str) -> int | None:
    """An instance id written in ASCII digits (at most 9), or None: how an instance is named
    in a path or a marker."""
    return int(text) if INSTANCE_ID.match(text) else None


class JobQueries(Protocol):
    """Jobs, tasks, instances, attempts and events as records (see the module's rules)."""

    # jobs
    def job(self, job_id: str, tenant: str | None = None) -> JobRecord | None:
        """One job with its metrics and description (None: no such job, or not `tenant`'s)."""
        ...

    def job_state(self, job_id: str, tenant: str | None = None) -> State | None:
        """Just the job's state: cheaper than `job` (no metrics, no description)."""
        ...

    def owns_job(self, job_id: str, tenant: str) -> bool:
        """Whether the job exists and is `tenant`'s."""
        ...

    def jobs(self, tenant: str | None = None, state: State | None = None) -> list[JobRecord]:
        """Every job (of `tenant`, in `state`), newest first, with metrics and description."""
        ...

    def list_jobs(self, tenant: str | None, window: Window) -> Page[JobRecord]:
        """A page of jobs newest first (oldest first with `window.reverse`); the records carry
        no description (`{}`): lists never show it. InvalidMarker: not a job id."""
        ...

    def job_counts(self, tenant: str | None, name: str = "") -> dict[State, int]:
        """How many of the tenant's jobs (whose Name contains `name`, as `Window.name`) are
        in each state: every state a key, 0 when none (one grouped query)."""
        ...

    def tenant_of(self, job_id: str) -> str | None:
        """The tenant owning the job (None: no such job). Internal: never for a caller to
        learn who owns a job of another tenant (the console's live hub routes changes)."""
        ...

    # tasks
    def tasks(self, job_id: str, tenant: str | None = None) -> list[TaskRecord]:
        """The job's tasks by name, with their instance counts."""
        ...

    def has_task(self, job_id: str, task: str, tenant: str | None = None) -> bool: ...

    def list_tasks(self, job_id: str, window: Window, names: Collection[str] | None = None,
                   tenant: str | None = None) -> Page[TaskRecord]:
        """A page of the job's tasks by name; `names` keeps only those (one cluster's)."""
        ...

    # instances
    def instances(self, job_id: str, task: str,
                  tenant: str | None = None) -> list[InstanceRecord]:
        """The task's instances by id."""
        ...

    def list_instances(self, job_id: str, task: str, window: Window,
                       tenant: str | None = None) -> Page[InstanceRecord]:
        """A page of the task's instances by id; the marker is an instance id (InvalidMarker:
        not one)."""
        ...

    def instance(self, job_id: str, task: str, instance_id: int,
                 tenant: str | None = None) -> InstanceRecord | None: ...

    # history
    def attempts(self, job_id: str, task: str, instance_id: int,
                 tenant: str | None = None) -> list[AttemptRecord]:
        """The instance's attempts, first first."""
        ...

    def events(self, job_id: str, tenant: str | None = None) -> list[EventRecord]:
        """The job's events in the order they were recorded."""
        ...

    def events_since(self, tenant: str | None, cursor: str, limit: int,
                     job_id: str | None = None) -> EventPage:
        """At most `limit` events committed after `cursor` ("" = from the oldest), oldest
        first: of `tenant`'s jobs (None: every job), of `job_id` only if given. A keyset read
        on the event id: the same cost wherever the cursor is. InvalidMarker: a cursor that
        is malformed or past every event ever recorded (another database's)."""
        ...
