"""The handle through which other threads stop one attempt's program.

Every signal to the program's process group goes through `AttemptControl` under its lock,
and the runner declares the program finished (`finish`) *before* reaping it. While the
group leader is an unreaped zombie its pid — and so the process-group id — cannot be
reused, so no late cancel or timeout can ever signal an unrelated process group.

A process group is not a prison: a program can leave it (`setsid`). So every SIGKILL also
kills everything in the attempt's slot cgroup, and `finish` — the leader has exited —
sweeps what is left there (or, without cgroups, the orphans the leader left behind).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from contextlib import suppress

from batchyard.runner.confinement import Slot

Process = subprocess.Popen[bytes]


class AttemptControl:
    """Created by an agent per attempt; `cancel()` may be called from any thread."""

    def __init__(self, slot: Slot | None = None) -> None:
        self.slot = slot
        """Where the attempt runs: its user, cgroup or orphan tracker (None: none of them)."""
        self._lock = threading.Lock()
        self._cancelled = False
        self._timed_out = False
        self._disk_used = 0
        self._group: int | None = None
        """Process-group id of the running program; None before start and after finish."""
        self._orphan_token: int | None = None

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

    @property
    def disk_used(self) -> int:
        """Bytes the attempt had written when `exceed_disk` killed it (0: it did not)."""
        return self._disk_used

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
            if self.slot is not None and self.slot.orphans is not None:
                self._orphan_token = self.slot.orphans.started(process.pid)
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

    def exceed_disk(self, used: int) -> None:
        """The program wrote more than its disk limit: SIGKILL it."""
        with self._lock:
            if self._group is not None and not self._cancelled:
                self._disk_used = used
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
            if self._orphan_token is not None and self.slot is not None:
                assert self.slot.orphans is not None
                self.slot.orphans.ended(self._orphan_token)
            return self._cancelled

    def reaped(self) -> None:
        """The leader was reaped: its pid may be reused from now on."""
        if self._orphan_token is not None and self.slot is not None:
            assert self.slot.orphans is not None
            self.slot.orphans.reaped(self._orphan_token)

    def _signal(self, signum: signal.Signals) -> None:
        if self._group is None:
            return
        # The group may be gone, or hold only processes that changed their user.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._group, signum)
        if signum == signal.SIGKILL and self.slot is not None and self.slot.group is not None:
            self.slot.group.kill()
