"""An executor that runs nothing: the test decides how each attempt ends, and when.

`InlineExecutor` implements `ports.executors.Executor`. It keeps the attempts the engine
submits; `finish()` ends them with the outcome the test names and hands it to the engine's
outcome listener, as a real executor would once the program exited. So an engine test is a
sequence of steps, with no process and no sleep: submit, `engine.step()`, look at
`running()`, `finish(...)`, `engine.step()`, ...
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.ports.executors import Capabilities, Executor, OutcomeListener

NODE = "inline"
STOPPED_MESSAGE = "stopped: the attempt was cancelled"
SANDBOX_MISSING = ("the InlineExecutor was built without a sandbox: pass sandbox=True to accept "
                   "jobs with mapped paths")


@dataclass
class InlineExecutor:
    """`slots` attempts at once (as far as the engine knows); none of them runs."""

    listener: OutcomeListener
    slots: int = 1
    sandbox: bool = False
    """What `capabilities()` says about sandboxing (jobs with mapped paths need it)."""
    submitted: list[AttemptRequest] = field(default_factory=list)
    """Every attempt submitted, in order."""
    cancelled: list[AttemptKey] = field(default_factory=list)
    """Every key `cancel` was called with, in order (running or not)."""
    forgotten: list[str] = field(default_factory=list)
    """Every job `forget` was called with (deleted jobs), in order."""
    _running: dict[AttemptKey, AttemptRequest] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def capabilities(self) -> Capabilities:
        return Capabilities(name=NODE, slots=self.slots, sandbox=self.sandbox,
                            sandbox_missing=SANDBOX_MISSING)

    def submit(self, request: AttemptRequest) -> None:
        with self._lock:
            if request.key in self._running:
                raise ValueError(f"attempt {request.key} was submitted twice")
            self._running[request.key] = request
            self.submitted.append(request)

    def cancel(self, key: AttemptKey) -> None:
        """Like the local executor: the attempt, if it runs, ends with ErrorCode STOPPED
        (reported at once here, there once the program is killed)."""
        with self._lock:
            self.cancelled.append(key)
            request = self._running.pop(key, None)
        if request is not None:
            self.listener(key, _outcome(request, None, ErrorCode.STOPPED, STOPPED_MESSAGE))

    def forget(self, job_id: str) -> None:
        """A deleted job: nothing is kept of it here, so only noted."""
        with self._lock:
            self.forgotten.append(job_id)

    def shutdown(self) -> None:
        """Cancel whatever runs (each reported STOPPED, as the local executor does)."""
        for request in self.running():
            self.cancel(request.key)

    def running(self) -> list[AttemptRequest]:
        """The attempts submitted and not ended yet, in the order they were submitted."""
        with self._lock:
            return list(self._running.values())

    def keys(self) -> list[str]:
        """`str()` of the running attempts' keys (`job/task/instance#attempt`), for asserts."""
        return [str(request.key) for request in self.running()]

    def finish(self, key_or_prefix: AttemptKey | str, exit_code: int | None = 0,
               error_code: ErrorCode | None = None, message: str | None = None
               ) -> list[AttemptKey]:
        """End the running attempts named by `key_or_prefix` and report their outcome.

        A prefix names whole parts of `job/task/instance#attempt`: `job` (all its attempts),
        `job/task`, `job/task/3`. The error code is NonZeroExitCode for an exit code other
        than 0 unless given; the message is the runner's ("exited with code 3") unless given.
        Raises LookupError when nothing running matches (a test that ends nothing is wrong).
        """
        with self._lock:
            ended = [request for key, request in self._running.items()
                     if _matches(key, key_or_prefix)]
            if not ended:
                raise LookupError(f"no running attempt matches {key_or_prefix}; running: "
                                  f"{sorted(str(key) for key in self._running)}")
            for request in ended:
                del self._running[request.key]
        code = error_code if error_code is not None else (
            ErrorCode.NONE if exit_code == 0 else ErrorCode.EXIT_CODE)
        text = message if message is not None else (
            "" if code is ErrorCode.NONE else f"exited with code {exit_code}")
        for request in ended:
            self.listener(request.key, _outcome(request, exit_code, code, text))
        return [request.key for request in ended]


def _matches(key: AttemptKey, wanted: AttemptKey | str) -> bool:
    if isinstance(wanted, AttemptKey):
        return key == wanted
    text, stem = str(key), wanted.rstrip("/#")
    return text == stem or text.startswith((stem + "/", stem + "#"))


def _outcome(request: AttemptRequest, exit_code: int | None, code: ErrorCode,
             message: str) -> Outcome:
    """The outcome a runner would report, with its log paths."""
    return Outcome(exit_code=exit_code, error_code=code, error_message=message,
                   stdout_path=request.stdout_dir + request.log_name("stdout"),
                   stderr_path=request.stderr_dir + request.log_name("stderr"), node=NODE)


if TYPE_CHECKING:  # mypy proves that the port is implemented
    def _implements(executor: InlineExecutor) -> Executor:
        return executor
