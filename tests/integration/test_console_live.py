"""The console's change hub on a real engine (real processes, real SQLite): a submitted job's
transitions, its submission and its deletion reach the streams of its job and its tenant,
and never another tenant's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from batchyard.adapters.store import SqlStore
from batchyard.console.live import Changes
from batchyard.domain.states import State
from batchyard.orchestrator.engine import Engine
from tests.integration.conftest import make_job, make_task

WAIT = 60


class Counter:
    """Counts what a stream yields while it runs as a task."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self.items: list[Any] = []
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: AsyncIterator[Any]) -> None:
        async for item in stream:
            self.items.append(item)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def settle(counter: Counter, seconds: float = 0.5) -> int:
    """How many items once the stream was quiet for `seconds`."""
    seen = -1
    while seen != len(counter.items):
        seen = len(counter.items)
        await asyncio.sleep(seconds)
    return seen


def test_a_jobs_changes_reach_its_tenant_and_its_job_only(engine: Engine) -> None:
    store = engine.store
    assert isinstance(store, SqlStore)
    hub = Changes(store.reads.tenant_of)
    engine.listen(hub)
    job = make_job({"a": make_task("sleep 0.5", 3), "b": make_task("true")}, {"a": ["b"]})

    bobs_task = make_task("true")
    bobs_task["Parameters"].update(StdoutRedirectPath="oss://bobs/logs/",
                                   StderrRedirectPath="oss://bobs/logs/")

    async def main() -> None:
        run = asyncio.get_running_loop().run_in_executor
        alice = Counter(hub.tenant_changes("alice", interval=0.05))
        bob = Counter(hub.tenant_changes("bob", interval=0.05))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        job_id = await run(None, engine.submit, job, "alice")
        of_job = Counter(hub.job_changes(job_id, interval=0.05))
        finished = await run(None, engine.wait, job_id, WAIT)
        assert finished.state is State.FINISHED
        told = await settle(of_job)
        assert told >= 2, of_job.items  # Running ... Finished, coalesced
        assert of_job.items == sorted(set(of_job.items))
        assert of_job.items[-1] == hub.version(job_id)
        assert await settle(alice) >= 3  # its submission, then its changes
        assert time.monotonic() - started < WAIT
        assert bob.items == []

        before = len(alice.items)
        await run(None, engine.delete, job_id, "alice")
        assert await settle(alice) == before + 1  # the deletion
        assert hub.version(job_id) == 0

        bobs = await run(None, engine.submit, make_job({"t": bobs_task}), "bob")
        assert (await run(None, engine.wait, bobs, WAIT)).state is State.FINISHED
        assert await settle(bob) >= 2
        assert len(alice.items) == before + 1  # nothing of bob's job
        for counter in (alice, bob, of_job):
            await counter.stop()
        assert hub.sizes()["job_watchers"] == hub.sizes()["tenant_watchers"] == 0

    asyncio.run(main())
