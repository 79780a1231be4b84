"""The agent of one Ray node, in a detached actor (agent side of the Ray provider).

One `NodeAgent` per node hosts every VM reserved there: a `LocalAgent` (the same one that
runs attempts beside `batchyard serve`) with more slots than the node can hold VMs. A VM
runs one instance at a time; the engine may lease it a few short attempts ahead (so the VM
never waits for the engine between two of them), which the agent starts one after the other
(`AgentInfo.hosts_only_vms`: its spawner runs one attempt per worker). Its methods are the
lease protocol carried by Ray:

- `control(seq, kind, payload)`: a lease batch, a cancel, a forget — one actor call per
  batch. Calls of a threaded actor may run out of order, so each carries the sender's
  sequence number and they are applied in that order.
- `poll(ack, timeout)`: a long poll. Returns the reports not yet acknowledged (every batch
  numbered; `ack` is the last number the engine received) and the tokens running now, which
  is the agent's heartbeat. Reports stay until acknowledged, so those that ended while no
  server listened (a server killed and restarted) are collected by the next one.
- `attach(session)`: a server (re)connects; the sequence of its control calls starts again.
  It answers with what the agent holds from an earlier server — the attempts it runs and
  the reports no server took yet — so that a server killed and restarted re-runs nothing
  that still runs or already ended (the engine *inherits* them).

Credentials never travel through Ray: the actor's `Settings` come without secrets, and the
node's own environment (`BATCHYARD_S3_*`, set where `ray start` runs) fills them in.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from batchyard.domain.attempt import AttemptKey
from batchyard.ports.agents import AgentInfo, LeaseBatch, Report
from batchyard.ports.provider import Held

log = logging.getLogger(__name__)

REPORT_LINGER = 0.01
"""Seconds a poll that has reports waits for more: each answer is a Ray call on both ends,
and the engine records outcomes at most every 10 ms anyway (its STEP_SPACING). A VM's next
queued attempt starts here, not after the report, so the wait delays no instance."""
HEARTBEAT = 1.0
"""Seconds between the LocalAgent's heartbeats inside the actor (what `poll` returns)."""


class NodeAgent:
    """The actor's class (wrapped by `ray.remote` in `onray.provider`)."""

    def __init__(self, fields: Mapping[str, Any], node_id: str, slots: int,
                 object_root: str) -> None:
        from batchyard.hosting import hosted_agent
        from batchyard.settings import Settings

        logging.basicConfig(  # into Ray's log of this worker (its logs/worker-*.err)
            level=logging.INFO,
            format="batchyard node agent %(process)d: %(levelname)s %(name)s: %(message)s")
        _hear_children()
        settings = Settings(**fields)  # secrets: from this node's environment
        self._node_id = node_id
        self._condition = threading.Condition()
        self._batches: list[tuple[int, tuple[Report, ...]]] = []
        self._numbered = 0
        self._running: tuple[int, ...] = ()
        self._held: dict[int, tuple[AttemptKey, str]] = {}
        """Tokens leased and not reported yet: their attempts and VMs."""
        self._expected = 1
        self._early: dict[int, tuple[str, Any]] = {}
        self._control = threading.Lock()
        info = AgentInfo(f"node-{node_id[:12]}", slots, heartbeat=HEARTBEAT,
                         hosts_only_vms=True)
        self._agent = hosted_agent(info, settings, True, self, object_root=Path(object_root))

    # ---- the AgentListener of the LocalAgent --------------------------------------------

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        with self._condition:
            stamped = []
            for report in reports:  # its VM goes with it (a restarted server needs it)
                _, worker = self._held.pop(report.token, (None, ""))
                stamped.append(replace(report, outcome=replace(report.outcome, worker=worker))
                               if worker and not report.outcome.worker else report)
            reports = stamped
            self._numbered += 1
            self._batches.append((self._numbered, tuple(reports)))
            self._condition.notify_all()

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        self._running = tuple(running)

    def gone(self, agent_id: str, reason: str) -> None:
        log.error("node agent %s gives up: %s", agent_id, reason)

    # ---- what the engine calls -----------------------------------------------------------

    def attach(self, session: str) -> dict[str, Any]:
        """A server (re)connects: its control calls count from 1 again. Where this runs."""
        from batchyard.runner.sandbox import bwrap_path

        with self._control:
            self._expected = 1
            self._early.clear()
        with self._condition:
            held = [Held(token, key, worker) for token, (key, worker) in self._held.items()]
            reports = [report for _, batch in self._batches for report in batch]
            last = self._batches[-1][0] if self._batches else self._numbered
        log.info("server session %s attached: it inherits %d running attempt(s) and %d "
                 "report(s)", session, len(held), len(reports))
        return {"pid": os.getpid(), "host_name": socket.gethostname(),
                "node_id": self._node_id, "sandbox": bwrap_path() is not None,
                "held": held, "reports": reports, "acked": last}

    def control(self, seq: int, kind: str, payload: Any) -> None:
        """Apply the engine's calls in the order it made them."""
        with self._control:
            self._early[seq] = (kind, payload)
            while self._expected in self._early:
                self._apply(*self._early.pop(self._expected))
                self._expected += 1

    def _apply(self, kind: str, payload: Any) -> None:
        if kind == "lease" and isinstance(payload, LeaseBatch):
            with self._condition:
                for lease in payload.leases:
                    self._held[lease.token] = (payload.key(lease), lease.worker)
            self._agent.lease(payload)
        elif kind == "cancel":
            self._agent.cancel(payload)
        elif kind == "forget":
            self._agent.forget(payload)
        else:
            log.error("unknown call %r from the engine", kind)

    def poll(self, ack: int, timeout: float) -> tuple[int, list[Report], tuple[int, ...]]:
        """Reports after batch `ack` (waiting up to `timeout` s for some), the number of
        the last one, and the tokens running now."""
        with self._condition:
            self._batches = [batch for batch in self._batches if batch[0] > ack]
            if not self._batches:
                self._condition.wait(timeout)
            if self._batches:  # the reports of the next moments leave with these
                until = time.monotonic() + REPORT_LINGER
                while (left := until - time.monotonic()) > 0:
                    self._condition.wait(left)
            reports = [report for _, batch in self._batches for report in batch]
            last = self._batches[-1][0] if self._batches else ack
        return last, reports, self._running

    def stop(self) -> None:
        """Kill what runs (each reports STOPPED) and stop the agent's threads."""
        self._agent.shutdown()


def _hear_children() -> None:
    """SIGCHLD back to its default. Ray's workers ignore it when the raylet reaps orphans
    (`RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper`, which every node runs
    with): the kernel then reaps their children at once, and the agent would never learn
    how an instance ended. Set through libc: an actor may be built off the main thread."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal(int(signal.SIGCHLD), ctypes.c_void_p(0))  # SIG_DFL


__all__ = ["HEARTBEAT", "NodeAgent"]
