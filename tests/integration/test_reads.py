"""The contract of the read port (`ports.reads.JobQueries`), on SQLite and PostgreSQL.

States, attempts and events are set with plain SQL on the store's tables: what is tested here
is how rows are read back, whatever wrote them.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import update

from batchyard.adapters.schema import attempts, events, instances, jobs
from batchyard.adapters.store import SqlStore
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.ports.reads import InvalidMarker, JobQueries, Page, Window
from batchyard.ports.store import NewJob
from tests.integration.conftest import make_job, make_task


def job_id(created: float, number: int = 0) -> str:
    """An id as `ids.new_job_id` makes it: its first 16 hex digits are the creation time."""
    return f"job-{int(created * 1e9):016X}{number:016X}"


def create(store: SqlStore, created: float, tenant: str = "alice", instances_: int = 3,
           tasks_: int = 2) -> str:
    names = [f"t{index}" for index in range(tasks_)]
    job = make_job({name: make_task("true", instances_, ClusterId=f"cls-{name}")
                    for name in names}, Name=f"job-at-{created:.0f}")
    new_id = job_id(created)
    store.create_job(NewJob(new_id, tenant, parse_job(job), created))
    return new_id


def move(store: SqlStore, job: str, target: State, instance: tuple[str, int],
         now: float = 1001.0) -> None:
    """The job, a task and one of its instances to `target`, in one transaction (through the
    store's guarded writes, which keep the task rows' instance counts)."""
    task, number = instance
    with store.transaction() as tx:
        assert tx.move_job(job, target, now) and tx.move_task(job, task, target, now)
        assert tx.move_instance(job, task, number, target, now)


def every_page(read: Any, limit: int) -> tuple[list[Any], int]:
    """Follow `read(marker, limit)` from the first page to the last: the items, the pages."""
    items: list[Any] = []
    marker, pages = "", 0
    while True:
        page: Page[Any] = read(marker, limit)
        items += page.items
        pages += 1
        marker = page.next_marker
        if not marker:
            return items, pages


def test_jobs_page_by_marker_both_ways_and_a_deleted_marker_keeps_its_place(
        store: SqlStore, reads: JobQueries) -> None:
    ids = [create(store, 1000.0 + number) for number in range(7)]
    create(store, 1003.5, tenant="bob")
    newest_first, pages = every_page(
        lambda marker, limit: reads.list_jobs("alice", Window(marker, limit)), 2)
    assert [job.id for job in newest_first] == ids[::-1] and pages == 4
    oldest_first, _ = every_page(
        lambda marker, limit: reads.list_jobs("alice", Window(marker, limit, reverse=True)), 3)
    assert [job.id for job in oldest_first] == ids
    listed = newest_first[0]
    assert listed.description == {} and listed.instance_metrics.waiting == 6
    assert listed.task_metrics.total == 2
    with store.engine.begin() as connection:  # the marker job is deleted meanwhile
        connection.execute(jobs.delete().where(jobs.c.id == ids[3]))
    after = reads.list_jobs("alice", Window(ids[3], 2))
    assert [job.id for job in after.items] == [ids[2], ids[1]] and after.next_marker == ids[0]
    with pytest.raises(InvalidMarker):
        reads.list_jobs("alice", Window("not-a-job"))
    assert [job.id for job in reads.list_jobs(None, Window(limit=100)).items][3] == job_id(
        1003.5)


def test_the_state_filter_applies_to_every_page_and_to_whole_lists(
        store: SqlStore, reads: JobQueries) -> None:
    ids = [create(store, 1000.0 + number) for number in range(6)]
    for running in ids[1::2]:
        move(store, running, State.RUNNING, ("t0", 1))
    only_running, _ = every_page(lambda marker, limit: reads.list_jobs(
        "alice", Window(marker, limit, State.RUNNING)), 2)
    assert [job.id for job in only_running] == ids[1::2][::-1]
    assert [job.id for job in reads.jobs("alice", State.WAITING)] == ids[0::2][::-1]
    whole = reads.jobs("alice", State.RUNNING)[0]
    assert whole.description["DAG"]["Tasks"]["t0"]["InstanceCount"] == 3
    assert (whole.instance_metrics.running, whole.task_metrics.running) == (1, 1)
    running_tasks = reads.list_tasks(ids[1], Window(state=State.RUNNING))
    assert [task.name for task in running_tasks.items] == ["t0"]
    waiting = reads.list_instances(ids[1], "t0", Window(state=State.WAITING))
    assert [instance.instance_id for instance in waiting.items] == [0, 2]


def test_tasks_and_instances_page_by_marker(store: SqlStore, reads: JobQueries) -> None:
    job = create(store, 1000.0, instances_=5, tasks_=5)
    names, pages = every_page(lambda marker, limit: reads.list_tasks(job, Window(marker, limit)),
                              2)
    assert [task.name for task in names] == ["t0", "t1", "t2", "t3", "t4"] and pages == 3
    assert all(task.instance_metrics.waiting == 5 for task in names)
    one_cluster = reads.list_tasks(job, Window(), names={"t1", "t3"})
    assert [task.name for task in one_cluster.items] == ["t1", "t3"]
    numbers, pages = every_page(
        lambda marker, limit: reads.list_instances(job, "t2", Window(marker, limit)), 2)
    assert [instance.instance_id for instance in numbers] == [0, 1, 2, 3, 4] and pages == 3
    assert reads.list_instances(job, "t2", Window("3", 10)).items[0].instance_id == 3
    for bad in ("x", "-1", "1234567890"):
        with pytest.raises(InvalidMarker):
            reads.list_instances(job, "t2", Window(bad))


def test_instance_lookups(store: SqlStore, reads: JobQueries) -> None:
    job = create(store, 1000.0)
    with store.engine.begin() as connection:
        connection.execute(update(instances).where(
            instances.c.job_id == job, instances.c.task == "t1", instances.c.instance_id == 2)
            .values(state=State.FAILED.value, exit_code=3, error_code="ExitCode",
                    attempts=1, started=1001.0, ended=1002.5))
    found = reads.instance(job, "t1", 2)
    assert found is not None and (found.state, found.exit_code, found.error_code) == (
        State.FAILED, 3, "ExitCode")
    assert found.ended is not None and found.ended.timestamp() == 1002.5
    assert found == reads.instances(job, "t1")[2]
    assert reads.instance(job, "t1", 3) is None and reads.instance(job, "t9", 0) is None
    assert reads.has_task(job, "t1") and not reads.has_task(job, "t9")
    assert reads.instances(job, "t9") == [] and reads.instances("job-gone", "t1") == []


def test_another_tenants_job_is_not_found_by_any_read(store: SqlStore,
                                                      reads: JobQueries) -> None:
    job = create(store, 1000.0, tenant="alice")
    with store.engine.begin() as connection:
        connection.execute(attempts.insert(), {
            "job_id": job, "task": "t0", "instance_id": 0, "attempt": 1, "started": 1001.0,
            "ended": 1002.0, "exit_code": 1, "error_code": "ExitCode",
            "error_message": "exit 1", "stdout_path": "", "stderr_path": ""})
    assert reads.job(job, "bob") is None and reads.job_state(job, "bob") is None
    assert not reads.owns_job(job, "bob") and not reads.has_task(job, "t0", "bob")
    assert reads.tasks(job, "bob") == [] and reads.instances(job, "t0", "bob") == []
    assert reads.instance(job, "t0", 0, "bob") is None
    assert reads.list_tasks(job, Window(), tenant="bob") == Page([], "")
    assert reads.list_instances(job, "t0", Window(), "bob") == Page([], "")
    assert reads.attempts(job, "t0", 0, "bob") == [] and reads.events(job, "bob") == []
    assert reads.jobs("bob") == [] and reads.list_jobs("bob", Window()) == Page([], "")
    assert reads.list_jobs("bob", Window(job)).items == []  # a marker reveals nothing either
    # … while its owner (and the local command line, tenant None) reads all of it
    for tenant in ("alice", None):
        owned = reads.job(job, tenant)
        assert owned is not None and owned.tenant == "alice"
        assert reads.job_state(job, tenant) is State.WAITING
        assert len(reads.tasks(job, tenant)) == 2 and len(reads.instances(job, "t0", tenant)) == 3
        assert reads.instance(job, "t0", 0, tenant) is not None
        assert [a.exit_code for a in reads.attempts(job, "t0", 0, tenant)] == [1]
        assert [e.message for e in reads.events(job, tenant)] == ["submitted"]
        assert len(reads.list_tasks(job, Window(), tenant=tenant).items) == 2
        assert len(reads.list_instances(job, "t0", Window(), tenant).items) == 3
    assert reads.owns_job(job, "alice") and reads.has_task(job, "t0", "alice")


def test_a_missing_job_reads_as_absent(reads: JobQueries) -> None:
    missing = job_id(1000.0)
    assert reads.job(missing) is None and reads.job_state(missing) is None
    assert reads.tasks(missing) == [] and reads.events(missing) == []
    assert reads.attempts(missing, "t0", 0) == [] and reads.instance(missing, "t0", 0) is None


def test_attempts_and_events_in_the_order_they_happened(store: SqlStore,
                                                        reads: JobQueries) -> None:
    job = create(store, 1000.0)
    rows = [{"job_id": job, "task": "t0", "instance_id": 1, "attempt": number,
             "started": 1000.0 + number, "ended": 1000.5 + number, "exit_code": code,
             "error_code": "", "error_message": "", "stdout_path": f"oss://b/{number}",
             "stderr_path": ""} for number, code in ((2, 0), (1, 7))]
    with store.engine.begin() as connection:
        connection.execute(attempts.insert(), rows)
        connection.execute(events.insert(), {"job_id": job, "task": "t0", "instance_id": 1,
                                             "kind": "instance", "source": "Waiting",
                                             "target": "Running", "time": 1001.0,
                                             "message": ""})
    assert [(a.attempt, a.exit_code, a.stdout_path) for a in reads.attempts(job, "t0", 1)] == [
        (1, 7, "oss://b/1"), (2, 0, "oss://b/2")]
    assert [(e.kind, e.source, e.target) for e in reads.events(job)] == [
        ("job", "", "Waiting"), ("instance", "Waiting", "Running")]


def test_counts_are_of_the_same_moment_as_the_states(store: SqlStore,
                                                     reads: JobQueries) -> None:
    """A writer moves a job, its task and its one instance together, round Waiting ->
    Running -> Stopped -> Waiting, one transaction per move; every read must see the three
    agree (two statements could straddle a commit: a Waiting job counting a running task)."""
    job = create(store, 1000.0, tasks_=1, instances_=1)
    done = threading.Event()

    def cycle() -> None:
        while not done.is_set():
            for state in (State.RUNNING, State.STOPPED, State.WAITING):
                move(store, job, state, ("t0", 0))

    writer = threading.Thread(target=cycle)
    writer.start()
    try:
        for _ in range(150):
            record = reads.job(job)
            assert record is not None
            assert record.task_metrics.count(record.state) == 1, record
            assert record.instance_metrics.count(record.state) == 1, record
            task, = reads.tasks(job)
            assert task.instance_metrics.count(task.state) == 1, task
    finally:
        done.set()
        writer.join()
