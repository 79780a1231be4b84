"""One thread that runs actions at deadlines: attempt timeouts and their kill grace periods.

A heap of deadlines and a condition variable: the thread sleeps exactly until the earliest
deadline or until an earlier one is scheduled — no polling, and no timer thread per attempt
however many attempts run. Cancelled alarms are dropped lazily and compacted away once they
make up half the heap, so long timeouts of attempts that ended early do not pile up.

The thread is shared by every attempt, so no single value may stop it: a delay too large
for a float or for the operating system's timers (a tenant's `Timeout` of 10**400) is
clamped to `MOST_DELAY` (it then simply never comes), the thread sleeps at most
`LONGEST_SLEEP` at a time, and an action that raises is logged and forgotten.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable

_log = logging.getLogger(__name__)

MOST_DELAY = 100 * 365 * 24 * 3600.0
"""The longest delay an alarm keeps (a century): later ones are the same as never."""
LONGEST_SLEEP = 3600.0
"""The thread wakes at least this often, whatever the deadlines (no timer overflows)."""


def bounded_delay(delay: float) -> float:
    """`delay` as seconds the clock and the timers can hold: NaN and negatives are 0,
    anything beyond `MOST_DELAY` (infinity, 10**400) is `MOST_DELAY`."""
    try:
        seconds = float(delay)
    except OverflowError:
        return MOST_DELAY
    if math.isnan(seconds) or seconds <= 0:
        return 0.0
    return min(seconds, MOST_DELAY)


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
        deadline = time.monotonic() + bounded_delay(delay)
        with self._condition:
            alarm = Alarm(deadline, next(self._sequence), action, self)
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
            try:
                self._next_due()()
            except Exception:  # one bad action (or value) must not stop every timeout
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
                self._condition.wait(min(delay, LONGEST_SLEEP))


_shared: Watchdog | None = None
_shared_lock = threading.Lock()


def shared_watchdog() -> Watchdog:
    """The process-wide watchdog every attempt's timeout is scheduled on (created lazily)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Watchdog()
        return _shared
