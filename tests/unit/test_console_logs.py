"""The console's log tail (`console.logs.tail`) over a real local-folder object store, and
where an instance's logs are (`console.logs.log_object`)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.console.logs import REPLACED, log_object, tail
from batchyard.domain.records import InstanceRecord
from batchyard.domain.states import State

URL = "oss://logs/job/stdout.job-1.t.0"
TEXT = "".join(f"line {number}: héllo € 😀 done\n" for number in range(200))


@pytest.fixture
def objects(tmp_path: Path) -> FsspecObjectStore:
    return FsspecObjectStore(tmp_path / "objects")


class Writer:
    """Uploads the whole log again, longer each time, as the runner does; then ends."""

    def __init__(self, objects: FsspecObjectStore, data: bytes, steps: int) -> None:
        self.objects, self.data, self.steps = objects, data, steps
        self.ended = False
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for step in range(1, self.steps + 1):
            self.objects.put_bytes(URL, self.data[:len(self.data) * step // self.steps])
            time.sleep(0.02)
        self.ended = True

    async def finished(self) -> bool:
        return self.ended


async def always() -> bool:
    return True


async def never() -> bool:
    return False


def read(objects: FsspecObjectStore, start: int = 0, chunk: int = 65536,
         finished: object = always, timeout: float = 20) -> list[tuple[int, str]]:
    async def main() -> list[tuple[int, str]]:
        return [item async for item in tail(objects, URL, start, finished,  # type: ignore[arg-type]
                                            poll=0.005, chunk=chunk)]

    return asyncio.run(asyncio.wait_for(main(), timeout))


def test_a_growing_log_is_followed_to_its_end_byte_for_byte(
        objects: FsspecObjectStore) -> None:
    data = TEXT.encode()
    writer = Writer(objects, data, steps=37)  # cuts fall inside characters too
    writer.thread.start()
    chunks = read(objects, chunk=1000, finished=writer.finished)
    writer.thread.join()
    assert "".join(text for _, text in chunks) == TEXT
    offsets = [offset for offset, _ in chunks]
    assert offsets == sorted(offsets) and offsets[-1] == len(data)
    for offset in offsets:  # every offset is between two characters
        data[:offset].decode("utf-8")


@pytest.mark.parametrize("chunk", [1, 4, 5, 7, 4096])
def test_chunks_never_split_a_character_and_a_resume_goes_on_at_its_offset(
        objects: FsspecObjectStore, chunk: int) -> None:
    data = TEXT.encode()
    objects.put_bytes(URL, data)
    chunks = read(objects, chunk=chunk)
    assert "".join(text for _, text in chunks) == TEXT
    assert "\ufffd" not in "".join(text for _, text in chunks)
    middle = chunks[len(chunks) // 2][0]
    resumed = read(objects, start=middle, chunk=chunk)
    assert "".join(text for _, text in resumed) == data[middle:].decode()


def test_a_character_still_being_written_waits_for_its_last_bytes(
        objects: FsspecObjectStore) -> None:
    euro = "€".encode()
    objects.put_bytes(URL, b"ab" + euro[:2])
    seen: list[tuple[int, str]] = []

    async def main() -> None:
        ended = False

        async def finished() -> bool:
            return ended

        stream = tail(objects, URL, 0, finished, poll=0.005)
        seen.append(await anext(stream))
        objects.put_bytes(URL, b"ab" + euro + b"c")
        ended = True
        seen.extend([item async for item in stream])

    asyncio.run(asyncio.wait_for(main(), 10))
    assert seen == [(2, "ab"), (6, "€c")]


def test_invalid_bytes_become_replacement_characters_and_an_ended_log_is_flushed(
        objects: FsspecObjectStore) -> None:
    objects.put_bytes(URL, b"ok \xff\xfe then " + "€".encode()[:2])
    assert read(objects) == [(13, "ok \ufffd\ufffd then \ufffd")]


def test_a_shorter_log_was_replaced_and_is_shown_again_from_its_start(
        objects: FsspecObjectStore) -> None:
    objects.put_bytes(URL, b"first attempt, long output\n")
    first = read(objects)
    assert first == [(27, "first attempt, long output\n")]
    objects.put_bytes(URL, b"retry\n")
    assert read(objects, start=27) == [(0, REPLACED), (6, "retry\n")]
    assert read(objects, start=10_000) == [(0, REPLACED), (6, "retry\n")]  # not this log's


def test_a_log_that_never_came_ends_with_nothing_and_bad_offsets_are_refused(
        objects: FsspecObjectStore) -> None:
    assert read(objects) == []
    with pytest.raises(ValueError, match="offset"):
        read(objects, start=-1)


def test_a_running_tail_waits_for_bytes_and_stops_when_cancelled(
        objects: FsspecObjectStore) -> None:
    async def main() -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []

        async def follow() -> None:
            async for item in tail(objects, URL, 0, never, poll=0.005):
                seen.append(item)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        objects.put_bytes(URL, b"late\n")
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return seen

    assert asyncio.run(main()) == [(5, "late\n")]


def instance(stdout: str = "", stderr: str = "") -> InstanceRecord:
    return InstanceRecord(job_id="job-1", task="count", instance_id=3, state=State.RUNNING,
                          retry_count=0, attempts=1, started=None, ended=None, exit_code=None,
                          error_code="", error_message="", detail="", stdout_path=stdout,
                          stderr_path=stderr, node="")


def test_where_the_logs_are() -> None:
    description = {"DAG": {"Tasks": {"count": {"Parameters": {
        "StdoutRedirectPath": "oss://b/logs", "StderrRedirectPath": "oss://b/errors/"}}}}}
    assert log_object(instance(), description, "stdout") == "oss://b/logs/stdout.job-1.count.3"
    assert log_object(instance(), description, "stderr", 2) == (
        "oss://b/errors/stderr.job-1.count.3.attempt-2")
    recorded = instance(stdout="oss://b/elsewhere/out")
    assert log_object(recorded, description, "stdout") == "oss://b/elsewhere/out"
    assert log_object(recorded, description, "stdout", 1) == "oss://b/elsewhere/out.attempt-1"
    assert log_object(instance(), {}, "stdout") == ""
    assert log_object(instance(), {"DAG": {"Tasks": {"count": {}}}}, "stderr", 1) == ""
    for stream, attempt in (("stdin", None), ("../etc", None), ("stdout", 0)):
        with pytest.raises(ValueError):
            log_object(instance(), description, stream, attempt)
