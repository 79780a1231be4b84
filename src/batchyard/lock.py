"""One engine per data directory: an exclusive advisory lock held while the engine runs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from batchyard.errors import BatchyardError


class DataDirBusy(BatchyardError):
    code = "DataDirBusy"
    status = 409


class DataDirLock:
    """`flock` on `<data dir>/engine.lock`; released on `release()` or when the process dies."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "engine.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise DataDirBusy(
                f"another batchyard engine (pid {holder}) is using {data_dir}; stop it, or "
                "use another --data-dir (for a running server, submit with `batchyard submit`)"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
