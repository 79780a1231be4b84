"""Which jobs and instances a client command acts on: states given as `--state A,B`, job ids
abbreviated to a unique prefix (as git does), jobs selected by `--state` and `--name`.

Written against the listing method every client has (`list_jobs(marker, count, state)`), so
the commands select the same way on a server and on a local data directory.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

import typer

from batchyard.cli.execution import EXIT_FAILED, EXIT_INVALID
from batchyard.domain.records import InstanceRecord, JobRecord
from batchyard.domain.states import State
from batchyard.errors import BatchyardError

PAGE_SIZE = 100
"""Jobs asked for per page when every job is wanted (the API's maximum)."""
CANDIDATES_SHOWN = 5
"""How many matching ids an ambiguous prefix error lists."""
CONFIRM_SHOWN = 10
"""How many of the selected ids are listed before asking to act on them."""
_FULL_ID = re.compile(r"^job-[0-9A-F]{32}$")
_HEX = re.compile(r"^[0-9A-Fa-f]*$")


class SelectionError(BatchyardError):
    """A selection the user must correct; `exit_status` is what the command exits with."""

    code = "InvalidSelection"

    def __init__(self, message: str, exit_status: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class JobLister(Protocol):
    """The part of a client (remote or local) that selection needs."""

    def list_jobs(self, marker: str, count: int, state: State | None
                  ) -> tuple[list[JobRecord], str]: ...


def parse_states(values: Sequence[str] | None, option: str = "--state") -> list[State]:
    """`--state Failed --state stopped` or `--state Failed,Stopped` -> the states, in order
    and once each; an unknown name is an error naming it and the valid ones."""
    states: list[State] = []
    for value in values or ():
        for word in filter(None, (part.strip() for part in value.split(","))):
            state = _state(word, option)
            if state not in states:
                states.append(state)
    return states


def _state(word: str, option: str) -> State:
    for state in State:
        if state.value.lower() == word.lower():
            return state
    raise SelectionError(f"{option}: {word!r} is not a state; use one or more of "
                         f"{', '.join(state.value for state in State)} (comma-separated or "
                         "repeated)")


def jobs_page(client: JobLister, marker: str, count: int, states: Sequence[State]
              ) -> tuple[list[JobRecord], str]:
    """A page of up to `count` jobs in any of `states` (all when empty), newest first, and
    the marker of the next page.

    The API filters one state per call, so with several states each is asked for a page
    starting at the same marker (a marker is a place in the one newest-first order, valid
    whatever the state) and the pages are merged: the first `count` are this page; the next
    one is the (count+1)-th merged job, else the newest of the states' own next markers —
    every job newer than that one is on the merged pages already.
    """
    if len(states) <= 1:
        return client.list_jobs(marker, count, states[0] if states else None)
    merged: list[JobRecord] = []
    markers: list[str] = []
    for state in states:
        page, next_marker = client.list_jobs(marker, count, state)
        merged += page
        markers += [next_marker] if next_marker else []
    merged.sort(key=lambda job: (job.created, job.id), reverse=True)
    if len(merged) > count:
        return merged[:count], merged[count].id
    # Ids start with their creation time in hex: the greatest marker is the newest job.
    return merged, max(markers, default="")


def every_job(client: JobLister, states: Sequence[State] = ()) -> list[JobRecord]:
    """Every job of the caller in any of `states` (all when empty), newest first."""
    found: list[JobRecord] = []
    marker = ""
    while True:
        page, marker = jobs_page(client, marker, PAGE_SIZE, states)
        found += page
        if not marker:
            return found


def normalize_prefix(text: str) -> str:
    """`job-18ed51d7`, `18ED51D7` -> `job-18ED51D7`: the `job-` part is optional and
    the hex digits are case-insensitive."""
    cleaned = text.strip()
    digits = cleaned[4:] if cleaned.lower().startswith("job-") else cleaned
    if not digits or not _HEX.match(digits) or len(digits) > 32:
        raise SelectionError(f"{text!r} is not a job id or the start of one: ids are job- "
                             "and 32 hex digits, e.g. job-18ED51D7 (see batchyard jobs)")
    return "job-" + digits.upper()


def matching_ids(prefix: str, jobs: Iterable[JobRecord]) -> list[str]:
    """The ids of `jobs` starting with the normalized `prefix`."""
    return [job.id for job in jobs if job.id.startswith(prefix)]


def resolve_job_id(client: JobLister, text: str) -> str:
    """The one job id `text` abbreviates; a full id is taken as it is (not listed)."""
    return resolve_job_ids(client, [text])[0]


def unique_match(text: str, prefix: str, found: Sequence[str]) -> str:
    """The one id found; none is NotFound (exit 1), several an error listing a few (exit 2)."""
    if len(found) == 1:
        return found[0]
    if not found:
        raise SelectionError(f"InvalidResource.NotFound: no job id starts with {prefix} "
                             "(batchyard jobs --all lists your jobs)", EXIT_FAILED)
    shown = ", ".join(found[:CANDIDATES_SHOWN])
    more = f" and {len(found) - CANDIDATES_SHOWN} more" if len(found) > CANDIDATES_SHOWN else ""
    raise SelectionError(f"{text!r} is ambiguous: {len(found)} jobs start with {prefix}: "
                         f"{shown}{more}; give more of the id")


def resolve_job_ids(client: JobLister, texts: Sequence[str]) -> list[str]:
    """Every id of `texts` resolved, listing the jobs at most once, in the order given and
    each once."""
    resolved: list[str] = []
    listed: list[JobRecord] | None = None
    for text in texts:
        prefix = normalize_prefix(text)
        if _FULL_ID.match(prefix):
            job_id = prefix  # a full id is not listed: the command reports it if unknown
        else:
            listed = every_job(client) if listed is None else listed
            job_id = unique_match(text, prefix, matching_ids(prefix, listed))
        if job_id not in resolved:
            resolved.append(job_id)
    return resolved


@dataclass(frozen=True)
class JobFilter:
    """`--state` and `--name`: a job matches when it is in one of the states (any when none
    given) and its name matches the glob (`*`, `?`, `[…]`, case-sensitive; any when none)."""

    states: Sequence[State] = ()
    name: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.states) or self.name is not None

    def matches(self, job: JobRecord) -> bool:
        return ((not self.states or job.state in self.states)
                and (self.name is None or fnmatchcase(job.name, self.name)))

    def describe(self) -> str:
        """`--state Failed,Stopped --name 'nightly-*'`: the filter as it was given."""
        parts = [f"--state {','.join(state.value for state in self.states)}"] if self.states \
            else []
        parts += [f"--name '{self.name}'"] if self.name is not None else []
        return " ".join(parts)


def select_jobs(client: JobLister, texts: Sequence[str], wanted: JobFilter) -> list[str]:
    """The ids `stop` and `delete` act on: the given ids (prefixes resolved), kept only if
    they match the filter; with no ids, every job matching the filter. Newest first when
    selected by the filter, else in the order given."""
    if not texts and not wanted.active:
        raise SelectionError("give one or more job ids, or select jobs with --state and/or "
                             "--name")
    if not wanted.active:
        return resolve_job_ids(client, texts)
    candidates = [job for job in every_job(client, wanted.states) if wanted.matches(job)]
    if not texts:
        return [job.id for job in candidates]
    chosen = set(resolve_job_ids(client, texts))
    return [job.id for job in candidates if job.id in chosen]


def instances_in(instances: Sequence[InstanceRecord], states: Sequence[State]
                 ) -> list[InstanceRecord]:
    """The instances in one of `states` (all of them when none given)."""
    return [one for one in instances if not states or one.state in states]


def confirm_many(job_ids: Sequence[str], verb: str) -> None:
    """Ask on the terminal before acting on several jobs (`Stop 12 jobs? [y/N]`); without a
    terminal to ask on, refuse: a script says --yes, so a broad selection is never a guess."""
    count = len(job_ids)
    if not sys.stdin.isatty():
        raise SelectionError(f"{count} jobs selected; add --yes to {verb.lower()} them "
                             "(stdin is not a terminal, so there is no one to ask)")
    for job_id in job_ids[:CONFIRM_SHOWN]:
        typer.echo(f"  {job_id}", err=True)
    if count > CONFIRM_SHOWN:
        typer.echo(f"  … and {count - CONFIRM_SHOWN} more", err=True)
    # Not typer.confirm: Click writes the prompt's last space to stdout, the jobs' channel.
    typer.echo(f"{verb} {count} jobs? [y/N] ", nl=False, err=True)
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise SelectionError("not confirmed; nothing done", EXIT_FAILED)
