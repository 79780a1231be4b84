"""Without cgroups: detached processes of attempts are adopted by this process and killed.

Where no cgroup can be made (an unprivileged user without delegation), this process makes
itself a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): a process whose parent dies — a
daemon that double-forked, a `setsid sleep &` whose shell exited — is re-parented to this
process instead of to init, so batchyard still sees it, whatever its process group,
session or environment. Each time an attempt ends, the adopted processes are swept:

- one still in the process group of an attempt's leader belongs to that attempt;
- one that left it (`setsid`, `setpgid`) but not this process's session is attributed by its
  start time to the attempts running at that moment;
- it is killed once every attempt it may belong to has ended.

What remains (documented in docs/security.md): a detached process of one attempt lives on
while another attempt that was running when it started is still running; and one whose
start this process did not witness (an engine killed with `kill -9` and started again) is
not adopted at all — the restart reaper (`reaper`) finds it by its environment only.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

_log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_TICKS = os.sysconf("SC_CLK_TCK")
_KEPT_ENDINGS = 4096
_SWEEPS = 10


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants; False where the kernel refuses."""
    import ctypes  # only where no cgroup can be made: keep it off everyone's start-up

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def now_ticks() -> int:
    """Clock ticks since boot: the unit of a process's start time in /proc/<pid>/stat."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS)


@dataclass(frozen=True)
class ProcessStatus:
    pid: int
    parent: int
    group: int
    session: int
    started: int
    zombie: bool


def status(pid: int) -> ProcessStatus | None:
    """What /proc says of `pid`, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return ProcessStatus(pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]),
                         fields[0] == "Z")


@dataclass
class _Attempt:
    leader: int
    started: int
    ended: int | None = None
    reaped: bool = False
    """Whether the leader was reaped (its pid may then be reused)."""


@dataclass
class OrphanTracker:
    """The attempts started by this process, and the sweep of what they leave behind."""

    _attempts: dict[int, _Attempt] = field(default_factory=dict)
    _sessions: dict[int, None] = field(default_factory=dict)
    """Sessions of detached processes swept already: what they start later goes too."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tokens: itertools.count[int] = field(default_factory=itertools.count)
    _unreaped: dict[int, int] = field(default_factory=dict)
    """The leaders not yet reaped, by token (kept apart: every sweep needs them)."""

    def started(self, leader: int, since: int | None = None) -> int:
        """Note an attempt whose program `leader` just started; returns its token.

        The attempt starts when its leader did, by the kernel's clock: this thread may run
        only after the leader has already forked (a busy machine), and a child must never
        seem older than its attempt. `since`: `now_ticks()` read before the leader was
        started, which is never later (and spares reading /proc)."""
        if since is None:
            known = status(leader)
            since = known.started if known else now_ticks()
        with self._lock:
            token = next(self._tokens)
            self._attempts[token] = _Attempt(leader, since)
            self._unreaped[token] = leader
            return token

    def ended(self, token: int) -> None:
        """The attempt's leader exited (and is not yet reaped): sweep its orphans (killing
        one re-parents its own children here, hence a few rounds)."""
        with self._lock:
            self._attempts[token].ended = now_ticks()
            if len(self._attempts) > _KEPT_ENDINGS + _KEPT_ENDINGS // 4:
                self._forget_old()
        for _ in range(_SWEEPS):
            if not self.sweep():
                break

    def reaped(self, token: int) -> None:
        """The attempt's leader was reaped: its pid is free for others now."""
        with self._lock:
            self._unreaped.pop(token, None)
            attempt = self._attempts.get(token)
            if attempt is not None:
                attempt.reaped = True

    def sweep(self) -> list[int]:
        """Kill (and reap) adopted processes whose every possible attempt has ended."""
        killed = []
        own = os.getpid()
        session = os.getsid(0)
        with self._lock:
            leaders = set(self._unreaped.values())
            for pid in _children(own):
                process = status(pid)
                if process is None or pid in leaders or process.parent != own:
                    continue
                if self._done_with(process, session):
                    self._remember_session(process.session)
                    _kill_and_reap(process)
                    killed.append(pid)
        return killed

    def _remember_session(self, session: int) -> None:
        self._sessions[session] = None
        if len(self._sessions) > _KEPT_ENDINGS:
            del self._sessions[next(iter(self._sessions))]

    def _done_with(self, process: ProcessStatus, session: int) -> bool:
        """Whether `process` came from attempts that have all ended."""
        by_group = [a for a in self._attempts.values() if a.leader == process.group]
        if by_group:
            return all(attempt.ended is not None for attempt in by_group)
        if process.session == session:
            return False  # not detached from this process: someone else's child
        if process.session in self._sessions:
            return True  # started by a detached process that was swept already
        candidates = [a for a in self._attempts.values() if a.started <= process.started
                      and (a.ended is None or process.started <= a.ended)]
        return bool(candidates) and all(a.ended is not None for a in candidates)

    def _forget_old(self) -> None:
        ended = sorted((a.ended or 0, token) for token, a in self._attempts.items() if a.ended)
        for _, token in ended[:max(0, len(ended) - _KEPT_ENDINGS)]:
            del self._attempts[token]


def _children(pid: int) -> list[int]:
    """The children of process `pid` that may be adopted orphans: the kernel hands an
    orphan to the subreaper's main thread while it lives (else to another of its threads)."""
    try:
        return [int(child) for child in _read(f"/proc/{pid}/task/{pid}/children").split()]
    except OSError:  # the main thread is gone: look at every thread
        found: list[int] = []
        with suppress(FileNotFoundError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with suppress(OSError):
                    found += [int(child) for child in (task / "children").read_text().split()]
        return found


def _read(path: str) -> bytes:
    """A small /proc file, without the layers of `open()` (every attempt's end reads one)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(descriptor, 65536)
    finally:
        os.close(descriptor)


def _kill_and_reap(process: ProcessStatus) -> None:
    with suppress(ProcessLookupError, PermissionError):
        if not process.zombie:
            os.kill(process.pid, signal.SIGKILL)
    with suppress(ChildProcessError):
        os.waitpid(process.pid, 0)


_tracker: OrphanTracker | None = None
_tracker_lock = threading.Lock()


def tracker() -> OrphanTracker | None:
    """The process-wide tracker, this process made a subreaper on first use (None: refused)."""
    global _tracker
    with _tracker_lock:
        if _tracker is None and become_subreaper():
            _tracker = OrphanTracker()
        elif _tracker is None:
            _log.warning("cannot become a child subreaper: detached processes of attempts "
                         "may outlive them")
        return _tracker
