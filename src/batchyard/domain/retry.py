"""What happens to an instance after one of its attempts ends (reference §6.2)."""

from __future__ import annotations

from enum import Enum

from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.states import State


class Verdict(Enum):
    FINISH = "finish"
    """The attempt succeeded: the instance is Finished."""
    RETRY = "retry"
    """The attempt failed and retries are left: back to Waiting, RetryCount + 1."""
    FAIL = "fail"
    """The attempt failed and no retry is left: the instance is Failed."""
    REQUEUE = "requeue"
    """The attempt was lost through no fault of the program: run again, retry budget untouched."""
    DISCARD = "discard"
    """The attempt was cancelled by a stop; its instance state was already decided."""

    @property
    def target(self) -> State | None:
        return _TARGETS[self]


_TARGETS = {
    Verdict.FINISH: State.FINISHED,
    Verdict.RETRY: State.WAITING,
    Verdict.FAIL: State.FAILED,
    Verdict.REQUEUE: State.WAITING,
    Verdict.DISCARD: None,
}


MOST_LOST = 3
"""Lost attempts after which an instance fails: its program may be what kills the agent (a
machine running out of memory), and re-running it forever would take the fleet down."""


def decide(outcome: Outcome, retry_count: int, max_retry_count: int, lost: int = 0) -> Verdict:
    """Turn an attempt's outcome into what happens to its instance.

    `lost`: attempts of the instance lost before this one. A lost attempt is re-run without
    using a retry, until the instance's MOST_LOST-th loss fails it.
    """
    if outcome.succeeded:
        return Verdict.FINISH
    if outcome.error_code is ErrorCode.STOPPED:
        return Verdict.DISCARD
    if outcome.error_code is ErrorCode.LOST:
        return Verdict.REQUEUE if lost + 1 < MOST_LOST else Verdict.FAIL
    if retry_count < max_retry_count:
        return Verdict.RETRY
    return Verdict.FAIL
