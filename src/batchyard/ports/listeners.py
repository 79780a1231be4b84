"""The listener port: told about state changes once they are committed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from batchyard.domain.states import Transition


class TransitionListener(Protocol):
    """Told about state changes once they are committed (the console, notifications, the
    engine's own `wait()` wake-ups). A hook with a no-op default, as dramatiq's middleware:
    subclass it and override what you need, so hooks added later break no listener.

    The engine calls it on one of its threads, after the commit and never inside the
    transaction, once per commit with everything that commit moved, in commit order. It
    must be quick (hand slow work to a thread of its own); an exception it raises is logged
    and changes nothing else. Submissions are not transitions (no source state): they are
    committed outside the engine's order, so a listener would see them out of order; a
    listener that must know of new and deleted jobs (the console's jobs list) overrides
    `created` and `removed`, told once the job's row is written or gone.
    """

    def committed(self, transitions: Sequence[Transition]) -> None:
        """`transitions`: every state change of one commit, in the order it was made."""
        return None

    def created(self, job_id: str, tenant: str) -> None:
        """A job was submitted (its row is committed), on the submitting thread; it may come
        after the job's first transitions."""
        return None

    def removed(self, job_id: str, tenant: str) -> None:
        """A job was deleted (its rows are gone): no transition says so."""
        return None
