"""The handle through which other threads stop one attempt's program.

Every signal to the program's process group goes through `AttemptControl` under its lock,
and the runner declares the program finished (`finish`) *before* reaping it. While the
group leader is an unreaped zombie its pid — and so the process-group id — cannot be
reused, so no late cancel or timeout can ever signal an unrelated process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from contextlib import suppress

Process = subprocess.Popen[bytes]


class AttemptControl:
    """Created by an executor per attempt; `cancel()` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._timed_out = False
        self._group: int | None = None
        """Process-group id of the running program; None before start and after finish."""

    def cancel(self) -> None:
        """Stop the attempt: SIGKILL its program if it runs, or keep it from starting."""
        with self._lock:
            self._cancelled = True
            self._signal(signal.SIGKILL)

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` has been called."""
        return self._cancelled

    @property
    def timed_out(self) -> bool:
        """Whether `expire()` signalled the running program."""
        return self._timed_out

    def launch(self, start: Callable[[], Process]) -> Process | None:
        """Call `start` (which must put the program in its own session) unless cancelled.

        Holding the lock while starting means a concurrent `cancel()` either prevents the
        start or finds the process group to kill — never neither.
        """
        with self._lock:
            if self._cancelled:
                return None
            process = start()
            self._group = process.pid
            return process

    def expire(self) -> bool:
        """The timeout fired: SIGTERM the program's group; False if it no longer runs."""
        with self._lock:
            if self._group is None or self._cancelled:
                return False
            self._timed_out = True
            self._signal(signal.SIGTERM)
            return True

    def kill(self) -> None:
        """SIGKILL the program's group if it still runs (the end of a timeout's grace)."""
        with self._lock:
            self._signal(signal.SIGKILL)

    def finish(self) -> bool:
        """The group leader exited (not yet reaped): kill what is left of its group, for good.

        After this no signal is ever sent again, so the caller may reap the leader. Returns
        whether the attempt was cancelled while its program ran (a later cancel cannot
        change what the program did).
        """
        with self._lock:
            self._signal(signal.SIGKILL)
            self._group = None
            return self._cancelled

    def _signal(self, signum: signal.Signals) -> None:
        if self._group is None:
            return
        # The group may be gone, or hold only processes that changed their user.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._group, signum)
