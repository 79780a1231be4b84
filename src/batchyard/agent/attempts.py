"""One leased attempt inside an agent, from its lease to its report."""

from __future__ import annotations

import subprocess
from datetime import datetime

from batchyard.agent.timers import Timer
from batchyard.domain.attempt import AttemptRequest
from batchyard.runner.confinement import Slot
from batchyard.runner.control import AttemptControl
from batchyard.runner.livelogs import LiveLogs
from batchyard.runner.runner import Verdict
from batchyard.runner.workspace import Workspace


class Attempt:
    """What the agent knows of one leased attempt; mutated by one thread at a time (the
    spawner loop while it runs, then the finisher that concludes it)."""

    __slots__ = ("alive", "cancelled", "control", "error", "live", "orphan", "pid", "pidfd",
                 "popen", "program_started", "request", "returncode", "slot", "started",
                 "timed_out", "timers", "token", "verdict", "workspace")

    def __init__(self, token: int, request: AttemptRequest) -> None:
        self.token = token
        self.request = request
        self.slot: Slot | None = None
        self.control: AttemptControl | None = None
        """Set for an attempt run by `run_attempt` (the heavy path)."""
        self.workspace: Workspace | None = None
        self.started: datetime | None = None
        self.program_started: datetime | None = None
        """When its program was spawned (fast path; None until then, or if it never was)."""
        self.pid = 0
        self.pidfd = -1
        self.popen: subprocess.Popen[bytes] | None = None
        """Only where the spawner cannot have a working directory of its own (no posix_spawn)."""
        self.orphan: int | None = None
        """The orphan tracker's token for this attempt (subreaper tracking)."""
        self.alive = False
        """Started and not yet reaped: its process group may be signalled."""
        self.cancelled = False
        self.timed_out = False
        self.returncode: int | None = None
        self.timers: list[Timer] = []
        self.live: LiveLogs | None = None
        self.verdict: Verdict | None = None
        """Set when the program never ran (cancelled first, could not start) or ended."""
        self.error: Exception | None = None
        """The spawner's own failure (no workspace): concluded as `runner.broken`."""
