"""The reads the console adds to the read port: the name filter of the jobs list (with
keyset paging), counts per state, and the owner of a job — on SQLite and PostgreSQL."""

from __future__ import annotations

from batchyard.adapters.store import SqlStore
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.ports.reads import JobQueries, Window
from batchyard.ports.store import NewJob
from tests.integration.conftest import make_job, make_task
from tests.integration.test_reads import every_page, job_id, move


def named(store: SqlStore, created: float, name: str, tenant: str = "alice") -> str:
    new_id = job_id(created)
    job = make_job({"t0": make_task("true", 2)}, Name=name)
    store.create_job(NewJob(new_id, tenant, parse_job(job), created))
    return new_id


def test_the_name_filter_matches_a_part_in_any_case_and_pages(
        store: SqlStore, reads: JobQueries) -> None:
    wanted = [named(store, 1000.0 + number, f"Nightly-{number}-ETL") for number in range(7)]
    named(store, 2000.0, "weekly-report")
    named(store, 2001.0, "nightly-of-bob", tenant="bob")
    newest_first = list(reversed(wanted))

    def read(marker: str, limit: int) -> object:
        return reads.list_jobs("alice", Window(marker=marker, limit=limit, name="nIGHTLY"))

    items, pages = every_page(read, 3)
    assert [job.id for job in items] == newest_first and pages == 3
    oldest_first = reads.list_jobs("alice", Window(limit=10, name="etl", reverse=True))
    assert [job.id for job in oldest_first.items] == wanted
    assert reads.list_jobs("alice", Window(name="nothing-like-it")).items == []
    assert [job.name for job in reads.list_jobs("alice", Window(name="Weekly")).items] == [
        "weekly-report"]


def test_percent_and_underscore_in_the_name_filter_are_plain_characters(
        store: SqlStore, reads: JobQueries) -> None:
    """Names hold letters, digits, `_` and `-`: a `%` matches nothing, `_` only itself
    (unescaped LIKE wildcards would match every job, or snakeXcase too)."""
    underscore = named(store, 1001.0, "snake_case")
    named(store, 1003.0, "snakeXcase")
    named(store, 1004.0, "plain")

    def names(text: str) -> list[str]:
        return [job.id for job in reads.list_jobs("alice", Window(name=text)).items]

    assert names("%") == []
    assert names("snake%case") == []
    assert names("e_c") == [underscore]
    assert names("_") == [underscore]
    assert names("\\") == []
    assert names("'; DROP TABLE jobs; --") == []
    assert reads.job_counts("alice", "%")[State.WAITING] == 0
    assert reads.job_counts("alice", "_")[State.WAITING] == 1
    assert len(names("")) == 3


def test_counts_per_state_with_the_name_filter_and_per_tenant(
        store: SqlStore, reads: JobQueries) -> None:
    first = named(store, 1000.0, "alpha-1")
    named(store, 1001.0, "alpha-2")
    third = named(store, 1002.0, "beta-1")
    named(store, 1003.0, "alpha-of-bob", tenant="bob")
    move(store, first, State.RUNNING, ("t0", 0))
    move(store, third, State.RUNNING, ("t0", 0))

    counts = reads.job_counts("alice")
    assert set(counts) == set(State)
    assert counts == {State.WAITING: 1, State.RUNNING: 2, State.FINISHED: 0,
                      State.FAILED: 0, State.STOPPED: 0}
    assert reads.job_counts("alice", "ALPHA") == {**dict.fromkeys(State, 0),
                                                  State.WAITING: 1, State.RUNNING: 1}
    assert sum(reads.job_counts("bob").values()) == 1
    assert sum(reads.job_counts("bob", "beta").values()) == 0
    assert sum(reads.job_counts("carol").values()) == 0
    assert sum(reads.job_counts(None).values()) == 4
    running = reads.list_jobs("alice", Window(state=State.RUNNING, name="beta"))
    assert [job.id for job in running.items] == [third]


def test_the_owner_of_a_job(store: SqlStore, reads: JobQueries) -> None:
    alices = named(store, 1000.0, "a")
    bobs = named(store, 1001.0, "b", tenant="bob")
    assert reads.tenant_of(alices) == "alice"
    assert reads.tenant_of(bobs) == "bob"
    assert reads.tenant_of(job_id(999.0)) is None
    assert reads.tenant_of("not-even-an-id") is None
