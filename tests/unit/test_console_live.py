"""The console's change hub (`console.live.Changes`) with a fake source of transitions: a
thread standing in for the engine, and a dict for the job owners."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar, cast

from batchyard.console.live import Changes, _Watcher
from batchyard.domain.states import Entity, State, Transition

Item = TypeVar("Item")
OWNERS = {"job-a1": "alice", "job-a2": "alice", "job-b1": "bob"}


def moved(job_id: str, number: int = 0) -> Transition:
    return Transition(Entity.INSTANCE, job_id, "t", number, State.WAITING, State.RUNNING,
                      time.time())


class Owners:
    """`tenant_of` that counts its reads."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def __call__(self, job_id: str) -> str | None:
        self.reads.append(job_id)
        return OWNERS.get(job_id)


async def collect(stream: AsyncIterator[Item], seconds: float) -> list[tuple[float, Item]]:
    """The items `stream` yields within `seconds`, with when they came; then it is closed."""
    items: list[tuple[float, Item]] = []
    start = time.monotonic()

    async def read() -> None:
        async for item in stream:
            items.append((time.monotonic() - start, item))

    task = asyncio.create_task(read())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return items


def in_thread(work: Callable[[], None], delay: float = 0.05) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)  # the stream subscribes first
        work()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_burst_of_changes_comes_out_coalesced_and_the_last_change_is_told() -> None:
    hub = Changes(Owners())

    def burst() -> None:  # 2,000 commits a second for a second, as a big job ending
        for number in range(2000):
            hub.committed([moved("job-a1", number)])
            if number % 2:
                time.sleep(0.001)

    async def main() -> list[tuple[float, int]]:
        thread = in_thread(burst)
        items = await collect(hub.job_changes("job-a1", interval=0.25), 2.0)
        thread.join()
        return items

    items = asyncio.run(main())
    assert 2 <= len(items) <= 10, items
    assert items[0][0] < 0.3  # the first change is told at once
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(items)]
    assert all(gap >= 0.24 for gap in gaps), gaps
    versions = [version for _, version in items]
    assert versions == sorted(set(versions))  # monotonic
    assert versions[-1] == hub.version("job-a1")  # the end of the burst was told


def test_each_change_after_a_quiet_interval_is_one_item() -> None:
    hub = Changes(Owners())

    def spaced() -> None:
        for number in range(3):
            hub.committed([moved("job-a1", number), moved("job-a1", number + 10)])
            time.sleep(0.15)

    async def main() -> list[tuple[float, int]]:
        thread = in_thread(spaced)
        items = await collect(hub.job_changes("job-a1", interval=0.05), 0.8)
        thread.join()
        return items

    assert len(asyncio.run(main())) == 3


def test_a_tenant_hears_of_its_own_jobs_only_and_owners_are_read_once() -> None:
    owners = Owners()
    hub = Changes(owners)

    def work() -> None:
        for _ in range(3):
            hub.committed([moved("job-b1")])
            time.sleep(0.05)
        hub.committed([moved("job-a2")])

    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        thread = in_thread(work)
        alice, bob, nobody = await asyncio.gather(
            collect(hub.tenant_changes("alice", interval=0.01), 0.6),
            collect(hub.tenant_changes("bob", interval=0.01), 0.6),
            collect(hub.tenant_changes("carol", interval=0.01), 0.6))
        thread.join()
        return alice, bob, nobody

    alice, bob, nobody = asyncio.run(main())
    assert len(alice) == 1 and len(bob) == 3 and nobody == []
    assert sorted(owners.reads) == ["job-a2", "job-b1"]  # remembered after the first read


def test_submissions_and_deletions_reach_the_tenant_without_a_read() -> None:
    owners = Owners()
    hub = Changes(owners)

    def work() -> None:
        hub.created("job-new", "alice")
        time.sleep(0.05)
        hub.committed([moved("job-new")])
        time.sleep(0.05)
        hub.removed("job-new", "alice")
        hub.created("job-other", "bob")

    async def main() -> list[Any]:
        thread = in_thread(work)
        items = await collect(hub.tenant_changes("alice", interval=0.01), 0.5)
        thread.join()
        return items

    assert len(asyncio.run(main())) == 3
    assert owners.reads == []
    assert hub.version("job-new") == 0  # forgotten with the job
    assert hub.sizes()["owners"] == 1  # job-other


def test_a_job_stream_hears_of_that_job_only() -> None:
    hub = Changes(Owners())

    def work() -> None:
        hub.committed([moved("job-a2"), moved("job-b1")])
        time.sleep(0.05)
        hub.committed([moved("job-a1")])

    async def main() -> list[Any]:
        thread = in_thread(work)
        items = await collect(hub.job_changes("job-a1", interval=0.01), 0.4)
        thread.join()
        return items

    assert [version for _, version in asyncio.run(main())] == [hub.version("job-a1")] == [3]


def test_streams_that_end_leave_nothing_behind_and_memory_stays_flat() -> None:
    hub = Changes(Owners(), remembered=100)

    async def main() -> None:
        streams = [hub.job_changes(f"job-{number}") for number in range(50)]
        tasks: list[asyncio.Task[int]] = [asyncio.ensure_future(anext(stream))
                                          for stream in streams]
        tenant = hub.tenant_changes("alice")
        waiting: asyncio.Task[None] = asyncio.ensure_future(anext(tenant))
        await asyncio.sleep(0.05)
        assert hub.sizes()["job_watchers"] == 50 and hub.sizes()["tenant_watchers"] == 1
        for task in tasks[:25]:  # a browser went away: its stream is cancelled
            task.cancel()
        await asyncio.gather(*tasks[:25], return_exceptions=True)
        assert hub.sizes()["job_watchers"] == 25
        hub.committed([moved(f"job-{number}") for number in range(25, 50)])
        assert all(await asyncio.gather(*tasks[25:]))  # each got its version
        for stream in streams[25:]:  # closed after an item
            await cast(AsyncGenerator[int, None], stream).aclose()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)

    asyncio.run(main())
    assert hub.sizes()["job_watchers"] == 0 and hub.sizes()["tenant_watchers"] == 0
    for number in range(10_000):
        hub.created(f"job-many-{number}", "alice")
        hub.committed([moved(f"job-many-{number}")])
    assert hub.sizes()["versions"] == 100 and hub.sizes()["owners"] == 100
    assert hub.version("job-many-9999") > hub.version("job-many-9998") > 0


def test_a_poke_for_a_closed_loop_is_ignored() -> None:
    hub = Changes(Owners())
    loop = asyncio.new_event_loop()
    loop.close()
    hub._by_job["job-a1"] = {_Watcher(loop)}  # a stream whose loop is gone
    hub.committed([moved("job-a1")])
    assert hub.version("job-a1") == 1


def test_an_owner_that_cannot_be_read_still_tells_the_job_page() -> None:
    def broken(job_id: str) -> str | None:
        raise OSError("the database is gone")

    hub = Changes(broken)

    def work() -> None:
        hub.committed([moved("job-a1")])

    async def main() -> tuple[list[Any], list[Any]]:
        thread = in_thread(work)
        of_job, of_tenant = await asyncio.gather(
            collect(hub.job_changes("job-a1", interval=0.01), 0.3),
            collect(hub.tenant_changes("alice", interval=0.01), 0.3))
        thread.join()
        return of_job, of_tenant

    of_job, of_tenant = asyncio.run(main())
    assert len(of_job) == 1 and of_tenant == []
