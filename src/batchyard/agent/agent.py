"""`LocalAgent`: an agent (BatchCompute's VM) in this process, running leased attempts.

Its threads, however many attempts run:

- the spawner loop (`spawner`): starts fast-path attempts, reaps them, keeps their
  Timeouts, live-log turns and the agent's heartbeat on one timer heap;
- finishers (`finisher`, a few): upload the logs of ended fast-path attempts and report
  them, a batch per wake-up;
- a pool of at most `slots` threads for the heavy path: attempts with a package, mapped
  paths, the sandbox (and so a slot with a user or limits) run `runner.run_attempt`
  unchanged, so everything it does to confine them stays exactly as it is. A slot's
  cgroup alone does not send an attempt there: the spawner starts the program inside it
  (`births`).

A slot is given back before its attempt is reported, so the engine, counting free slots
from reports, never leases to a full agent.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from batchyard.agent.attempts import Attempt
from batchyard.agent.finisher import Concluded, Finishers
from batchyard.agent.spawner import Spawner
from batchyard.domain.attempt import AttemptKey
from batchyard.ports import ObjectStore
from batchyard.ports.agents import AgentInfo, AgentListener, LeaseBatch, Report
from batchyard.runner.confinement import SlotPool
from batchyard.runner.control import AttemptControl
from batchyard.runner.reaper import reap_orphans
from batchyard.runner.runner import run_attempt
from batchyard.runner.sandbox import bwrap_path
from batchyard.runner.settings import RunnerSettings
from batchyard.runner.workspace import clear_spares

_log = logging.getLogger(__name__)

_MOST_FINISHERS = 4


class LocalAgent:
    """Runs up to `info.slots` attempts at once on this machine; see the module docstring."""

    def __init__(self, info: AgentInfo, objects: ObjectStore, settings: RunnerSettings,
                 listener: AgentListener) -> None:
        self._info = info
        self._objects = objects
        self._settings = settings
        self._listener = listener
        self._slot_pool = SlotPool(info.slots, settings.confinement, settings.work_root)
        self._slots = deque(self._slot_pool.take() for _ in range(info.slots))
        fast = not settings.confinement.sandbox and all(slot.user is None
                                                         for slot in self._slots)
        self._leased: dict[int, AttemptKey] = {}
        """Tokens leased and not yet reported: what a heartbeat lists."""
        self._finishers = Finishers(min(info.slots, _MOST_FINISHERS), objects, settings,
                                    self._concluded)
        self._pool = ThreadPoolExecutor(max_workers=info.slots,
                                        thread_name_prefix="batchyard-heavy")
        self._spawner = Spawner(objects, settings, self._slots, fast, self._run_heavy,
                                self._finishers.finish, one_per_worker=info.hosts_only_vms)
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def tracking(self) -> str:
        """How detached processes of attempts are tracked: "cgroup" or "subreaper"."""
        return self._slot_pool.tracking

    @property
    def memory_limits(self) -> bool:
        """Whether confined attempts' memory limits (their InstanceType's) are enforced here:
        every slot has a memory cgroup (if not, the agent said why in its log at start)."""
        return self._slot_pool.memory_limits

    def info(self) -> AgentInfo:
        """What it offers; whether it can sandbox is asked afresh (bubblewrap may come or
        go while it runs)."""
        return replace(self._info, sandbox=bwrap_path() is not None)

    def start(self) -> LocalAgent:
        """Kill what a dead engine left running here, drop spare folders, start the threads."""
        work_root = self._settings.work_root
        killed = reap_orphans(work_root)
        if killed:
            _log.warning("killed %d program(s) left running by an earlier engine", len(killed))
        clear_spares(str(work_root))
        self._finishers.start()
        self._spawner.start()
        if self._info.heartbeat > 0:  # 0: it never misses one (the engine's own process)
            self._spawner.call(self._beat)
        return self

    def lease(self, batch: LeaseBatch) -> None:
        """Start these attempts as slots allow; returns at once. (After `shutdown`, nothing
        is started: the engine counts such attempts lost and runs them again.)"""
        if self._stopped:
            return
        worker = self._info.id
        leased = self._leased
        attempts = []
        for lease, request in batch.requests():
            if not request.worker_id:
                # `requests()` builds each request afresh, and nothing else has seen it yet:
                # name the worker in place (`dataclasses.replace` would build it again).
                object.__setattr__(request, "worker_id", worker)
            attempts.append(Attempt(lease.token, request))
            leased[lease.token] = request.key
        self._spawner.submit(attempts)

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        if not self._stopped:
            self._spawner.cancel(keys)

    def forget(self, job_id: str) -> None:
        """Remove the job's work folders (the job was deleted)."""
        if job_id in ("", ".", "..") or "/" in job_id:
            return
        shutil.rmtree(self._settings.work_root / job_id, ignore_errors=True)

    def shutdown(self) -> None:
        """Kill what runs (each still reports, STOPPED), then stop every thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._spawner.stop()
        self._pool.shutdown(wait=True)
        self._finishers.stop()
        self._slot_pool.close()

    # ---- inside -----------------------------------------------------------------------

    def _run_heavy(self, attempt: Attempt) -> None:
        """On the spawner loop: hand an attempt that needs `run_attempt` to the pool."""
        attempt.control = AttemptControl(attempt.slot)
        self._pool.submit(self._heavy, attempt)

    def _heavy(self, attempt: Attempt) -> None:
        assert attempt.control is not None
        outcome = run_attempt(attempt.request, self._objects, attempt.control, self._settings)
        self._spawner.forget(attempt.request.key)
        self._concluded([(attempt, outcome)])

    def _concluded(self, done: Concluded) -> None:
        """Give the slots back, then report the whole batch at once."""
        reports = []
        for attempt, outcome in done:
            if attempt.slot is not None:
                self._slots.append(attempt.slot)
            self._leased.pop(attempt.token, None)
            reports.append(Report(attempt.request.key, attempt.token, outcome))
        self._spawner.slot_freed()
        try:
            self._listener.reported(self._info.id, reports)
        except Exception:  # the listener's trouble must not stop the agent's loop
            _log.exception("the listener failed on %d reports", len(reports))

    def _beat(self) -> None:
        """On the spawner loop, every `info.heartbeat` seconds: the tokens it holds."""
        if self._stopped:
            return
        self._spawner.timers.add(self._info.heartbeat, self._beat)
        try:
            self._listener.heartbeat(self._info.id, list(self._leased))
        except Exception:  # the listener's trouble must not stop the heartbeats
            _log.exception("heartbeat listener failed")
