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

When the server is root, the program runs as the slot's unprivileged user (`plan.user`):
bwrap keeps only the capabilities `setpriv` needs to switch to that user, and `setpriv`
drops every capability, supplementary group and the bounding set before the program starts
(no-new-privileges is on, so set-uid binaries gain nothing). That user cannot traverse host
folders closed to others (a root home, a `0700` parent of the data directory): the first such
ancestor of anything bound into the sandbox is hidden too, so the binds below it are
reachable. The interpreter and batchyard (`plan.runtime`) are bound read-only, so `python`
and `batchyard.oss` work wherever they are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from batchyard.errors import BatchyardError

BWRAP = "bwrap"
SETPRIV = "setpriv"
_SETPRIV_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
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


CONFINED_MISSING = (
    "this installation confines every attempt (always under `batchyard serve`, or with "
    "`--sandbox`) and {what}: {fix}")


def check_sandbox(root: bool, user_base: int) -> None:
    """Make sure a confined attempt can be started here; SandboxError saying why not.

    Runs `true` in the sandbox once, exactly as attempts will run (as an unprivileged user
    when root), so a server never starts accepting jobs it cannot confine.
    """
    executable = bwrap_path()
    if executable is None:
        raise SandboxError(CONFINED_MISSING.format(
            what="`bwrap` is not installed", fix="install it (Debian/Ubuntu: apt-get install "
            "bubblewrap), or start the server with --insecure-no-sandbox (unsafe)"))
    if root and shutil.which(SETPRIV) is None:
        raise SandboxError(CONFINED_MISSING.format(
            what="`setpriv` is not installed", fix="install util-linux"))
    user = (user_base + 1, user_base) if root else None
    with tempfile.TemporaryDirectory(prefix="batchyard-probe-") as folder:
        plan = SandboxPlan(workdir=folder, tmp=folder, user=user)
        probe = subprocess.run([*sandbox_argv(plan), "true"], capture_output=True, text=True,
                               timeout=30, check=False)
    if probe.returncode != 0:
        raise SandboxError(CONFINED_MISSING.format(
            what=f"cannot start one ({probe.stderr.strip() or probe.returncode})",
            fix="check that bubblewrap may create namespaces here (as a non-root user it "
            "needs unprivileged user namespaces), or start the server with "
            "--insecure-no-sandbox (unsafe)"))


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
    user: tuple[int, int] | None = None
    """(uid, gid) the program runs as (the server is root); None: bwrap's caller's user."""
    network: bool = True
    """False: a private network namespace (loopback only)."""
    runtime: tuple[str, ...] = ()
    """Host folders bound read-only at their own path (the interpreter, batchyard)."""

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
    runtime = [Bind(path, path) for path in plan.runtime]
    binds = sorted([*runtime, *plan.binds, Bind(plan.workdir, plan.workdir, True)],
                   key=lambda bind: _depth(bind.destination))
    closed = _closed_ancestors([bind.destination for bind in binds], plan.user)
    hidden = [path for path in _outermost([*plan.hidden, *closed]) if not _in_tmp(path)]
    mirrored = _mirrors((bind.destination for bind in binds if not _in_tmp(bind.destination)),
                        hidden)
    # The root: the host's, or (for a new top-level folder) bwrap's tmpfs mirroring it
    root = _mirror("/")[2:] if "/" in mirrored else ["--ro-bind", "/", "/"]
    argv = [executable, *root, "--dev", "/dev", "--proc", "/proc", *_isolation(plan)]
    # /tmp next: it replaces the host's /tmp, so nothing below it needs hiding or mirroring
    argv += ["--bind", plan.tmp, "/tmp"]
    for folder in mirrored:
        if folder != "/":
            argv += _mirror(folder)
    for path in hidden:
        argv += _hide(path)
    argv += _binds(binds, hidden, plan.user is not None)
    for folder in [*mirrored, *(path for path in hidden if os.path.isdir(path))]:
        argv += ["--remount-ro", folder]
    return [*argv, *plan.extra, "--chdir", plan.workdir, "--", *_as_user(plan.user)]


def _isolation(plan: SandboxPlan) -> list[str]:
    """Namespaces, and the capabilities bwrap keeps (only what `setpriv` needs)."""
    argv = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session"]
    if not plan.network:
        argv.append("--unshare-net")
    if plan.user is not None:
        argv += ["--cap-drop", "ALL"]
        for capability in _SETPRIV_CAPABILITIES:
            argv += ["--cap-add", capability]
    return argv


def _binds(binds: list[Bind], hidden: list[str], for_user: bool) -> list[str]:
    argv: list[str] = []
    made: set[str] = set()
    for bind in binds:
        if for_user:
            argv += _open_parents(bind.destination, ["/tmp", *hidden], made)
        argv += ["--bind" if bind.writable else "--ro-bind", bind.source, bind.destination]
    return argv


def _open_parents(destination: str, tmpfs: list[str], made: set[str]) -> list[str]:
    """Folders bwrap would make (mode 0700, root's) above a bind on a tmpfs, made 0755 first,
    so the unprivileged user can reach what is bound there."""
    argv: list[str] = []
    base = next((root for root in tmpfs if destination.startswith(root + "/")), None)
    if base is None:
        return argv
    folder = base
    for part in destination[len(base) + 1:].split("/")[:-1]:
        folder = f"{folder}/{part}"
        if folder not in made:
            made.add(folder)
            argv += ["--perms", "0755", "--dir", folder]
    return argv


def _as_user(user: tuple[int, int] | None) -> list[str]:
    """`setpriv` switching to `user` with no capability left (nothing when None)."""
    if user is None:
        return []
    uid, gid = user
    return [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "--"]


def _closed_ancestors(paths: list[str], user: tuple[int, int] | None) -> list[str]:
    """For each path, its outermost host ancestor `user` cannot traverse (to be hidden)."""
    if user is None:
        return []
    closed = []
    for path in paths:
        ancestor = "/"
        for part in [part for part in path.split("/") if part][:-1]:
            ancestor = os.path.join(ancestor, part)
            if _in_tmp(ancestor) or not _traversable(ancestor, user):
                if not _in_tmp(ancestor):
                    closed.append(ancestor)
                break
    return closed


def _traversable(folder: str, user: tuple[int, int]) -> bool:
    try:
        status = os.stat(folder)
    except OSError:
        return True  # not on the host: bwrap makes it (0755) in the sandbox
    if status.st_uid == user[0]:
        return bool(status.st_mode & 0o100)
    if status.st_gid == user[1]:
        return bool(status.st_mode & 0o010)
    return bool(status.st_mode & 0o001)


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
