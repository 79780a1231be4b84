"""The event stream's read (`JobQueries.events_since`) on SQLite and PostgreSQL, the priority
change's event row, and migration 0008 (event ids never reused)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert

from batchyard.adapters.database import make_engine, migration_config
from batchyard.adapters.schema import events
from batchyard.adapters.store import SqlStore
from batchyard.domain.events import EventName, event_name
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.orchestrator.operations import change_priority
from batchyard.ports.reads import InvalidMarker, StreamedEvent
from batchyard.ports.store import NewJob
from tests.integration.conftest import make_job, make_task
from tests.integration.test_reads import job_id, move


def create(store: SqlStore, number: int, tenant: str) -> str:
    new_id = job_id(1000.0 + number, number)
    job = make_job({"t0": make_task("true", 2)}, Name=f"job{number}")
    store.create_job(NewJob(new_id, tenant, parse_job(job), 1000.0 + number))
    return new_id


def every(store: SqlStore, tenant: str | None, limit: int, cursor: str = "",
          job: str | None = None) -> tuple[list[StreamedEvent], str]:
    items: list[StreamedEvent] = []
    while True:
        page = store.reads.events_since(tenant, cursor, limit, job)
        items += page.items
        cursor = page.cursor
        if not page.more:
            return items, cursor


def test_events_after_a_cursor_oldest_first_per_tenant_with_seq(store: SqlStore) -> None:
    a1, b1, a2 = create(store, 1, "alice"), create(store, 2, "bob"), create(store, 3, "alice")
    for job in (a1, b1, a2, a1):
        target = State.RUNNING if store.reads.job_state(job) is State.WAITING else State.FINISHED
        move(store, job, target, ("t0", 0))
    alice, cursor = every(store, "alice", limit=2)
    assert {item.event.job_id for item in alice} == {a1, a2}
    ids = [item.event.id for item in alice]
    assert ids == sorted(ids) and cursor == str(ids[-1])
    for job, count in ((a1, 7), (a2, 4)):
        mine = [item for item in alice if item.event.job_id == job]
        assert [item.seq for item in mine] == list(range(1, count + 1))
    assert {item.job_name for item in alice if item.event.job_id == a2} == {"job3"}
    assert [item.event.id for item in every(store, None, 100)[0]] == sorted(
        item.event.id for item in every(store, None, 3)[0])
    # from a cursor in the middle, Seq still counts from the job's first event
    middle = alice[5]
    rest, _ = every(store, "alice", 2, middle.cursor)
    assert [(item.event.id, item.seq) for item in rest] == [
        (item.event.id, item.seq) for item in alice[6:]]
    only, _ = every(store, "alice", 100, "", a2)
    assert [item.seq for item in only] == [1, 2, 3, 4]
    assert every(store, "bob", 100, "", a1)[0] == []  # another tenant's job reads as none
    page = store.reads.events_since("alice", cursor, 10)
    assert page.items == [] and page.cursor == cursor and not page.more


@pytest.mark.parametrize("cursor", ["x", "-1", "01x", "1" * 19])
def test_a_malformed_cursor_is_refused(store: SqlStore, cursor: str) -> None:
    with pytest.raises(InvalidMarker, match="cursor"):
        store.reads.events_since("alice", cursor, 10)


def test_a_cursor_past_every_event_is_refused_but_not_one_past_deleted_events(
        store: SqlStore) -> None:
    with pytest.raises(InvalidMarker, match="past every event"):
        store.reads.events_since(None, "5", 10)
    kept, gone = create(store, 1, "alice"), create(store, 2, "alice")
    _, cursor = every(store, None, 10)
    with store.transaction() as tx:
        tx.delete_job(gone)
    assert store.reads.events_since(None, cursor, 10).items == []  # not refused
    later = create(store, 3, "alice")
    items, _ = every(store, None, 10, cursor)
    assert [(item.event.job_id, item.seq) for item in items] == [(later, 1)]
    assert int(items[0].cursor) > int(cursor)
    assert kept


def test_a_priority_change_is_an_event_row_but_no_transition(store: SqlStore) -> None:
    job = create(store, 1, "alice")
    move(store, job, State.STOPPED, ("t0", 0))
    with store.transaction() as tx:
        row = tx.job_row(job)
        assert row is not None
        change_priority(tx, row, 1500.0, 9)
        tx.flush_events()
        assert tx.transitions == []
    last = every(store, "alice", 100)[0][-1]
    assert (last.event.kind, last.event.target, last.event.message) == (
        "priority", "Stopped", "priority 0 -> 9")
    assert event_name(last.event.kind, last.event.target) is EventName.PRIORITY_CHANGE


def test_0008_keeps_the_events_and_never_gives_their_ids_again(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            config = migration_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0007")
            connection.execute(insert(events), [
                {"job_id": "job-x", "kind": "job", "target": "Waiting", "time": 1.0,
                 "source": "", "task": "", "message": ""} for _ in range(3)])
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    database = sqlite3.connect(path)
    assert database.execute("SELECT id FROM events ORDER BY id").fetchall() == [(1,), (2,), (3,)]
    database.execute("DELETE FROM events WHERE id = 3")
    database.execute("INSERT INTO events (job_id, kind, source, target, time, task, message) "
                     "VALUES ('job-y', 'job', '', 'Waiting', 2.0, '', '')")
    assert database.execute("SELECT max(id) FROM events").fetchone() == (4,)
    indexes = {row[1] for row in database.execute("PRAGMA index_list('events')")}
    assert "ix_events_job_order" in indexes
    database.close()


def test_on_postgresql_a_read_waits_for_an_event_being_inserted(postgres_url: str) -> None:
    """A transaction that took an event id but has not committed: a reader must not hand out
    a cursor past it (it would be missed), so the read waits for it to end."""
    store = SqlStore(postgres_url)
    try:
        job = create(store, 1, "alice")
        _, cursor = every(store, "alice", 10)
        read: list[list[StreamedEvent]] = []
        with store.engine.connect() as writer:
            writer.execute(insert(events), {"job_id": job, "kind": "job", "source": "Waiting",
                                            "target": "Running", "time": 2.0, "task": "",
                                            "message": ""})
            reader = threading.Thread(target=lambda: read.append(
                store.reads.events_since("alice", cursor, 10).items))
            reader.start()
            reader.join(0.5)
            assert reader.is_alive() and read == []  # waiting for the insert to end
            writer.commit()
        reader.join(10)
        assert [(item.event.target, item.seq) for item in read[0]] == [("Running", 2)]
    finally:
        store.close()
