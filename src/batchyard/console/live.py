"""The change hub behind the console's server-sent events: which jobs changed, told to the
pages that watch them, coalesced so a busy job does not flood a browser.

`Changes` is a transition listener (`engine.listen`): on an engine thread, after each commit,
it bumps the version of every job the commit moved and pokes the asyncio waiters watching
that job or its tenant (`loop.call_soon_threadsafe`, at most one pending poke per waiter,
however many transitions come). The event streams iterate `job_changes` / `tenant_changes`:
one item at once for the first change, then at most one per `interval` for everything that
came meanwhile — a job of 100,000 instances ending 2,000 a second yields about four events a
second. An item says only "changed": the page re-reads what it shows.

Memory stays flat: versions and job owners are kept for at most `remembered` jobs (least
recently changed forgotten first; an owner forgotten is read again with `tenant_of`), and a
watcher leaves its table when its stream ends (cancelled, closed or garbage-collected). A
tenant's watchers hear only of that tenant's jobs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import suppress
from typing import TypeVar

from fastapi import Request

from batchyard.api.services import services_of
from batchyard.domain.states import Transition
from batchyard.ports.listeners import TransitionListener

log = logging.getLogger(__name__)
Value = TypeVar("Value")
REMEMBERED = 10_000
"""Jobs whose version and owner the hub keeps (each about 150 bytes)."""


class _Watcher:
    """One stream's wake-up: an asyncio event of its loop, set from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.poked = False
        """A wake-up is on its way (guarded by the hub's lock): no second one is sent."""

    def poke(self) -> None:
        """Called under the hub's lock, on any thread."""
        if self.poked:
            return
        self.poked = True
        with suppress(RuntimeError):  # its loop is closed: the stream is gone
            self.loop.call_soon_threadsafe(self.event.set)


class Changes(TransitionListener):
    """Per job, a version that grows with each committed change; asyncio streams of the
    changes of one job or of one tenant's jobs (see the module docstring)."""

    def __init__(self, tenant_of: Callable[[str], str | None],
                 remembered: int = REMEMBERED) -> None:
        """`tenant_of(job_id)`: the job's owner, None if it does not exist (a read)."""
        self._tenant_of = tenant_of
        self._remembered = remembered
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._by_job: dict[str, set[_Watcher]] = {}
        self._by_tenant: dict[str, set[_Watcher]] = {}

    # ---- told by the engine (any thread) ---------------------------------------------------

    def committed(self, transitions: Sequence[Transition]) -> None:
        job_ids = list(dict.fromkeys(transition.job_id for transition in transitions))
        owners = self._owners_of(job_ids) if self._by_tenant else {}
        with self._lock:
            for job_id in job_ids:
                self._changed(job_id, owners.get(job_id))

    def created(self, job_id: str, tenant: str) -> None:
        with self._lock:
            self._remember(self._owners, job_id, tenant)
            self._changed(job_id, tenant)

    def removed(self, job_id: str, tenant: str) -> None:
        with self._lock:
            self._changed(job_id, tenant)
            self._versions.pop(job_id, None)
            self._owners.pop(job_id, None)

    def _changed(self, job_id: str, tenant: str | None) -> None:
        """Under the lock: a new version for the job, its watchers and its tenant's poked."""
        self._remember(self._versions, job_id, next(self._counter))
        for watcher in self._by_job.get(job_id, ()):
            watcher.poke()
        for watcher in self._by_tenant.get(tenant, ()) if tenant is not None else ():
            watcher.poke()

    def _owners_of(self, job_ids: list[str]) -> dict[str, str]:
        """The jobs' owners: remembered, else read (outside the lock) and remembered."""
        with self._lock:
            owners = {job_id: self._owners[job_id] for job_id in job_ids
                      if job_id in self._owners}
            for job_id in owners:
                self._owners.move_to_end(job_id)
        for job_id in job_ids:
            if job_id not in owners and (tenant := self._read_owner(job_id)) is not None:
                owners[job_id] = tenant
                with self._lock:
                    self._remember(self._owners, job_id, tenant)
        return owners

    def _read_owner(self, job_id: str) -> str | None:
        """The job's owner from the database; None when it is gone or cannot be read (then
        its tenant's lists are not told of this change, its job page still is)."""
        try:
            return self._tenant_of(job_id)
        except Exception:
            log.exception("the owner of job %s could not be read", job_id)
            return None

    def _remember(self, table: OrderedDict[str, Value], job_id: str, value: Value) -> None:
        table[job_id] = value
        table.move_to_end(job_id)
        while len(table) > self._remembered:
            table.popitem(last=False)

    # ---- read by the event streams (asyncio) -----------------------------------------------

    def version(self, job_id: str) -> int:
        """The job's newest version (0: no change seen, or forgotten since)."""
        with self._lock:
            return self._versions.get(job_id, 0)

    async def job_changes(self, job_id: str, interval: float = 0.25) -> AsyncIterator[int]:
        """The job's version each time it changed: at once for the first change, then at
        most once per `interval` seconds (the changes meanwhile make one item)."""
        last = 0
        async for _ in self._watch(self._by_job, job_id, interval):
            last = max(last, self.version(job_id))  # 0 once forgotten: keep it growing
            yield last

    async def tenant_changes(self, tenant: str, interval: float = 0.5) -> AsyncIterator[None]:
        """An item each time some job of `tenant` changed, was submitted or deleted
        (coalesced as `job_changes`); never for another tenant's jobs."""
        async for _ in self._watch(self._by_tenant, tenant, interval):
            yield None

    async def _watch(self, table: dict[str, set[_Watcher]], key: str,
                     interval: float) -> AsyncIterator[None]:
        watcher = _Watcher(asyncio.get_running_loop())
        with self._lock:
            table.setdefault(key, set()).add(watcher)
        try:
            while True:
                await watcher.event.wait()
                with self._lock:
                    watcher.poked = False
                    watcher.event.clear()
                yield None
                await asyncio.sleep(interval)
        finally:
            with self._lock:
                watchers = table.get(key)
                if watchers is not None:
                    watchers.discard(watcher)
                    if not watchers:
                        del table[key]

    def sizes(self) -> dict[str, int]:
        """Entries in each table: for the tests that show none grows without bound."""
        with self._lock:
            return {"versions": len(self._versions), "owners": len(self._owners),
                    "job_watchers": sum(map(len, self._by_job.values())),
                    "tenant_watchers": sum(map(len, self._by_tenant.values()))}


_INSTALLING = threading.Lock()


def changes_of(request: Request) -> Changes:
    """The application's hub, made and handed to the engine (`engine.listen`) on first use;
    the job owners come from the read service (`reads.tenant_of`)."""
    state = request.app.state
    hub: Changes | None = getattr(state, "changes", None)
    if hub is None:
        with _INSTALLING:
            hub = getattr(state, "changes", None)
            if hub is None:
                services = services_of(request)
                hub = Changes(services.reads.tenant_of)
                services.engine.listen(hub)
                state.changes = hub
    return hub


__all__ = ["REMEMBERED", "Changes", "changes_of"]
