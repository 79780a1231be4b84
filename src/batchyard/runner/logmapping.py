"""LogMapping: ship listed files to their OSS folders while the program runs, and at its end.

Each file goes to `<folder><basename>.<jobId>.<taskName>.<instanceId>` (reference §4.4),
every `interval` seconds if it changed, and once more after the program ended. The file is
read on the host side of the sandbox, where the program can swap any folder below the bind
for a symbolic link at any moment: so it is opened beneath its bind folder one name at a
time (`batchyard.beneath`), never through a link (it could point at host files the program
itself could not read), and only if it is a regular file (a FIFO would block the shipper).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from batchyard.beneath import open_folder, open_regular, split_key
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.logs import in_folder as log_url
from batchyard.ports import ObjectStore

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShippedLog:
    """One LogMapping entry: the file on the host, the folder it lives in, the object URL."""

    host_path: str
    folder: str
    url: str


def shipped_log(host_path: str, folder: str, url_folder: str, key: AttemptKey) -> ShippedLog:
    name = f"{os.path.basename(host_path)}.{key.job_id}.{key.task}.{key.instance_id}"
    return ShippedLog(host_path, folder, log_url(url_folder, name))


class LogShipper:
    """A thread that ships changed logs every `interval` seconds until `finish()`."""

    def __init__(self, objects: ObjectStore, logs: list[ShippedLog], interval: float,
                 scratch: str) -> None:
        """`scratch`: a folder the program cannot see, for the copies being uploaded."""
        self._objects = objects
        self._scratch = scratch
        self._logs = logs
        self._interval = interval
        self._stop = threading.Event()
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._thread = threading.Thread(target=self._loop, name="batchyard-logmapping",
                                        daemon=True)

    def start(self) -> LogShipper:
        if self._logs:
            self._thread.start()
        return self

    def finish(self) -> list[str]:
        """Stop the thread and ship every log one last time; returns upload problems."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self._ship(force=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            for problem in self._ship(force=False):
                _log.warning("LogMapping: %s", problem)

    def _ship(self, force: bool) -> list[str]:
        problems = []
        for log in self._logs:
            try:
                self._ship_one(log, force)
            except Exception as error:
                message = getattr(error, "message", "") or f"{type(error).__name__}: {error}"
                problems.append(message)
        return problems

    def _ship_one(self, log: ShippedLog, force: bool) -> None:
        """Upload a private copy of the log if it changed (by its own size, time and inode)."""
        opened = _open_log(log)
        if opened is None:
            return
        reader, status = opened
        try:
            stamp = (status.st_size, status.st_mtime_ns, status.st_ino)
            if not force and self._seen.get(log.url) == stamp:
                return
            snapshot = _copy(reader, self._scratch)
        finally:
            os.close(reader)
        try:
            self._objects.put_file(Path(snapshot), log.url)
            self._seen[log.url] = stamp
        finally:
            os.remove(snapshot)


def _open_log(log: ShippedLog) -> tuple[int, os.stat_result] | None:
    """The log, opened beneath its bind folder without following any link, and its status;
    None if it is absent, reached through a link or not a regular file."""
    if not log.host_path.startswith(log.folder + "/"):
        return None
    names = split_key(log.host_path[len(log.folder) + 1:])
    if not names:
        return None
    try:
        folder = open_folder(log.folder, names[:-1])
        try:
            return open_regular(folder, log.folder, names)
        finally:
            os.close(folder)
    except OSError:  # absent, a link, a FIFO …: nothing to ship
        return None


def _copy(reader: int, scratch: str) -> str:
    """A private copy of the open log in `scratch` (the program may change it meanwhile)."""
    handle, copy = tempfile.mkstemp(prefix="logmapping-", dir=scratch)
    with open(reader, "rb", closefd=False) as source, open(handle, "wb") as target:
        while chunk := source.read(1 << 20):
            target.write(chunk)
    return copy
