"""The agent of one Ray node, in a detached actor (agent side of the Ray provider).

One `NodeAgent` per node hosts every VM reserved there: a `LocalAgent` (the same one that
runs attempts beside `batchyard serve`) with a slot per VM the node can hold. A VM runs one
instance at a time; the engine may lease it a few short attempts ahead (so the VM never
waits for the engine between two of them), which wait here, per VM, until the one before
ends — a queued one that is cancelled reports STOPPED without starting. Its methods are the
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
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from batchyard.domain.attempt import AttemptKey
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.ports.agents import AgentInfo, LeaseBatch, Report
from batchyard.ports.provider import Held

log = logging.getLogger(__name__)

NOT_STARTED = "stopped before the program started"
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
        self._vms = threading.Lock()
        self._queued: dict[str, deque[LeaseBatch]] = {}
        """VM -> its leases waiting for the attempt it runs to end (one lease a batch)."""
        self._busy: dict[str, int] = {}
        """VM -> the token of the attempt it runs."""
        info = AgentInfo(f"node-{node_id[:12]}", slots, heartbeat=HEARTBEAT)
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
        self._next_on(reports)

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
            now = self._one_per_vm(payload)
            if now is not None:
                self._agent.lease(now)
        elif kind == "cancel":
            self._agent.cancel(self._unqueue(payload))
        elif kind == "forget":
            self._agent.forget(payload)
        else:
            log.error("unknown call %r from the engine", kind)

    def _one_per_vm(self, batch: LeaseBatch) -> LeaseBatch | None:
        """The leases a VM can start now (one per idle VM); the others wait in its queue."""
        start = []
        with self._vms:
            for lease in batch.leases:
                worker = lease.worker
                if worker and (worker in self._busy or self._queued.get(worker)):
                    self._queued.setdefault(worker, deque()).append(
                        LeaseBatch((batch.parts[lease.part],), (replace(lease, part=0),)))
                    continue
                if worker:
                    self._busy[worker] = lease.token
                start.append(lease)
        return LeaseBatch(batch.parts, tuple(start)) if start else None

    def _next_on(self, reports: Sequence[Report]) -> None:
        """Attempts ended: the next lease of each of their VMs starts."""
        starting = []
        with self._vms:
            for report in reports:
                worker = report.outcome.worker
                if not worker or self._busy.get(worker) != report.token:
                    continue
                waiting = self._queued.get(worker)
                if waiting:
                    following = waiting.popleft()
                    self._busy[worker] = following.leases[0].token
                    starting.append(following)
                else:
                    self._busy.pop(worker, None)
                    self._queued.pop(worker, None)
        for batch in starting:
            self._agent.lease(batch)

    def _unqueue(self, keys: Sequence[AttemptKey]) -> list[AttemptKey]:
        """Cancel the queued leases of these attempts (each reports STOPPED, not started);
        the others (started, or not here) are the agent's to cancel."""
        wanted = set(keys)
        dropped = []
        with self._vms:
            for waiting in self._queued.values():
                for batch in [batch for batch in waiting if batch.key(batch.leases[0]) in wanted]:
                    waiting.remove(batch)
                    dropped.append(batch)
        if dropped:
            self.reported("", [Report(batch.key(batch.leases[0]), batch.leases[0].token,
                                      Outcome(None, ErrorCode.STOPPED, NOT_STARTED))
                               for batch in dropped])
        gone = {batch.key(batch.leases[0]) for batch in dropped}
        return [key for key in keys if key not in gone]

    def poll(self, ack: int, timeout: float) -> tuple[int, list[Report], tuple[int, ...]]:
        """Reports after batch `ack` (waiting up to `timeout` s for some), the number of
        the last one, and the tokens running now."""
        with self._condition:
            self._batches = [batch for batch in self._batches if batch[0] > ack]
            if not self._batches:
                self._condition.wait(timeout)
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
