"""The spawner loop's timer heap (`agent.timers`)."""

from __future__ import annotations

import time

import pytest

from batchyard.agent.timers import Timers


def test_timers_run_in_deadline_order_and_cancelled_ones_never() -> None:
    timers = Timers()
    ran: list[str] = []
    timers.add(0.02, lambda: ran.append("later"))
    first = timers.add(0.0, lambda: ran.append("first"))
    timers.add(0.0, lambda: ran.append("second"))  # the same deadline: in order of adding
    cancelled = timers.add(0.01, lambda: ran.append("cancelled"))
    timers.cancel(cancelled)
    timers.cancel(cancelled)  # twice: nothing more
    assert timers.pending() == 3
    for action in timers.due():
        action()
    assert ran == ["first", "second"]
    timers.cancel(first)  # already run: nothing
    time.sleep(timers.delay())
    for action in timers.due():
        action()
    assert ran == ["first", "second", "later"]
    assert timers.pending() == 0
    assert timers.delay() > 1


def test_cancelled_timers_are_compacted_away() -> None:
    timers = Timers()
    kept = [timers.add(60, lambda: None) for _ in range(10)]
    for _ in range(1000):
        timers.cancel(timers.add(60, lambda: None))
    assert timers.pending() == len(kept)
    assert len(timers._heap) < 2 * Timers._COMPACT_FROM + len(kept)


@pytest.mark.parametrize("delay", [float("nan"), -1.0, float("inf"), 10**400])
def test_odd_delays_are_clamped(delay: float) -> None:
    timers = Timers()
    timers.add(delay, lambda: None)
    assert 0 <= timers.delay() <= 1e9
