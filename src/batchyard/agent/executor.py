"""`AgentExecutor`: today's executor port on top of one `LocalAgent`.

So the engine runs its attempts on the agent before it speaks leases itself: `submit`
leases one attempt, `submit_many` a whole batch (one task part per task), each with a
token from a counter; the agent's batched reports become one `OutcomeListener` call per
attempt, and its heartbeats are not needed (the engine and the agent share a process).
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Sequence

from batchyard.agent.agent import LocalAgent
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.ports import Capabilities, ObjectStore, OutcomeListener
from batchyard.ports.agents import AgentInfo, Report, batch_of
from batchyard.runner.sandbox import bwrap_path
from batchyard.runner.settings import RunnerSettings


class AgentExecutor:
    """Up to `slots` attempts at once on this machine, run by a started `LocalAgent`."""

    def __init__(self, slots: int, objects: ObjectStore, settings: RunnerSettings,
                 listener: OutcomeListener) -> None:
        self.slots = slots
        self.listener = listener
        self._sandbox = bwrap_path() is not None
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        info = AgentInfo(id=f"local-{socket.gethostname()}", slots=slots,
                         sandbox=self._sandbox)
        self.agent = LocalAgent(info, objects, settings, self).start()

    def capabilities(self) -> Capabilities:
        return Capabilities(name="local", slots=self.slots, sandbox=self._sandbox)

    def submit(self, request: AttemptRequest) -> None:
        self.submit_many([request])

    def submit_many(self, requests: Sequence[AttemptRequest]) -> None:
        """Lease these attempts to the agent in one batch."""
        with self._lock:
            numbered = [(next(self._tokens), request) for request in requests]
        self.agent.lease(batch_of(numbered))

    def cancel(self, key: AttemptKey) -> None:
        self.agent.cancel([key])

    def shutdown(self) -> None:
        self.agent.shutdown()

    # ---- the agent's listener -----------------------------------------------------------

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        for report in reports:
            self.listener(report.key, report.outcome)

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        """Nothing to do: an agent in the engine's process cannot be lost on its own."""

    def gone(self, agent_id: str, reason: str) -> None:
        """Never called for an agent in this process."""
