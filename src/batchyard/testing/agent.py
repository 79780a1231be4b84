"""An agent that runs nothing: the test decides how each attempt ends, and when.

`InlineAgent` implements `ports.agents.Agent`. It keeps the lease batches the engine hands
it; `finish()` ends attempts with the outcome the test names and reports them to the
engine, as a real agent would once the program exited. So an engine test is a sequence of
steps, with no process and no sleep: submit, `engine.step()`, look at `running()`,
`finish(...)`, `engine.step()`, ... Heartbeats are the test's to send
(`engine.heartbeat(agent.id, ...)`); with `heartbeat=0` the engine never expects one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.ports.agents import Agent, AgentInfo, AgentListener, LeaseBatch, Report

_EPOCH = datetime.fromtimestamp(0, UTC)
STOPPED_MESSAGE = "stopped: the attempt was cancelled"
SANDBOX_MISSING = ("the InlineAgent was built without a sandbox: pass sandbox=True to accept "
                   "jobs with mapped paths")


@dataclass
class _Held:
    token: int
    request: AttemptRequest


@dataclass
class InlineAgent:
    """`slots` attempts at once (as far as the engine knows); none of them runs."""

    listener: AgentListener
    id: str = "inline"
    slots: int = 1
    sandbox: bool = False
    """Whether it says it can sandbox attempts (jobs with mapped paths need it)."""
    heartbeat: float = 0.0
    queue: int = 0
    """Leases it says it takes beyond `slots` (see `AgentInfo.queue`): held like the others."""
    hosts_only_vms: bool = False
    """A provider's agent (see `AgentInfo.hosts_only_vms`)."""
    batches: list[LeaseBatch] = field(default_factory=list)
    """Every batch leased to it, in order."""
    submitted: list[AttemptRequest] = field(default_factory=list)
    """Every attempt leased, in order."""
    cancelled: list[AttemptKey] = field(default_factory=list)
    """Every key `cancel` was called with, in order (running or not)."""
    forgotten: list[str] = field(default_factory=list)
    """Every job `forget` was called with (deleted jobs), in order."""
    _running: dict[AttemptKey, _Held] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> AgentInfo:
        return AgentInfo(self.id, self.slots, sandbox=self.sandbox,
                         sandbox_missing=SANDBOX_MISSING, heartbeat=self.heartbeat,
                         queue=self.queue, hosts_only_vms=self.hosts_only_vms)

    def lease(self, batch: LeaseBatch) -> None:
        with self._lock:
            self.batches.append(batch)
            for lease, request in batch.requests():
                if not request.worker_id:
                    request = replace(request, worker_id=self.id)
                if request.key in self._running:
                    raise ValueError(f"attempt {request.key} was leased twice")
                self._running[request.key] = _Held(lease.token, request)
                self.submitted.append(request)

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        """Like a real agent: each attempt that runs ends with ErrorCode STOPPED (reported at
        once here, there once the program is killed)."""
        with self._lock:
            self.cancelled += keys
            held = [self._running.pop(key) for key in keys if key in self._running]
        if held:
            self.listener.reported(self.id, [
                _report(each, None, ErrorCode.STOPPED, STOPPED_MESSAGE) for each in held])

    def forget(self, job_id: str) -> None:
        """A deleted job: nothing is kept of it here, so only noted."""
        with self._lock:
            self.forgotten.append(job_id)

    def shutdown(self) -> None:
        """Cancel whatever runs (each reported STOPPED, as a real agent does)."""
        self.cancel([request.key for request in self.running()])

    def running(self) -> list[AttemptRequest]:
        """The attempts leased and not ended yet, in the order they were leased."""
        with self._lock:
            return [held.request for held in self._running.values()]

    def leases(self) -> dict[int, AttemptKey]:
        """The running attempts by fencing token."""
        with self._lock:
            return {held.token: key for key, held in self._running.items()}

    def keys(self) -> list[str]:
        """`str()` of the running attempts' keys (`job/task/instance#attempt`), for asserts."""
        return [str(request.key) for request in self.running()]

    def finish(self, key_or_prefix: AttemptKey | str, exit_code: int | None = 0,
               error_code: ErrorCode | None = None, message: str | None = None,
               seconds: float | None = None) -> list[AttemptKey]:
        """End the running attempts named by `key_or_prefix` and report them (one batch).

        A prefix names whole parts of `job/task/instance#attempt`: `job` (all its attempts),
        `job/task`, `job/task/3`. The error code is NonZeroExitCode for an exit code other
        than 0 unless given; the message is the runner's ("exited with code 3") unless given.
        `seconds`: how long each attempt ran, as its report's start and end times say (none
        by default: the engine then learns nothing of attempt times).
        Raises LookupError when nothing running matches (a test that ends nothing is wrong).
        """
        with self._lock:
            ended = [held for key, held in self._running.items()
                     if _matches(key, key_or_prefix)]
            if not ended:
                raise LookupError(f"no running attempt matches {key_or_prefix}; running: "
                                  f"{sorted(str(key) for key in self._running)}")
            for held in ended:
                del self._running[held.request.key]
        code = error_code if error_code is not None else (
            ErrorCode.NONE if exit_code == 0 else ErrorCode.EXIT_CODE)
        text = message if message is not None else (
            "" if code is ErrorCode.NONE else f"exited with code {exit_code}")
        self.listener.reported(self.id, [_report(held, exit_code, code, text, seconds)
                                         for held in ended])
        return [held.request.key for held in ended]

    def finish_all(self, exit_code: int | None = 0) -> list[AttemptKey]:
        """End every running attempt the same way (nothing running: nothing happens)."""
        keys = [request.key for request in self.running()]
        for key in keys:
            self.finish(key, exit_code)
        return keys


def _matches(key: AttemptKey, wanted: AttemptKey | str) -> bool:
    if isinstance(wanted, AttemptKey):
        return key == wanted
    text, stem = str(key), wanted.rstrip("/#")
    return text == stem or text.startswith((stem + "/", stem + "#"))


def _report(held: _Held, exit_code: int | None, code: ErrorCode, message: str,
            seconds: float | None = None) -> Report:
    """The report a real agent would send, with its log paths (and times, given `seconds`)."""
    request = held.request
    ended = _EPOCH + timedelta(seconds=seconds) if seconds is not None else None
    return Report(request.key, held.token, Outcome(
        exit_code=exit_code, error_code=code, error_message=message,
        started_at=_EPOCH if seconds is not None else None, ended_at=ended,
        stdout_path=request.stdout_dir + request.log_name("stdout"),
        stderr_path=request.stderr_dir + request.log_name("stderr"), node="inline"))


if TYPE_CHECKING:  # mypy proves that the port is implemented
    def _implements(agent: InlineAgent) -> Agent:
        return agent
