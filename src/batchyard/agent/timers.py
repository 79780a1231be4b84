"""The spawner loop's deadlines: attempt timeouts, kill graces, live logs, heartbeats.

A plain heap owned by one thread (the loop), so no lock, no condition variable and no
thread per deadline: the loop sleeps in its selector until `delay()` and then runs what
`due()` returns. A cancelled timer stays in the heap (cancelling is O(1)) and is dropped
when it comes up, or in one pass once cancelled timers make up half the heap, so a
million short attempts with day-long Timeouts do not pile up a million dead entries.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

from batchyard.runner.watchdog import LONGEST_SLEEP, bounded_delay

Action = Callable[[], None]


class Timer:
    """One deadline; `Timers.cancel(timer)` keeps its action from running."""

    __slots__ = ("action",)

    def __init__(self, action: Action | None) -> None:
        self.action = action


_Entry = tuple[float, int, Timer]
"""(deadline, sequence, timer) on the heap: tuples compare in C, first by deadline, the
unique sequence keeping equal deadlines in order and the timer itself out of it."""


class Timers:
    """A heap of deadlines, for the one thread that owns it."""

    _COMPACT_FROM = 64

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._sequence = itertools.count()
        self._cancelled = 0

    def add(self, delay: float, action: Action) -> Timer:
        """Run `action` (from `due`) `delay` seconds from now (clamped as the watchdog does)."""
        timer = Timer(action)
        heapq.heappush(self._heap, (time.monotonic() + bounded_delay(delay),
                                    next(self._sequence), timer))
        return timer

    def cancel(self, timer: Timer | None) -> None:
        if timer is None or timer.action is None:
            return
        timer.action = None
        self._cancelled += 1
        if self._cancelled * 2 > len(self._heap) >= self._COMPACT_FROM:
            self._heap = [entry for entry in self._heap if entry[2].action is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def delay(self) -> float:
        """Seconds until the earliest deadline (at most LONGEST_SLEEP; 0 if one is due)."""
        heap = self._heap
        while heap and heap[0][2].action is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        if not heap:
            return LONGEST_SLEEP
        return min(max(heap[0][0] - time.monotonic(), 0.0), LONGEST_SLEEP)

    def due(self) -> list[Action]:
        """Take the actions whose deadline has come off the heap, earliest first."""
        heap = self._heap
        if not heap:
            return []
        now = time.monotonic()
        actions = []
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.action is None:
                self._cancelled -= 1
                continue
            actions.append(timer.action)
            timer.action = None
        return actions

    def pending(self) -> int:
        """How many timers are still to run (for tests and diagnostics)."""
        return sum(1 for entry in self._heap if entry[2].action is not None)
