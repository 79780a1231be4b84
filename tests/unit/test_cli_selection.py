"""Selecting jobs on the command line: states, id prefixes, --state/--name filters, pages
merged over several states — against an in-memory listing that pages as the API does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchyard.cli.selection import (
    JobFilter,
    SelectionError,
    every_job,
    jobs_page,
    normalize_prefix,
    parse_states,
    resolve_job_id,
    resolve_job_ids,
    select_jobs,
)
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import JobRecord
from batchyard.domain.states import State

START = datetime(2026, 1, 1, tzinfo=UTC)


def record(number: int, name: str, state: State, digits: str = "") -> JobRecord:
    """Job `number` (a later number: a newer job), its id made like `ids.new_job_id`."""
    created = START + timedelta(seconds=number)
    job_id = f"job-{int(created.timestamp() * 1e9):016X}{digits or f'{number:016X}'}"
    zero = Metrics(0, 0, 0, 0, 0)
    return JobRecord(id=job_id, tenant="t", name=name, priority=0, state=state, message="",
                     created=created, started=None, ended=None, task_metrics=zero,
                     instance_metrics=zero, description={})


class Listing:
    """`list_jobs` as the API answers it: newest first, Marker = the first job of the page
    (inclusive), one state at most; counts the calls."""

    def __init__(self, jobs: list[JobRecord]) -> None:
        self.jobs = sorted(jobs, key=lambda job: (job.created, job.id), reverse=True)
        self.calls = 0

    def list_jobs(self, marker: str, count: int, state: State | None
                  ) -> tuple[list[JobRecord], str]:
        self.calls += 1
        ordered = [job for job in self.jobs if state is None or job.state is state]
        if marker:
            ordered = [job for job in ordered if job.id <= marker]
        page = ordered[:count + 1]
        return page[:count], page[count].id if len(page) > count else ""


STATES = [State.FINISHED, State.FAILED, State.RUNNING, State.STOPPED]
JOBS = [record(number, f"{'nightly' if number % 2 else 'adhoc'}-{number}",
               STATES[number % len(STATES)]) for number in range(1, 24)]


def test_states_are_comma_separated_or_repeated_in_any_case_once_each() -> None:
    assert parse_states(["failed,Stopped", " running ", "FAILED"]) == [
        State.FAILED, State.STOPPED, State.RUNNING]
    assert parse_states(None) == parse_states([]) == []
    with pytest.raises(SelectionError, match="'Done' is not a state; use one or more of "
                                             "Waiting, Running, Finished, Failed, Stopped"):
        parse_states(["Failed,Done"])


@pytest.mark.parametrize("states", [[], [State.FAILED], [State.FINISHED, State.FAILED],
                                    [State.STOPPED, State.RUNNING, State.FAILED]])
@pytest.mark.parametrize("count", [1, 2, 5, 100])
def test_pages_over_several_states_are_the_filtered_listing_cut_alike(
        states: list[State], count: int) -> None:
    listing = Listing(JOBS)
    expected = [job.id for job in listing.jobs if not states or job.state in states]
    seen: list[str] = []
    page, marker = jobs_page(listing, "", count, states)
    while True:
        assert len(page) <= count and (len(page) == count or not marker)
        seen += [job.id for job in page]
        if not marker:
            break
        assert marker == expected[len(seen)]  # the next page starts at the next job
        page, marker = jobs_page(listing, marker, count, states)
    assert seen == expected
    assert [job.id for job in every_job(listing, states)] == expected


def test_a_prefix_may_leave_out_job_and_be_in_lower_case() -> None:
    assert normalize_prefix("0000018f2a") == normalize_prefix("JOB-0000018F2A") == (
        "job-0000018F2A")
    for wrong in ("", "job-", "my-job", "job-12G", "a" * 33):
        with pytest.raises(SelectionError, match="is not a job id or the start of one"):
            normalize_prefix(wrong)


def test_a_unique_prefix_resolves_an_ambiguous_one_lists_candidates_none_is_not_found(
        ) -> None:
    twins = [record(1, "a", State.FAILED, "AAAA100000000000"),
             record(1, "b", State.FAILED, "AAAA200000000000")]
    others = [record(9, "c", State.FAILED, f"BBBB{number:012X}") for number in range(7)]
    listing = Listing([*twins, *others])
    assert resolve_job_id(listing, twins[0].id[:-1].lower()) == twins[0].id
    assert resolve_job_id(listing, twins[1].id[4:-3]) == twins[1].id
    with pytest.raises(SelectionError) as ambiguous:
        resolve_job_id(listing, twins[0].id[:-12])
    assert ambiguous.value.exit_status == 2
    assert "2 jobs start with" in ambiguous.value.message
    assert twins[0].id in ambiguous.value.message and twins[1].id in ambiguous.value.message
    shared = others[0].id[:-12]
    with pytest.raises(SelectionError, match=r"7 jobs start with .*, job-\w+ and 2 more; give "):
        resolve_job_id(listing, shared)
    with pytest.raises(SelectionError, match="no job id starts with job-FFFF") as unknown:
        resolve_job_id(listing, "ffff")
    assert unknown.value.exit_status == 1


def test_full_ids_are_not_listed_and_several_prefixes_list_once() -> None:
    listing = Listing(JOBS)
    full = JOBS[3].id.lower()
    assert resolve_job_ids(listing, [full, JOBS[3].id]) == [JOBS[3].id]
    assert listing.calls == 0
    assert resolve_job_ids(listing, [JOBS[5].id[:-2], JOBS[9].id[4:-2]]) == [
        JOBS[5].id, JOBS[9].id]
    assert listing.calls == 1


def test_state_and_name_select_jobs_alone_or_among_the_ids_given() -> None:
    listing = Listing(JOBS)
    nightly_failed = JobFilter([State.FAILED], "nightly-*")
    chosen = select_jobs(listing, [], nightly_failed)
    assert chosen == [job.id for job in listing.jobs
                      if job.state is State.FAILED and job.name.startswith("nightly-")]
    assert chosen and nightly_failed.describe() == "--state Failed --name 'nightly-*'"
    by_name = select_jobs(listing, [], JobFilter(name="adhoc-1?"))
    assert [listing_name(listing, job_id) for job_id in by_name] == [
        "adhoc-18", "adhoc-16", "adhoc-14", "adhoc-12", "adhoc-10"]
    assert select_jobs(listing, [], JobFilter(name="Adhoc-*")) == []  # names are exact
    given = [JOBS[0].id, JOBS[1].id[:-3], JOBS[2].id]
    assert select_jobs(listing, given, JobFilter(name="nightly-*")) == [JOBS[2].id,
                                                                         JOBS[0].id]
    assert select_jobs(listing, given, JobFilter()) == [JOBS[0].id, JOBS[1].id, JOBS[2].id]
    with pytest.raises(SelectionError, match="give one or more job ids, or select jobs"):
        select_jobs(listing, [], JobFilter())


def listing_name(listing: Listing, job_id: str) -> str:
    return next(job.name for job in listing.jobs if job.id == job_id)
