"""The disk an attempt may fill: one thread measures every confined attempt's folder.

Nothing in Linux bounds what a set of processes writes to a shared file system without
quotas configured by the administrator (ext4/XFS project quotas), so batchyard does what
Kubernetes' kubelet does for ephemeral storage: it measures. Every `interval` seconds the
guard adds up the blocks allocated under each registered attempt folder (working directory,
/tmp, output and log folders — everything the program can write), without following links,
and kills an attempt past its limit. Between two checks a program can overshoot by what it
writes in that time; `RLIMIT_FSIZE` (set to the same limit) bounds any single file at once.
A walk that takes long (many files) spaces the next checks out, so the guard costs at most
about a tenth of one core.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_log = logging.getLogger(__name__)

INTERVAL = 2.0
"""Seconds between two measurements of the same attempt (at least)."""


@dataclass
class _Watched:
    folder: str
    limit: int
    exceeded: Callable[[int], None]


class DiskGuard:
    """Measures registered folders and calls `exceeded(bytes)` once for one past its limit."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self._interval = interval
        self._watched: dict[int, _Watched] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, folder: str, limit: int, exceeded: Callable[[int], None]) -> int:
        """Start measuring `folder`; returns the handle `forget` takes."""
        with self._lock:
            handle = self._next
            self._next += 1
            self._watched[handle] = _Watched(folder, limit, exceeded)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batchyard-disk",
                                                daemon=True)
                self._thread.start()
        return handle

    def forget(self, handle: int) -> None:
        with self._lock:
            self._watched.pop(handle, None)

    def check(self) -> None:
        """Measure every watched folder once (the thread's work; also callable in tests)."""
        with self._lock:
            watched = list(self._watched.items())
        for handle, entry in watched:
            used = usage(entry.folder)
            if used > entry.limit:
                with self._lock:
                    still = self._watched.pop(handle, None)
                if still is not None:
                    entry.exceeded(used)

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.check()
            except Exception:  # shared by every attempt: never stop on one bad folder
                _log.exception("disk usage check failed")
            spent = time.monotonic() - started
            time.sleep(max(self._interval, 10 * spent))


def usage(folder: str) -> int:
    """Bytes allocated under `folder` (blocks, so sparse files count what they hold)."""
    total = 0
    pending = [folder]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    status = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += status.st_blocks * 512
                if stat.S_ISDIR(status.st_mode):
                    pending.append(entry.path)
    return total


_shared: DiskGuard | None = None
_shared_lock = threading.Lock()


def shared_guard() -> DiskGuard:
    """The process-wide guard (its thread starts with the first watched attempt)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DiskGuard()
        return _shared
