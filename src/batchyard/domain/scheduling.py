"""Which waiting instances start next, given free capacity (reference §7.5).

Order: job Priority (higher first), then job creation (earlier first), then task name, then
instance id. The store hands in candidates from ready tasks only; this function decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Candidate:
    """A Waiting instance of a task whose upstream tasks are all Finished."""

    job_id: str
    priority: int
    job_created: datetime
    task: str
    instance_id: int

    def order_key(self) -> tuple[int, datetime, str, str, int]:
        return (-self.priority, self.job_created, self.job_id, self.task, self.instance_id)


def instances_to_launch(snapshot: Iterable[Candidate], capacity: int) -> list[Candidate]:
    """The candidates to start now: at most `capacity`, best first."""
    if capacity <= 0:
        return []
    return sorted(snapshot, key=Candidate.order_key)[:capacity]
