"""The meter port: what the engine reports for metrics, and the counts a scrape reads.

The engine tells an `EngineMeter` of each step it took and each attempt that ended, after
the step's commit; the API's Prometheus exporter (`api.metrics`) implements it. `Tallies`
reads what the store keeps counted: jobs, tasks and instances per state, and cluster VMs,
each a grouped query that costs the same whatever the number of instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.states import State


class AttemptResult(StrEnum):
    """How an attempt ended, as the metrics count it (label `result`)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """The program failed: a non-zero exit code, or staging, upload, a limit or the launch."""
    TIMEOUT = "timeout"
    """Killed after the task's Timeout."""
    LOST = "lost"
    """Its agent (or the server) went away while it ran."""
    STOPPED = "stopped"
    """Killed because its job was stopped or failed."""
    RECALLED = "recalled"
    """Taken back from its agent's queue before it started (it goes again, unchanged)."""


def result_of(outcome: Outcome, recalled: bool = False) -> AttemptResult:
    """The result of an attempt that ended with `outcome` (`recalled`: its lease was taken
    back from the agent's queue, so unless it succeeded it never ran)."""
    if outcome.succeeded:
        return AttemptResult.SUCCEEDED
    if recalled and outcome.started_at is None:
        return AttemptResult.RECALLED
    return _RESULTS.get(outcome.error_code, AttemptResult.FAILED)


_RESULTS = {
    ErrorCode.TIMEOUT: AttemptResult.TIMEOUT,
    ErrorCode.LOST: AttemptResult.LOST,
    ErrorCode.STOPPED: AttemptResult.STOPPED,
}


class EngineMeter(Protocol):
    """Told what the engine's loop did, on its thread, after each step's commit. Each call
    must be quick (a counter increment, a histogram observation). A hook with no-op
    defaults, as `TransitionListener`: subclass it and override what you need."""

    def stepped(self, seconds: float) -> None:
        """A step that did work (applied reports or launched) took `seconds`."""
        return None

    def ended(self, result: AttemptResult, seconds: float | None) -> None:
        """An attempt ended; `seconds`: how long it ran, from start to end as its runner
        reported them (None when it has no times, e.g. lost or recalled)."""
        return None


@dataclass(frozen=True)
class StateTally:
    """Jobs, tasks or instances of one tenant in one state."""

    kind: str
    """"job", "task" or "instance"."""
    tenant: str
    state: State
    count: int


@dataclass(frozen=True)
class GroupTally:
    """The VMs of one cluster group: wanted, Running, and in each state."""

    cluster_id: str
    tenant: str
    group: str
    desired: int
    """Its DesiredVMCount."""
    by_state: dict[str, int]
    """VMs in each VM state (absent: none)."""
    vm_ids: tuple[str, ...]
    """Its VMs in the Running state (to ask the engine which of them are busy)."""


class Tallies(Protocol):
    """What the store keeps counted, read in a few grouped queries (one moment each)."""

    def states(self) -> Sequence[StateTally]:
        """Jobs, tasks and instances per tenant and state (states with none left out)."""
        ...

    def groups(self) -> Sequence[GroupTally]:
        """Every group of every cluster."""
        ...
