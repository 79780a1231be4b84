"""The agent's one loop: starts leased attempts, reaps them, and keeps their deadlines.

One thread does it all for the fast path, so an attempt costs no thread, future or alarm of
its own: it sleeps in `epoll` on a wake-up eventfd (new leases, cancels) and on
one pidfd per running program (readable when the program's leader exits), with the timer
heap's next deadline as its timeout.

A fast-path program is started with the C library's `posix_spawn`, called through ctypes
so that the GIL is let go while the child starts (`native`): `bash -c CommandLine` in a
session of its own, in its attempt's `workdir/` (chdir file actions), stdin on /dev/null,
stdout/stderr opened by the spawn's file actions, SIGPIPE and SIGXFSZ back to their
defaults. Where the C library lacks `posix_spawn_file_actions_addchdir_np`, it falls back to
`os.posix_spawn` (which holds the GIL): this thread then unshares its file-system
attributes (`unshare(CLONE_FS)`: its cwd is its own, not the process's) and `chdir`s into
the workdir before each spawn, the child inheriting the thread's cwd; where that is refused
too, the program is started by `subprocess.Popen(cwd=…)` (vfork) instead.

When a leader exits, its pidfd says so while it is still an unreaped zombie, so its process
group id cannot have been reused: what is left of the group is SIGKILLed, the orphan
tracker sweeps what left the group (where there is no cgroup), and only then is the leader
reaped — as `runner.program` does. Only this thread signals or reaps its programs, so a
cancel or a timeout (posted to it, or due on its heap) can never hit a reused pid.

A slot's cgroup holds the program from its birth (`births`); when its leader exits, or at a
cancel or the end of a Timeout's grace, everything in the cgroup is killed too, so a
`setsid` escapee dies with its attempt. (At a leader's exit that comes after its reap, and
only if the cgroup says a process is left in it: `SlotGroup.empty`, one `pread`.)
Attempts that need more than a plain program (a package, mappings, the sandbox, and with it
a slot's user and limits) are handed to `heavy` (the agent's pool running `run_attempt`);
the fast-path attempts that ended during one turn of the loop go to `finish` together (the
agent's finishers upload their logs).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial

from batchyard.agent import native
from batchyard.agent.attempts import Attempt
from batchyard.agent.births import Births
from batchyard.agent.timers import Timers
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.ports import ObjectStore
from batchyard.runner.confinement import Slot
from batchyard.runner.environment import identity_variables, program_environment
from batchyard.runner.livelogs import LiveLogs
from batchyard.runner.orphans import now_ticks
from batchyard.runner.program import ProgramEnd
from batchyard.runner.runner import NOT_STARTED, judge, launch_failed
from batchyard.runner.settings import RunnerSettings
from batchyard.runner.watchdog import bounded_delay
from batchyard.runner.workspace import prepare_workspace

_log = logging.getLogger(__name__)

_CLONE_FS = 0x200
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
_STDIN = (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)
_NO_WORKDIR = "\0workdir\0"
"""A workdir no environment holds otherwise (a NUL is refused in any real value)."""


class Spawner:
    """The loop thread; every method but the loop's own may be called from any thread."""

    def __init__(self, objects: ObjectStore, settings: RunnerSettings, slots: deque[Slot],
                 fast: bool, heavy: Callable[[Attempt], None],
                 finish: Callable[[list[Attempt]], None], one_per_worker: bool = False) -> None:
        """`one_per_worker`: a worker (VM) runs one attempt at a time — its next leased one
        starts when its program ends, before its logs are uploaded and it is reported (an
        agent hosting VMs, whose short attempts the engine queues per VM)."""
        self._objects = objects
        self._settings = settings
        self._work_root = str(settings.work_root)
        self._slots = slots
        """Free slots: taken here, given back by whoever concludes an attempt."""
        self._fast = fast
        self._heavy = heavy
        self._finish = finish
        self._store_variables = objects.program_environment()
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._loop_thread = 0
        """The loop thread's ident, once it runs: what it posts itself needs no wake-up."""
        self._posted_here = False
        """The loop posted to its own inbox during this turn (read before the turn ends)."""
        self._epoll = select.epoll()
        self._epoll.register(self._wakeup, select.EPOLLIN)
        self._watched: dict[int, Attempt] = {}
        """Running fast-path attempts by pidfd."""
        self.timers = Timers()
        self._log_delay = bounded_delay(settings.log_interval)
        self._log_deadlines: deque[tuple[float, Attempt]] = deque()
        """When each running fast-path program's logs start to ship while it runs, in start
        order — which, with one `log_interval` for all, is deadline order: a deque instead
        of a heap entry (and its cancel) per attempt. Ended attempts are skipped."""
        self._attempts: dict[AttemptKey, Attempt] = {}
        """Started attempts, fast and heavy, until they end (heavy ones: until their thread
        returns, which removes them)."""
        self._ended: list[Attempt] = []
        """Attempts that ended during this turn of the loop: finished together after it."""
        self._pending: deque[Attempt] = deque()
        """Leased attempts waiting for a free slot (the engine leased more than it should)."""
        self._closing = False
        self._native: native.NativeSpawn | None = None
        """posix_spawn through ctypes (without the GIL), where the C library allows."""
        self._own_cwd = False
        self._home = -1
        """The process's working directory (a descriptor): the loop goes back there after
        each spawn, so relative paths mean on this thread what they mean elsewhere."""
        self._shells: dict[str, str | None] = {}
        self._task: tuple[object, ...] = ()
        self._template: dict[str, str] | None = None
        """The environment of `_task`'s programs, but for the workdir and the identity."""
        self._homes: list[str] = []
        """The names in `_template` whose value is the workdir (HOME, unless EnvVars say)."""
        self._births = Births()
        self._one_per_worker = one_per_worker
        self._busy_workers: set[str] = set()
        """Workers running an attempt (with `one_per_worker`)."""
        self._thread = threading.Thread(target=self._loop, name="batchyard-spawner",
                                        daemon=True)

    # ---- from any thread --------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, attempts: list[Attempt]) -> None:
        self._post(partial(self._take, attempts))

    def cancel(self, keys: Iterable[AttemptKey]) -> None:
        self._post(partial(self._cancel, list(keys)))

    def call(self, action: Callable[[], None]) -> None:
        """Run `action` on the loop thread (a heartbeat's timer, for instance)."""
        self._post(action)

    def slot_freed(self) -> None:
        if self._pending:
            self._post(self._start_pending)

    def forget(self, key: AttemptKey) -> None:
        """A heavy attempt ended (its thread says so)."""
        attempt = self._attempts.pop(key, None)
        if self._one_per_worker and attempt is not None:
            self._post(partial(self._release, [attempt]))

    def stop(self) -> None:
        """Kill every program, let the loop reap them, and end it."""
        self._post(self._close)
        self._thread.join()
        self._epoll.close()
        os.close(self._wakeup)

    def _post(self, action: Callable[[], None]) -> None:
        self._inbox.put(action)
        if threading.get_ident() == self._loop_thread:
            # From the loop itself (a report freeing a slot, the listener leasing more from
            # it): read at the end of this turn, with no eventfd write, wake-up and read.
            self._posted_here = True
        else:
            os.eventfd_write(self._wakeup, 1)

    # ---- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        self._loop_thread = threading.get_ident()
        self._home = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._native = native.available()
        self._own_cwd = self._native is None and _own_working_directory()
        self._births.start()
        _keep_descriptors_home()
        try:
            while not (self._closing and not self._watched and not self._pending):
                try:
                    self._turn()
                except Exception:  # one attempt's trouble must not stop every other one
                    _log.exception("the agent's spawner failed")
        finally:
            os.close(self._home)
            self._births.close()
            if self._native is not None:
                self._native.close()

    def _turn(self) -> None:
        # Not a moment's sleep while the loop owes itself work: what it posted itself, or
        # attempts that ended while it read that (at the end of the last turn).
        delay = 0.0 if self._posted_here or self._ended else self._delay()
        for descriptor, _ in self._epoll.poll(delay):
            if descriptor == self._wakeup:
                os.eventfd_read(self._wakeup)
                self._read_inbox()
            elif (attempt := self._watched.pop(descriptor, None)) is not None:
                self._reap(attempt)
            else:  # never expected: but a descriptor left in the set would spin the loop
                with suppress(OSError):
                    self._epoll.unregister(descriptor)
        for action in self.timers.due():
            action()
        if self._log_deadlines:
            self._ship_due_logs()
        self._settle()

    def _settle(self) -> None:
        """End the turn: read what the loop posted itself, finish what ended, and read
        again what finishing posted (the slots it freed: the next attempts start in this
        turn, not after another `epoll_wait`). What is still owed after that makes the next
        turn's wait zero."""
        for _ in range(2):
            if self._posted_here:
                self._posted_here = False
                self._read_inbox()
            if not self._ended:
                return
            ended, self._ended = self._ended, []
            self._finish(ended)
            if self._one_per_worker:
                self._release([attempt for attempt in ended
                               if attempt.control is None])  # heavy ones: `forget`
        if self._posted_here:
            self._posted_here = False
            self._read_inbox()

    def _delay(self) -> float:
        """Seconds until the next deadline: a timer's, or the first live logs'."""
        delay = self.timers.delay()
        deadlines = self._log_deadlines
        while deadlines and not deadlines[0][1].alive:  # ended: forget it now
            deadlines.popleft()
        if deadlines:
            return min(delay, max(deadlines[0][0] - time.monotonic(), 0.0))
        return delay

    def _ship_due_logs(self) -> None:
        deadlines = self._log_deadlines
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            self._ship_logs(deadlines.popleft()[1])

    def _read_inbox(self) -> None:
        while True:
            try:
                action = self._inbox.get_nowait()
            except queue.Empty:
                return
            action()

    def _take(self, attempts: list[Attempt]) -> None:
        self._pending.extend(attempts)
        self._start_pending()

    def _release(self, ended: list[Attempt]) -> None:
        """Their workers are free: the next attempt of each may start."""
        for attempt in ended:
            if attempt.slot is not None:  # it started (a cancelled waiting one did not)
                self._busy_workers.discard(attempt.request.worker_id)
        if self._pending:
            self._start_pending()

    def _start_pending(self) -> None:
        pending, slots = self._pending, self._slots
        busy = self._busy_workers if self._one_per_worker else None
        waiting: list[Attempt] = []
        while pending and slots:
            attempt = pending.popleft()
            if busy is not None:
                if attempt.request.worker_id in busy:
                    waiting.append(attempt)  # after the one its worker runs
                    continue
                busy.add(attempt.request.worker_id)
            attempt.slot = slots.popleft()
            self._attempts[attempt.request.key] = attempt
            if self._fast and not attempt.request.package_path \
                    and not attempt.request.uses_mappings:
                self._start(attempt)
            else:
                self._heavy(attempt)
        pending.extendleft(reversed(waiting))

    # ---- the fast path ----------------------------------------------------------------

    def _start(self, attempt: Attempt) -> None:
        request = attempt.request
        attempt.started = datetime.now(UTC)
        try:
            workspace = attempt.workspace = prepare_workspace(self._work_root, request.key)
            environment = self._environment(request, workspace.workdir)
        except Exception as error:  # as run_attempt: the runner's own trouble, not launch
            attempt.error = error
            self._end(attempt)
            return
        since = now_ticks()  # before the leader exists: never later than its children
        spawned = datetime.now(UTC)  # no staging on this path: the program starts now
        try:
            self._spawn(attempt, environment)
            attempt.pidfd = os.pidfd_open(attempt.pid)
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            attempt.verdict = launch_failed(error)
            if attempt.pid:  # started, but cannot be watched: kill and reap it now
                attempt.alive = True
                self._kill_and_reap(attempt)
            self._end(attempt)
            return
        attempt.program_started = spawned
        self._watch(attempt, since)

    def _environment(self, request: AttemptRequest, workdir: str) -> dict[str, str]:
        """`program_environment(request, …, workdir, False)`, built in full once per task:
        its attempts differ only in the workdir and the identity variables (the instance,
        the attempt), so the next ones copy it and set those again. The workdir's places are
        found by building it with a stand-in workdir that no real path or value contains
        (it holds a NUL); where a value merely contains it, or an EnvVar holds a NUL (its
        spawn fails as before), every attempt is built in full."""
        key = request.key
        task = (key.job_id, key.task, request.instance_count, request.retry_count,
                request.cluster_id, request.worker_id, request.uses_mappings, request.env_vars)
        if task != self._task:
            self._task, self._template = task, None
            built = program_environment(request, self._store_variables, self._settings,
                                        _NO_WORKDIR, False)
            homes = [name for name, value in built.items() if value == _NO_WORKDIR]
            if not any(_NO_WORKDIR in value for name, value in built.items()
                       if name not in homes) \
                    and not any("\0" in value for value in request.env_vars.values()):
                self._template, self._homes = built, homes
        template = self._template
        if template is None:
            return program_environment(request, self._store_variables, self._settings,
                                       workdir, False)
        environment = template.copy()
        for name in self._homes:
            environment[name] = workdir
        environment.update(identity_variables(request))
        return environment

    def _spawn(self, attempt: Attempt, environment: dict[str, str]) -> None:
        """Start `bash -c CommandLine` in the workdir, in a session of its own and in its
        slot's cgroup (see `births`); sets `attempt.pid`."""
        slot = attempt.slot
        assert slot is not None
        births = self._births
        argv = births.argv(slot.group, ["bash", "-c", attempt.request.command_line])
        home = births.enter(slot.index, slot.group)
        try:
            attempt.pid = self._spawn_here(attempt, argv, environment)
        finally:
            births.leave(home)

    def _spawn_here(self, attempt: Attempt, argv: list[str],
                    environment: dict[str, str]) -> int:
        workspace = attempt.workspace
        assert workspace is not None
        spawner = self._native
        if spawner is not None:
            program = argv[0] if argv[0] != "bash" else self._shell(
                environment.get("PATH", os.defpath))
            return spawner.spawn(program, argv, environment, workspace.folder, _LOG_FLAGS)
        if not self._own_cwd:
            attempt.popen = _popen(argv, environment, workspace.workdir, workspace.stdout,
                                   workspace.stderr)
            return attempt.popen.pid
        program = argv[0] if argv[0] != "bash" else self._shell(
            environment.get("PATH", os.defpath))
        os.chdir(workspace.workdir)
        try:
            return os.posix_spawn(program, argv, environment, setsid=True, file_actions=[
                _STDIN, (os.POSIX_SPAWN_OPEN, 1, workspace.stdout, _LOG_FLAGS, 0o644),
                (os.POSIX_SPAWN_OPEN, 2, workspace.stderr, _LOG_FLAGS, 0o644)])
        finally:
            os.fchdir(self._home)

    def _shell(self, path: str) -> str:
        """Where `bash` is on the program's PATH (as Popen finds it), looked up once."""
        try:
            found = self._shells[path]
        except KeyError:
            found = self._shells[path] = shutil.which("bash", path=path)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory: 'bash'")
        return found

    def _watch(self, attempt: Attempt, since: int) -> None:
        """The program runs: wait for its leader's exit, track its orphans, arm its timers."""
        attempt.alive = True
        self._epoll.register(attempt.pidfd, select.EPOLLIN)
        self._watched[attempt.pidfd] = attempt
        orphans = attempt.slot.orphans if attempt.slot is not None else None
        if orphans is not None:
            attempt.orphan = orphans.started(attempt.pid, since)
        timers = self.timers
        if attempt.request.timeout > 0:
            attempt.timers.append(timers.add(attempt.request.timeout,
                                             partial(self._expire, attempt)))
        self._log_deadlines.append((time.monotonic() + self._log_delay, attempt))

    def _reap(self, attempt: Attempt) -> None:
        """The leader exited: kill the rest of its group, sweep orphans, then reap it."""
        # Out of the epoll set first: a closed descriptor stays in it while another process
        # (a child between its vfork and its exec) still shares it, and its number is reused.
        self._epoll.unregister(attempt.pidfd)
        os.close(attempt.pidfd)
        self._kill_and_reap(attempt)
        for timer in attempt.timers:
            self.timers.cancel(timer)
        attempt.verdict = judge(ProgramEnd(attempt.returncode, attempt.cancelled,
                                           attempt.timed_out), attempt.request.timeout,
                                attempt.program_started)
        self._end(attempt)

    def _kill_and_reap(self, attempt: Attempt) -> None:
        """Kill what is left of the program's group (its leader unreaped, so the group id is
        still its own), sweep orphans, reap the leader, then kill what is left in the
        slot's cgroup — unless the cgroup says nothing lives there (`SlotGroup.empty`, the
        common end: one `pread` instead of reading `cgroup.procs`). The cgroup kill needs no
        pid, so it may come after the reap; the slot is not given back before it."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(attempt.pid, signal.SIGKILL)
        attempt.alive = False
        slot = attempt.slot
        orphans = slot.orphans if slot is not None else None
        if orphans is not None and attempt.orphan is not None:
            orphans.ended(attempt.orphan)
        try:
            _, status = os.waitpid(attempt.pid, 0)
            attempt.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped by someone else: its status is lost
            attempt.returncode = -signal.SIGKILL if attempt.cancelled else None
        if attempt.popen is not None:
            attempt.popen.returncode = attempt.returncode
        if orphans is not None and attempt.orphan is not None:
            orphans.reaped(attempt.orphan)
        group = slot.group if slot is not None else None
        if group is not None and not group.empty():
            group.kill()

    def _end(self, attempt: Attempt) -> None:
        self._attempts.pop(attempt.request.key, None)
        self._ended.append(attempt)

    def _signal(self, attempt: Attempt, signum: signal.Signals) -> None:
        """Signal the program's process group; a SIGKILL also kills everything in the
        slot's cgroup (what left the group with `setsid`), as `AttemptControl` does."""
        if not attempt.alive:
            return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(attempt.pid, signum)
        if signum == signal.SIGKILL and attempt.slot is not None \
                and attempt.slot.group is not None:
            attempt.slot.group.kill()

    # ---- deadlines and cancels --------------------------------------------------------

    def _expire(self, attempt: Attempt) -> None:
        """Timeout: SIGTERM the group, and SIGKILL it `kill_grace` seconds later."""
        if not attempt.alive or attempt.cancelled:
            return
        attempt.timed_out = True
        self._signal(attempt, signal.SIGTERM)
        attempt.timers.append(self.timers.add(self._settings.kill_grace,
                                              partial(self._signal, attempt, signal.SIGKILL)))

    def _ship_logs(self, attempt: Attempt) -> None:
        """The program ran for `log_interval` seconds: ship its logs while it runs (the
        finisher stops this before the final upload)."""
        if attempt.alive and attempt.workspace is not None:
            attempt.live = LiveLogs(self._objects, attempt.request, attempt.workspace,
                                    self._settings.log_interval).start(first=0)

    def _cancel(self, keys: list[AttemptKey]) -> None:
        wanted = set(keys)
        for waiting in [a for a in self._pending if a.request.key in wanted]:
            self._pending.remove(waiting)
            waiting.verdict = NOT_STARTED
            self._ended.append(waiting)
        for key in keys:
            attempt = self._attempts.get(key)
            if attempt is None:
                continue
            if attempt.control is not None:
                attempt.control.cancel()
            elif not attempt.cancelled:
                attempt.cancelled = True
                self._signal(attempt, signal.SIGKILL)

    def _close(self) -> None:
        self._closing = True
        self._cancel([attempt.request.key for attempt in self._pending])
        self._cancel(list(self._attempts))


def _own_working_directory() -> bool:
    """Give this thread a working directory of its own (False where the kernel refuses)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.unshare(_CLONE_FS) == 0)
    except (OSError, AttributeError):
        return False


def _keep_descriptors_home() -> None:
    """Mark every descriptor this process holds beyond 0-2 close-on-exec (Python's own are
    already): posix_spawn, unlike Popen, does not close the others, and a program must not
    inherit what batchyard's parent or a C library left open. (The native spawn also
    closes them in the child where the C library can, `addclosefrom_np`: this covers the
    others, and descriptors opened before the loop started.)"""
    for name in os.listdir("/proc/self/fd"):
        descriptor = int(name)
        if descriptor > 2:
            with suppress(OSError):  # the listing's own descriptor, closed meanwhile
                os.set_inheritable(descriptor, False)


def _popen(argv: list[str], environment: dict[str, str], workdir: str, stdout: str,
           stderr: str) -> subprocess.Popen[bytes]:
    out = os.open(stdout, _LOG_FLAGS | os.O_CLOEXEC, 0o644)
    try:
        err = os.open(stderr, _LOG_FLAGS | os.O_CLOEXEC, 0o644)
        try:
            return subprocess.Popen(argv, cwd=workdir, env=environment,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        finally:
            os.close(err)
    finally:
        os.close(out)
