"""Running one task program: `bash -c CommandLine` in its own process group, to its end.

The runner thread blocks in `waitid(WNOWAIT)` — no polling — until the group leader exits,
then SIGKILLs whatever is left in the group (background grandchildren) and only then reaps
the leader, so nothing outlives the attempt and the group id cannot be reused meanwhile.
The Timeout is enforced by the shared watchdog thread: SIGTERM to the group at the
deadline, SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import suppress
from dataclasses import dataclass

from batchyard.runner.control import AttemptControl
from batchyard.runner.watchdog import Alarm, shared_watchdog

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@dataclass(frozen=True)
class Launch:
    """What to run, where, and where its output goes."""

    command_line: str
    workdir: str
    environment: dict[str, str]
    stdout: str
    stderr: str
    timeout: float
    """Seconds from the start; 0 or less means no limit."""
    kill_grace: float
    wrapper: tuple[str, ...] = ()
    """A command line the program runs under (the sandbox: `bwrap … --`); () for none."""


@dataclass(frozen=True)
class ProgramEnd:
    """How a program run ended."""

    returncode: int | None
    """As `subprocess` reports it (-N: killed by signal N); None if it never started."""
    cancelled: bool
    timed_out: bool


def run_program(launch: Launch, control: AttemptControl) -> ProgramEnd:
    """Start the program (unless cancelled), wait for it and clean up its process group.

    Raises OSError / ValueError / SubprocessError if the program cannot be started.
    """
    process = control.launch(lambda: _start(launch))
    if process is None:
        return ProgramEnd(returncode=None, cancelled=True, timed_out=False)
    alarm = _arm_timeout(control, launch.timeout, launch.kill_grace)
    try:
        cancelled = _wait(process, control)
    finally:
        if alarm is not None:
            alarm.cancel()
    return ProgramEnd(process.returncode, cancelled, control.timed_out)


def _start(launch: Launch) -> subprocess.Popen[bytes]:
    stdout = os.open(launch.stdout, _LOG_FLAGS, 0o644)
    try:
        stderr = os.open(launch.stderr, _LOG_FLAGS, 0o644)
        try:
            return subprocess.Popen(
                [*launch.wrapper, "bash", "-c", launch.command_line], cwd=launch.workdir,
                env=launch.environment,
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True)
        finally:
            os.close(stderr)
    finally:
        os.close(stdout)


def _wait(process: subprocess.Popen[bytes], control: AttemptControl) -> bool:
    """Block until the leader exits; kill the rest of its group; reap it. Returns cancelled.

    If waiting is interrupted (KeyboardInterrupt in the main thread), the `finally` still
    kills the whole group and reaps it before the exception goes on.
    """
    try:
        with suppress(ChildProcessError):  # someone else reaped it: fall through to wait()
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    finally:
        cancelled = control.finish()
        process.wait()
    return cancelled


def _arm_timeout(control: AttemptControl, timeout: float, grace: float) -> Alarm | None:
    """Schedule SIGTERM at the deadline and, if that lands, SIGKILL `grace` seconds later."""
    if timeout <= 0:
        return None
    watchdog = shared_watchdog()

    def expire() -> None:
        if control.expire():
            watchdog.schedule(grace, control.kill)

    return watchdog.schedule(timeout, expire)
