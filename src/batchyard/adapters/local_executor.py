"""Runs attempts as local processes: one thread per slot, each calling the runner.

An agent (see `ports.agents`) in the engine's own process. Each attempt takes one of its
slots for its whole run (see `runner.confinement`): the slot's cgroup and unprivileged user
are its alone meanwhile.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.ports.agents import AgentInfo, AgentListener, LeaseBatch, Report
from batchyard.ports.objects import ObjectStore
from batchyard.runner.confinement import SlotPool
from batchyard.runner.reaper import reap_orphans
from batchyard.runner.runner import AttemptControl, RunnerSettings, run_attempt
from batchyard.runner.sandbox import MISSING_MESSAGE, bwrap_path
from batchyard.runner.workspace import clear_spares

log = logging.getLogger(__name__)


class LocalExecutor:
    """Up to `slots` attempts at once on this machine; reports go to `listener`.

    Made when the engine starts: it first kills the programs an earlier engine left
    running (found by their environment) and clears the spare work folders.
    """

    def __init__(self, slots: int, objects: ObjectStore, settings: RunnerSettings,
                 listener: AgentListener) -> None:
        self.slots = slots
        self.objects = objects
        self.settings = settings
        self.listener = listener
        self.worker_id = f"local-{socket.gethostname()}"
        killed = reap_orphans(settings.work_root)
        if killed:
            log.warning("killed %d program(s) left running by an earlier engine", len(killed))
        clear_spares(str(settings.work_root))
        self.slot_pool = SlotPool(slots, settings.confinement, settings.work_root)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="batchyard-slot")
        self._controls: dict[AttemptKey, AttemptControl] = {}
        self._lock = threading.Lock()

    def info(self) -> AgentInfo:
        return AgentInfo(self.worker_id, self.slots, sandbox=bwrap_path() is not None,
                         sandbox_missing=MISSING_MESSAGE, heartbeat=0)

    def lease(self, batch: LeaseBatch) -> None:
        for lease, request in batch.requests():
            control = AttemptControl()
            with self._lock:
                self._controls[request.key] = control
            self._pool.submit(self._run, replace(request, worker_id=self.worker_id),
                              lease.token, control)

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        for key in keys:
            with self._lock:
                control = self._controls.get(key)
            if control is not None:
                control.cancel()

    def forget(self, job_id: str) -> None:
        shutil.rmtree(self.settings.work_root / job_id, ignore_errors=True)

    def shutdown(self) -> None:
        with self._lock:
            controls = list(self._controls.values())
        for control in controls:
            control.cancel()
        self._pool.shutdown(wait=True, cancel_futures=False)
        self.slot_pool.close()

    def _run(self, request: AttemptRequest, token: int, control: AttemptControl) -> None:
        slot = control.slot = self.slot_pool.take()
        try:
            outcome = run_attempt(request, self.objects, control, self.settings)
        finally:
            self.slot_pool.give(slot)
            with self._lock:
                self._controls.pop(request.key, None)
        self.listener.reported(self.worker_id, [Report(request.key, token, outcome)])
