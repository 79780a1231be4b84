"""The phases of an attempt: how long it waited, staged and ran (the console's instance page).

An attempt's life, on the clocks that record it:

    queued_since ──waiting──▶ started ──staging──▶ program_started ──running──▶ ended

- `queued_since`: when the instance last became Waiting for this attempt. The caller knows
  it (`queued_since` below applies the usual rule): the previous attempt's end for a retry,
  the task's start for attempt 1 (so attempt 1's waiting is how long it queued behind its
  siblings once its task began). A job stopped and started again in between is not seen by
  that rule: its waiting then includes the time the job stood stopped — pass the restart's
  time instead where it is known.
- `started`: the runner began the attempt (`Outcome.started_at`).
- `program_started`: its program's process started, after staging — the package download
  and unpacking, InputMapping/Mounts staging, the sandbox (`Outcome.program_started_at`;
  on the agent's fast path, a plain command, it is the spawn, right after `started`).
- `ended`: the attempt's end (logs uploaded).

A phase whose ends are not both known is None: staging and running of an attempt whose
program never started (staging failed, stopped or lost first) or that was recorded before
batchyard kept `program_started`; an attempt that has not ended runs (or stages, or waits)
until `now`. The clocks are those of the engine and of the machine that ran the attempt,
so a phase the clocks' skew would make negative is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from batchyard.domain.records import AttemptRecord


@dataclass(frozen=True)
class Phases:
    """Seconds an attempt spent in each phase; None where that is not known."""

    waiting: float | None
    """From `queued_since` until the runner started it."""
    staging: float | None
    """From its start until its program started."""
    running: float | None
    """From its program's start until its end (or until now, if it runs)."""


def phases(attempt: AttemptRecord, queued_since: datetime | None,
           now: datetime | None = None) -> Phases:
    """How long `attempt` waited, staged and ran. `now` stands for the ends an attempt that
    has not ended yet does not have (None: those phases are None too)."""
    started, program, ended = attempt.started, attempt.program_started, attempt.ended
    if ended is None:
        if started is None:  # still waiting
            return Phases(_span(queued_since, now), None, None)
        if program is None:  # still staging (or its program's start is not known yet)
            return Phases(_span(queued_since, started), None, None)
    end = ended or now
    return Phases(_span(queued_since, started), _span(started, program), _span(program, end))


def queued_since(attempts: Sequence[AttemptRecord], index: int,
                 task_started: datetime | None) -> datetime | None:
    """When `attempts[index]` (an instance's attempts, in order) began to wait: the end of
    the attempt before it, or `task_started` for the first."""
    if index == 0:
        return task_started
    return attempts[index - 1].ended


def phases_of(attempts: Sequence[AttemptRecord], task_started: datetime | None,
              now: datetime | None = None) -> list[Phases]:
    """The phases of each of an instance's attempts (in order), with `queued_since`'s rule."""
    return [phases(attempt, queued_since(attempts, index, task_started), now)
            for index, attempt in enumerate(attempts)]


def _span(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)
