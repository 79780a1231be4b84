"""A small, real agent for the agent-process tests (until `LocalAgent` is merged in).

Each lease batch starts its attempts as `bash -c` processes in their own session (as the
runner does, so a dead agent process leaves them behind) and reports them together once all
ended; it heartbeats every `AgentInfo.heartbeat` seconds. Programs keep every inheritable fd
(`close_fds=False`, as `os.posix_spawn` does), so a channel fd the agent process left
inheritable would show in them. Kept out of the test module so the child does not import
pytest: its start-up is what the tests measure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from batchyard.domain.attempt import AttemptKey
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.ports.agents import AgentInfo, AgentListener, Lease, LeaseBatch, Report
from batchyard.runner.reaper import MARKER

_Started = tuple[AttemptKey, Lease, subprocess.Popen[bytes]]


class ShellAgent:
    def __init__(self, info: AgentInfo, work_root: str, listener: AgentListener) -> None:
        self._info = info
        self._work_root = work_root
        self._listener = listener
        self._running: dict[AttemptKey, tuple[int, subprocess.Popen[bytes]]] = {}
        self._cancelled: set[AttemptKey] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> ShellAgent:
        self._spawn_thread(self._heartbeats, ())
        return self

    def info(self) -> AgentInfo:
        return self._info

    def lease(self, batch: LeaseBatch) -> None:
        started = []
        for lease, request in batch.requests():
            process = subprocess.Popen(
                ["bash", "-c", request.command_line], start_new_session=True, close_fds=False,
                env={"PATH": os.environ["PATH"], MARKER: self._work_root})
            with self._lock:
                self._running[request.key] = (lease.token, process)
            started.append((request.key, lease, process))
        self._spawn_thread(self._report, (started,))

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        with self._lock:
            found = [(key, self._running[key][1]) for key in keys if key in self._running]
            self._cancelled.update(key for key, _ in found)
        for _, process in found:
            _kill_session(process)

    def forget(self, job_id: str) -> None:
        shutil.rmtree(Path(self._work_root) / job_id, ignore_errors=True)

    def shutdown(self) -> None:
        self._stopped.set()
        with self._lock:
            keys = list(self._running)
        self.cancel(keys)
        for thread in self._threads:
            thread.join()

    def _spawn_thread(self, target: Callable[..., None], arguments: tuple[object, ...]) -> None:
        thread = threading.Thread(target=target, args=arguments, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _report(self, started: list[_Started]) -> None:
        reports = []
        for key, lease, process in started:
            code = process.wait()
            with self._lock:
                self._running.pop(key, None)
                stopped = key in self._cancelled
            outcome = Outcome(None if stopped else code,
                              ErrorCode.STOPPED if stopped else ErrorCode.NONE)
            reports.append(Report(key, lease.token, outcome))
        self._listener.reported(self._info.id, reports)

    def _heartbeats(self) -> None:
        while not self._stopped.wait(self._info.heartbeat):
            with self._lock:
                tokens = [token for token, _ in self._running.values()]
            self._listener.heartbeat(self._info.id, tokens)


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def shell_agent(info: AgentInfo, work_root: str, listener: AgentListener) -> ShellAgent:
    """The factory the agent process imports ("tests.integration.shell_agent:shell_agent")."""
    return ShellAgent(info, work_root, listener).start()


def renamed(info: AgentInfo, work_root: str, listener: AgentListener) -> ShellAgent:
    """An agent that calls itself otherwise (and has one slot)."""
    return shell_agent(replace(info, id="another-name", slots=1), work_root, listener)
