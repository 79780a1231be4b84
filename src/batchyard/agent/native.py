"""`posix_spawn(3)` called through ctypes: the spawner loop starts programs without the GIL.

CPython 3.11's `os.posix_spawn` holds the GIL for the whole call, and glibc's posix_spawn
returns only once the child has exec'd (it is a `vfork`): on a busy machine the child may
wait for a CPU first, and every other thread of the agent (the engine's too, under `batchyard
run`) waits with it — 0.5–1.5 ms per spawn measured in the real agent. A foreign call
through ctypes lets go of the GIL for its duration, so only the Python around it holds the
GIL (~0.05 ms per spawn, `bench/agent.py`). That Python costs about 0.04 ms more CPU per
spawn than `os.posix_spawn`, whose C code converts argv and the environment: it is kept
small — one foreign call per spawn (see `NativeSpawn`).

It also does, in the child, what the loop did by hand around `os.posix_spawn`:

- `posix_spawn_file_actions_addfchdir_np` and `…_addchdir_np` (glibc 2.29, musl 1.1.24)
  change into the attempt folder (for the logs) and then its workdir, so the loop thread
  needs no working directory of its own (`unshare(CLONE_FS)`) and no chdir and fchdir
  around each spawn;
- `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34), where present, closes every
  descriptor above 2, whatever opened it and whenever;
- `POSIX_SPAWN_SETSIGDEF` resets SIGPIPE and SIGXFSZ, which Python ignores, to their
  default, as `subprocess.Popen` (`restore_signals`) does for the heavy path; inherited, a
  program's `yes | head -1` would see EPIPE instead of dying of SIGPIPE;
- `POSIX_SPAWN_SETSID` starts the program in a session of its own.

No library does this: `os.posix_spawn` has no chdir and holds the GIL, and the PyPI
`posix-spawn` (CFFI, last released 2015) has no chdir either and needs a compiler.
`available()` is None where the C library lacks a symbol; the spawner then falls back to
`os.posix_spawn` (or `subprocess.Popen`) as before.

The structures are opaque to Python: they live in buffers larger than any C library's
(glibc x86-64: 80 bytes of file actions, 336 of attributes, 128 of sigset), initialised and
read only by the C library's own functions.
"""

from __future__ import annotations

import array
import ctypes
import errno
import itertools
import operator
import os
import signal
from collections.abc import Iterable, Mapping, Sequence

_ACTIONS_SIZE = 512
_ATTRIBUTES_SIZE = 1024
_SIGSET_SIZE = 256
_SETSIGDEF = 0x04
_SETSID = 0x80
"""POSIX_SPAWN_SETSIGDEF and POSIX_SPAWN_SETSID (the same in glibc and musl)."""
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""What `subprocess.Popen(restore_signals=True)` resets in its child."""
_STDIN = b"/dev/null"
_FOLDER_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MOST_KEPT = 64
"""Prepared file actions and argument arrays kept (then all dropped, and made again)."""
_NO_BLOCK = array.array("B")
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"
"""`os.fsencode` on Linux, without its Python-level call."""

class NativeSpawn:
    """posix_spawn into an attempt folder, for one thread (its buffers are reused).

    Per spawn, the only foreign call is posix_spawn itself (each ctypes call costs
    microseconds, and lets go of the GIL): the file actions are the same for every attempt
    folder once it is open at a known descriptor — `fchdir` there, `stdout` and `stderr`
    opened by their names in it, `chdir` into `workdir`, every descriptor beyond 0–2
    closed — so they are built once per descriptor number (the kernel hands out the lowest
    free one: almost always the same) and kept; the argument array is kept per argv (one
    per task's command line), and the environment of the last spawn is kept packed: the
    next one, with the same names, re-encodes only the values that changed."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        # Looked up first: a missing symbol is AttributeError, before anything is allocated.
        self._init = libc.posix_spawn_file_actions_init
        self._add_open = libc.posix_spawn_file_actions_addopen
        self._add_chdir = libc.posix_spawn_file_actions_addchdir_np
        self._add_fchdir = libc.posix_spawn_file_actions_addfchdir_np
        self._destroy = libc.posix_spawn_file_actions_destroy
        self._close_from = getattr(libc, "posix_spawn_file_actions_addclosefrom_np", None)
        self.posix_spawn = libc.posix_spawn
        """The foreign function itself (an attribute, so a benchmark can time the calls)."""
        self.posix_spawn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._actions: dict[tuple[int, int], _Actions] = {}
        """Prepared file actions by (descriptor of the attempt folder, log flags)."""
        self._argvs: dict[tuple[str, ...], tuple[bytearray, array.array[int]]] = {}
        self._last: _Environment | None = None
        """The environment of the last spawn, packed."""
        self._attributes = (ctypes.c_char * _ATTRIBUTES_SIZE)()
        self._attributes_address = ctypes.addressof(self._attributes)
        self._pid = ctypes.c_int()
        self._pid_address = ctypes.addressof(self._pid)
        _check(libc.posix_spawnattr_init(ctypes.byref(self._attributes)))
        signals = ctypes.create_string_buffer(_SIGSET_SIZE)
        _check(libc.sigemptyset(signals))
        for number in _DEFAULT_SIGNALS:
            _check(libc.sigaddset(signals, int(number)))
        _check(libc.posix_spawnattr_setsigdefault(ctypes.byref(self._attributes), signals))
        _check(libc.posix_spawnattr_setflags(ctypes.byref(self._attributes),
                                             ctypes.c_short(_SETSID | _SETSIGDEF)))

    def spawn(self, program: str, argv: Sequence[str], environment: Mapping[str, str],
              folder: str, log_flags: int) -> int:
        """Start `program` with `argv` and `environment` in `folder/workdir`, in a session
        of its own, stdin on /dev/null, stdout and stderr on `folder/stdout` and
        `folder/stderr` (opened with `log_flags`, mode 0644); its pid. Raises OSError as
        `os.posix_spawn` and `os.chdir` do (naming the workdir if that is what is missing),
        ValueError for a NUL character or a variable name with '='."""
        key = tuple(argv)
        arguments = self._argvs.get(key) or self._pack_argv(key)
        pointers = self._environment(environment)
        path = program.encode(_ENCODING, _ERRORS)
        try:
            descriptor = os.open(folder, _FOLDER_FLAGS)
        except OSError as refused:
            raise OSError(refused.errno, refused.strerror,
                          os.path.join(folder, "workdir")) from None
        try:
            actions = self._actions.get((descriptor, log_flags)) or self._prepare(descriptor,
                                                                                log_flags)
            error = self.posix_spawn(self._pid_address, path, actions.address,
                                     self._attributes_address, arguments[1].buffer_info()[0],
                                     pointers.buffer_info()[0])
        finally:
            os.close(descriptor)
        if error:
            raise _failure(error, program, os.path.join(folder, "workdir"))
        return self._pid.value

    def _environment(self, environment: Mapping[str, str]) -> array.array[int]:
        """The `envp` array. Consecutive attempts differ in a value or two (the instance
        id, HOME): when the names are those of the last spawn, in the same order, its array
        is copied and only the entries whose value changed are encoded (and checked, as
        `os.posix_spawn` checks them); else every entry is."""
        names = list(environment)
        values = list(environment.values())
        last = self._last
        if last is not None and last.names == names:
            pointers = last.pointers[:]
            blocks = last.blocks[:]
            changed: Iterable[int] = itertools.compress(
                range(len(values)), map(operator.ne, values, last.values))
        else:
            if "" in environment or "=" in "".join(names):
                raise ValueError("illegal environment variable name")
            pointers = array.array("Q", itertools.repeat(0, len(names) + 1))
            blocks = [_NO_BLOCK] * len(names)
            changed = range(len(names))
        for index in changed:
            entry = f"{names[index]}={values[index]}\0"
            if entry.count("\0") != 1:
                raise ValueError("embedded null byte")
            # An array's address is one C method away (a bytearray's needs a ctypes type).
            block = blocks[index] = array.array("B", entry.encode(_ENCODING, _ERRORS))
            pointers[index] = block.buffer_info()[0]
        self._last = _Environment(names, values, pointers, blocks)
        return pointers

    def close(self) -> None:
        """Free the prepared file actions (their paths are the C library's copies)."""
        for actions in self._actions.values():
            self._destroy(actions.address)
        self._actions.clear()

    def _pack_argv(self, argv: tuple[str, ...]) -> tuple[bytearray, array.array[int]]:
        packed = _pack(list(argv))
        if len(self._argvs) >= _MOST_KEPT:
            self._argvs.clear()
        self._argvs[argv] = packed
        return packed

    def _prepare(self, descriptor: int, log_flags: int) -> _Actions:
        if len(self._actions) >= _MOST_KEPT:
            self.close()
        actions = _Actions()
        address = actions.address
        _check(self._init(address))
        try:
            _check(self._add_fchdir(address, descriptor))
            _check(self._add_open(address, 0, _STDIN, os.O_RDONLY, 0))
            _check(self._add_open(address, 1, b"stdout", log_flags, 0o644))
            _check(self._add_open(address, 2, b"stderr", log_flags, 0o644))
            _check(self._add_chdir(address, b"workdir"))
            if self._close_from is not None:
                _check(self._close_from(address, 3))
        except BaseException:
            self._destroy(address)
            raise
        self._actions[descriptor, log_flags] = actions
        return actions


class _Environment:
    """An environment packed for posix_spawn: its names and values, the `envp` array and
    the `NAME=value` blocks it points into (kept alive with it)."""

    __slots__ = ("blocks", "names", "pointers", "values")

    def __init__(self, names: list[str], values: list[str], pointers: array.array[int],
                 blocks: list[array.array[int]]) -> None:
        self.names = names
        self.values = values
        self.pointers = pointers
        self.blocks = blocks


class _Actions:
    """A `posix_spawn_file_actions_t`, in a buffer of its own (its address as an int)."""

    __slots__ = ("address", "buffer")

    def __init__(self) -> None:
        self.buffer = (ctypes.c_char * _ACTIONS_SIZE)()
        self.address = ctypes.c_void_p(ctypes.addressof(self.buffer))


def available() -> NativeSpawn | None:
    """The native spawn where the C library has every function it needs, else None."""
    try:
        return NativeSpawn(ctypes.CDLL(None))
    except (OSError, AttributeError):
        return None


def _pack(items: list[str]) -> tuple[bytearray, array.array[int]]:
    """`items` as the C library wants them: one block of NUL-terminated strings and an
    array of pointers into it, NULL-terminated (the block must outlive their use). A NUL
    character inside an item is refused, as `os.posix_spawn` refuses it. (One block, its
    address without a foreign call, and C-level iterators: a ctypes array of `c_char_p`
    costs about three times as much.)"""
    encoded = [item.encode(_ENCODING, _ERRORS) for item in items]
    block = bytearray(b"\0".join([*encoded, b""]))  # each item NUL-terminated
    if block.count(0) != len(encoded):
        raise ValueError("embedded null byte")
    start = _address(block) if block else 0
    pointers = array.array("Q", itertools.accumulate(
        map(operator.add, map(len, encoded), itertools.repeat(1)), initial=start))
    pointers[-1] = 0  # the last sum points past the block: the terminating NULL instead
    return block, pointers


def _address(block: bytearray) -> int:
    """Where the bytes of `block` are (they stay there while it is neither resized nor
    freed), found without a foreign call."""
    return ctypes.addressof((ctypes.c_char * len(block)).from_buffer(block))


def _check(result: int) -> None:
    """The file-action and attribute functions return 0 or an error number."""
    if result:
        raise OSError(result, os.strerror(result))


def _failure(number: int, program: str, workdir: str) -> OSError:
    """The spawn failed (in the child, before or at its exec): name what was wrong, as the
    chdir before `os.posix_spawn` did for a missing workdir, else the program."""
    if number in (errno.ENOENT, errno.ENOTDIR, errno.EACCES) and not (
            os.path.isdir(workdir) and os.access(workdir, os.X_OK)):
        return OSError(number, os.strerror(number), workdir)
    return OSError(number, os.strerror(number), program)
