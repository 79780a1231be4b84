"""Running one attempt of an instance, start to finish (reference §4.4, §4.5, §6.2).

`run_attempt` is a plain blocking function, usable by any agent: `agent.LocalAgent` calls it
on a thread for attempts its spawner loop does not start itself (a package, mapped paths,
the sandbox, a user's slot); a Ray actor would call it the same way. It never changes job
state; it returns an Outcome, and everything the job or its program did wrong becomes an
Outcome rather than an exception.

Steps: a fresh attempt folder → for a sandboxed attempt (one with mappings, or every one
under `serve`), its inputs staged and its sandbox laid out (`layout`) → the package
downloaded and extracted into `workdir/` (owned by the slot's user, when it has one) → the
program run under its Timeout, in its slot's cgroup, under its limits (in its bubblewrap
sandbox if sandboxed, LogMapping files shipped meanwhile, its disk use measured) →
OutputMapping folders uploaded → stdout/stderr uploaded (always; failed attempts also keep
`.attempt-<n>` copies) → the attempt folder removed if the attempt succeeded.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from batchyard.domain.attempt import AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.errors import BatchyardError, ObjectStoreError
from batchyard.ports import ObjectStore
from batchyard.runner.cgroups import MemoryCount
from batchyard.runner.confinement import Limits
from batchyard.runner.control import AttemptControl
from batchyard.runner.diskguard import shared_guard
from batchyard.runner.environment import program_environment
from batchyard.runner.layout import Layout, hand_over, lay_out
from batchyard.runner.livelogs import LiveLogs
from batchyard.runner.logmapping import LogShipper
from batchyard.runner.logs import LogUpload, append_note, ensure_logs, upload_logs
from batchyard.runner.package import PackageError, extract_package
from batchyard.runner.program import Launch, ProgramEnd, run_program
from batchyard.runner.sandbox import sandbox_argv
from batchyard.runner.settings import RunnerSettings
from batchyard.runner.staging import upload_outputs
from batchyard.runner.workspace import Workspace, prepare_workspace, remove_workspace

__all__ = ["NOT_STARTED", "AttemptControl", "RunnerSettings", "Verdict", "broken", "conclude",
           "judge", "launch_failed", "memory_message", "memory_verdict", "run_attempt"]

_log = logging.getLogger(__name__)

_NOTED_IN_STDERR = frozenset({ErrorCode.PACKAGE, ErrorCode.TIMEOUT, ErrorCode.STOPPED,
                              ErrorCode.LAUNCH, ErrorCode.MAPPING, ErrorCode.DISK,
                              ErrorCode.MEMORY})
"""Failures the program cannot know about: a `batchyard: …` line in its stderr log says why."""


_FILE_TOO_LARGE = 128 + signal.SIGXFSZ
"""The exit code of a program killed for writing past RLIMIT_FSIZE (the disk limit)."""


@dataclass(frozen=True)
class Verdict:
    """How the attempt went before its logs were uploaded."""

    exit_code: int | None
    error_code: ErrorCode = ErrorCode.NONE
    message: str = ""
    program_started: datetime | None = None
    """When the program's process was started, after staging (None: it never started)."""

    @property
    def failed(self) -> bool:
        return self.error_code is not ErrorCode.NONE or self.exit_code != 0


NOT_STARTED = Verdict(None, ErrorCode.STOPPED, "stopped before the program started")
"""An attempt cancelled before its program started."""


def run_attempt(request: AttemptRequest, objects: ObjectStore, control: AttemptControl,
                settings: RunnerSettings) -> Outcome:
    """Run one attempt and report how it went. Blocks until the program ended and the logs
    are uploaded; `control.cancel()` from another thread stops it early (ErrorCode STOPPED).
    """
    started = _now()
    try:
        return _attempt(request, objects, control, settings, started)
    except Exception as error:  # a bug or broken machine must still yield an Outcome
        _log.exception("the runner failed on attempt %s", request.key)
        return broken(error, started)


def broken(error: Exception, started: datetime) -> Outcome:
    """The Outcome of an attempt the runner itself failed on (a bug, a broken machine)."""
    return Outcome(exit_code=None, error_code=ErrorCode.LAUNCH,
                   error_message=f"the attempt could not be run: {_describe(error)}",
                   started_at=started, ended_at=_now(), node=socket.gethostname())


def _attempt(request: AttemptRequest, objects: ObjectStore, control: AttemptControl,
             settings: RunnerSettings, started: datetime) -> Outcome:
    workspace = prepare_workspace(str(settings.work_root), request.key)
    user = control.slot.user if control.slot is not None else None
    layout: Layout | None = None
    verdict = _stopped_early(control)
    if verdict is None and (request.uses_mappings or settings.confinement.sandbox):
        layout, verdict = _lay_out(request, objects, settings, workspace, user)
    verdict = (verdict or _fetch_package(request, objects, workspace, settings, user)
               or _execute(request, objects, control, settings, workspace, layout))
    return conclude(request, objects, settings, workspace, verdict, started, layout)


def conclude(request: AttemptRequest, objects: ObjectStore, settings: RunnerSettings,
             workspace: Workspace, verdict: Verdict, started: datetime,
             layout: Layout | None = None) -> Outcome:
    """The end of every attempt, however its program was run (here, or by the agent's
    spawner): the note in stderr, outputs and logs uploaded, the folder removed on success."""
    if verdict.exit_code is None:
        ensure_logs(workspace)
    if verdict.error_code in _NOTED_IN_STDERR:
        append_note(workspace, verdict.message)
    problems = upload_outputs(objects, layout.outputs) if layout is not None else []
    upload = upload_logs(objects, request, workspace, verdict.failed or bool(problems))
    upload.problems[:0] = problems
    outcome = _outcome(verdict, upload, workspace, started)
    if outcome.succeeded and not settings.keep_workdirs:
        remove_workspace(workspace)
    return outcome


def _stopped_early(control: AttemptControl) -> Verdict | None:
    return NOT_STARTED if control.cancelled else None


def _fetch_package(request: AttemptRequest, objects: ObjectStore, workspace: Workspace,
                   settings: RunnerSettings, user: tuple[int, int] | None) -> Verdict | None:
    """Download and extract PackagePath into the workdir; a verdict only if that failed."""
    hand_over(workspace.workdir, user)
    if not request.package_path:
        return None
    try:
        objects.get_file(request.package_path, Path(workspace.archive))
    except ObjectStoreError as error:
        return Verdict(None, ErrorCode.PACKAGE, f"cannot download the package: {error.message}")
    try:
        extract_package(Path(workspace.archive), Path(workspace.workdir),
                        settings.package_limits, owner=user)
    except PackageError as error:
        return Verdict(None, ErrorCode.PACKAGE,
                        f"cannot extract the package {request.package_path}: {error.message}")
    return None


def _lay_out(request: AttemptRequest, objects: ObjectStore, settings: RunnerSettings,
             workspace: Workspace, user: tuple[int, int] | None
             ) -> tuple[Layout | None, Verdict | None]:
    """Stage the inputs and plan the sandbox; a verdict only if that failed."""
    try:
        layout = lay_out(request, objects, settings, workspace, user)
        layout.wrapper = tuple(sandbox_argv(layout.plan))  # fails early, saying why
    except Exception as error:
        return None, Verdict(None, ErrorCode.MAPPING,
                              f"cannot prepare the mapped paths: {_describe(error)}")
    for note in layout.notes:
        _log.info("%s: input %s", request.key, note)
    return layout, None


def _execute(request: AttemptRequest, objects: ObjectStore, control: AttemptControl,
             settings: RunnerSettings, workspace: Workspace,
             layout: Layout | None = None) -> Verdict:
    launch = _launch(request, objects, control, settings, workspace, layout)
    refused = _limit_memory(control, launch, layout is not None and settings.confinement.sandbox)
    if refused is not None:
        return refused
    shipper = None
    if layout is not None:
        shipper = LogShipper(objects, layout.logs, settings.log_interval,
                             workspace.folder).start()
    live = LiveLogs(objects, request, workspace, settings.log_interval).start()
    memory = _memory_count(control, launch)
    guard = _guard_disk(control, settings, workspace, layout)
    begun = _now()  # staging is over: the program starts now (unless cancelled first)
    try:
        end = run_program(launch, control)
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        return launch_failed(error)
    finally:
        if guard is not None:
            shared_guard().forget(guard)
        live.finish()
        problems = shipper.finish() if shipper is not None else []
    verdict = (_limit_verdict(end, control, launch, memory, request.instance_type)
               or judge(end, request.timeout))
    if problems and not verdict.failed:
        verdict = Verdict(verdict.exit_code, ErrorCode.UPLOAD,
                          "LogMapping upload failed: " + "; ".join(problems))
    return replace(verdict, program_started=begun if end.returncode is not None else None)


def launch_failed(error: BaseException) -> Verdict:
    """The verdict on a program that could not be started."""
    return Verdict(None, ErrorCode.LAUNCH, f"cannot start the program: {_describe(error)}")


def _launch(request: AttemptRequest, objects: ObjectStore, control: AttemptControl,
            settings: RunnerSettings, workspace: Workspace, layout: Layout | None) -> Launch:
    """How to start the program: where, with what environment, sandbox and limits."""
    sandboxed = layout is not None
    confined = sandboxed and settings.confinement.sandbox
    if confined:  # only the tenant's buckets, and no credentials of remote ones
        store = objects.program_environment([bucket.name for bucket in request.buckets])
    else:
        store = objects.program_environment()
    user = control.slot.user if control.slot is not None else None
    return Launch(
        command_line=request.command_line, workdir=workspace.workdir,
        environment=program_environment(request, store, settings, workspace.workdir,
                                        sandboxed),
        stdout=workspace.stdout, stderr=workspace.stderr, timeout=request.timeout,
        kill_grace=settings.kill_grace,
        wrapper=layout.wrapper if layout is not None else (),
        limits=settings.confinement.limits.with_memory(request.memory_bytes) if confined
        else Limits(),
        umask=0o002 if user is not None else -1)


def _guard_disk(control: AttemptControl, settings: RunnerSettings, workspace: Workspace,
                layout: Layout | None) -> int | None:
    """Measure a confined attempt's folder while it runs (see `diskguard`)."""
    limit = settings.confinement.limits.disk_bytes
    if layout is None or not settings.confinement.sandbox or not limit:
        return None
    return shared_guard().watch(workspace.folder, limit, control.exceed_disk)


def _limit_memory(control: AttemptControl, launch: Launch, confined: bool) -> Verdict | None:
    """Give a confined attempt's slot the attempt's own memory limit (no limit: none, so
    not the previous attempt's), before its program starts; a verdict only if the kernel
    refused it. (A slot without a memory controller enforces none: logged at start.)"""
    slot = control.slot
    if not confined or slot is None or slot.group is None:
        return None
    limit = launch.limits.memory_bytes
    try:
        slot.group.set_memory(limit)
    except OSError as error:
        return Verdict(None, ErrorCode.LAUNCH, f"cannot limit the attempt's memory to "
                        f"{_size(limit)}: {error.strerror or error}")
    return None


def _memory_count(control: AttemptControl, launch: Launch) -> MemoryCount | None:
    """The slot's memory counts, where the attempt runs under a memory limit."""
    slot = control.slot
    if not launch.limits.memory_bytes or slot is None or slot.group is None:
        return None
    return slot.group.memory_count()


def _limit_verdict(end: ProgramEnd, control: AttemptControl, launch: Launch,
                   memory_before: MemoryCount | None, instance_type: str) -> Verdict | None:
    """A program killed for going past its disk or memory limit (None: it was not)."""
    code = exit_code(end.returncode)
    limits = launch.limits
    if control.disk_used:
        return Verdict(code, ErrorCode.DISK,
                        f"killed after writing {control.disk_used} bytes, more than the "
                        f"disk limit of {limits.disk_bytes} bytes")
    if limits.disk_bytes and code == _FILE_TOO_LARGE:
        return Verdict(code, ErrorCode.DISK, "killed writing a file larger than the disk "
                        f"limit of {limits.disk_bytes} bytes (SIGXFSZ)")
    if memory_before is None or end.cancelled:
        return None
    return memory_verdict(end, memory_before, _memory_count(control, launch),
                          limits.memory_bytes, instance_type)


def memory_verdict(end: ProgramEnd, before: MemoryCount, after: MemoryCount | None,
                   limit: int, instance_type: str) -> Verdict | None:
    """MemoryLimitExceeded if the kernel's OOM killer acted in the attempt's cgroup while
    its program ran (its counts `before` and `after`); None if it did not."""
    if after is None or not after.oom_killed_since(before, end.returncode == -signal.SIGKILL):
        return None
    return Verdict(exit_code(end.returncode), ErrorCode.MEMORY,
                   memory_message(limit, instance_type))


def memory_message(limit: int, instance_type: str) -> str:
    """Why the kernel killed the program, and what to do about it."""
    if instance_type:
        return (f"killed: used more than the {_size(limit)} of memory of its InstanceType "
                f"{instance_type}; choose a larger InstanceType")
    return (f"killed: used more than its memory limit of {_size(limit)}; choose an "
            "InstanceType with more memory")


def _size(count: int) -> str:
    """4.0 GiB, 64.0 MiB, 512 bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def judge(end: ProgramEnd, timeout: int, program_started: datetime | None = None) -> Verdict:
    """The verdict on a program that ran (started at `program_started`, if known): stopped,
    timed out, failed or succeeded."""
    code = exit_code(end.returncode)
    if end.cancelled:
        return Verdict(code, ErrorCode.STOPPED, "stopped: the attempt was cancelled",
                       program_started)
    if end.timed_out:
        return Verdict(code, ErrorCode.TIMEOUT, f"killed after exceeding Timeout of {timeout} s",
                       program_started)
    if code:
        return Verdict(code, ErrorCode.EXIT_CODE, exit_message(end.returncode), program_started)
    return Verdict(code, program_started=program_started)


def exit_code(returncode: int | None) -> int | None:
    """A shell-style exit code: the program's own, or 128+N when killed by signal N."""
    if returncode is None or returncode >= 0:
        return returncode
    return 128 - returncode


def exit_message(returncode: int | None) -> str:
    """"exited with code 3" or "killed by signal SIGKILL"."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exited with code {returncode}"


def _outcome(verdict: Verdict, upload: LogUpload, workspace: Workspace,
             started: datetime) -> Outcome:
    """The Outcome; an upload failure fails a successful attempt, or is noted in `detail`."""
    error_code, message, detail = verdict.error_code, verdict.message, []
    if upload.problems and verdict.failed:
        detail.append("log upload failed: " + "; ".join(upload.problems))
    elif upload.problems:
        error_code, message = ErrorCode.UPLOAD, "; ".join(upload.problems)
    if error_code is not ErrorCode.NONE or verdict.exit_code != 0:
        detail.append(f"attempt folder kept at {workspace.folder}")
    return Outcome(exit_code=verdict.exit_code, error_code=error_code, error_message=message,
                   detail="; ".join(detail), started_at=started, ended_at=_now(),
                   stdout_path=upload.stdout_url, stderr_path=upload.stderr_url,
                   node=socket.gethostname(), program_started_at=verdict.program_started)


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(error: BaseException) -> str:
    if isinstance(error, BatchyardError):
        return error.message
    return str(error) or type(error).__name__
