"""The shared watchdog: actions run in deadline order on one thread; cancelled ones never run."""

from __future__ import annotations

import threading

from batchyard.runner.watchdog import Watchdog


def test_actions_run_in_deadline_order_and_cancelled_ones_never_run() -> None:
    watchdog = Watchdog(name="test-watchdog")
    ran: list[str] = []
    done = threading.Event()
    watchdog.schedule(0.15, lambda: (ran.append("late"), done.set()))
    watchdog.schedule(0.05, lambda: ran.append("early"))
    watchdog.schedule(0.10, lambda: ran.append("cancelled")).cancel()
    assert done.wait(2)
    assert ran == ["early", "late"]
    assert watchdog.pending() == 0


def test_cancelled_alarms_do_not_pile_up() -> None:
    watchdog = Watchdog(name="test-watchdog")
    for _ in range(1000):
        watchdog.schedule(3600, lambda: None).cancel()
    assert watchdog.pending() == 0
    assert len(watchdog._heap) < 10


def test_a_failing_action_does_not_stop_the_thread() -> None:
    watchdog = Watchdog(name="test-watchdog")
    done = threading.Event()
    watchdog.schedule(0.01, lambda: 1 / 0)  # type: ignore[func-returns-value]
    watchdog.schedule(0.02, done.set)
    assert done.wait(2)
