"""Each attempt of a mapped job in its own mount and PID namespace, made with bubblewrap.

The program sees the host read-only, with on top of it:

- its working directory (writable, at its real path) and a private `/tmp`;
- every mapped path at the exact destination the job asks for: staged inputs read-only
  (or a private writable copy with WriteSupport), output and log folders writable;
- an empty, read-only folder in place of each hidden path: the data directory (database,
  object store, cache, other attempts' working directories), local bucket folders, and the
  database file when it lives elsewhere.

A destination that does not exist on the host needs a mount point: its deepest existing
ancestor is replaced by a read-only tmpfs that mirrors the host folder (every entry bound
back), so the mount point can be created without writing anything on the host.

`--die-with-parent` and a PID namespace mean that killing the attempt's process group
(bwrap and everything in its sandbox share it) leaves no process behind: when bwrap's init
dies the kernel kills every process of the namespace, even ones that called setsid().
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from batchyard.errors import BatchyardError

BWRAP = "bwrap"
MISSING_MESSAGE = (
    "mapped paths (InputMapping, OutputMapping, LogMapping, Mounts) run each attempt in a "
    "bubblewrap sandbox, and `bwrap` is not installed on this machine: install it "
    "(Debian/Ubuntu: apt-get install bubblewrap) or remove the mappings from the job")


class SandboxError(BatchyardError):
    """The sandbox cannot be built (bwrap missing, a destination that cannot be mounted)."""


@cache
def bwrap_path() -> str | None:
    """The bwrap executable, or None if it is not installed (looked up once)."""
    return shutil.which(BWRAP)


@dataclass(frozen=True)
class Bind:
    """Host folder `source` appears at `destination` inside the sandbox."""

    source: str
    destination: str
    writable: bool = False


@dataclass(frozen=True)
class SandboxPlan:
    """Everything the sandbox of one attempt shows, besides the read-only host."""

    workdir: str
    tmp: str
    binds: tuple[Bind, ...] = ()
    hidden: tuple[str, ...] = ()
    """Host paths replaced by an empty read-only folder (or /dev/null for a file)."""
    extra: tuple[str, ...] = field(default=())
    """Further bwrap options (tests, diagnostics)."""

    def host_path(self, inner: str) -> str | None:
        """Where the sandbox path `inner` lives on the host, if it is on a writable bind."""
        inner = os.path.normpath(inner)
        candidates = [bind for bind in self._all_binds() if bind.writable
                      and (inner == bind.destination or inner.startswith(bind.destination + "/"))]
        if not candidates:
            return None
        best = max(candidates, key=lambda bind: len(bind.destination))
        return best.source + inner[len(best.destination):]

    def _all_binds(self) -> list[Bind]:
        return [Bind(self.workdir, self.workdir, True), Bind(self.tmp, "/tmp", True),
                *self.binds]


def sandbox_argv(plan: SandboxPlan) -> list[str]:
    """The bwrap command line (without the program) that builds `plan`."""
    executable = bwrap_path()
    if executable is None:
        raise SandboxError(MISSING_MESSAGE)
    binds = sorted([*plan.binds, Bind(plan.workdir, plan.workdir, True)],
                   key=lambda bind: _depth(bind.destination))
    hidden = [path for path in _outermost(plan.hidden) if not _in_tmp(path)]
    mirrored = _mirrors((bind.destination for bind in binds if not _in_tmp(bind.destination)),
                        hidden)
    # The root: the host's, or (for a new top-level folder) bwrap's tmpfs mirroring it
    root = _mirror("/")[2:] if "/" in mirrored else ["--ro-bind", "/", "/"]
    argv = [executable, *root, "--dev", "/dev", "--proc", "/proc",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    # /tmp next: it replaces the host's /tmp, so nothing below it needs hiding or mirroring
    argv += ["--bind", plan.tmp, "/tmp"]
    for folder in mirrored:
        if folder != "/":
            argv += _mirror(folder)
    for path in hidden:
        argv += _hide(path)
    for bind in binds:
        argv += ["--bind" if bind.writable else "--ro-bind", bind.source, bind.destination]
    for folder in [*mirrored, *(path for path in hidden if os.path.isdir(path))]:
        argv += ["--remount-ro", folder]
    return [*argv, *plan.extra, "--chdir", plan.workdir, "--"]


def _outermost(paths: Iterable[str]) -> list[str]:
    """Existing `paths` not inside another one of them, outermost first."""
    kept: list[str] = []
    for path in sorted({os.path.normpath(path) for path in paths}, key=_depth):
        if os.path.lexists(path) and not any(path.startswith(other + "/") for other in kept):
            kept.append(path)
    return kept


def _in_tmp(path: str) -> bool:
    return path == "/tmp" or path.startswith("/tmp/")


def _depth(path: str) -> int:
    return path.rstrip("/").count("/")


def _mirrors(destinations: Iterable[str], hidden: Iterable[str]) -> list[str]:
    """Host folders to mirror on a tmpfs, so that missing mount points can be created."""
    covered = [path for path in hidden if os.path.isdir(path)]
    folders = set()
    for destination in destinations:
        if os.path.isdir(destination) or any(
                destination.startswith(path + "/") for path in covered):
            continue
        ancestor = os.path.dirname(destination)
        while not os.path.isdir(ancestor):
            ancestor = os.path.dirname(ancestor)
        folders.add(ancestor)
    return sorted(folders, key=_depth)


def _mirror(folder: str) -> list[str]:
    """A tmpfs at `folder` holding every entry of the host folder, bound back read-only."""
    argv = ["--tmpfs", folder]
    with os.scandir(folder) as entries:
        for entry in entries:
            if folder == "/" and entry.name in _OWN_ROOT_ENTRIES:
                continue
            if entry.is_symlink():
                argv += ["--symlink", os.readlink(entry.path), entry.path]
            elif entry.is_dir() or entry.is_file():
                argv += ["--ro-bind", entry.path, entry.path]
    return argv


_OWN_ROOT_ENTRIES = frozenset({"proc", "dev", "tmp"})
"""Top-level folders the sandbox makes itself instead of binding the host's."""


def _hide(path: str) -> list[str]:
    if os.path.isdir(path):
        return ["--tmpfs", path]
    if os.path.exists(path):
        return ["--ro-bind", "/dev/null", path]
    return []
