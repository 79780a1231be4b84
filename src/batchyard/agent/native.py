"""`posix_spawn(3)` called through ctypes: the spawner loop starts programs without the GIL.

CPython 3.11's `os.posix_spawn` holds the GIL for the whole call, and glibc's posix_spawn
returns only once the child has exec'd (it is a `vfork`): on a busy machine the child may
wait for a CPU first, and every other thread of the agent (the engine's too, under `batchyard
run`) waits with it — 0.5–0.8 ms per spawn measured in the real agent. A foreign call
through ctypes lets go of the GIL for its duration, so here only building the argument
arrays holds it (a few microseconds).

It also does, in the child, what the loop did by hand around `os.posix_spawn`:

- `posix_spawn_file_actions_addchdir_np` (glibc 2.29, musl 1.1.24) changes into the
  workdir, so the loop thread needs no working directory of its own (`unshare(CLONE_FS)`)
  and no chdir and fchdir around each spawn;
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
from collections.abc import Mapping, Sequence

_ACTIONS_SIZE = 512
_ATTRIBUTES_SIZE = 1024
_SIGSET_SIZE = 256
_SETSIGDEF = 0x04
_SETSID = 0x80
"""POSIX_SPAWN_SETSIGDEF and POSIX_SPAWN_SETSID (the same in glibc and musl)."""
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""What `subprocess.Popen(restore_signals=True)` resets in its child."""
_STDIN = b"/dev/null"
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"
"""`os.fsencode` on Linux, without its Python-level call."""

class NativeSpawn:
    """posix_spawn with a working directory, for one thread (its buffers are reused)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        # Looked up first: a missing symbol is AttributeError, before anything is allocated.
        self._init = libc.posix_spawn_file_actions_init
        self._add_open = libc.posix_spawn_file_actions_addopen
        self._add_chdir = libc.posix_spawn_file_actions_addchdir_np
        self._destroy = libc.posix_spawn_file_actions_destroy
        self._close_from = getattr(libc, "posix_spawn_file_actions_addclosefrom_np", None)
        self.posix_spawn = libc.posix_spawn
        """The foreign function itself (an attribute, so a benchmark can time the calls)."""
        buffer = ctypes.c_char * _ACTIONS_SIZE
        self.posix_spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p,
                                     ctypes.POINTER(buffer),
                                     ctypes.POINTER(ctypes.c_char * _ATTRIBUTES_SIZE),
                                     ctypes.c_void_p, ctypes.c_void_p]
        self._add_open.argtypes = [ctypes.POINTER(buffer), ctypes.c_int, ctypes.c_char_p,
                                   ctypes.c_int, ctypes.c_uint]
        self._add_chdir.argtypes = [ctypes.POINTER(buffer), ctypes.c_char_p]
        self._actions = buffer()
        self._attributes = (ctypes.c_char * _ATTRIBUTES_SIZE)()
        self._pid = ctypes.c_int()
        _check(libc.posix_spawnattr_init(ctypes.byref(self._attributes)))
        signals = ctypes.create_string_buffer(_SIGSET_SIZE)
        _check(libc.sigemptyset(signals))
        for number in _DEFAULT_SIGNALS:
            _check(libc.sigaddset(signals, int(number)))
        _check(libc.posix_spawnattr_setsigdefault(ctypes.byref(self._attributes), signals))
        _check(libc.posix_spawnattr_setflags(ctypes.byref(self._attributes),
                                             ctypes.c_short(_SETSID | _SETSIGDEF)))

    def spawn(self, program: str, argv: Sequence[str], environment: Mapping[str, str],
              workdir: str, stdout: str, stderr: str, log_flags: int) -> int:
        """Start `program` with `argv` and `environment` in `workdir`, in a session of its
        own, stdin on /dev/null, stdout and stderr on those files (opened with
        `log_flags`, mode 0644); its pid. Raises OSError as `os.posix_spawn` and `os.chdir`
        do (naming the workdir if that is what is missing), ValueError for a NUL character
        or a variable name with '='."""
        arguments, argument_pointers = _pack(list(argv))
        variables, variable_pointers = _pack(_entries(environment))
        path = program.encode(_ENCODING, _ERRORS)
        folder = workdir.encode(_ENCODING, _ERRORS)
        actions = ctypes.byref(self._actions)
        _check(self._init(actions))
        try:
            _check(self._add_chdir(actions, folder))
            _check(self._add_open(actions, 0, _STDIN, os.O_RDONLY, 0))
            _check(self._add_open(actions, 1, stdout.encode(_ENCODING, _ERRORS), log_flags,
                                  0o644))
            _check(self._add_open(actions, 2, stderr.encode(_ENCODING, _ERRORS), log_flags,
                                  0o644))
            if self._close_from is not None:
                _check(self._close_from(actions, 3))
            error = self.posix_spawn(ctypes.byref(self._pid), path, actions,
                                     ctypes.byref(self._attributes),
                                     argument_pointers.buffer_info()[0],
                                     variable_pointers.buffer_info()[0])
            del arguments, variables  # alive until here: the pointers point into them
        finally:
            self._destroy(actions)
        if error:
            raise _failure(error, program, workdir)
        return self._pid.value


def available() -> NativeSpawn | None:
    """The native spawn where the C library has every function it needs, else None."""
    try:
        return NativeSpawn(ctypes.CDLL(None))
    except (OSError, AttributeError):
        return None


def _pack(items: list[str]) -> tuple[bytes, array.array[int]]:
    """`items` as the C library wants them: one block of NUL-terminated strings and an
    array of pointers into it, NULL-terminated (both kept alive by the caller). A NUL
    character inside an item is refused, as `os.posix_spawn` refuses it. (One block and
    C-level iterators: a ctypes array of `c_char_p` costs about three times as much.)"""
    encoded = [item.encode(_ENCODING, _ERRORS) for item in items]
    block = b"\0".join([*encoded, b""])  # each item NUL-terminated
    if block.count(0) != len(encoded):
        raise ValueError("embedded null byte")
    start = ctypes.cast(ctypes.c_char_p(block), ctypes.c_void_p).value or 0
    pointers = array.array("Q", itertools.accumulate(
        map(operator.add, map(len, encoded), itertools.repeat(1)), initial=start))
    pointers[-1] = 0  # the last sum points past the block: the terminating NULL instead
    return block, pointers


def _entries(environment: Mapping[str, str]) -> list[str]:
    """`NAME=value` entries, names refused as `os.posix_spawn` refuses them."""
    if "" in environment or "=" in "".join(environment):
        raise ValueError("illegal environment variable name")
    return list(map("=".join, environment.items()))


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
