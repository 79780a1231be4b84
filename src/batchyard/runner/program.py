"""Running one task program: `bash -c CommandLine` in its own process group, to its end.

The runner thread blocks in `waitid(WNOWAIT)` — no polling — until the group leader exits,
then SIGKILLs whatever is left in the group (background grandchildren) and only then reaps
the leader, so nothing outlives the attempt and the group id cannot be reused meanwhile.
The Timeout is enforced by the shared watchdog thread: SIGTERM to the group at the
deadline, SIGKILL after a grace period.

In a slot with a cgroup the program is *held* before it runs anything: bubblewrap waits on
its `--block-fd` (an unsandboxed program waits in a tiny `sh` on a pipe) while this thread
moves it into the slot's cgroup and sets its resource limits, then lets it go — so there is
no moment in which the program could fork outside its cgroup or above its limits.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field

from batchyard.runner.confinement import Limits, Slot
from batchyard.runner.control import AttemptControl
from batchyard.runner.watchdog import Alarm, shared_watchdog

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_HOLD = 'read -r go && exec "$@" </dev/null'
"""An unsandboxed program waits here, reading its stdin (a pipe), until it is in its
cgroup (EOF: it never runs); then it runs with stdin on /dev/null like any other."""


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
    limits: Limits = field(default_factory=Limits)
    """Limits set on the program's processes (confined attempts)."""
    umask: int = -1
    """The program's umask (-1: inherited)."""


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
    process = control.launch(lambda: _start(launch, control.slot))
    if process is None:
        return ProgramEnd(returncode=None, cancelled=True, timed_out=False)
    try:
        alarm = _arm_timeout(control, launch.timeout, launch.kill_grace)
    except BaseException:  # a program without its Timeout must not run on untracked
        control.kill()
        _wait(process, control)
        raise
    try:
        cancelled = _wait(process, control)
    finally:
        if alarm is not None:
            alarm.cancel()
    return ProgramEnd(process.returncode, cancelled, control.timed_out)


def _start(launch: Launch, slot: Slot | None) -> subprocess.Popen[bytes]:
    stdout = os.open(launch.stdout, _LOG_FLAGS, 0o644)
    try:
        stderr = os.open(launch.stderr, _LOG_FLAGS, 0o644)
        try:
            if slot is None or (slot.group is None and not launch.wrapper):
                return _spawn(launch, (stdout, stderr), [*launch.wrapper])
            return _spawn_held(launch, (stdout, stderr), slot)
        finally:
            os.close(stderr)
    finally:
        os.close(stdout)


def _spawn(launch: Launch, outputs: tuple[int, int], prefix: list[str],
           pass_fds: tuple[int, ...] = (), stdin: int = subprocess.DEVNULL
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*prefix, "bash", "-c", launch.command_line], cwd=launch.workdir,
        env=launch.environment, stdin=stdin, stdout=outputs[0],
        stderr=outputs[1], start_new_session=True, pass_fds=pass_fds, umask=launch.umask)


def _spawn_held(launch: Launch, outputs: tuple[int, int], slot: Slot) -> subprocess.Popen[bytes]:
    """Start the program held; put it in its slot's cgroup and limits; then let it run."""
    info_read, info_write = os.pipe() if launch.wrapper else (-1, -1)
    hold_read, hold_write = os.pipe()
    try:
        if launch.wrapper:  # bubblewrap holds the sandbox itself, and says its inner pid
            options = ["--info-fd", str(info_write), "--block-fd", str(hold_read)]
            prefix = [launch.wrapper[0], *options, *launch.wrapper[1:]]
            process = _spawn(launch, outputs, prefix, (info_write, hold_read))
        else:
            process = _spawn(launch, outputs, ["/bin/sh", "-c", _HOLD, "sh"], stdin=hold_read)
    except BaseException:
        _close(info_read, info_write, hold_read, hold_write)
        raise
    _close(info_write, hold_read)
    try:
        inner = _inner_pid(info_read) if launch.wrapper else None
        _place(process.pid, inner, slot, launch.limits)
        os.write(hold_write, b"go\n")
    except BaseException:
        process.kill()  # still held: it never ran anything of the program
        process.wait()
        raise
    finally:
        _close(info_read, hold_write)
    return process


def _inner_pid(info: int) -> int | None:
    """The pid bubblewrap reports on its info fd (None if it failed before that)."""
    data = b""
    while chunk := os.read(info, 4096):
        data += chunk
        with suppress(ValueError):
            return int(json.loads(data)["child-pid"])
    return None


def _place(outer: int, inner: int | None, slot: Slot, limits: Limits) -> None:
    """Into the slot's cgroup, under the attempt's resource limits. Of a sandbox, only the
    inner bwrap goes in: every process of the program descends from it (the outer one only
    waits for it, and is this thread's to reap)."""
    target = inner if inner is not None else outer
    if slot.group is not None:
        slot.group.add(target)
    wanted = [(resource.RLIMIT_CORE, 0)] if slot.user is not None else []
    if limits.disk_bytes:
        wanted.append((resource.RLIMIT_FSIZE, limits.disk_bytes))
    if limits.max_processes and slot.user is not None:  # per user: a slot has its own uid
        wanted.append((resource.RLIMIT_NPROC, limits.max_processes))
    for kind, value in wanted:
        with suppress(ProcessLookupError):  # bubblewrap failed meanwhile: it says why
            resource.prlimit(target, kind, (value, value))


def _close(*descriptors: int) -> None:
    for descriptor in descriptors:
        if descriptor >= 0:
            with suppress(OSError):
                os.close(descriptor)


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
        control.reaped()
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
