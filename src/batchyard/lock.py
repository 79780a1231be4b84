"""One engine per data directory: an exclusive advisory lock held while the engine runs.

The lock file also says what holds it — `<pid> <role> [<detail>]`, the role being `run`,
`serve` or `cli` (a client command applying one operation) and the detail the job a `run`
runs — so that client commands on the data dir can tell a live `batchyard run` (which they
may interrupt) from a server (which they must go through).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from batchyard.errors import BatchyardError

LOCK_FILE = "engine.lock"
ROLES = ("run", "serve", "cli")


class DataDirBusy(BatchyardError):
    code = "DataDirBusy"
    status = 409


@dataclass(frozen=True)
class Holder:
    """What holds a data dir's lock, as its lock file says."""

    pid: int | None
    role: str
    detail: str = ""

    def describe(self) -> str:
        """`batchyard run (pid 12, job job-…)`, for messages."""
        what = {"run": "`batchyard run`", "serve": "`batchyard serve`",
                "cli": "another batchyard command"}.get(self.role, "another batchyard engine")
        pid = f"pid {self.pid}" if self.pid is not None else "pid ?"
        return f"{what} ({pid}{', ' + self.detail if self.detail else ''})"


def _parse(text: str) -> Holder:
    """Lock file content -> Holder; a bare pid (older versions) is an engine of unknown role."""
    words = text.split()
    pid = int(words[0]) if words and words[0].isdigit() else None
    role = words[1] if len(words) > 1 and words[1] in ROLES else "engine"
    return Holder(pid, role, " ".join(words[2:]))


def holder(data_dir: Path) -> Holder | None:
    """Who holds the data dir's lock now, or None when nobody does (nothing is taken)."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse(os.pread(fd, 256, 0).decode(errors="replace"))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _write(fd: int, role: str, detail: str) -> None:
    text = " ".join(part for part in (str(os.getpid()), role, detail) if part)
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)


def note_work(data_dir: Path, detail: str) -> None:
    """Record what this process, the holder of the lock, works on (the job of a `run`)."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR)
    try:
        held = _parse(os.pread(fd, 256, 0).decode(errors="replace"))
        if held.pid == os.getpid():
            _write(fd, held.role, detail)
    finally:
        os.close(fd)


class DataDirLock:
    """`flock` on `<data dir>/engine.lock`; released on `release()` or when the process dies."""

    def __init__(self, data_dir: Path, role: str = "run", detail: str = "") -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = _parse(os.pread(self._fd, 256, 0).decode(errors="replace"))
            os.close(self._fd)
            raise DataDirBusy(
                f"{held.describe()} is using data dir {data_dir}; stop it, or use another "
                "--data-dir (for a running server, submit with `batchyard submit`)") from None
        _write(self._fd, role, detail)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
