"""An agent in a process of its own, beside `batchyard serve`: the engine's handle and the
child's loop.

Instances started by threads of the server's process compete with the API for the GIL; an
agent process runs them apart, and the engine must learn at once when it dies.

Engine side: `AgentProcess` implements `ports.agents.Agent`. It starts `python -m
batchyard.agent <fd> <engine pid>` with one end of a socketpair (not multiprocessing: its
start-up and its pickled globals are heavy and fragile) and sends `Start`; then `lease`,
`cancel` and `forget` are one message each, written under one lock, never waiting for the
agent's work. One reader thread per child hands what comes back to the engine's
`AgentListener`, and when the channel ends or the child exits it calls `gone` once, saying
how the child ended ("killed by signal SIGKILL").

Child side (`serve`): kills what an earlier child left running in its work root (a host
chore: `runner.reaper`), builds the agent with a listener that writes `Reported` and
`Heartbeat` back, and reads messages in its main thread. When the channel closes — the
engine died, or shut it — it shuts the agent down, killing its instances, and exits: an
agent never runs on alone. PR_SET_PDEATHSIG is a second guard, for a channel that someone
else (a forked copy of the engine) keeps open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from batchyard.agent import wire
from batchyard.agent.wire import AgentFactory, ChannelError, FrameReader, Start, encode
from batchyard.domain.attempt import AttemptKey
from batchyard.errors import BatchyardError
from batchyard.ports.agents import Agent, AgentInfo, AgentListener, LeaseBatch, Report

log = logging.getLogger(__name__)

COMMAND = (sys.executable, "-m", "batchyard.agent")
"""The child's command; the channel's fd and the engine's pid are appended."""

_PR_SET_PDEATHSIG = 1


class AgentGone(BatchyardError):
    """The agent process ended, did not start, or was never started."""


@dataclass(frozen=True)
class Timeouts:
    start: float = 30.0
    """Seconds from Popen to the agent's `Ready` before the child is killed."""
    stop: float = 10.0
    """Seconds a child may take to stop (its agent kills its instances) before SIGKILL."""
    send: float = 30.0
    """Seconds a message may wait for the child to read it before the child is killed."""


def agent_processes(parent: int) -> list[int]:
    """Pids of the agent processes (`python -m batchyard.agent`) that `parent` started: which
    process runs a server's instances (for operators and tests)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"batchyard.agent" in arguments:
            found.append(int(entry.name))
    return found


def exit_status(returncode: int) -> str:
    """How a child ended, in words: "was killed by signal SIGKILL", "exited with status 1"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


# ---- engine side -----------------------------------------------------------------------


class AgentProcess:
    """The engine's handle on an agent running in a child process (one child at a time)."""

    def __init__(self, info: AgentInfo, listener: AgentListener, factory: AgentFactory, *,
                 work_root: Path | None = None, command: Sequence[str] = COMMAND,
                 timeouts: Timeouts = Timeouts()) -> None:
        self._start = Start(info, factory, None if work_root is None else str(work_root))
        self._info = info
        self._listener = listener
        self._command = tuple(command)
        self._timeouts = timeouts
        self._child: _Child | None = None

    def start(self) -> AgentProcess:
        """Start a child and wait (bounded) until its agent is ready; AgentGone if it ended
        or did not get ready in time (its stderr, the server's, says why)."""
        if self._child is not None and not self._child.exited:
            raise RuntimeError(f"agent {self._info.id} already has a running process")
        self._child = _Child(self._command, self._start, self._listener, self._timeouts)
        self._info = self._child.wait_ready(self._timeouts.start)
        return self

    def restart(self) -> AgentProcess:
        """A new child in place of the current one (stopped first if it still runs). The
        new child kills what the old one left running in `work_root` before its first lease.
        May be called from the listener's `gone`; stopping a live child calls no `gone`."""
        if self._child is not None:
            self._child.stop()
        return self.start()

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.process.pid

    @property
    def ready_after(self) -> float:
        """Seconds from Popen to the agent's `Ready` for the current child."""
        return 0.0 if self._child is None else self._child.ready_after

    def info(self) -> AgentInfo:
        return self._info

    def lease(self, batch: LeaseBatch) -> None:
        """One message. To a child that is gone it is dropped: `gone`, delivered or on its
        way, counts lost every lease the engine made before it took `gone` in (the engine
        leases nothing more to the agent until a restarted child heartbeats)."""
        self._send(batch)

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        """One message (dropped if the child is gone: its programs are lost)."""
        self._send(wire.Cancel(tuple(keys)))

    def forget(self, job_id: str) -> None:
        self._send(wire.Forget(job_id))

    def shutdown(self) -> None:
        """Ask the child to stop (its agent kills what runs), wait a bounded time, then kill
        it. Reports sent before it ended are delivered before this returns; no `gone`."""
        if self._child is not None:
            self._child.stop()

    def _send(self, message: wire.ToAgent) -> None:
        if self._child is None:
            raise AgentGone(f"agent {self._info.id} was not started")
        try:
            self._child.send(message)
        except AgentGone as gone:
            log.debug("%s dropped: %s", type(message).__name__, gone)


class _Child:
    """One child process, its channel and its reader thread."""

    def __init__(self, command: tuple[str, ...], start: Start, listener: AgentListener,
                 timeouts: Timeouts) -> None:
        self.agent_id = start.info.id
        self.info = start.info
        self.ready_after = 0.0
        self._listener = listener
        self._timeouts = timeouts
        first = encode(start)  # refused (too large) before a child exists
        self._launched = time.monotonic()
        self.process, self._sock = _spawn(command)
        self._sock.settimeout(timeouts.send)
        self._frames = FrameReader(self._sock)
        self._write = threading.Lock()
        self._ready = threading.Event()
        self._answered = threading.Event()
        """Set by `Ready` or by the end of the child, whichever comes first."""
        self._exited = threading.Event()
        self._stopping = False
        self._reason = ""
        self._write_frame(first)
        self._reader = threading.Thread(
            target=self._read, name=f"batchyard-agent-{self.agent_id}-{self.process.pid}",
            daemon=True)
        self._reader.start()

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def wait_ready(self, timeout: float) -> AgentInfo:
        if not self._answered.wait(timeout):
            self.process.kill()
            self._exited.wait()
            raise AgentGone(f"agent {self.agent_id} (process {self.process.pid}) was not "
                            f"ready within {timeout:g} s")
        if not self._ready.is_set():
            raise AgentGone(f"agent {self.agent_id} {self._reason} before it was ready")
        return self.info

    def send(self, message: wire.ToAgent) -> None:
        """Write one message. A child that died meanwhile is left to the reader (which
        reports it gone); one that does not read for `Timeouts.send` is killed."""
        self._write_frame(encode(message))

    def _write_frame(self, frame: bytes) -> None:
        with self._write:
            if self._exited.is_set():
                raise AgentGone(self._reason or f"agent {self.agent_id} was shut down")
            try:
                self._sock.sendall(frame)
            except TimeoutError:
                log.error("agent process %d read nothing for %g s: killed", self.process.pid,
                          self._timeouts.send)
                self.process.kill()
            except OSError:
                pass

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(AgentGone):
            self.send(wire.Stop())
        if threading.current_thread() is self._reader:
            return  # called from a listener: the reader ends once it returns
        if not self._exited.wait(self._timeouts.stop):
            self.process.kill()
            self._exited.wait()

    # ---- the reader thread -------------------------------------------------------------

    def _read(self) -> None:
        trouble = self._pump()
        if trouble:
            self.process.kill()  # the stream is out of step: nothing more from it is trusted
        ended = self._reap()
        # A phrase after "agent <id>": the engine's log and the lost attempts' message.
        self._reason = f"(process {self.process.pid}) " + (
            f"{trouble}; then it {ended}" if trouble else ended)
        with self._write:
            self._sock.close()
            self._exited.set()
        self._answered.set()
        if self._ready.is_set() and not self._stopping:
            log.error("agent %s %s", self.agent_id, self._reason)
            self._call(self._listener.gone, self.agent_id, self._reason)

    def _pump(self) -> str:
        """Hand over messages until the channel ends or the child exits; what went wrong,
        if anything ("" for an ordinary end)."""
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        pidfd = _pidfd(self.process.pid)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if self._sock.fileno() in ready and not self._receive():
                    return ""
                if pidfd in ready:  # exited, but someone else holds the channel open
                    self._drain()
                    return ""
        except ChannelError as error:
            log.error("agent process %d: refused %s", self.process.pid, error)
            return f"sent {error}, refused"
        except OSError as error:
            return f"broke its channel ({error})"
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _drain(self) -> None:
        """What the child wrote before it exited."""
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        while poller.poll(0) and self._receive():
            pass

    def _receive(self) -> bool:
        if not self._frames.fill():
            return False
        while (payload := self._frames.frame()) is not None:
            self._dispatch(wire.from_agent(payload))
        return True

    def _dispatch(self, message: wire.FromAgent) -> None:
        if isinstance(message, wire.Reported):
            self._call(self._listener.reported, self.agent_id, message.reports)
        elif isinstance(message, wire.Heartbeat):
            self._call(self._listener.heartbeat, self.agent_id, message.running)
        else:
            self.info = replace(message.info, id=self.agent_id)  # the engine names agents
            self.ready_after = time.monotonic() - self._launched
            log.info("agent process %d ready in %.0f ms", self.process.pid,
                     self.ready_after * 1000)
            # The first heartbeat, heard before `start()` returns.
            self._call(self._listener.heartbeat, self.agent_id, ())
            self._ready.set()
            self._answered.set()

    def _call(self, method: Callable[..., None], *arguments: Any) -> None:
        """A failing listener is logged; the reader goes on (it is the only one)."""
        try:
            method(*arguments)
        except Exception:
            log.exception("the engine's listener failed on agent %s", self.agent_id)

    def _reap(self) -> str:
        try:
            code = self.process.wait(timeout=self._timeouts.stop)
        except subprocess.TimeoutExpired:  # closed its channel but did not exit
            self.process.kill()
            code = self.process.wait()
        return exit_status(code)


def _spawn(command: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """The child, with one end of a socketpair as an inherited fd; the engine keeps the
    other (not inheritable: no other child of the server holds it)."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [*command, str(theirs.fileno()), str(os.getpid())], pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL, env=_environment())
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, ours


def _environment() -> dict[str, str]:
    """The server's environment, with the folder holding this batchyard first on the
    child's path, so the child runs the engine's own code (not another copy installed
    elsewhere); a site-packages folder is not moved (before the standard library, what it
    holds could shadow it)."""
    import site

    environment = dict(os.environ)
    parent = str(Path(__file__).resolve().parents[2])
    if parent not in (*site.getsitepackages(), site.getusersitepackages()):
        environment["PYTHONPATH"] = os.pathsep.join(
            path for path in (parent, environment.get("PYTHONPATH")) if path)
    return environment


def _pidfd(pid: int) -> int | None:
    """A descriptor readable once the child exits (Linux ≥ 5.3), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


# ---- child side ------------------------------------------------------------------------


REPORT_LINGER = 0.003
"""Seconds the writer waits after a report for more, so that reports leave in batches: each
message costs a pickle and a frame on both ends, and the engine records outcomes at most
every 10 ms anyway (its STEP_SPACING)."""


class _Channel:
    """The child's end. The main thread reads; what the agent's threads send goes through
    one writer thread, so the main thread never waits to write and always reads on: the
    engine's writes complete even while the engine is slow to read (were both to wait on a
    full buffer, each would wait for the other). Reports queued together leave as one
    message."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._frames = FrameReader(sock)
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="batchyard-agent-writer",
                                        daemon=True)
        self._writer.start()

    def receive(self) -> wire.ToAgent | None:
        """The next message; None once the engine closed its end (or died)."""
        while (payload := self._frames.frame()) is None:
            if not self._frames.fill():
                return None
        return wire.to_agent(payload)

    def send(self, message: object) -> None:
        self._outbox.put(message)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most `timeout` seconds), then close."""
        self._outbox.put(_CLOSE)
        self._writer.join(timeout)
        self._sock.close()

    def _write(self) -> None:
        """Until `close`: what is queued, coalesced, in one write. Dropped if the engine is
        gone (the main thread sees the end of the channel and stops)."""
        while True:
            messages = [self._outbox.get()]
            if isinstance(messages[0], wire.Reported):
                time.sleep(REPORT_LINGER)  # the reports of the next moments leave with it
            while not self._outbox.empty():
                messages.append(self._outbox.get())
            frames = b"".join(_framed(wire.coalesced(message for message in messages
                                                 if message is not _CLOSE)))
            with contextlib.suppress(OSError):
                self._sock.sendall(frames)
            if _CLOSE in messages:
                return


_CLOSE = object()


def _framed(messages: Iterable[object]) -> Iterator[bytes]:
    for message in messages:
        try:
            yield encode(message)
        except ChannelError as error:
            log.error("agent process %d could not send %s", os.getpid(), error)


class _ChannelListener:
    """The agent's listener in the child: each call is one message to the engine."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        self._channel.send(wire.Reported(tuple(reports)))

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        self._channel.send(wire.Heartbeat(tuple(running)))

    def gone(self, agent_id: str, reason: str) -> None:
        """An agent giving up: the process exits, which is how the engine learns it."""
        log.error("agent %s gives up: %s", agent_id, reason)
        os.kill(os.getpid(), signal.SIGTERM)


def serve(argv: Sequence[str]) -> int:
    """The child's main: `argv` is `<channel fd> <engine pid>`."""
    logging.basicConfig(  # into the server's stderr, saying whose it is
        format="batchyard agent process %(process)d: %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=int(argv[0]))
    sock.set_inheritable(False)  # instances (posix_spawn keeps inheritable fds) never hold it
    engine = int(argv[1])
    _guard(engine, sock)
    if os.getppid() != engine:
        return 1  # the engine died before the guard was set
    channel = _Channel(sock)
    agent = None
    try:
        agent = _build(channel)
        if agent is not None:
            _serve(channel, agent)
    except ChannelError as error:
        log.error("agent process %d refused %s from the engine", os.getpid(), error)
    finally:
        if agent is not None:
            agent.shutdown()
        channel.close()
    return 0


def _build(channel: _Channel) -> Agent | None:
    """The agent `Start` names, started, once the programs an earlier child left are dead;
    None if the engine went away first."""
    start = channel.receive()
    if start is None:
        return None
    if not isinstance(start, Start):
        raise ChannelError(f"a {type(start).__name__} before Start")
    if start.work_root is not None:
        from batchyard.runner.reaper import reap_orphans

        killed = reap_orphans(Path(start.work_root))
        if killed:
            log.warning("killed %d program(s) an earlier agent process left running",
                        len(killed))
    import importlib

    module, _, name = start.factory.function.partition(":")
    factory = getattr(importlib.import_module(module), name)
    agent: Agent = factory(start.info, *start.factory.arguments, _ChannelListener(channel))
    channel.send(wire.Ready(agent.info()))
    return agent


def _serve(channel: _Channel, agent: Agent) -> None:
    while (message := channel.receive()) is not None and not isinstance(message, wire.Stop):
        if isinstance(message, LeaseBatch):
            agent.lease(message)
        elif isinstance(message, wire.Cancel):
            agent.cancel(message.keys)
        elif isinstance(message, wire.Forget):
            agent.forget(message.job_id)
        else:
            raise ChannelError(f"a second {type(message).__name__}")


def _guard(engine: int, sock: socket.socket) -> None:
    """SIGTERM stops the agent; SIGHUP, sent by the kernel when the engine's thread that
    started this process ends, stops it only if the engine itself died; SIGINT (Ctrl-C in
    the server's terminal reaches this process too) is the engine's to act on. Handlers,
    not SIG_IGN, which instances would inherit.

    A handler raises nothing (an exception could land anywhere, even in the agent's
    shutdown): it ends the channel's reading side, and the main thread, reading the end of
    the channel, stops as if the engine had closed it."""

    def stop(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # closed already: stopping anyway
            sock.shutdown(socket.SHUT_RD)

    def orphaned(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != engine:
            stop(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, orphaned)
    signal.signal(signal.SIGINT, _ignore)
    _die_with_parent(signal.SIGHUP)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler that does nothing (a handler, unlike SIG_IGN, is not inherited by exec)."""


def _die_with_parent(signum: int) -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("PR_SET_PDEATHSIG unavailable: the channel alone tells the engine died")
