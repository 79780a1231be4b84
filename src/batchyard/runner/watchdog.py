"""One thread that runs actions at deadlines: attempt timeouts and their kill grace periods.

A heap of deadlines and a condition variable: the thread sleeps exactly until the earliest
deadline or until an earlier one is scheduled — no polling, and no timer thread per attempt
however many attempts run. Cancelled alarms are dropped lazily and compacted away once they
make up half the heap, so long timeouts of attempts that ended early do not pile up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

_log = logging.getLogger(__name__)


class Alarm:
    """A scheduled action; `cancel()` keeps it from running if it has not yet run."""

    __slots__ = ("action", "cancelled", "deadline", "sequence", "watchdog")

    def __init__(self, deadline: float, sequence: int, action: Callable[[], None],
                 watchdog: Watchdog) -> None:
        self.deadline = deadline
        self.sequence = sequence
        self.action = action
        self.cancelled = False
        self.watchdog = watchdog

    def __lt__(self, other: Alarm) -> bool:
        return (self.deadline, self.sequence) < (other.deadline, other.sequence)

    def cancel(self) -> None:
        self.watchdog.cancel(self)


class Watchdog:
    """Runs each scheduled action on its own thread at (or just after) its deadline.

    Actions must be quick and must not block: they all share the one thread.
    """

    def __init__(self, name: str = "batchyard-watchdog") -> None:
        self._name = name
        self._heap: list[Alarm] = []
        self._cancelled = 0
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, action: Callable[[], None]) -> Alarm:
        """Run `action` once, `delay` seconds from now."""
        with self._condition:
            alarm = Alarm(time.monotonic() + delay, next(self._sequence), action, self)
            heapq.heappush(self._heap, alarm)
            if self._heap[0] is alarm:
                self._condition.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            return alarm

    def cancel(self, alarm: Alarm) -> None:
        with self._condition:
            if alarm.cancelled:
                return
            alarm.cancelled = True
            self._cancelled += 1
            if self._cancelled * 2 > len(self._heap):
                self._heap = [item for item in self._heap if not item.cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        """How many alarms are still to run (for tests and diagnostics)."""
        with self._condition:
            return sum(1 for alarm in self._heap if not alarm.cancelled)

    def _loop(self) -> None:
        while True:
            action = self._next_due()
            try:
                action()
            except Exception:
                _log.exception("watchdog action failed")

    def _next_due(self) -> Callable[[], None]:
        """Sleep until the earliest live alarm is due, take it off the heap, return its action."""
        with self._condition:
            while True:
                while self._heap and self._heap[0].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._condition.wait()
                    continue
                delay = self._heap[0].deadline - time.monotonic()
                if delay <= 0:
                    alarm = heapq.heappop(self._heap)
                    alarm.cancelled = True  # ran: a later cancel() is a no-op
                    return alarm.action
                self._condition.wait(delay)


_shared: Watchdog | None = None
_shared_lock = threading.Lock()


def shared_watchdog() -> Watchdog:
    """The process-wide watchdog every attempt's timeout is scheduled on (created lazily)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Watchdog()
        return _shared
