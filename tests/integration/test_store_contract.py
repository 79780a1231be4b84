"""The state store behaves the same on SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.adapters.credentials import KeyStore, TokenLedger, master_key
from batchyard.adapters.store import (
    DatabaseBusy,
    IdempotencyToken,
    NewJob,
    SqlStore,
    TokenTaken,
)
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.buckets import BucketForbidden
from batchyard.domain.derivation import Metrics
from batchyard.domain.outcome import Outcome
from batchyard.domain.spec import object_urls, parse_job
from batchyard.domain.states import Entity, ForbiddenTransition, State, Transition
from batchyard.ports.store import AttemptEnd
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.integration.conftest import make_job, make_task


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    opened = SqlStore(database_url)
    yield opened
    opened.close()


def create(store: SqlStore, job_id: str, job: dict[str, Any], now: float = 1000.0,
           tenant: str = "alice") -> str:
    with store.transaction() as tx:
        tx.create_job(job_id, tenant, parse_job(job), now)
    return job_id


def two_step_job(priority: int = 0) -> dict[str, Any]:
    return make_job({"first": make_task("true", 2), "second": make_task("true")},
                    {"first": ["second"]}, Priority=priority)


def ended(job_id: str, task: str, index: int, attempt: int, now: float,
          exit_code: int | None = 0) -> AttemptEnd:
    """Attempt `attempt` of the instance ended at `now`, with `exit_code`."""
    return AttemptEnd(AttemptKey(job_id, task, index, attempt), Outcome(exit_code), 0, now)


def test_a_created_job_and_all_its_instances_are_waiting(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    job = store.job(job_id, "alice")
    assert job is not None and job.state is State.WAITING
    assert (job.task_metrics.total, job.instance_metrics.total) == (2, 3)
    assert {i.state for t in ("first", "second") for i in store.instances(job_id, t)} == {
        State.WAITING}
    with store.transaction() as tx:
        ready = {row.name: row.ready for row in tx.task_rows(job_id)}
    assert ready == {"first": True, "second": False}
    assert [(e.kind, e.target, e.message) for e in store.events(job_id)] == [
        ("job", "Waiting", "submitted")]
    assert store.job(job_id, "bob") is None


def test_a_transition_the_tables_forbid_raises_and_changes_nothing(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with store.transaction() as tx:
        assert tx.mark_running(tx.launch_rows(1), 1001.5)
        with pytest.raises(ForbiddenTransition, match=(
                f"instance {job_id}/first/0 may not move from Running to Running")):
            tx.move_instance(job_id, "first", 0, State.RUNNING, 1002)
        with pytest.raises(ForbiddenTransition) as raised:
            tx.move_job(job_id, State.FINISHED, 1002)
        assert (raised.value.entity, raised.value.ids, raised.value.source,
                raised.value.target) == (Entity.JOB, job_id, State.WAITING, State.FINISHED)
        assert tx.move_job(job_id, State.RUNNING, 1002, started=1002.25)
        with pytest.raises(ForbiddenTransition, match="task job-1/first may not move from "
                                                      "Waiting to Finished"):
            tx.move_task(job_id, "first", State.FINISHED, 1002)
        with pytest.raises(ForbiddenTransition, match="from Running to Waiting by restart"):
            tx.move_job(job_id, State.WAITING, 1003, operation="restart")
    first = store.instances(job_id, "first")[0]
    assert first.state is State.RUNNING and first.started is not None
    assert first.started.timestamp() == 1001.5
    assert [(e.kind, e.source, e.target) for e in store.events(job_id)] == [
        ("job", "", "Waiting"), ("instance", "Waiting", "Running"), ("job", "Waiting", "Running")]


def test_a_row_that_moved_on_or_went_away_is_a_race_not_an_error(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with store.transaction() as tx:
        assert not tx.move_job("job-gone", State.RUNNING, 1001)
        assert not tx.move_task(job_id, "no-such-task", State.RUNNING, 1001)
        assert not tx.move_instance(job_id, "first", 7, State.RUNNING, 1001)
        with pytest.raises(ForbiddenTransition):  # a target never reached after Running
            tx.end_attempt(ended(job_id, "first", 0, 1, 1001), State.RUNNING, 1001)
    assert len(store.events(job_id)) == 1


def test_every_event_records_its_source_and_the_transaction_lists_its_transitions(
        store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with store.transaction() as tx:
        tx.mark_running(tx.launch_rows(1), 1001)
        tx.move_task(job_id, "first", State.RUNNING, 1001)
        tx.flush_events()
        tx.end_attempt(ended(job_id, "first", 0, 1, 1002, 1), State.FAILED, 1002, "exit 1")
        tx.event(job_id, "priority", "0", State.RUNNING, 1002)  # not a transition
        tx.move_instances(job_id, State.STOPPED, 1003)
    assert tx.transitions == [
        Transition(Entity.INSTANCE, job_id, "first", 0, State.WAITING, State.RUNNING, 1001),
        Transition(Entity.TASK, job_id, "first", None, State.WAITING, State.RUNNING, 1001),
        Transition(Entity.INSTANCE, job_id, "first", 0, State.RUNNING, State.FAILED, 1002,
                   "exit 1"),
        Transition(Entity.INSTANCE, job_id, "first", 1, State.WAITING, State.STOPPED, 1003),
        Transition(Entity.INSTANCE, job_id, "second", 0, State.WAITING, State.STOPPED, 1003)]
    assert all(event.source for event in store.events(job_id)[1:])


def test_a_failed_transaction_records_neither_the_change_nor_its_event(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with pytest.raises(RuntimeError), store.transaction() as tx:
        assert tx.move_instance(job_id, "first", 1, State.RUNNING, 1001)
        tx.flush_events()
        raise RuntimeError("crash between the change and the commit")
    assert store.instances(job_id, "first")[1].state is State.WAITING
    assert len(store.events(job_id)) == 1


def test_launch_rows_by_priority_then_creation_task_and_instance(store: SqlStore) -> None:
    create(store, "job-low", two_step_job(priority=1), now=1000)
    create(store, "job-high-old", make_job({"b": make_task("true"), "a": make_task("true", 2)},
                                           Priority=5), now=1001)
    create(store, "job-high-new", two_step_job(priority=5), now=1002)
    with store.transaction() as tx:
        rows = tx.launch_rows(10)
        assert tx.launch_rows(0) == [] and len(tx.launch_rows(4)) == 4
        assert tx.launch_rows(10, most_jobs=2) == rows[:5]  # a prefix, from two jobs
    keys = [(r.candidate.job_id, r.candidate.task, r.candidate.instance_id) for r in rows]
    assert keys == [("job-high-old", "a", 0), ("job-high-old", "a", 1), ("job-high-old", "b", 0),
                    ("job-high-new", "first", 0), ("job-high-new", "first", 1),
                    ("job-low", "first", 0), ("job-low", "first", 1)]
    assert all(r.starts_task and r.attempts == 0 for r in rows)


def test_mark_running_moves_only_waiting_instances(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with store.transaction() as tx:
        rows = tx.launch_rows(2)
        assert tx.mark_running(rows, 1001)
        assert tx.launch_rows(5) == []
        assert tx.has_active_instances(job_id, "first")
    assert [(i.state, i.attempts) for i in store.instances(job_id, "first")] == [
        (State.RUNNING, 1), (State.RUNNING, 1)]
    with pytest.raises(LookupError), store.transaction() as tx:
        assert not tx.mark_running(rows, 1001)  # a stale launch is told (the engine rolls back)
        raise LookupError
    with store.transaction() as tx:
        moved = tx.move_instances(job_id, State.STOPPED, 1002)
    assert len(moved) == 3 and len(store.events(job_id)) == 1 + 2 + 3


def test_an_attempt_is_recorded_once(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    key = AttemptKey(job_id, "first", 0, 1)
    for exit_code in (3, 4):
        with store.transaction() as tx:
            tx.record_attempts([(key, Outcome(exit_code, error_message="exited"))])
    recorded, = store.attempts(job_id, "first", 0)
    assert (recorded.attempt, recorded.exit_code) == (1, 3)


def test_an_attempt_ends_its_instance_only_while_it_is_the_current_one(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with store.transaction() as tx:
        first_only = tx.launch_rows(1)
        assert tx.mark_running(first_only, 1001)
        assert tx.move_instance(job_id, "first", 0, State.WAITING, 1001)  # attempt 1 lost
        assert tx.mark_running(tx.launch_rows(1), 1001)  # attempt 2
    with store.transaction() as tx:
        # attempt 1 was re-queued long ago: its late report changes nothing
        assert not tx.end_attempt(ended(job_id, "first", 0, 1, 1002), State.FAILED, 1002)
        assert not tx.end_attempt(ended(job_id, "first", 1, 1, 1002), State.FINISHED,
                                  1002)  # still Waiting
        assert tx.end_attempt(ended(job_id, "first", 0, 2, 1002), State.FINISHED, 1002)
        assert not tx.end_attempt(ended(job_id, "first", 0, 2, 1003), State.FAILED, 1003)
    first = store.instances(job_id, "first")[0]
    assert (first.state, first.exit_code) == (State.FINISHED, 0)
    assert [event.target for event in store.events(job_id)][-1] == State.FINISHED.value


def test_delete_removes_the_job_and_everything_of_it(store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    keep = create(store, "job-2", two_step_job())
    with store.transaction() as tx:
        tx.delete_job(job_id)
        assert tx.active_job_ids() == [keep]
    assert store.job(job_id) is None and store.tasks(job_id) == []
    assert store.instances(job_id, "first") == [] and store.events(job_id) == []
    assert len(store.instances(keep, "first")) == 2


def test_keys_and_idempotency_tokens(store: SqlStore, tmp_path: Path) -> None:
    keys = KeyStore(store.engine, master_key(tmp_path / "keys"))
    key = keys.create("alice", "contract")
    found = keys.lookup(key.id)
    assert found is not None and found.secret == key.secret
    assert keys.revoke(key.id).revoked is not None
    tokens = TokenLedger(store.engine)
    assert tokens.find("alice", "jobs", "t-1") is None
    token = IdempotencyToken("jobs", "t-1", "digest")
    store.create_job(NewJob("job-1", "alice", parse_job(two_step_job()), 1000.0, token))
    with pytest.raises(TokenTaken):  # the same token again: nothing is made
        store.create_job(NewJob("job-2", "alice", parse_job(two_step_job()), 1001.0, token))
    found = tokens.find("alice", "jobs", "t-1")
    assert found is not None and found.resolved("t-1", "digest") == "job-1"
    assert store.job("job-2") is None and tokens.find("bob", "jobs", "t-1") is None


def test_the_engine_runs_a_dag_with_a_retry_to_finished(database_url: str,
                                                        tmp_path: Path) -> None:
    counter = tmp_path / "count"
    flaky = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" -ge 1 ]'
    job = make_job({"prepare": make_task("true", 2), "flaky": make_task(flaky, MaxRetryCount=1)},
                   {"prepare": ["flaky"]})
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, slots=2)
    with open_engine(settings) as engine:
        job_id = engine.submit(job)
        assert engine.wait(job_id, timeout=60).state is State.FINISHED
        flaky_instance, = engine.instances(job_id, "flaky")
        assert flaky_instance.retry_count == 1
        assert [a.exit_code for a in engine.attempts(job_id, "flaky", 0)] == [1, 0]


def test_one_engine_per_postgresql_database(postgres_url: str, tmp_path: Path) -> None:
    """Engines with different data dirs must not share a database: each would re-queue the
    other's running instances when it starts."""

    def settings(name: str) -> Settings:
        return Settings(data_dir=tmp_path / name, database_url=postgres_url, slots=1)

    with open_engine(settings("first")), pytest.raises(DatabaseBusy, match="one engine"):
        open_engine(settings("second"))
    with open_engine(settings("second")):  # given back when the first engine closed
        pass


def test_signature_nonces_outlive_the_registry_until_their_window_ends(
        database_url: str) -> None:
    from batchyard.adapters.credentials import NonceLedger
    from batchyard.api.authentication import NonceRegistry

    store = SqlStore(database_url)
    now = [1_000_000.0]
    try:
        first = NonceRegistry(lambda: now[0], NonceLedger(store.engine, lambda: now[0]))
        assert first.first_use("KEY1", "nonce-a", now[0])
        assert not first.first_use("KEY1", "nonce-a", now[0])
        assert first.first_use("KEY2", "nonce-a", now[0])  # nonces are per key
        first.close()
        second = NonceRegistry(lambda: now[0], NonceLedger(store.engine, lambda: now[0]))
        assert not second.first_use("KEY1", "nonce-a", now[0])  # after a restart too
        assert second.first_use("KEY1", "nonce-b" * 40, now[0])  # any length
        second.close()
        now[0] += 15 * 60 + 1  # the window of nonce-a is over: forgotten, and accepted again
        third = NonceRegistry(lambda: now[0], NonceLedger(store.engine, lambda: now[0]))
        assert third.first_use("KEY1", "nonce-a", now[0])
        third.close()
    finally:
        store.close()


def test_a_bucket_belongs_to_the_first_tenant_that_names_it(store: SqlStore) -> None:
    spec = parse_job(two_step_job())
    uses = tuple(object_urls(spec))
    store.create_job(NewJob("job-a", "alice", spec, 1000.0, claims=uses))
    with pytest.raises(BucketForbidden) as refused:
        store.create_job(NewJob("job-b", "bob", spec, 1001.0, claims=uses))
    assert {problem.path for problem in refused.value.problems} == {use.path for use in uses}
    assert store.job("job-b") is None  # nothing of a refused job is stored
    store.create_job(NewJob("job-c", "alice", spec, 1002.0, claims=uses))
    assert store.owned_buckets("alice") == ["test"] and store.owned_buckets("bob") == []


def test_claims_and_tokens_of_a_refused_job_are_rolled_back(store: SqlStore) -> None:
    spec = parse_job(two_step_job())
    other = parse_job(make_job({"t": make_task("true")}))
    other.DAG.Tasks["t"].Parameters.StdoutRedirectPath = "oss://taken/logs/"
    store.create_job(NewJob("job-a", "alice", other, 1000.0, claims=tuple(object_urls(other))))
    both = tuple(object_urls(spec)) + tuple(object_urls(other))
    token = IdempotencyToken("jobs", "t-9", "digest")
    with pytest.raises(BucketForbidden):
        store.create_job(NewJob("job-b", "bob", spec, 1001.0, token, both))
    assert store.owned_buckets("bob") == []  # the claim of `test` went with the refusal
    assert TokenLedger(store.engine).find("bob", "jobs", "t-9") is None


def test_a_restart_requeues_failed_and_stopped_instances_never_running_ones(
        store: SqlStore) -> None:
    job_id = create(store, "job-1", two_step_job())
    with store.transaction() as tx:
        tx.mark_running(tx.launch_rows(2), 1001)
        tx.end_attempt(ended(job_id, "first", 1, 1, 1002, 1), State.FAILED, 1002)
        moved = tx.move_instances(job_id, State.WAITING, 1003, operation="restart")
    assert [(row.task, row.instance_id, row.source) for row in moved] == [
        ("first", 1, "Failed")]
    assert [i.state for i in store.instances(job_id, "first")] == [State.RUNNING, State.WAITING]
    assert store.events(job_id)[-1].source == "Failed"


def test_the_tasks_counts_follow_every_move_of_their_instances(store: SqlStore) -> None:
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
        tx.end_attempt(ended(job_id, "first", 0, 1, 1002), State.FINISHED, 1002)
        tx.end_attempt(ended(job_id, "first", 1, 1, 1002, 1), State.FAILED, 1002)
        tx.move_instance(job_id, "first", 2, State.WAITING, 1002)
    with store.transaction() as tx:
        tx.move_instances(job_id, State.STOPPED, 1003)
    with store.transaction() as tx:
        tx.move_instances(job_id, State.WAITING, 1004, operation="restart", retry_count=0)
        counts = tx.instance_counts(job_id)
    assert counts == recounted()
    assert counts["first"] == Metrics(waiting=3, finished=1)


def test_the_jobs_task_counts_follow_every_move_of_their_tasks(store: SqlStore) -> None:
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
