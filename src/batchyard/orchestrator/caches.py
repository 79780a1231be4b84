"""What the engine remembers about jobs, bounded in size so a long-running server does not
grow with every job it has run.

`SpecCache` keeps the parsed descriptions (and tenants) of the jobs used most recently; a
job that fell out is read and parsed again from the store. `BoundedCache` is the
least-recently-used table both it and the engine's record of released jobs are built on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, Protocol, TypeVar

from batchyard.domain.records import JobRecord
from batchyard.domain.spec import JobDescription
from batchyard.errors import NotFound

SPEC_CACHE_SIZE = 1024
"""Parsed descriptions kept (about 30 KB each): enough for every job an engine runs at once
in practice; beyond it a launch or an outcome of an evicted job costs one read and parse."""
RELEASED_KEPT = 1024
"""Final records of AutoRelease jobs kept for `wait` (a waiter wakes within half a second of
the release, long before a thousand more jobs are released)."""

Key = TypeVar("Key")
Value = TypeVar("Value")


class BoundedCache(Generic[Key, Value]):
    """At most `bound` entries; adding one more drops the least recently used. Thread-safe:
    submissions fill it from API threads while the control loop reads it."""

    def __init__(self, bound: int) -> None:
        if bound < 1:
            raise ValueError(f"a cache holds at least one entry, not {bound}")
        self.bound = bound
        self._entries: OrderedDict[Key, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> Value | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Key, value: Value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.bound:
                self._entries.popitem(last=False)

    def pop(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class ReleasedJobs(BoundedCache[str, JobRecord]):
    """Final records of the jobs AutoRelease deleted most recently, kept for `wait`."""

    def __init__(self, bound: int | None = None) -> None:
        super().__init__(bound or RELEASED_KEPT)


@dataclass(frozen=True)
class KnownJob:
    """What launches and outcomes need of a job besides its rows: its parsed description
    and its tenant."""

    spec: JobDescription
    tenant: str

    @cached_property
    def upstreams(self) -> dict[str, set[str]]:
        """Task name -> the tasks it waits for (built once per job, not per settle)."""
        return self.spec.graph()

    @cached_property
    def downstreams(self) -> dict[str, set[str]]:
        """Task name -> the tasks waiting for it."""
        found: dict[str, set[str]] = {name: set() for name in self.upstreams}
        for name, ups in self.upstreams.items():
            for up in ups:
                found[up].add(name)
        return found


class JobReader(Protocol):
    """The one read a miss needs (the store's)."""

    def job(self, job_id: str, tenant: str | None = None) -> JobRecord | None: ...


class SpecCache:
    """Parsed descriptions of the jobs used most recently, read again from the store on a
    miss: each job's description is parsed once while it runs, and memory stays bounded."""

    def __init__(self, store: JobReader, bound: int | None = None) -> None:
        self.store = store
        self._jobs: BoundedCache[str, KnownJob] = BoundedCache(bound or SPEC_CACHE_SIZE)

    @property
    def bound(self) -> int:
        return self._jobs.bound

    def remember(self, job_id: str, spec: JobDescription, tenant: str) -> None:
        """A job just submitted: its description is already parsed."""
        self._jobs.put(job_id, KnownJob(spec, tenant))

    def job(self, job_id: str) -> KnownJob:
        """The job's description and tenant; raises NotFound when the job was deleted."""
        known = self._jobs.get(job_id)
        if known is None:
            record = self.store.job(job_id)
            if record is None:
                raise NotFound(f"job {job_id} does not exist")
            known = KnownJob(JobDescription.model_validate(record.description), record.tenant)
            self._jobs.put(job_id, known)
        return known

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id)

    def __len__(self) -> int:
        return len(self._jobs)
