"""Deliveries of committed transitions and the wake-ups of `wait()`, without an engine
(tests/integration/test_transition_listeners.py runs them on the real one)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from batchyard.domain.states import Entity, State, Transition
from batchyard.orchestrator.listeners import Deliveries, WaitWakeups
from batchyard.ports import TransitionListener


def moved(entity: Entity, target: State, task: str = "") -> Transition:
    return Transition(entity, "job-1", task, None, State.WAITING, target, 1000.0)


class Recorder(TransitionListener):
    def __init__(self) -> None:
        self.calls: list[list[Transition]] = []

    def committed(self, transitions: Sequence[Transition]) -> None:
        self.calls.append(list(transitions))


class Failing(TransitionListener):
    def committed(self, transitions: Sequence[Transition]) -> None:
        raise RuntimeError("broken")


def test_each_commit_is_one_call_in_commit_order_and_empty_commits_none() -> None:
    recorder = Recorder()
    deliveries = Deliveries([recorder])
    first = [moved(Entity.INSTANCE, State.RUNNING, "a"), moved(Entity.JOB, State.RUNNING)]
    second = [moved(Entity.TASK, State.RUNNING, "a")]
    deliveries.committed(first)
    deliveries.committed([])
    deliveries.committed(second)
    assert recorder.calls == []  # nothing before deliver(): never inside a transaction
    deliveries.deliver()
    deliveries.deliver()
    assert recorder.calls == [first, second]


def test_a_failing_listener_is_logged_and_the_others_still_hear(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    deliveries = Deliveries([Failing()])
    deliveries.add(recorder)
    deliveries.committed([moved(Entity.JOB, State.RUNNING)])
    deliveries.deliver()
    assert len(recorder.calls) == 1
    assert "transition listener" in caplog.text and "RuntimeError: broken" in caplog.text


def test_the_default_hook_does_nothing() -> None:
    TransitionListener.committed(Recorder(), [moved(Entity.JOB, State.RUNNING)])


def test_a_job_transition_wakes_the_waiters_a_task_transition_does_not() -> None:
    wakeups = WaitWakeups()
    woken = threading.Event()
    started = threading.Event()

    def waiter() -> None:
        started.set()
        wakeups.wait(60)
        woken.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert started.wait(10)
    wakeups.committed([moved(Entity.TASK, State.RUNNING, "a")])
    assert not woken.wait(0.5)  # also the waiter's time to reach its wait
    wakeups.committed([moved(Entity.TASK, State.FINISHED, "a"), moved(Entity.JOB, State.FINISHED)])
    assert woken.wait(30)  # far below the 60 s the waiter would sleep without the wake-up
    thread.join()
