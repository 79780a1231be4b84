"""The engine and its agents: leases, fencing tokens, heartbeats, lost attempts.

On the MemoryStore with a fake clock and agents that run nothing (the test ends their
attempts): no process, no sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.adapters.store import SqlStore
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.retry import MOST_LOST
from batchyard.domain.states import State
from batchyard.orchestrator.engine import RECALLED_MESSAGE, Engine
from batchyard.orchestrator.fleet import SHORT_ATTEMPT
from batchyard.ports.agents import AgentListener, Report
from batchyard.ports.store import StateStore
from batchyard.testing import FakeClock, InlineAgent, MemoryObjectStore, MemoryStore

Job = dict[str, Any]


def job(count: int = 1, retries: int = 0) -> Job:
    task = {"InstanceCount": count, "MaxRetryCount": retries,
            "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
            "Parameters": {"Command": {"CommandLine": "true", "PackagePath": ""},
                           "StdoutRedirectPath": "oss://test/logs/",
                           "StderrRedirectPath": "oss://test/logs/"}}
    return {"Name": "agents", "DAG": {"Tasks": {"work": task}}}


class Fixture:
    def __init__(self, agents: int = 1, slots: int = 2, heartbeat: float = 2.0,
                 queue: int = 0, store: StateStore | None = None) -> None:
        self.clock = FakeClock()
        self.agents: list[InlineAgent] = []

        def make(listener: AgentListener) -> list[InlineAgent]:
            self.agents = [InlineAgent(listener, f"agent-{n}", slots=slots,
                                       heartbeat=heartbeat, queue=queue)
                           for n in range(agents)]
            return self.agents

        self.store = store or MemoryStore()
        self.engine = Engine(self.store, MemoryObjectStore(), make, clock=self.clock)
        self.engine.start(loop=False)

    def submit(self, description: Job) -> str:
        job_id = self.engine.submit(description)
        self.engine.step()
        return job_id

    def states(self, job_id: str) -> list[State]:
        return [i.state for i in self.engine.instances(job_id, "work")]


@pytest.fixture
def world() -> Iterator[Fixture]:
    fixture = Fixture()
    yield fixture
    fixture.engine.close()


def test_attempts_reach_the_agent_in_one_batch_with_tokens_and_attempt_numbers(
        world: Fixture) -> None:
    job_id = world.submit(job(count=2))
    agent, = world.agents
    assert len(agent.batches) == 1
    batch = agent.batches[0]
    assert len(batch.parts) == 1  # the task's shared part sent once
    assert [(lease.instance_id, lease.attempt) for lease in batch.leases] == [(0, 1), (1, 1)]
    assert len({lease.token for lease in batch.leases}) == 2
    agent.finish_all()
    world.engine.step()
    assert world.engine.job(job_id).state is State.FINISHED


def test_a_report_with_a_stale_token_is_ignored(world: Fixture) -> None:
    job_id = world.submit(job())
    agent, = world.agents
    (token, key), = agent.leases().items()
    world.engine.reported(agent.id, [Report(key, token + 1, Outcome(1))])  # not its lease
    world.engine.reported("agent-x", [Report(key, token, Outcome(1))])  # not its agent
    world.engine.step()
    assert world.states(job_id) == [State.RUNNING]
    agent.finish(key)
    world.engine.reported(agent.id, [Report(key, token, Outcome(1))])  # landed already
    world.engine.step()
    assert world.states(job_id) == [State.FINISHED]


def test_an_agent_that_stops_heartbeating_has_its_attempts_rerun_once_without_a_retry(
        world: Fixture) -> None:
    job_id = world.submit(job(count=2))
    agent, = world.agents
    first_tokens = set(agent.leases())
    world.clock.advance(5.0)
    world.engine.heartbeat(agent.id, list(first_tokens))
    world.engine.step()
    assert world.states(job_id) == [State.RUNNING] * 2  # heartbeats keep it alive
    world.clock.advance(7.0)  # more than 3 periods of 2 s without one
    world.engine.step()
    instances = world.engine.instances(job_id, "work")
    assert [(i.state, i.error_code, i.retry_count) for i in instances] == [
        (State.WAITING, ErrorCode.LOST.value, 0)] * 2
    assert "agent agent-0 stopped heartbeating" in instances[0].error_message
    old = agent.keys()
    world.engine.heartbeat(agent.id, list(first_tokens))  # it comes back, still running them
    world.engine.step()
    assert agent.cancelled == [AttemptKey(job_id, "work", n, 1) for n in (0, 1)]
    assert world.states(job_id) == [State.RUNNING] * 2  # the attempts leased again
    assert not first_tokens & set(agent.leases()) and not set(old) & set(agent.keys())
    stale = next(iter(first_tokens))
    key = AttemptKey(job_id, "work", 0, 1)
    world.engine.reported(agent.id, [Report(key, stale, Outcome(0))])  # the lost one's end
    world.engine.step()
    assert world.states(job_id) == [State.RUNNING] * 2
    agent.finish_all()
    world.engine.step()
    assert world.engine.job(job_id).state is State.FINISHED
    assert [i.attempts for i in world.engine.instances(job_id, "work")] == [2, 2]


def test_a_gone_agent_loses_its_attempts_at_once_and_gets_no_more(world: Fixture) -> None:
    fixture = Fixture(agents=2, slots=1)
    try:
        job_id = fixture.submit(job(count=3))
        first, second = fixture.agents
        assert (len(first.running()), len(second.running())) == (1, 1)
        fixture.engine.gone(first.id, "exited (killed by signal SIGKILL)")
        fixture.engine.step()
        assert len(first.running()) == 1  # the dead one's attempt, which nobody lands
        second.finish_all()
        fixture.engine.step()
        second.finish_all()
        fixture.engine.step()
        second.finish_all()
        fixture.engine.step()
        assert fixture.engine.job(job_id).state is State.FINISHED
        assert len(first.batches) == 1  # nothing leased to it after it died
    finally:
        fixture.engine.close()


def test_an_instance_lost_too_often_fails_with_a_clear_error_code(world: Fixture) -> None:
    job_id = world.submit(job(retries=5))
    agent, = world.agents
    for _ in range(MOST_LOST):
        assert world.states(job_id) == [State.RUNNING]
        world.engine.gone(agent.id, "died")
        world.engine.heartbeat(agent.id, [])  # a new agent process, running nothing
        world.engine.step()  # applied in that order: the new one gets the attempt again
    instance, = world.engine.instances(job_id, "work")
    assert (instance.state, instance.error_code, instance.retry_count) == (
        State.FAILED, ErrorCode.LOST.value, 0)
    assert f"lost {MOST_LOST} times, not re-run again" in instance.error_message
    assert world.engine.job(job_id).state is State.FAILED


def test_instances_left_running_by_a_dead_engine_are_rerun_a_bounded_number_of_times() -> None:
    store = MemoryStore()
    clock = FakeClock()
    job_id = ""
    for restart in range(MOST_LOST + 1):
        engine = Engine(store, MemoryObjectStore(),
                        lambda listener: [InlineAgent(listener, "a", slots=1)], clock=clock)
        engine.start(loop=False)
        if restart == 0:
            job_id = engine.submit(job())
        engine.step()
        state = engine.instances(job_id, "work")[0].state
        # the engine dies here with its attempt running (no close: nothing is stopped)
        if restart < MOST_LOST - 1:
            assert state is State.RUNNING
    instance, = Engine(store, MemoryObjectStore(), lambda listener: [],
                       clock=clock).start(loop=False).instances(job_id, "work")
    assert (instance.state, instance.error_code) == (State.FAILED, ErrorCode.LOST.value)


def test_an_agent_gets_leases_queued_ahead_only_while_its_attempts_are_short() -> None:
    world = Fixture(slots=2, queue=8)
    try:
        job_id = world.submit(job(count=40))
        agent, = world.agents
        assert len(agent.running()) == 2  # nothing known of attempt times yet: slots only
        agent.finish(job_id, seconds=0.001)
        world.engine.step()
        assert len(agent.running()) == 2 + 8  # short: its whole queue filled ahead
        agent.finish(job_id, seconds=SHORT_ATTEMPT * 4)
        world.engine.step()
        assert len(agent.running()) == 2  # long again (a moving average): slots only
        while agent.running():
            agent.finish(job_id)
            world.engine.step()
        assert world.engine.job(job_id).state is State.FINISHED
        assert world.states(job_id) == [State.FINISHED] * 40
    finally:
        world.engine.close()


def test_a_batch_with_an_attempt_no_longer_current_is_applied_one_report_at_a_time(
        tmp_path: Path) -> None:
    """The SQL store ends a batch of attempts in one statement; when one of them is not
    current any more (its instance was moved meanwhile), the step is applied again one
    report per transaction: the current ones end, the other is left as it is."""
    world = Fixture(slots=3, store=SqlStore(f"sqlite:///{tmp_path / 'state.db'}"))
    try:
        job_id = world.submit(job(count=3))
        agent, = world.agents
        with world.store.transaction() as tx:  # as a stop of one instance would
            assert tx.move_instance(job_id, "work", 1, State.STOPPED, world.clock())
        agent.finish(job_id)
        world.engine.step()
        assert world.states(job_id) == [State.FINISHED, State.STOPPED, State.FINISHED]
        assert [attempt.attempt for index in range(3)
                for attempt in world.engine.attempts(job_id, "work", index)] == [1, 1, 1]
        assert world.engine.table_sizes()["tries"] == 0  # no step failed
    finally:
        world.engine.close()


def test_leases_queued_ahead_are_taken_back_for_a_job_of_higher_priority() -> None:
    world = Fixture(slots=1, queue=8)
    try:
        low = world.engine.submit({**job(count=5), "Priority": 1})
        world.engine.step()
        agent, = world.agents
        agent.finish(f"{low}/work/0", seconds=0.001)  # short: the queue fills ahead
        world.engine.step()
        assert agent.keys() == [f"{low}/work/{index}#1" for index in (1, 2, 3, 4)]
        high = world.submit({**job(count=1), "Priority": 9})  # and one more step
        world.engine.step()  # the queued leases reported back (STOPPED, never started)
        assert agent.cancelled == [AttemptKey(low, "work", index, 1) for index in (2, 3, 4)]
        assert agent.keys() == [f"{low}/work/1#1", f"{high}/work/0#1",
                                *(f"{low}/work/{index}#2" for index in (2, 3, 4))]
        assert world.engine.attempts(low, "work", 2) == []  # it never ran
        events = [(e.source, e.target, e.message) for e in world.engine.store.events(low)
                  if e.instance_id == 2]
        assert ("Running", "Waiting", RECALLED_MESSAGE) in events
        while agent.running():
            agent.finish(agent.running()[0].key)
            world.engine.step()
        assert world.states(low) == [State.FINISHED] * 5
        assert world.engine.job(low).state is State.FINISHED
        assert world.engine.job(high).state is State.FINISHED
        assert [i.retry_count for i in world.engine.instances(low, "work")] == [0] * 5
        assert {name: size for name, size in world.engine.table_sizes().items()
                if size} == {"specs": 2}  # nothing in flight is left behind
    finally:
        world.engine.close()
