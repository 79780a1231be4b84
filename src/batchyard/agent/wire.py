"""The channel between the engine and an agent process: its messages and their framing.

A frame is 4 bytes (big-endian, unsigned) giving the length of what follows, then a pickle
of one message. Pickle is used because every value of `ports.agents` is a frozen dataclass
that pickles as it is, cheaply (one pickle per batch, not per attempt), and because both
ends are batchyard's own processes, of one user, over a socketpair that no other process
holds (docs/security.md, "The agent process and its channel"). Still, frames are bounded
(`MAX_FRAME`), and what the engine reads from an agent may only build the classes of the
protocol (`FromAgent`): a frame that would call anything else is refused, not run.
"""

from __future__ import annotations

import io
import pickle
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from batchyard.domain.attempt import AttemptKey
from batchyard.errors import BatchyardError
from batchyard.ports.agents import AgentInfo, LeaseBatch, Report

MAX_FRAME = 64 * 1024 * 1024
"""The largest frame either end sends or accepts: a batch of ~1,000,000 leases fits."""

_HEADER = struct.Struct(">I")
_CHUNK = 1 << 16
_MOST = 1 << 20
"""The most one read asks for: a large frame arrives in pieces anyway, and each read
allocates what it asks for."""


class ChannelError(BatchyardError):
    """A frame was refused: too large, not a pickle, or not a message of the protocol."""


# ---- engine → agent --------------------------------------------------------------------


@dataclass(frozen=True)
class AgentFactory:
    """How the agent process builds its agent: it imports `function` ("module:function")
    and calls `function(info, *arguments, listener)`, which returns a started agent.
    The arguments are pickled: plain values (AgentInfo, the server's Settings), no handles."""

    function: str
    arguments: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Start:
    """The first message: what to build; `work_root`, whose orphans to kill first."""

    info: AgentInfo
    factory: AgentFactory
    work_root: str | None = None


@dataclass(frozen=True)
class Cancel:
    keys: tuple[AttemptKey, ...]


@dataclass(frozen=True)
class Forget:
    job_id: str


@dataclass(frozen=True)
class Stop:
    """Kill what runs and exit."""


# A lease travels as the `LeaseBatch` itself.
ToAgent = Start | LeaseBatch | Cancel | Forget | Stop


# ---- agent → engine --------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The agent is built and started (its first heartbeat, with nothing running)."""

    info: AgentInfo


@dataclass(frozen=True)
class Reported:
    reports: tuple[Report, ...]


@dataclass(frozen=True)
class Heartbeat:
    running: tuple[int, ...]


FromAgent = Ready | Reported | Heartbeat

MOST_REPORTS = 10_000
"""The most reports coalesced into one message (~1.4 MB, well under `MAX_FRAME`)."""


def coalesced(messages: Iterable[object]) -> Iterator[object]:
    """Adjacent `Reported` messages merged (up to `MOST_REPORTS` reports); the order kept."""
    reports: list[Report] = []
    for message in messages:
        if reports and (not isinstance(message, Reported) or len(reports) >= MOST_REPORTS):
            yield Reported(tuple(reports))
            reports = []
        if isinstance(message, Reported):
            reports.extend(message.reports)
        else:
            yield message
    if reports:
        yield Reported(tuple(reports))


_PROTOCOL_MODULES = frozenset({"batchyard.agent.wire", "batchyard.ports.agents", "datetime"})
_BUILTINS = frozenset({"frozenset", "set", "complex", "bytearray"})


# ---- framing ---------------------------------------------------------------------------


def encode(message: object, limit: int = MAX_FRAME) -> bytes:
    """One frame; refused before anything is written if it exceeds `limit`, so the stream
    stays whole (send smaller batches)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > limit:
        raise ChannelError(f"a {type(message).__name__} of {len(payload)} bytes exceeds the "
                           f"channel's bound of {limit} bytes: send smaller batches")
    return _HEADER.pack(len(payload)) + payload


class _ProtocolUnpickler(pickle.Unpickler):
    """Builds only the classes of the protocol: no function, no other class, is callable
    from a frame (so a frame cannot run `os.system`)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = module in _PROTOCOL_MODULES or module.startswith("batchyard.domain.")
        if module == "builtins":
            allowed = name in _BUILTINS
        found = super().find_class(module, name) if allowed and "." not in name else None
        if not isinstance(found, type):
            raise ChannelError(f"a frame naming {module}.{name}, which is not part of the "
                               "agent protocol")
        return found


def from_agent(payload: bytes) -> FromAgent:
    """A message an agent sent, or ChannelError saying why the frame is refused."""
    message = _loads(lambda: _ProtocolUnpickler(io.BytesIO(payload)).load())
    if not isinstance(message, Ready | Reported | Heartbeat):
        raise ChannelError(f"a frame holding a {type(message).__name__}, not a message an "
                           "agent sends")
    return message


def to_agent(payload: bytes) -> ToAgent:
    """A message the engine sent (the engine is trusted: it started this process)."""
    message = _loads(lambda: pickle.loads(payload))
    if not isinstance(message, Start | LeaseBatch | Cancel | Forget | Stop):
        raise ChannelError(f"a frame holding a {type(message).__name__}, not a message the "
                           "engine sends")
    return message


def _loads(load: Callable[[], object]) -> object:
    try:
        return load()
    except ChannelError:
        raise
    except Exception as error:  # a broken pickle raises many kinds of errors
        raise ChannelError(f"a frame that is not a readable pickle ({type(error).__name__}: "
                           f"{error})") from None


class FrameReader:
    """Reassembles frames from a stream socket: `fill()` reads what is there, `frame()`
    returns the next complete payload. A frame announcing more than `limit` bytes is
    refused at its header, before its bytes are waited for or kept."""

    def __init__(self, sock: socket.socket, limit: int = MAX_FRAME) -> None:
        self._sock = sock
        self._limit = limit
        self._buffer = bytearray()
        self._start = 0
        """Where the next frame begins: what precedes it is dropped at the next `fill()`."""

    def fill(self) -> bool:
        """One read (blocks if nothing is there); False at the end of the stream (a peer
        that closed with our messages unread resets it: the same end)."""
        del self._buffer[:self._start]
        self._start = 0
        try:
            data = self._sock.recv(min(max(_CHUNK, self._missing()), _MOST))
        except ConnectionResetError:
            return False
        self._buffer += data
        return bool(data)

    def frame(self) -> bytes | None:
        """The next complete payload, or None until more is read."""
        size = self._size()
        end = self._start + _HEADER.size + size
        if size < 0 or end > len(self._buffer):
            return None
        payload = bytes(self._buffer[self._start + _HEADER.size:end])
        self._start = end
        return payload

    def _size(self) -> int:
        """The length the next frame announces; -1 while its header is incomplete."""
        if len(self._buffer) - self._start < _HEADER.size:
            return -1
        (size,) = _HEADER.unpack_from(self._buffer, self._start)
        if size > self._limit:
            raise ChannelError(f"a frame announcing {size} bytes, over the channel's bound of "
                               f"{self._limit} bytes")
        return int(size)

    def _missing(self) -> int:
        size = self._size()
        return 0 if size < 0 else size + _HEADER.size - len(self._buffer)
