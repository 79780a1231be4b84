"""The client commands on a data directory, without a server (no endpoint configured).

Reads go through the read service the server uses (`ports.reads`), on the data dir's
database and without the engine lock: SQLite in WAL mode lets them run while a
`batchyard run` works there. Operations take the lock for their duration and
apply the very operation an engine applies (`Engine.stop/restart/delete/change_priority`),
without starting the engine — except `stop` of the job a live `batchyard run` runs, which
interrupts that run as Ctrl-C does (it stops the job and exits 130).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from batchyard.adapters.store import SqlStore
from batchyard.cli.backends import EventBatch
from batchyard.documents import event_view
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import ACTIVE, STOPPABLE, TERMINAL, State
from batchyard.errors import BatchyardError, NotFound
from batchyard.lock import DataDirBusy, DataDirLock, Holder, holder
from batchyard.orchestrator.engine import Engine
from batchyard.ports import ObjectStore
from batchyard.ports.agents import AgentInfo, LeaseBatch
from batchyard.ports.reads import InvalidMarker, JobQueries, Window
from batchyard.runner.reaper import reap_orphans
from batchyard.settings import Settings

INTERRUPT_GRACE_SECONDS = 40.0
"""How long `stop` waits for an interrupted `batchyard run` to record the job and exit."""
_POLL_SECONDS = 0.1


class LocalClient:
    """The `Client` calls on one data directory; the database is opened on first use."""

    def __init__(self, settings: Settings, following: bool = False) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.following = following
        """Whether an active job with no engine on the data dir is an error (JobAbandoned):
        for `watch`, which would wait for it forever."""
        self._store: SqlStore | None = None

    @property
    def where(self) -> str:
        return f"data dir {self.data_dir}"

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def has_database(self) -> bool:
        """False for a data dir no job was ever run in (nothing is created to find out)."""
        url = self.settings.resolved_database_url
        return not url.startswith("sqlite:///") or Path(url[len("sqlite:///"):]).exists()

    @property
    def store(self) -> SqlStore:
        if self._store is None:
            self._store = SqlStore(self.settings.resolved_database_url)
        return self._store

    @property
    def reads(self) -> JobQueries:
        return self.store.reads

    def holder(self) -> Holder | None:
        """What holds the data dir's engine lock now (a `run`, a `serve`), if anything."""
        return holder(self.data_dir)

    # ---- reads ---------------------------------------------------------------------------

    def list_jobs(self, marker: str, count: int,
                  state: State | None) -> tuple[list[JobRecord], str]:
        """A page of every tenant's jobs, newest first, as the server pages them."""
        if not self.has_database():
            return [], ""
        page = self.reads.list_jobs(None, Window(marker, count, state))
        return page.items, page.next_marker

    def job(self, job_id: str) -> JobRecord:
        record = self.reads.job(job_id) if self.has_database() else None
        if record is None:
            raise NotFound(f"job {job_id} does not exist in {self.where}")
        if self.following and record.state in ACTIVE and self.holder() is None:
            raise BatchyardError(
                f"{job_id} ({record.name}) is {record.state.value} but nothing runs it: the "
                f"batchyard run that ran it in {self.where} ended (abandoned); "
                f"batchyard start {job_id} --wait finishes it", code="JobAbandoned")
        return record

    def events(self, cursor: str, count: int, job_id: str = "") -> EventBatch:
        """Every tenant's events after `cursor`, as the server's `GET /events` shows them."""
        if not self.has_database():
            if cursor:
                raise InvalidMarker(f"the cursor {cursor!r} is past every event recorded in "
                                    f"{self.where} (it holds none): start again without one")
            return [], cursor, False
        page = self.reads.events_since(None, cursor, count, job_id or None)
        if job_id and not page.items and self.reads.job_state(job_id) is None:
            raise NotFound(f"job {job_id} does not exist in {self.where}")
        return [event_view(item) for item in page.items], page.cursor, page.more

    def description(self, job_id: str) -> dict[str, Any]:
        return dict(self.job(job_id).description)

    def tasks(self, job_id: str) -> list[TaskRecord]:
        self.job(job_id)
        return self.reads.tasks(job_id)

    def task(self, job_id: str, task: str) -> TaskRecord:
        self.job(job_id)
        page = self.reads.list_tasks(job_id, Window(task, 1), {task})
        if page.items:
            return page.items[0]
        raise NotFound(f"job {job_id} has no task {task!r} (in {self.where})")

    def instances(self, job_id: str, task: str) -> list[InstanceRecord]:
        self.task(job_id, task)
        return self.reads.instances(job_id, task)

    def instance(self, job_id: str, task: str, instance_id: int) -> InstanceRecord:
        self.task(job_id, task)
        record = self.reads.instance(job_id, task, instance_id)
        if record is not None:
            return record
        raise NotFound(f"task {task!r} of job {job_id} has no instance {instance_id} "
                       f"(in {self.where})")

    # ---- operations ----------------------------------------------------------------------

    def stop(self, job_id: str) -> None:
        """Stop the job; the one a live `batchyard run` runs is stopped by interrupting it."""
        held = self.holder()
        if held is not None and held.role == "run" and held.detail == job_id \
                and self.job(job_id).state in STOPPABLE:
            self._interrupt(held, job_id)
            return
        self._operate(job_id, lambda engine: engine.stop(job_id), reap=True)

    def start(self, job_id: str) -> None:
        """Re-queue what did not finish (nothing runs it until an engine opens the data dir:
        `batchyard start --wait` does so and follows it)."""
        self._operate(job_id, lambda engine: engine.restart(job_id))

    def delete(self, job_id: str) -> None:
        self._operate(job_id, lambda engine: engine.delete(job_id))

    def change_priority(self, job_id: str, priority: int) -> None:
        self._operate(job_id, lambda engine: engine.change_priority(job_id, priority))

    def _operate(self, job_id: str, operation: Callable[[Engine], None],
                 reap: bool = False) -> None:
        """Apply one engine operation under the data dir's lock, without running anything.

        `reap`: kill the programs an engine that died left running (as a starting engine
        does), for a stopped job must not keep running.
        """
        self.job(job_id)
        held = self.holder()
        if held is not None:
            raise self.busy(held)
        lock = DataDirLock(self.data_dir, "cli", job_id)
        try:
            if reap:
                reap_orphans(self.settings.work_root)
            operation(Engine(self.store, _objects(self.settings),
                             lambda listener: [_IdleAgent(self.settings.work_root)]))
        finally:
            lock.release()

    def busy(self, held: Holder) -> DataDirBusy:
        """The error for an operation the holder of the data dir must apply itself."""
        if held.role == "serve":
            endpoint = held.detail or "http://HOST:PORT (the address it printed)"
            return DataDirBusy(f"{self.where} is served by `batchyard serve` (pid {held.pid}): "
                               f"use --endpoint {endpoint} (or set BATCHYARD_ENDPOINT)")
        return DataDirBusy(f"{held.describe()} is using {self.where}; wait for it to end "
                           "(`batchyard watch` follows its job) and try again")

    def _interrupt(self, held: Holder, job_id: str) -> None:
        """Ctrl-C for the `run`: it stops the job, reports, releases the lock and exits."""
        if held.pid is None:
            raise self.busy(held)
        with suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(held.pid, signal.SIGINT)
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        while time.monotonic() < deadline:
            if self.job(job_id).state in TERMINAL and self.holder() is None:
                return
            time.sleep(_POLL_SECONDS)
        raise BatchyardError(f"{held.describe()} was interrupted but {job_id} is still "
                             f"{self.job(job_id).state.value} after "
                             f"{INTERRUPT_GRACE_SECONDS:.0f} s", code="StopTimeout")


def _objects(settings: Settings) -> ObjectStore:
    from batchyard.hosting import open_objects  # the agent's modules, loaded when needed

    return open_objects(settings)


class _IdleAgent:
    """The agent of an engine that only applies an operation: it runs nothing."""

    def __init__(self, work_root: Path) -> None:
        self.work_root = work_root

    def info(self) -> AgentInfo:
        return AgentInfo("none", 0, heartbeat=0)

    def lease(self, batch: LeaseBatch) -> None:
        raise BatchyardError("this engine runs nothing")

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        """Nothing runs here; the programs of a dead engine are reaped instead."""

    def forget(self, job_id: str) -> None:
        shutil.rmtree(self.work_root / job_id, ignore_errors=True)

    def shutdown(self) -> None:
        """Nothing to stop."""
