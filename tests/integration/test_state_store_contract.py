"""The state-store port (`ports.store`) behaves the same on every store: the MemoryStore of
`batchyard.testing`, SQLite and PostgreSQL. Written only against the port's Protocols and
typed rows (no SQL), so that an engine rule tested on the MemoryStore holds on the others."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from batchyard.domain.attempt import AttemptKey
from batchyard.domain.buckets import BucketForbidden
from batchyard.domain.derivation import Metrics
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.spec import object_urls, parse_job
from batchyard.domain.states import (
    RESTART,
    TRANSITIONS,
    Entity,
    ForbiddenTransition,
    State,
    Transition,
)
from batchyard.errors import TokenTaken
from batchyard.ports.store import (
    AttemptEnd,
    IdempotencyToken,
    LaunchRow,
    MovedInstance,
    NewJob,
    StaleBatch,
    StateStore,
    StateTransaction,
    WaitingTask,
)
from tests.integration.conftest import make_job, make_task


@pytest.fixture
def store(each_store: StateStore) -> StateStore:
    return each_store


def two_step_job(priority: int = 0, **fields: Any) -> dict[str, Any]:
    return make_job({"first": make_task("true", 2), "second": make_task("true")},
                    {"first": ["second"]}, Priority=priority, **fields)


def create(store: StateStore, job_id: str, job: dict[str, Any] | None = None,
           now: float = 1000.0, tenant: str = "alice") -> str:
    store.create_job(NewJob(job_id, tenant, parse_job(job or two_step_job()), now))
    return job_id


def outcome(exit_code: int | None = 0, code: ErrorCode = ErrorCode.NONE,
            message: str = "") -> Outcome:
    return Outcome(exit_code, code, message, detail="d", stdout_path="oss://b/out",
                   stderr_path="oss://b/err", node="n1",
                   started_at=datetime.fromtimestamp(1001, UTC),
                   ended_at=datetime.fromtimestamp(1002.5, UTC))


def end(key: AttemptKey, result: Outcome | None = None, retry_count: int = 0,
        ended: float = 1002.5) -> AttemptEnd:
    return AttemptEnd(key, result or outcome(), retry_count, ended)


def end_one(tx: StateTransaction, attempt_end: AttemptEnd, target: State, now: float,
            message: str = "") -> bool:
    """Whether one attempt's end moved its instance to `target`."""
    return tx.end_attempts([replace(attempt_end, target=target, message=message)], now)[0]


def instance_states(store: StateStore, job_id: str, task: str = "first") -> list[State]:
    return [instance.state for instance in store.instances(job_id, task)]


def launch(tx: StateTransaction, limit: int = 2, now: float = 1001) -> None:
    assert tx.mark_running(tx.launch_rows(limit), now)


class Rollback(Exception):
    """Raised to end a transaction without committing it."""


# ---- creation and reads --------------------------------------------------------------------

def test_a_created_job_and_all_its_parts_are_waiting(store: StateStore) -> None:
    spec = parse_job(two_step_job(priority=3))
    store.create_job(NewJob("job-1", "alice", spec, 1000.0))
    job = store.job("job-1", "alice")
    assert job is not None and store.job("job-1", "bob") is None and store.job("nope") is None
    assert (job.name, job.priority, job.state, job.message, job.started, job.ended) == (
        "test", 3, State.WAITING, "", None, None)
    assert job.created == datetime.fromtimestamp(1000, UTC)
    assert (job.task_metrics, job.instance_metrics) == (Metrics(waiting=2), Metrics(waiting=3))
    assert job.description == spec.echo() and store.job_state("job-1") is State.WAITING
    assert [(t.name, t.state, t.instance_metrics) for t in store.tasks("job-1")] == [
        ("first", State.WAITING, Metrics(waiting=2)), ("second", State.WAITING, Metrics(waiting=1))]
    assert [(i.instance_id, i.state, i.attempts, i.retry_count, i.progress)
            for i in store.instances("job-1", "first")] == [
        (0, State.WAITING, 0, 0, 0), (1, State.WAITING, 0, 0, 0)]
    assert [(e.kind, e.source, e.target, e.message) for e in store.events("job-1")] == [
        ("job", "", "Waiting", "submitted")]


def test_the_rows_a_transaction_reads(store: StateStore) -> None:
    create(store, "job-1", two_step_job(JobFailOnInstanceFail=False, AutoRelease=True))
    with store.transaction() as tx:
        row = tx.job_row("job-1")
        tasks = tx.task_rows("job-1")
        assert tx.job_row("job-nope") is None and tx.task_rows("job-nope") == []
        assert tx.task_rows("job-1", {"second"}) == tasks[1:] and tx.task_rows("job-1", ()) == []
        assert tx.active_job_ids() == ["job-1"]
    assert row is not None and (row.id, row.tenant, row.state, row.created) == (
        "job-1", "alice", State.WAITING, 1000.0)
    assert (row.fail_on_instance_fail, row.auto_release, row.started) == (False, True, None)
    assert [(t.name, t.ready, t.instance_count, t.max_retry_count, t.state) for t in tasks] == [
        ("first", True, 2, 0, State.WAITING), ("second", False, 1, 0, State.WAITING)]


def test_jobs_newest_first_by_tenant_and_state(store: StateStore) -> None:
    for number, tenant in enumerate(["alice", "bob", "alice"]):
        create(store, f"job-{number}", now=1000 + number, tenant=tenant)
    with store.transaction() as tx:
        assert tx.move_job("job-2", State.STOPPED, 1005)
    assert [job.id for job in store.jobs()] == ["job-2", "job-1", "job-0"]
    assert [job.id for job in store.jobs("alice")] == ["job-2", "job-0"]
    assert [job.id for job in store.jobs(state=State.WAITING)] == ["job-1", "job-0"]
    assert [job.id for job in store.jobs("bob", State.STOPPED)] == []


# ---- every move the tables allow, and every one they forbid --------------------------------

PATHS: dict[State, list[State]] = {
    State.WAITING: [], State.RUNNING: [State.RUNNING],
    State.FINISHED: [State.RUNNING, State.FINISHED], State.FAILED: [State.RUNNING, State.FAILED],
    State.STOPPED: [State.STOPPED]}
"""Allowed moves from Waiting to each state (the same in the three tables)."""


def move(tx: StateTransaction, entity: Entity, target: State, operation: str = "") -> bool:
    """Move the job, its task `first` or its instance first/0 of job-1."""
    if entity is Entity.JOB:
        return tx.move_job("job-1", target, 1001, operation)
    if entity is Entity.TASK:
        return tx.move_task("job-1", "first", target, 1001, operation)
    assert not operation
    return tx.move_instance("job-1", "first", 0, target, 1001)


def state_of(store: StateStore, entity: Entity) -> State | None:
    if entity is Entity.JOB:
        return store.job_state("job-1")
    if entity is Entity.TASK:
        return store.tasks("job-1")[0].state
    return store.instances("job-1", "first")[0].state


@pytest.mark.parametrize("entity", list(Entity))
def test_every_move_the_table_allows_is_made_and_every_other_raises(
        store: StateStore, entity: Entity) -> None:
    """From each state, to each state: the table decides; a forbidden move changes nothing."""
    operations = [""] if entity is Entity.INSTANCE else ["", RESTART]
    for source, path in PATHS.items():
        job_id = create(store, "job-1")
        with store.transaction() as tx:
            assert all(move(tx, entity, step) for step in path)
        for target in State:
            for operation in operations:
                check_move(store, entity, source, target, operation)
        with store.transaction() as tx:
            tx.delete_job(job_id)


def check_move(store: StateStore, entity: Entity, source: State, target: State,
               operation: str) -> None:
    allowed = target in TRANSITIONS[entity][source] and (
        operation != RESTART or source in (State.FAILED, State.STOPPED))
    events = len(store.events("job-1"))
    with pytest.raises(Rollback), store.transaction() as tx:
        if allowed:
            assert move(tx, entity, target, operation)
            tx.flush_events()
            assert tx.transitions[-1].source is source and tx.transitions[-1].target is target
        else:
            with pytest.raises(ForbiddenTransition) as raised:
                move(tx, entity, target, operation)
            assert (raised.value.entity, raised.value.source, raised.value.target) == (
                entity, source, target)
        raise Rollback
    assert state_of(store, entity) is source and len(store.events("job-1")) == events


def test_the_error_names_the_object_and_the_move(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        with pytest.raises(ForbiddenTransition, match=(
                "instance job-1/first/0 may not move from Waiting to Finished")):
            tx.move_instance("job-1", "first", 0, State.FINISHED, 1001)
        with pytest.raises(ForbiddenTransition, match="task job-1/first may not move from "
                                                      "Waiting to Finished"):
            tx.move_task("job-1", "first", State.FINISHED, 1001)
        with pytest.raises(ForbiddenTransition, match="from Waiting to Waiting by restart"):
            tx.move_job("job-1", State.WAITING, 1001, operation=RESTART)
        with pytest.raises(ForbiddenTransition):  # a target never reached after Running
            end_one(tx, end(AttemptKey("job-1", "first", 0, 1)), State.RUNNING, 1001)


def test_a_row_that_went_away_is_a_race_not_an_error(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        assert not tx.move_job("job-gone", State.RUNNING, 1001)
        assert not tx.move_task("job-1", "no-such-task", State.RUNNING, 1001)
        assert not tx.move_instance("job-1", "first", 7, State.RUNNING, 1001)
        assert not end_one(tx, end(AttemptKey("job-gone", "first", 0, 1)), State.FINISHED,
                                  1001)
        assert tx.move_instances("job-gone", State.STOPPED, 1001) == []
        assert tx.instance_row("job-1", "first", 7) is None
    assert len(store.events("job-1")) == 1


def test_moves_set_the_fields_they_name_and_keep_the_others(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        assert tx.move_job("job-1", State.RUNNING, 1001, started=1001.5, message="going")
        assert tx.move_task("job-1", "first", State.RUNNING, 1001, started=1001.25)
        assert tx.move_instance("job-1", "first", 0, State.RUNNING, 1001)
        assert tx.move_instance("job-1", "first", 0, State.WAITING, 1002, ended=1002.0,
                                error_code="AttemptLost", error_message="lost", message="why")
        assert tx.move_job("job-1", State.STOPPED, 1003, ended=1003.0)
    job, first = store.job("job-1"), store.instances("job-1", "first")[0]
    assert job is not None and job.message == "going"  # KEEP: left as it was
    assert (job.started, job.ended) == (datetime.fromtimestamp(1001.5, UTC),
                                        datetime.fromtimestamp(1003, UTC))
    assert store.tasks("job-1")[0].started == datetime.fromtimestamp(1001.25, UTC)
    assert (first.state, first.error_code, first.error_message) == (
        State.WAITING, "AttemptLost", "lost")
    assert first.ended == datetime.fromtimestamp(1002, UTC)
    assert [(e.kind, e.source, e.target, e.message) for e in store.events("job-1")][-2:] == [
        ("instance", "Running", "Waiting", "why"), ("job", "Running", "Stopped", "")]
    with store.transaction() as tx:
        assert tx.move_job("job-1", State.WAITING, 1004, RESTART, ended=None, message="")
    job = store.job("job-1")
    assert job is not None and (job.ended, job.message) == (None, "")


# ---- events and transitions ----------------------------------------------------------------

def test_every_event_records_its_source_and_the_transaction_lists_its_transitions(
        store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        launch(tx, 1)
        tx.move_task("job-1", "first", State.RUNNING, 1001)
        assert tx.transitions == []  # nothing flushed yet
        tx.flush_events()
        end_one(tx, end(AttemptKey("job-1", "first", 0, 1), outcome(1)), State.FAILED, 1002,
                       "exit 1")
        tx.event("job-1", "priority", "0", State.RUNNING, 1002)  # not a transition
        tx.move_instances("job-1", State.STOPPED, 1003)
    assert tx.transitions == [
        Transition(Entity.INSTANCE, "job-1", "first", 0, State.WAITING, State.RUNNING, 1001),
        Transition(Entity.TASK, "job-1", "first", None, State.WAITING, State.RUNNING, 1001),
        Transition(Entity.INSTANCE, "job-1", "first", 0, State.RUNNING, State.FAILED, 1002,
                   "exit 1"),
        Transition(Entity.INSTANCE, "job-1", "first", 1, State.WAITING, State.STOPPED, 1003),
        Transition(Entity.INSTANCE, "job-1", "second", 0, State.WAITING, State.STOPPED, 1003)]
    events = store.events("job-1")
    assert all(event.source for event in events[1:]) and events == sorted(
        events, key=lambda event: event.id)
    assert [(e.kind, e.source, e.target) for e in events if e.kind == "priority"] == [
        ("priority", "0", "Running")]


def test_an_exception_rolls_the_whole_transaction_back(store: StateStore) -> None:
    create(store, "job-1")
    create(store, "job-2")
    with pytest.raises(Rollback), store.transaction() as tx:
        launch(tx, 3)
        assert tx.move_job("job-1", State.RUNNING, 1001)
        tx.create_jobs([NewJob("job-3", "alice", parse_job(two_step_job()), 1001)])
        tx.flush_events()
        assert store.job_state("job-1") is State.WAITING  # readers see only what committed
        tx.delete_job("job-2")
        raise Rollback("a crash between the changes and the commit")
    assert instance_states(store, "job-1") == [State.WAITING, State.WAITING]
    assert store.job_state("job-1") is State.WAITING and store.job("job-3") is None
    assert len(store.events("job-1")) == 1 and len(store.instances("job-2", "first")) == 2


def test_readers_on_other_threads_see_whole_transactions(store: StateStore) -> None:
    """Each transaction launches two instances: a reader never sees an odd number running."""
    create(store, "job-1", make_job({"t": make_task("true", 40)}))
    seen: list[Metrics] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set() or not seen:
            job = store.job("job-1")
            seen.append(job.instance_metrics if job is not None else Metrics())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            with store.transaction() as tx:
                launch(tx, 2)
    finally:
        done.set()
        reader.join()
    assert all(m.total == 40 and m.running % 2 == 0 for m in seen), seen
    job = store.job("job-1")
    assert job is not None and job.instance_metrics.running == 40


# ---- launches ------------------------------------------------------------------------------

def make_three_jobs(store: StateStore) -> None:
    create(store, "job-low", two_step_job(priority=1), now=1000)
    create(store, "job-high-old", make_job({"b": make_task("true"), "a": make_task("true", 2)},
                                           Priority=5), now=1001)
    create(store, "job-high-new", two_step_job(priority=5), now=1002)


def test_launch_rows_by_priority_then_creation_task_and_instance(store: StateStore) -> None:
    make_three_jobs(store)
    with store.transaction() as tx:
        rows = tx.launch_rows(10)
    keys = [(r.candidate.job_id, r.candidate.task, r.candidate.instance_id) for r in rows]
    assert keys == [("job-high-old", "a", 0), ("job-high-old", "a", 1), ("job-high-old", "b", 0),
                    ("job-high-new", "first", 0), ("job-high-new", "first", 1),
                    ("job-low", "first", 0), ("job-low", "first", 1)]
    assert all(r.starts_task and (r.attempts, r.retry_count) == (0, 0) for r in rows)
    assert rows[0].candidate.priority == 5
    assert rows[0].candidate.job_created == datetime.fromtimestamp(1001, UTC)


@pytest.mark.parametrize("most_jobs", [None, 1, 2, 3])
def test_whatever_the_bounds_launch_rows_are_a_prefix_of_the_order(
        store: StateStore, most_jobs: int | None) -> None:
    make_three_jobs(store)
    per_job = {"job-high-old": 3, "job-high-new": 2, "job-low": 2}
    with store.transaction() as tx:
        every = tx.launch_rows(100)
        for limit in range(9):
            rows = tx.launch_rows(limit, most_jobs)
            reachable = sum(list(per_job.values())[:most_jobs or 3])
            assert rows == every[:min(limit, reachable)]


def test_launch_rows_bound_each_tenant_on_its_own(store: StateStore) -> None:
    """A tenant's big job fills no other tenant's part of the look-ahead."""
    bob_logs = {"StdoutRedirectPath": "oss://bob/logs/", "StderrRedirectPath": "oss://bob/logs/"}
    create(store, "job-big", make_job({"t": make_task("true", 50)}, Priority=9))
    create(store, "job-bob", make_job({"t": make_task("true", 3, Parameters={
        "Command": {"CommandLine": "true", "PackagePath": ""}, **bob_logs})}),
        now=2000, tenant="bob")
    with store.transaction() as tx:
        rows = tx.launch_rows(2)
        assert [(r.candidate.tenant, r.candidate.job_id, r.candidate.instance_id)
                for r in rows] == [("alice", "job-big", 0), ("alice", "job-big", 1),
                                   ("bob", "job-bob", 0), ("bob", "job-bob", 1)]
        assert len(tx.launch_rows(10, most_jobs=1)) == 13


def test_only_waiting_instances_of_ready_tasks_of_active_jobs_launch(store: StateStore) -> None:
    create(store, "job-1")
    create(store, "job-stopped", now=999)
    with store.transaction() as tx:
        tx.move_job("job-stopped", State.STOPPED, 1001)  # its instances are still Waiting
        launch(tx, 1)
        tx.move_task("job-1", "first", State.RUNNING, 1001)
        tx.move_job("job-1", State.RUNNING, 1001)
        rows = tx.launch_rows(10)
        assert [(r.candidate.instance_id, r.starts_task) for r in rows] == [(1, False)]
        tx.set_ready("job-1", {"first"}, False)
        assert tx.launch_rows(10) == []
        tx.set_ready("job-1", {"first", "second"}, True)
        assert [r.candidate.task for r in tx.launch_rows(10)] == ["first", "second"]
        assert [t.ready for t in tx.task_rows("job-1")] == [True, True]


def test_mark_running_moves_waiting_instances_and_tells_a_stale_launch(
        store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        rows = tx.launch_rows(2)
        assert tx.mark_running(rows, 1001) and tx.mark_running([], 1001)
        assert tx.launch_rows(5) == [] and tx.has_active_instances("job-1", "first")
    assert [(i.state, i.attempts, i.started) for i in store.instances("job-1", "first")] == [
        (State.RUNNING, 1, datetime.fromtimestamp(1001, UTC))] * 2
    with pytest.raises(Rollback), store.transaction() as tx:
        assert not tx.mark_running(rows, 1002)  # no longer Waiting: the engine rolls back
        raise Rollback
    with store.transaction() as tx:
        assert sorted((r.task, r.instance_id, r.attempts) for r in tx.running_instances()) == [
            ("first", 0, 1), ("first", 1, 1)]


# ---- the pools of tasks on no cluster (one per AutoCluster under the Ray provider) ----------

def keys_of(rows: list[LaunchRow]) -> list[tuple[str, str, int]]:
    return [(r.candidate.job_id, r.candidate.task, r.candidate.instance_id) for r in rows]


def test_a_tasks_launch_rows_are_its_part_of_the_launch_order(store: StateStore) -> None:
    make_three_jobs(store)
    create(store, "job-wide", make_job({"t": make_task("true", 12)}), now=1003)
    with store.transaction() as tx:
        every = tx.launch_rows(100)
        for job_id, task in (("job-high-old", "a"), ("job-high-old", "b"), ("job-low", "first"),
                             ("job-wide", "t")):
            mine = [r for r in every if (r.candidate.job_id, r.candidate.task) == (job_id, task)]
            assert tx.task_launch_rows(job_id, task, 100) == mine
            for limit in range(-1, 4):
                assert tx.task_launch_rows(job_id, task, limit) == mine[:max(limit, 0)]
        row = tx.task_launch_rows("job-wide", "t", 12)[3]
        assert tx.mark_running([row], 1004)  # a hole: instance 3 is Running now
        assert [k[2] for k in keys_of(tx.task_launch_rows("job-wide", "t", 5))] == [
            0, 1, 2, 4, 5]  # by instance id (not 0, 1, 10, 11 as text would sort them)
        assert [r.starts_task for r in tx.task_launch_rows("job-wide", "t", 2)] == [True] * 2
        assert tx.move_task("job-wide", "t", State.RUNNING, 1004)
        assert tx.move_job("job-wide", State.RUNNING, 1004)
        assert [r.starts_task for r in tx.task_launch_rows("job-wide", "t", 2)] == [False] * 2


def test_a_task_launches_only_when_ready_in_an_active_job(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        assert tx.task_launch_rows("job-1", "second", 5) == []  # "first" comes before it
        tx.set_ready("job-1", {"second"}, True)
        assert keys_of(tx.task_launch_rows("job-1", "second", 5)) == [("job-1", "second", 0)]
        assert tx.task_launch_rows("job-1", "nothing", 5) == []
        assert tx.task_launch_rows("job-none", "first", 5) == []
        assert tx.move_job("job-1", State.STOPPED, 1001)  # its instances are still Waiting
        assert tx.task_launch_rows("job-1", "first", 5) == []


def test_waiting_tasks_on_no_cluster_in_launch_order(store: StateStore) -> None:
    make_three_jobs(store)
    bob = make_task("true", 3, Parameters={
        "Command": {"CommandLine": "true", "PackagePath": ""},
        "StdoutRedirectPath": "oss://bob/logs/", "StderrRedirectPath": "oss://bob/logs/"})
    create(store, "job-bob", make_job({"t": bob}, Priority=5), now=1001.5, tenant="bob")
    create(store, "job-on-cluster", make_job({"t": make_task("true", ClusterId="cls-1")},
                                             Priority=9))
    create(store, "job-stopped", two_step_job(priority=9))
    with store.transaction() as tx:
        assert tx.move_job("job-stopped", State.STOPPED, 1003)
        every = tx.waiting_tasks(100)
        assert every == [WaitingTask("job-high-old", "a", "alice", 5, 2),
                         WaitingTask("job-high-old", "b", "alice", 5, 1),
                         WaitingTask("job-bob", "t", "bob", 5, 3),
                         WaitingTask("job-high-new", "first", "alice", 5, 2),
                         WaitingTask("job-low", "first", "alice", 1, 2)]
        for limit in range(-1, 7):
            assert tx.waiting_tasks(limit) == every[:max(limit, 0)]


def test_waiting_tasks_follow_the_counts_within_the_transaction(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        assert tx.mark_running(tx.task_launch_rows("job-1", "first", 1), 1001)
        assert tx.waiting_tasks(5) == [WaitingTask("job-1", "first", "alice", 0, 1)]
        assert tx.mark_running(tx.task_launch_rows("job-1", "first", 1), 1001)
        assert tx.waiting_tasks(5) == []  # none Waiting; "second" is not ready yet
        tx.set_ready("job-1", {"second"}, True)
        assert tx.waiting_tasks(5) == [WaitingTask("job-1", "second", "alice", 0, 1)]
        assert tx.end_attempts([replace(end(AttemptKey("job-1", "first", 0, 1)),
                                        target=State.WAITING)], 1002) == [True]
        assert [(t.task, t.waiting) for t in tx.waiting_tasks(5)] == [
            ("first", 1), ("second", 1)]
    with store.transaction() as tx:  # and as committed
        assert [(t.task, t.waiting) for t in tx.waiting_tasks(5)] == [
            ("first", 1), ("second", 1)]
        assert tx.move_job("job-1", State.RUNNING, 1003)  # Running is active too
        assert len(tx.waiting_tasks(5)) == 2


def test_a_batch_of_attempt_ends_moves_every_instance_to_its_own_target(
        store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        launch(tx, 2)
    first, second = (AttemptKey("job-1", "first", index, 1) for index in (0, 1))
    with store.transaction() as tx:
        assert tx.end_attempts([
            replace(end(first), target=State.FINISHED, message="done"),
            replace(end(second, outcome(3), retry_count=1), target=State.WAITING,
                    message="exited with code 3")], 1004) == [True, True]
    assert instance_states(store, "job-1")[:2] == [State.FINISHED, State.WAITING]
    assert [(e.instance_id, e.source, e.target, e.message)
            for e in store.events("job-1")][-2:] == [
        (0, "Running", "Finished", "done"), (1, "Running", "Waiting", "exited with code 3")]
    assert [task.instance_metrics.finished for task in store.tasks("job-1")][:1] == [1]


def test_a_batch_with_a_stale_attempt_says_which_moved_or_is_refused_whole(
        store: StateStore) -> None:
    """A store tells which attempts of a batch were current, or raises StaleBatch (then the
    caller rolls back and ends them one by one): never a stale attempt's end written."""
    create(store, "job-1")
    with store.transaction() as tx:
        launch(tx, 2)
    batch = [replace(end(AttemptKey("job-1", "first", 0, 1)), target=State.FINISHED),
             replace(end(AttemptKey("job-1", "first", 1, 7)), target=State.FINISHED)]
    try:
        with store.transaction() as tx:
            moved = tx.end_attempts(batch, 1004)
    except StaleBatch:
        assert instance_states(store, "job-1")[:2] == [State.RUNNING, State.RUNNING]
    else:
        assert moved == [True, False]
        assert instance_states(store, "job-1")[:2] == [State.FINISHED, State.RUNNING]


def test_an_attempt_ends_its_instance_only_while_it_is_the_current_one(
        store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        launch(tx, 1)
        # attempt 1 failed: back to Waiting for a retry, then launched again as attempt 2
        assert end_one(tx, end(AttemptKey("job-1", "first", 0, 1), outcome(3),
                                  retry_count=1), State.WAITING, 1002)
        row, = tx.launch_rows(1)
        assert (row.attempts, row.retry_count) == (1, 1)
        assert tx.mark_running([row], 1003)
    key = AttemptKey("job-1", "first", 0, 2)
    with store.transaction() as tx:
        assert not end_one(tx, end(AttemptKey("job-1", "first", 0, 1)), State.FAILED, 1004)
        assert not end_one(tx, end(AttemptKey("job-1", "first", 1, 1)), State.FINISHED,
                                  1004)  # still Waiting
        assert end_one(tx, end(key, retry_count=1), State.FINISHED, 1004, "done")
        assert not end_one(tx, end(key), State.FAILED, 1005)  # reported twice
    first = store.instances("job-1", "first")[0]
    assert (first.state, first.exit_code, first.error_code, first.retry_count, first.attempts) == (
        State.FINISHED, 0, "", 1, 2)
    assert (first.detail, first.stdout_path, first.stderr_path, first.node, first.progress) == (
        "d", "oss://b/out", "oss://b/err", "n1", 100)
    assert first.ended == datetime.fromtimestamp(1002.5, UTC)
    # the attempt's own start, as its agent reported it (a lease queued on an agent starts
    # after its instance is Running)
    assert first.started == datetime.fromtimestamp(1001, UTC)
    assert [(e.source, e.target, e.message) for e in store.events("job-1")][-1] == (
        "Running", "Finished", "done")


def test_an_attempt_is_recorded_once(store: StateStore) -> None:
    create(store, "job-1")
    key = AttemptKey("job-1", "first", 0, 1)
    failed = outcome(3, ErrorCode.EXIT_CODE, "exited with code 3")
    for result in (failed, outcome(4)):
        with store.transaction() as tx:
            tx.record_attempts([(key, result)])
    recorded, = store.attempts("job-1", "first", 0)
    assert (recorded.attempt, recorded.exit_code, recorded.error_code, recorded.error_message,
            recorded.stdout_path, recorded.stderr_path) == (
        1, 3, "NonZeroExitCode", "exited with code 3", "oss://b/out", "oss://b/err")
    assert (recorded.started, recorded.ended) == (datetime.fromtimestamp(1001, UTC),
                                                  datetime.fromtimestamp(1002.5, UTC))
    assert store.attempts("job-1", "first", 1) == []


def test_an_attempt_records_when_its_program_started(store: StateStore) -> None:
    create(store, "job-1")
    ran = replace(outcome(), program_started_at=datetime.fromtimestamp(1001.25, UTC))
    staged_only = outcome(None, ErrorCode.PACKAGE, "cannot download the package")
    with store.transaction() as tx:
        tx.record_attempts([(AttemptKey("job-1", "first", 0, 1), staged_only),
                            (AttemptKey("job-1", "first", 0, 2), ran)])
    first, second = store.attempts("job-1", "first", 0)
    assert (first.attempt, first.program_started) == (1, None)  # its program never started
    assert (second.attempt, second.started, second.program_started, second.ended) == (
        2, datetime.fromtimestamp(1001, UTC), datetime.fromtimestamp(1001.25, UTC),
        datetime.fromtimestamp(1002.5, UTC))


# ---- bulk moves, failures, counts ----------------------------------------------------------

def test_a_restart_requeues_failed_and_stopped_instances_never_running_ones(
        store: StateStore) -> None:
    create(store, "job-1", make_job({"first": make_task("true", 3), "second": make_task("true")}))
    with store.transaction() as tx:
        launch(tx, 3)
        end_one(tx, end(AttemptKey("job-1", "first", 1, 1), retry_count=2), State.FAILED, 1002)
        tx.move_instance("job-1", "first", 2, State.STOPPED, 1002)
        moved = tx.move_instances("job-1", State.WAITING, 1003, RESTART, retry_count=0)
    assert sorted(moved, key=str) == [MovedInstance("first", 1, State.FAILED, 1),
                                      MovedInstance("first", 2, State.STOPPED, 1)]
    assert instance_states(store, "job-1") == [State.RUNNING, State.WAITING, State.WAITING]
    assert [i.retry_count for i in store.instances("job-1", "first")] == [0, 0, 0]
    assert sorted((e.instance_id, e.source, e.target) for e in store.events("job-1")[-2:]) == [
        (1, "Failed", "Waiting"), (2, "Stopped", "Waiting")]


def test_a_bulk_stop_moves_only_the_tasks_named(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        launch(tx, 1)
        moved = tx.move_instances("job-1", State.STOPPED, 1002, tasks_only={"first"},
                                  ended=1002.0)
        assert tx.move_instances("job-1", State.STOPPED, 1003, tasks_only=set()) == []
    assert sorted(moved, key=str) == [MovedInstance("first", 0, State.RUNNING, 1),
                                      MovedInstance("first", 1, State.WAITING, 0)]
    assert instance_states(store, "job-1", "second") == [State.WAITING]
    assert store.instances("job-1", "first")[1].ended == datetime.fromtimestamp(1002, UTC)


def test_the_first_failure_and_the_active_instances(store: StateStore) -> None:
    create(store, "job-1", make_job({"b": make_task("true", 2), "a": make_task("true")}))
    with store.transaction() as tx:
        assert tx.first_failure("job-1") is None
        launch(tx, 3)
        for task, index, ended in [("b", 1, 1005.0), ("b", 0, 1004.0), ("a", 0, 1004.0)]:
            result = outcome(index + 1, ErrorCode.EXIT_CODE, f"code {index + 1}")
            assert end_one(tx, end(AttemptKey("job-1", task, index, 1), result, 0, ended),
                                  State.FAILED, ended)
        first = tx.first_failure("job-1")
        assert not tx.has_active_instances("job-1", "a") and tx.running_instances() == []
    assert first is not None and (first.task, first.instance_id, first.exit_code) == ("a", 0, 1)
    assert (first.state, first.error_code, first.error_message, first.ended) == (
        State.FAILED, "NonZeroExitCode", "code 1", 1004.0)


def test_instance_counts_and_task_metrics(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        launch(tx, 1)
        tx.move_task("job-1", "first", State.RUNNING, 1001)
        counts = tx.instance_counts("job-1")
        assert tx.instance_counts("job-1", {"second"}) == {"second": Metrics(waiting=1)}
        assert tx.task_metrics("job-1") == Metrics(waiting=1, running=1)
    assert counts == {"first": Metrics(waiting=1, running=1), "second": Metrics(waiting=1)}
    job = store.job("job-1")
    assert job is not None and job.instance_metrics == Metrics(waiting=2, running=1)
    assert [t.instance_metrics for t in store.tasks("job-1")] == [
        Metrics(waiting=1, running=1), Metrics(waiting=1)]


# ---- whole jobs: delete, priority, buckets, tokens -----------------------------------------

def test_delete_removes_the_job_and_everything_of_it(store: StateStore) -> None:
    create(store, "job-1")
    keep = create(store, "job-2")
    with store.transaction() as tx:
        launch(tx, 1)
        tx.record_attempts([(AttemptKey("job-1", "first", 0, 1), outcome())])
    with store.transaction() as tx:
        tx.delete_job("job-1")
        assert tx.active_job_ids() == [keep] and tx.job_row("job-1") is None
    assert store.job("job-1") is None and store.tasks("job-1") == []
    assert store.instances("job-1", "first") == [] and store.events("job-1") == []
    assert store.attempts("job-1", "first", 0) == [] and store.job_state("job-1") is None
    assert len(store.instances(keep, "first")) == 2 and len(store.events(keep)) == 1


def test_priority_changes_only_in_the_states_that_allow_it(store: StateStore) -> None:
    create(store, "job-1")
    with store.transaction() as tx:
        assert not tx.set_priority("job-1", 7) and not tx.set_priority("job-gone", 7)
        tx.move_job("job-1", State.STOPPED, 1001)
        assert tx.set_priority("job-1", 7)
        tx.event("job-1", "priority", "0", State.STOPPED, 1001, message="priority 0 -> 7")
    job = store.job("job-1")
    assert job is not None and job.priority == 7
    assert (store.events("job-1")[-1].kind, tx.transitions[-1].target) == (
        "priority", State.STOPPED)


def test_a_bucket_belongs_to_the_first_tenant_that_names_it(store: StateStore) -> None:
    spec = parse_job(two_step_job())
    uses = tuple(object_urls(spec))
    store.create_job(NewJob("job-a", "alice", spec, 1000.0, claims=uses))
    with pytest.raises(BucketForbidden) as refused:
        store.create_job(NewJob("job-b", "bob", spec, 1001.0, claims=uses))
    assert {problem.path for problem in refused.value.problems} == {use.path for use in uses}
    assert store.job("job-b") is None  # nothing of a refused job is stored
    store.create_job(NewJob("job-c", "alice", spec, 1002.0, claims=uses))
    assert store.owned_buckets("alice") == ["test"] and store.owned_buckets("bob") == []


def test_in_one_transaction_the_first_job_claims_a_bucket(store: StateStore) -> None:
    spec = parse_job(two_step_job())
    uses = tuple(object_urls(spec))
    with pytest.raises(BucketForbidden), store.transaction() as tx:
        tx.create_jobs([NewJob("job-a", "carol", spec, 1000.0, claims=uses),
                        NewJob("job-b", "dave", spec, 1000.0, claims=uses)])
    assert store.owned_buckets("carol") == [] and store.job("job-a") is None
    with store.transaction() as tx:
        tx.create_jobs([NewJob(f"job-{n}", "carol", spec, 1000.0, claims=uses) for n in "xy"])
    assert store.owned_buckets("carol") == ["test"] and store.job_state("job-y") is State.WAITING


def test_a_reused_token_is_refused_and_nothing_of_the_job_is_kept(store: StateStore) -> None:
    spec = parse_job(two_step_job())
    other = parse_job(make_job({"t": make_task("true")}))
    other.DAG.Tasks["t"].Parameters.StdoutRedirectPath = "oss://mine/logs/"
    token = IdempotencyToken("jobs", "t-1", "digest")
    store.create_job(NewJob("job-1", "alice", spec, 1000.0, token))
    with pytest.raises(TokenTaken):  # the same token again: no job, no claim
        store.create_job(NewJob("job-2", "alice", other, 1001.0, token,
                                tuple(object_urls(other))))
    assert store.job("job-2") is None and store.owned_buckets("alice") == []
    store.create_job(NewJob("job-3", "bob", spec, 1002.0, token))  # tokens are per tenant
    assert store.job_state("job-3") is State.WAITING


def test_the_token_of_a_refused_job_is_not_kept(store: StateStore) -> None:
    spec = parse_job(two_step_job())
    store.create_job(NewJob("job-a", "alice", spec, 1000.0, claims=tuple(object_urls(spec))))
    token = IdempotencyToken("jobs", "t-9", "digest")
    with pytest.raises(BucketForbidden):
        store.create_job(NewJob("job-b", "bob", spec, 1001.0, token, tuple(object_urls(spec))))
    store.create_job(NewJob("job-c", "bob", spec, 1002.0, token))  # the token is still free
    assert store.job_state("job-c") is State.WAITING


def test_a_claim_given_back_can_be_taken_again(store: StateStore) -> None:
    store.claim()()
    store.claim()()


# ---- counts kept in rows ---------------------------------------------------------------

def test_the_tasks_counts_follow_every_move_of_their_instances(store: StateStore) -> None:
    """The counts kept in the task rows always equal a count of the instances themselves."""
    job_id = create(store, "job-1", make_job({"first": make_task("true", 4),
                                              "second": make_task("true", 2)}))

    def recounted() -> dict[str, Metrics]:
        return {task: Metrics.of(i.state for i in store.instances(job_id, task))
                for task in ("first", "second")}

    with store.transaction() as tx:
        assert tx.instance_counts(job_id) == recounted()
        assert tx.mark_running(tx.launch_rows(3), 1001)
        assert tx.instance_counts(job_id, {"first"})["first"] == Metrics(waiting=1, running=3)
        end_one(tx, end(AttemptKey(job_id, "first", 0, 1)), State.FINISHED, 1002)
        end_one(tx, end(AttemptKey(job_id, "first", 1, 1), outcome(1)), State.FAILED, 1002)
        tx.move_instance(job_id, "first", 2, State.WAITING, 1002)
    with store.transaction() as tx:
        tx.move_instances(job_id, State.STOPPED, 1003)
    with store.transaction() as tx:
        tx.move_instances(job_id, State.WAITING, 1004, operation="restart", retry_count=0)
        counts = tx.instance_counts(job_id)
    assert counts == recounted()
    assert counts["first"] == Metrics(waiting=3, finished=1)


def test_the_jobs_task_counts_follow_every_move_of_their_tasks(store: StateStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with store.transaction() as tx:
        assert tx.task_metrics(job_id) == Metrics(waiting=2)
        tx.move_task(job_id, "first", State.RUNNING, 1001)
        assert tx.task_metrics(job_id) == Metrics(waiting=1, running=1)
        tx.move_task(job_id, "first", State.FAILED, 1002)
        tx.move_task(job_id, "second", State.STOPPED, 1002)
    with store.transaction() as tx:
        tx.move_task(job_id, "first", State.WAITING, 1003, operation="restart")
        counts = tx.task_metrics(job_id)
    assert counts == Metrics(waiting=1, stopped=1)
    assert counts == Metrics.of(task.state for task in store.tasks(job_id))
