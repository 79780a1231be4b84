"""The executor port: runs attempts somewhere and reports their Outcomes (being replaced by
the agent lease protocol of `ports.agents`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import Outcome

OutcomeListener = Callable[[AttemptKey, Outcome], None]


@dataclass(frozen=True)
class Capabilities:
    name: str
    slots: int
    """How many instances may run at the same time."""
    sandbox: bool = False
    """Whether attempts with mapped paths can run (bubblewrap is installed)."""
    sandbox_missing: str = "attempts with mapped paths cannot run here"
    """Why not, and what to do (when `sandbox` is False)."""


class Executor(Protocol):
    """Runs attempts somewhere and reports each Outcome to the listener exactly once."""

    def capabilities(self) -> Capabilities: ...
    def submit(self, request: AttemptRequest) -> None: ...
    def cancel(self, key: AttemptKey) -> None:
        """Kill the attempt if it runs; its Outcome is then reported with ErrorCode STOPPED."""
        ...
    def forget(self, job_id: str) -> None:
        """The job was deleted: remove what is kept of it where it ran (work folders)."""
        ...
    def shutdown(self) -> None: ...
