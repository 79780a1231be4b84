"""Committed transitions reach the listeners: after the commit, once per commit, in order,
and a failing listener harms nothing (the real engine, real processes, real SQLite)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest

from batchyard.domain.states import Entity, State, Transition
from batchyard.orchestrator.engine import Engine
from batchyard.ports import TransitionListener
from tests.integration.conftest import make_job, make_task
from tests.integration.test_engine import until

WAIT = 60


class Recorder(TransitionListener):
    """Keeps each call's transitions, and what the database showed while it was called."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[list[Transition]] = []
        self.visible: list[bool] = []
        self.threads: set[str] = set()

    def committed(self, transitions: Sequence[Transition]) -> None:
        self.visible.append(_committed(self.engine, transitions[-1]))
        self.threads.add(threading.current_thread().name)
        self.calls.append(list(transitions))  # last: the tests wait for it

    def of(self, job_id: str) -> list[Transition]:
        return [t for call in self.calls for t in call if t.job_id == job_id]


class Failing(TransitionListener):
    def committed(self, transitions: Sequence[Transition]) -> None:
        raise RuntimeError("a broken listener")


def _committed(engine: Engine, transition: Transition) -> bool:
    """Whether another connection sees the event of `transition` (so it was committed)."""
    return any((event.kind, event.task, event.instance_id, event.target) ==
               (transition.entity.value, transition.task, transition.instance_id,
                transition.target.value)
               and abs(event.time.timestamp() - transition.time) < 1e-3
               for event in engine.store.events(transition.job_id))


def _as_events(transitions: list[Transition]) -> list[tuple[str, str, int | None, str, str]]:
    return [(t.entity.value, t.task, t.instance_id, t.source.value if t.source else "",
             t.target.value) for t in transitions]


def test_listeners_get_every_committed_transition_in_order_after_the_commit(
        engine: Engine) -> None:
    recorder = Recorder(engine)
    engine.listen(recorder)
    job = make_job({"a": make_task("true", 2), "b": make_task("true")}, {"a": ["b"]})
    job_id = engine.submit(job)
    assert engine.wait(job_id, WAIT).state is State.FINISHED
    until(lambda: [(t.entity, t.target) for t in recorder.of(job_id)[-1:]] == [
        (Entity.JOB, State.FINISHED)])  # wait() may return before the delivery
    events = [(e.kind, e.task, e.instance_id, e.source, e.target)
              for e in engine.store.events(job_id)]
    assert events[0] == ("job", "", None, "", "Waiting")  # a submission is not a transition
    assert _as_events(recorder.of(job_id)) == events[1:]
    assert all(recorder.visible) and len(recorder.visible) == len(recorder.calls)
    assert all(call for call in recorder.calls)
    assert recorder.threads == {"batchyard-engine"}  # the steps' thread


def test_one_call_per_commit_with_everything_it_moved(engine: Engine) -> None:
    recorder = Recorder(engine)
    engine.listen(recorder)
    job_id = engine.submit(make_job({"t": make_task("sleep 300", 2)}))
    until(lambda: engine.job(job_id).instance_metrics.running == 2)
    until(lambda: any(t.entity is Entity.JOB for t in recorder.of(job_id)))
    before = len(recorder.calls)
    engine.stop(job_id)
    stop_call = recorder.calls[before]  # delivered before stop() returned
    assert sorted(_as_events(stop_call)) == sorted([
        ("instance", "t", 0, "Running", "Stopped"), ("instance", "t", 1, "Running", "Stopped"),
        ("task", "t", None, "Running", "Stopped"), ("job", "", None, "Running", "Stopped")])
    launch = next(call for call in recorder.calls if call[0].target is State.RUNNING)
    assert {t.entity for t in launch} == set(Entity)  # instances, task and job: one commit
    assert stop_call[-1].message == "stopped by the user"


def test_a_failing_listener_is_logged_and_breaks_neither_the_engine_nor_the_others(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    engine.listen(Failing())
    recorder = Recorder(engine)
    engine.listen(recorder)
    with caplog.at_level(logging.ERROR, logger="batchyard.orchestrator.listeners"):
        first = engine.submit(make_job({"t": make_task("true")}))
        assert engine.wait(first, WAIT).state is State.FINISHED
        second = engine.submit(make_job({"t": make_task("exit 3")}))
        assert engine.wait(second, WAIT).state is State.FAILED
        until(lambda: any(t.target is State.FAILED and t.entity is Entity.JOB
                          for t in recorder.of(second)))
    assert recorder.of(first)[-1].target is State.FINISHED
    failures = [r for r in caplog.records if "transition listener" in r.getMessage()]
    assert failures and all(r.exc_info for r in failures)
    assert len(failures) == len(recorder.calls)
