"""The engine's rules, step by step, on the stand-ins of `batchyard.testing`: a MemoryStore,
an InlineAgent whose attempts end when the test says, and a FakeClock. No process, no
sleep: each test is a sequence of submissions, steps and outcomes. (The same rules with real
processes: tests/integration/test_engine.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import batchyard.orchestrator.engine as engine_module
from batchyard.domain.outcome import ErrorCode
from batchyard.domain.states import State
from batchyard.errors import NotFound, SpecError, StateConflict
from batchyard.orchestrator.engine import Abandoned
from batchyard.orchestrator.launching import StaleLaunchQueue
from batchyard.orchestrator.operations import InvalidPriority
from batchyard.testing.harness import Harness
from tests.integration.conftest import make_job, make_task


@pytest.fixture
def harness() -> Iterator[Harness]:
    built = Harness.build(slots=4)
    yield built
    built.close()


@pytest.fixture
def one_slot() -> Iterator[Harness]:
    built = Harness.build(slots=1)
    yield built
    built.close()


def job(tasks: dict[str, Any], dependencies: dict[str, list[str]] | None = None,
        **fields: Any) -> dict[str, Any]:
    return make_job(tasks, dependencies, **fields)


def task(count: int = 1, **fields: Any) -> dict[str, Any]:
    return make_task("true", count, **fields)


def states(harness: Harness, job_id: str, name: str = "t") -> list[State]:
    return [instance.state for instance in harness.engine.instances(job_id, name)]


def task_states(harness: Harness, job_id: str) -> dict[str, State]:
    return {record.name: record.state for record in harness.engine.tasks(job_id)}


def job_state(harness: Harness, job_id: str) -> State:
    return harness.engine.job(job_id).state


# ---- submission and DAG order --------------------------------------------------------------

def test_all_instances_exist_as_waiting_right_after_submission(harness: Harness) -> None:
    job_id = harness.engine.submit(job({"a": task(2), "b": task(3)}, {"a": ["b"]}))
    record = harness.engine.job(job_id)
    assert (record.state, record.task_metrics.total, record.instance_metrics.waiting) == (
        State.WAITING, 2, 5)
    assert harness.running() == []  # nothing launches before a step
    harness.engine.step()
    assert harness.running() == [f"{job_id}/a/0#1", f"{job_id}/a/1#1"]
    assert job_state(harness, job_id) is State.RUNNING
    assert task_states(harness, job_id) == {"a": State.RUNNING, "b": State.WAITING}


def test_dag_order_split_count_merge(harness: Harness) -> None:
    job_id = harness.submit(job({"split": task(), "count": task(3), "merge": task()},
                                {"split": ["count"], "count": ["merge"]}))
    assert harness.running() == [f"{job_id}/split/0#1"]
    harness.finish(f"{job_id}/split")
    assert harness.running() == [f"{job_id}/count/{index}#1" for index in range(3)]
    harness.finish(f"{job_id}/count/0")
    harness.finish(f"{job_id}/count/2")
    assert harness.running() == [f"{job_id}/count/1#1"]  # merge waits for all of count
    harness.finish(f"{job_id}/count/1")
    assert harness.running() == [f"{job_id}/merge/0#1"]
    harness.finish(f"{job_id}/merge")
    assert job_state(harness, job_id) is State.FINISHED
    assert set(task_states(harness, job_id).values()) == {State.FINISHED}


def test_fan_in_waits_for_every_upstream(harness: Harness) -> None:
    job_id = harness.submit(job({"a": task(), "b1": task(), "b2": task(), "c": task()},
                                {"a": ["b1", "b2"], "b1": ["c"], "b2": ["c"]}))
    harness.finish(f"{job_id}/a")
    harness.finish(f"{job_id}/b2")
    assert harness.running() == [f"{job_id}/b1/0#1"]
    assert task_states(harness, job_id)["c"] is State.WAITING
    harness.finish(f"{job_id}/b1")
    assert harness.running() == [f"{job_id}/c/0#1"]
    b1, = harness.engine.instances(job_id, "b1")
    c, = harness.engine.instances(job_id, "c")
    assert b1.ended is not None and c.started is not None and b1.ended <= c.started


# ---- retries and failures ------------------------------------------------------------------

def test_a_failed_attempt_is_retried_until_it_succeeds(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task(MaxRetryCount=2)}))
    harness.finish(f"{job_id}/t/0", exit_code=1)
    assert harness.running() == [f"{job_id}/t/0#2"]  # re-queued and launched in one step
    assert harness.agent.submitted[-1].retry_count == 1
    harness.finish(f"{job_id}/t/0", exit_code=0)
    instance, = harness.engine.instances(job_id, "t")
    assert (instance.state, instance.retry_count, instance.attempts) == (State.FINISHED, 1, 2)
    assert [a.exit_code for a in harness.engine.attempts(job_id, "t", 0)] == [1, 0]
    assert job_state(harness, job_id) is State.FINISHED


def test_retries_exhausted_fail_the_job_with_a_reason(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task(MaxRetryCount=1)}))
    harness.finish(f"{job_id}/t", exit_code=3)
    harness.finish(f"{job_id}/t", exit_code=3)
    record = harness.engine.job(job_id)
    assert record.state is State.FAILED and harness.running() == []
    assert "t/0" in record.message and "code 3" in record.message
    instance, = harness.engine.instances(job_id, "t")
    assert (instance.state, instance.retry_count, instance.exit_code, instance.error_code) == (
        State.FAILED, 1, 3, "NonZeroExitCode")


def test_a_timeout_is_a_failure_like_any_other(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task(Timeout=7, MaxRetryCount=1)}))
    assert harness.agent.running()[0].timeout == 7  # the executor enforces it
    harness.finish(f"{job_id}/t", exit_code=None, error_code=ErrorCode.TIMEOUT)
    assert harness.running() == [f"{job_id}/t/0#2"]  # a retry is used
    harness.finish(f"{job_id}/t", exit_code=None, error_code=ErrorCode.TIMEOUT)
    instance, = harness.engine.instances(job_id, "t")
    assert (instance.state, instance.error_code) == (State.FAILED, "InstanceTimeout")
    assert job_state(harness, job_id) is State.FAILED


def test_fail_on_instance_fail_stops_siblings_and_leaves_downstream_waiting(
        harness: Harness) -> None:
    job_id = harness.submit(job({"bad": task(), "slow": task(), "after": task()},
                                {"bad": ["after"], "slow": ["after"]}))
    slow_key = harness.agent.running()[1].key
    harness.finish(f"{job_id}/bad", exit_code=1)
    assert harness.agent.cancelled == [slow_key] and harness.running() == []
    harness.engine.step()  # the cancelled attempt's report changes nothing
    assert job_state(harness, job_id) is State.FAILED
    assert task_states(harness, job_id) == {
        "bad": State.FAILED, "slow": State.STOPPED, "after": State.WAITING}
    assert states(harness, job_id, "slow") == [State.STOPPED]


def test_without_fail_on_instance_fail_the_job_goes_on(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task(3), "after": task()}, {"t": ["after"]},
                                JobFailOnInstanceFail=False))
    harness.finish(f"{job_id}/t/1", exit_code=1)
    assert job_state(harness, job_id) is State.RUNNING and harness.agent.cancelled == []
    harness.finish(f"{job_id}/t/0")
    harness.finish(f"{job_id}/t/2")
    assert harness.running() == [f"{job_id}/after/0#1"]  # a task with a failed instance ended
    harness.finish(f"{job_id}/after")
    record = harness.engine.job(job_id)
    assert record.state is State.FINISHED
    assert (record.instance_metrics.failed, record.instance_metrics.finished) == (1, 3)
    assert task_states(harness, job_id) == {"t": State.FINISHED, "after": State.FINISHED}


def test_a_lost_attempt_runs_again_without_using_a_retry(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task()}))  # MaxRetryCount 0
    harness.finish(f"{job_id}/t", exit_code=None, error_code=ErrorCode.LOST)
    assert harness.running() == [f"{job_id}/t/0#2"]
    harness.finish(f"{job_id}/t")
    instance, = harness.engine.instances(job_id, "t")
    assert (instance.state, instance.retry_count, instance.attempts) == (State.FINISHED, 0, 2)


# ---- launch order and slots ----------------------------------------------------------------

def test_never_more_attempts_than_slots(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task(6)}))
    other = harness.submit(job({"t": task(2)}))
    assert len(harness.running()) == 4 and all(k.startswith(job_id) for k in harness.running())
    harness.finish(f"{job_id}/t/0")
    assert harness.running()[-1] == f"{job_id}/t/4#1"
    most = 0
    while harness.running():
        most = max(most, len(harness.running()))
        harness.finish(harness.agent.running()[-1].key)  # the newest first: slots free up
    assert most == 4 and len(harness.agent.submitted) == 8
    assert job_state(harness, job_id) is job_state(harness, other) is State.FINISHED


def test_priority_then_age_order_with_one_slot(one_slot: Harness) -> None:
    harness = one_slot
    blocker = harness.submit(job({"t": task()}))
    ids = {name: harness.submit(job({"t": task()}, Name=name, Priority=priority))
           for name, priority in [("low", 1), ("high", 9), ("mid", 5), ("mid2", 5)]}
    harness.finish(blocker)
    order = []
    while harness.running():
        order.append(harness.agent.running()[0].key.job_id)
        harness.finish(order[-1])
    assert order == [ids["high"], ids["mid"], ids["mid2"], ids["low"]]


def test_a_later_higher_priority_job_overtakes_the_queued_instances(one_slot: Harness) -> None:
    harness = one_slot
    low = harness.submit(job({"t": task(5)}, Priority=1))
    harness.finish(f"{low}/t/0")  # 1 runs; 2, 3 and 4 are queued to launch next
    high = harness.submit(job({"t": task()}, Priority=9))
    harness.run_all()
    assert [(r.key.job_id, r.key.instance_id) for r in harness.agent.submitted] == [
        (low, 0), (low, 1), (high, 0), (low, 2), (low, 3), (low, 4)]


def test_several_jobs_in_flight(harness: Harness) -> None:
    ids = [harness.submit(job({"t": task(3)}, Name=f"j{n}")) for n in range(4)]
    harness.run_all()
    assert [job_state(harness, job_id) for job_id in ids] == [State.FINISHED] * 4
    assert harness.engine.table_sizes()["in_flight"] == 0


# ---- user operations -----------------------------------------------------------------------

def test_stop_then_start_reruns_only_unfinished_instances(harness: Harness) -> None:
    job_id = harness.submit(job({"quick": task(), "held": task(2)}, {"quick": ["held"]}))
    harness.finish(f"{job_id}/quick")
    held = [request.key for request in harness.agent.running()]
    harness.engine.stop(job_id)
    assert harness.agent.cancelled == held and harness.running() == []
    harness.engine.step()
    assert job_state(harness, job_id) is State.STOPPED
    assert task_states(harness, job_id) == {"quick": State.FINISHED, "held": State.STOPPED}
    with pytest.raises(StateConflict, match="Stopped"):
        harness.engine.stop(job_id)
    harness.engine.restart(job_id)
    assert job_state(harness, job_id) is State.WAITING
    harness.engine.step()
    assert harness.running() == [f"{job_id}/held/0#2", f"{job_id}/held/1#2"]
    harness.run_all()
    assert job_state(harness, job_id) is State.FINISHED
    assert [i.attempts for i in harness.engine.instances(job_id, "quick")] == [1]
    assert [i.attempts for i in harness.engine.instances(job_id, "held")] == [2, 2]


def test_delete_and_priority_follow_the_state_rules(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task()}))
    with pytest.raises(StateConflict):
        harness.engine.delete(job_id)
    with pytest.raises(StateConflict):
        harness.engine.change_priority(job_id, 7)
    harness.engine.stop(job_id)
    with pytest.raises(InvalidPriority):
        harness.engine.change_priority(job_id, 1001)
    harness.engine.change_priority(job_id, 7)
    assert harness.engine.job(job_id).priority == 7
    assert harness.store.events(job_id)[-1].message == "priority 0 -> 7"
    harness.engine.delete(job_id)
    assert harness.agent.forgotten == [job_id]
    with pytest.raises(NotFound):
        harness.engine.job(job_id)
    with pytest.raises(NotFound):
        harness.engine.stop(job_id)


def test_a_new_priority_counts_once_the_job_is_started_again(one_slot: Harness) -> None:
    harness = one_slot
    blocker = harness.submit(job({"t": task()}))
    first = harness.submit(job({"t": task()}, Priority=5))
    second = harness.submit(job({"t": task()}, Priority=1))
    harness.engine.stop(second)
    harness.engine.change_priority(second, 9)
    harness.engine.restart(second)
    harness.finish(blocker)
    assert harness.agent.running()[0].key.job_id == second
    harness.run_all()
    assert job_state(harness, first) is State.FINISHED


def test_auto_release_deletes_the_finished_job_and_keeps_its_final_record(
        harness: Harness) -> None:
    job_id = harness.submit(job({"t": task()}, AutoRelease=True))
    harness.finish(job_id)
    with pytest.raises(NotFound):
        harness.engine.job(job_id)
    assert harness.store.job(job_id) is None and harness.agent.forgotten == [job_id]
    assert harness.engine.wait(job_id, timeout=0).state is State.FINISHED  # returns at once


def test_a_job_deleted_while_its_attempts_end_does_not_hold_up_the_engine(
        harness: Harness) -> None:
    for _ in range(3):
        doomed = harness.submit(job({"t": task(2)}))
        harness.engine.stop(doomed)
        harness.engine.delete(doomed)  # before the cancelled attempts' reports are applied
    after = harness.submit(job({"t": task(4)}))
    assert len(harness.running()) == 4
    harness.run_all()
    assert job_state(harness, after) is State.FINISHED
    assert harness.engine.table_sizes()["in_flight"] == 0


def test_a_job_with_mapped_paths_needs_a_sandbox(harness: Harness) -> None:
    mapped = job({"t": task(InputMapping={"oss://test/in/": "/home/input/"})})
    with pytest.raises(SpecError) as refused:
        harness.engine.submit(mapped)
    assert [(p.code, p.path) for p in refused.value.problems] == [
        ("SandboxUnavailable", "DAG.Tasks.t")]
    assert "sandbox=True" in str(refused.value)  # the executor says why, and what to do
    sandboxed = Harness.build(sandbox=True)
    try:
        job_id = sandboxed.submit(mapped)
        assert sandboxed.agent.running()[0].inputs[0].path == "/home/input/"
        assert job_state(sandboxed, job_id) is State.RUNNING
    finally:
        sandboxed.close()


# ---- faults: failing reports, lost attempts, a stale launch queue --------------------------

def test_a_report_that_keeps_failing_is_dropped_and_the_engine_goes_on(
        harness: Harness, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    job_id = harness.submit(job({"t": task(3)}))
    real_decide = engine_module.decide

    def broken_for_one_report(outcome: Any, retry_count: int, most: int) -> Any:
        if outcome.stdout_path.endswith(f"{job_id}.t.1"):  # a bug hit by this report only
            raise RuntimeError("bug")
        return real_decide(outcome, retry_count, most)

    monkeypatch.setattr(engine_module, "decide", broken_for_one_report)
    harness.agent.finish(job_id)
    for _ in range(engine_module.MOST_TRIES):  # all together, then each alone, until dropped
        with pytest.raises(RuntimeError, match="bug"):
            harness.engine.step()
    harness.engine.step()  # nothing left to fail
    assert "dropped the report" in caplog.text
    assert states(harness, job_id) == [State.FINISHED, State.RUNNING, State.FINISHED]
    assert harness.engine.table_sizes()["tries"] == 0
    after = harness.submit(job({"t": task(4)}))
    harness.run_all()
    assert job_state(harness, after) is State.FINISHED


def test_instances_left_running_by_a_dead_engine_are_rerun(harness: Harness) -> None:
    job_id = harness.submit(job({"t": task()}))  # running when its engine "died"
    second = Harness.build(store=harness.store, clock=harness.clock)  # a server: resumes
    instance, = second.engine.instances(job_id, "t")
    assert (instance.state, instance.error_code) == (State.WAITING, "AttemptLost")
    second.engine.step()
    assert second.running() == [f"{job_id}/t/0#2"]
    second.finish(job_id)
    instance, = second.engine.instances(job_id, "t")
    assert (instance.state, instance.retry_count, instance.attempts) == (State.FINISHED, 0, 2)
    assert second.engine.abandoned == []
    second.close()


def test_jobs_left_active_by_a_dead_run_are_stopped_not_resumed_by_the_next(
        harness: Harness) -> None:
    job_id = harness.submit(job({"t": task()}, Name="left"))
    second = Harness.build(store=harness.store, clock=harness.clock, abandon=True)
    assert second.engine.abandoned == [Abandoned(job_id, "left", State.RUNNING)]
    record = second.engine.job(job_id)
    assert record.state is State.STOPPED and "batchyard start" in record.message
    second.engine.step()
    assert second.running() == []
    second.engine.restart(job_id)
    second.engine.step()
    assert second.running() == [f"{job_id}/t/0#2"]
    second.close()


def test_a_stale_launch_queue_is_rolled_back_and_read_again(one_slot: Harness) -> None:
    harness = one_slot
    job_id = harness.submit(job({"t": task(4)}))
    harness.finish(f"{job_id}/t/0")  # t/1 launched; t/2 and t/3 queued to launch next
    with harness.store.transaction() as tx:  # behind the engine's back: its queue is stale
        assert tx.move_instance(job_id, "t", 2, State.STOPPED, harness.clock())
    events = len(harness.store.events(job_id))
    harness.agent.finish(f"{job_id}/t/1")
    with pytest.raises(StaleLaunchQueue):
        harness.engine.step()
    assert len(harness.store.events(job_id)) == events  # nothing of the step was kept
    assert states(harness, job_id)[1] is State.RUNNING
    harness.engine.step()  # the report again, with a fresh queue
    assert states(harness, job_id) == [State.FINISHED, State.FINISHED, State.STOPPED,
                                       State.RUNNING]
    assert harness.running() == [f"{job_id}/t/3#1"]


def test_tenants_share_the_slots_instead_of_waiting_behind_an_older_job(
        harness: Harness) -> None:
    big = harness.submit(job({"t": task(100)}, Priority=10), tenant="alice")
    assert len(harness.running()) == 4
    logs = {"StdoutRedirectPath": "oss://bob/logs/", "StderrRedirectPath": "oss://bob/logs/"}
    small = harness.submit(job({"t": task(2, Parameters={  # newer, lower priority
        "Command": {"CommandLine": "true", "PackagePath": ""}, **logs})}), tenant="bob")
    harness.finish(f"{big}/t/0")
    harness.finish(f"{big}/t/1")
    assert sorted(key.split("/")[0] for key in harness.running()) == [big, big, small, small]
    harness.finish(f"{small}/t/0")
    more = harness.submit(job({"t": task(3)}), tenant="alice")  # alice's own order holds
    harness.finish(f"{big}/t/2")
    assert [key.split("/")[0] for key in harness.running()].count(more) == 0
