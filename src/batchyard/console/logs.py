"""An instance's logs for the console: where they are, and their tail followed live.

The runner uploads a running attempt's whole log again every few seconds (and once more when
it ends); a retry replaces it. `tail` polls the object's size and reads only the new bytes
(`ObjectStore.read_range`), so following a log of gigabytes costs what it prints. Each chunk
comes with the byte offset after it: the event stream sends it as the event's `id`, and a
browser that reconnects with `Last-Event-ID: N` goes on at byte N. Offsets always fall
between two characters (a multibyte character is never split across chunks), so a resumed
tail decodes cleanly; bytes that are not UTF-8 become U+FFFD.

A log found SHORTER than the offset was replaced by a new attempt's (or the offset given
was not this log's): the tail says so with `REPLACED` at offset 0 and starts again from the
first byte. A replacement that is already longer than the offset cannot be told apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from batchyard.domain.logs import STREAMS, instance_log
from batchyard.domain.records import InstanceRecord
from batchyard.ports.objects import ObjectStore

REPLACED = "\n[this log was replaced by a new attempt's: shown again from its start]\n"
"""The chunk (at offset 0) telling that the log restarts from its first byte."""


def log_object(instance: InstanceRecord, description: dict[str, Any], stream: str,
               attempt: int | None = None) -> str:
    """The URL of the instance's `stream` log ("stdout" or "stderr"): its last attempt's,
    or with `attempt` (from 1) the copy an attempt that did not succeed left; "" when its
    task has no redirect folder. ValueError for another stream or an attempt below 1."""
    if stream not in STREAMS:
        raise ValueError(f"a log is stdout or stderr, not {stream!r}")
    if attempt is not None and attempt < 1:
        raise ValueError(f"attempts count from 1, got {attempt}")
    return instance_log(description, instance, stream, attempt)


async def tail(objects: ObjectStore, url: str, start: int,
               finished: Callable[[], Awaitable[bool]], poll: float = 1.0,
               chunk: int = 65536) -> AsyncIterator[tuple[int, str]]:
    """`(offset after the chunk, text)` for the bytes of the object `url` from byte `start`
    on, as they come: read every `poll` seconds, at most `chunk` bytes a read. Ends once
    `finished()` said the writer is done and a read after that found nothing new (an object
    that never came: nothing). Store errors propagate (the object is checked before)."""
    if start < 0:
        raise ValueError(f"a log offset is 0 or more, got {start}")
    chunk = max(chunk, 4)  # a read always holds a whole character
    offset = start
    while True:
        done = await finished()  # before the read: the last upload is then in it
        size = await asyncio.to_thread(objects.size, url)
        if size is not None and size < offset:
            yield 0, REPLACED
            offset = 0
        async for after, text in _new_bytes(objects, url, offset, size or 0, chunk, done):
            offset = after
            yield after, text
        if done and await asyncio.to_thread(objects.size, url) == size:
            return  # the writer is done and the log stopped growing
        if not done:
            await asyncio.sleep(poll)


async def _new_bytes(objects: ObjectStore, url: str, offset: int, size: int, chunk: int,
                     done: bool) -> AsyncIterator[tuple[int, str]]:
    """The bytes from `offset` up to `size`, chunk by chunk, each cut after its last whole
    character (the rest is read again with the next chunk; once `done`, decoded as is)."""
    while offset < size:
        data = await asyncio.to_thread(objects.read_range, url, offset,
                                       min(chunk, size - offset))
        if not data:  # shrunk meanwhile: the next round sees it
            return
        last = offset + len(data) >= size
        whole = len(data) if done and last else _whole(data)
        if whole == 0:
            if last:  # a character still being written: the next round
                return
            whole = len(data)  # no character is longer than 4 bytes: these are invalid
        offset += whole
        yield offset, data[:whole].decode("utf-8", "replace")


def _whole(data: bytes) -> int:
    """The length of the longest prefix of `data` that does not end inside a UTF-8
    character (invalid bytes count as whole: they decode as U+FFFD)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): where the last character starts
            needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else (
                4 if byte & 0xF8 == 0xF0 else 1)
            return len(data) - back if back < needed else len(data)
    return len(data)


__all__ = ["REPLACED", "log_object", "tail"]
