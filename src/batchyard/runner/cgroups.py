"""Control groups: where the processes of each slot live, whatever they do to escape.

A process can leave its process group and its session (`setsid`), scrub its environment
(`env -i`) and double-fork away from its parent, but it cannot leave its cgroup without
privileges it does not have. So every attempt is started inside the cgroup of the slot it
runs in; when the attempt ends, everything still in that cgroup is killed. The same groups
carry the limits of confined attempts: `memory` and `pids` (the number of processes).

Both layouts found in the wild are supported:

- cgroup v1 (one hierarchy per controller, e.g. `/sys/fs/cgroup/pids`, `/sys/fs/cgroup/memory`):
  a slot has one folder in each usable hierarchy;
- cgroup v2 (one unified hierarchy): a slot has one folder; limits need the `memory` and
  `pids` controllers delegated to the server's cgroup, and since v2 forbids processes in a
  cgroup whose controllers are handed down, the server first moves itself into a leaf
  (`batchyard-server`), as systemd's delegation documentation describes.

The slot folders are `<own cgroup>/batchyard-<tag>/slot-<n>`, `tag` naming the work root,
so an engine that starts after a `kill -9` of the previous one finds and kills what it left.
Nothing here is required: without a writable cgroup file system (an unprivileged user without
delegation) `available()` is None and callers fall back (see `orphans`).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)

CONTROLLERS = ("pids", "memory")
"""The v1 hierarchies batchyard uses, the first one found also tracking membership."""
SERVER_LEAF = "batchyard-server"
_KILL_ROUNDS = 200


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and this process's own group in it."""

    version: int
    controller: str
    """The v1 controller ("pids", "memory"); "" for the v2 unified hierarchy."""
    own: Path
    """The folder of the cgroup this process is in."""


class SlotGroup:
    """The cgroup folders of one slot (one per hierarchy), the first one tracking members."""

    def __init__(self, folders: list[Path], version: int) -> None:
        self.folders = folders
        self.version = version
        # Plain strings, joined once: `kill` runs at the end of every attempt.
        self._procs = os.fspath(folders[0] / "cgroup.procs")
        self._killer = os.fspath(folders[0] / "cgroup.kill") if version == 2 else ""
        self._count = -1
        """What says whether the slot is empty, opened on first use and kept (re-read with
        `pread`): v2 `cgroup.events`, v1 `pids.current`; -2: there is none (a v1 memory
        hierarchy)."""

    @property
    def tracking(self) -> Path:
        return self.folders[0]

    def add(self, pid: int) -> None:
        """Move process `pid` (not yet running the program) into every folder of the slot.
        A move takes the kernel's cgroup write lock (about half a millisecond on v1)."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            descriptor = os.open(self._procs, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            data = b""
            while chunk := os.read(descriptor, 65536):
                data += chunk
        finally:
            os.close(descriptor)
        return [int(line) for line in data.split()]

    def empty(self) -> bool:
        """Whether no process of the slot lives (True only when known), in one `pread` of a
        descriptor kept open: v2 `cgroup.events` says "populated 0" (a process leaves its
        cgroup as it exits, before it is a zombie); v1 `pids.current` (the pids
        controller's count, which keeps a process until it is reaped) says 0. So an
        attempt's end skips the scan of `kill` when its leader, reaped, was all there was."""
        descriptor = self._count
        if descriptor == -1:
            name = "cgroup.events" if self.version == 2 else "pids.current"
            try:
                descriptor = os.open(self.folders[0] / name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                descriptor = -2
            self._count = descriptor
        if descriptor < 0:
            return False
        try:
            found = os.pread(descriptor, 64, 0)
        except OSError:
            return False
        return found.startswith(b"populated 0\n") if self.version == 2 else found == b"0\n"

    def close(self) -> None:
        """Close the descriptor `empty` keeps."""
        descriptor, self._count = self._count, -1
        if descriptor >= 0:
            os.close(descriptor)

    def kill(self) -> bool:
        """SIGKILL every process of the slot until none is left; False if some resisted."""
        if self._killer:  # v2 since Linux 5.14: the kernel kills them all at once
            with suppress(OSError):  # none on an older kernel
                descriptor = os.open(self._killer, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(descriptor, b"1")
                finally:
                    os.close(descriptor)
        for _ in range(_KILL_ROUNDS):
            members = self.pids()
            if not members:
                return True
            for pid in members:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.0002)  # killed processes leave the group as they exit
        return not self.pids()

    def limit(self, memory_bytes: int, max_processes: int) -> list[str]:
        """Set the limits the hierarchies allow (0: none); returns what could not be set."""
        missing = []
        wanted = {"memory": (memory_bytes, ["memory.max", "memory.limit_in_bytes"]),
                  "pids": (max_processes, ["pids.max"])}
        for name, (value, files) in wanted.items():
            if value and not self._write_first(files, str(value)):
                missing.append(name)
        return missing

    def memory_kills(self) -> int:
        """How many times the kernel's OOM killer killed a process of this slot."""
        for folder in self.folders:
            for name in ("memory.events", "memory.oom_control"):
                with suppress(OSError):
                    for line in (folder / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
        return 0

    def _write_first(self, names: list[str], value: str) -> bool:
        for folder in self.folders:
            for name in names:
                if (folder / name).exists():
                    (folder / name).write_text(value)
                    return True
        return False


class Cgroups:
    """The slot groups of one engine (one work root)."""

    def __init__(self, hierarchies: list[Hierarchy], tag: str) -> None:
        self.hierarchies = hierarchies
        self.version = hierarchies[0].version
        self.parents = [hierarchy.own / f"batchyard-{tag}" for hierarchy in hierarchies]

    def slot(self, index: int) -> SlotGroup:
        folders = [parent / f"slot-{index}" for parent in self.parents]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        return SlotGroup(folders, self.version)

    def kill_leftovers(self) -> int:
        """Kill what earlier engines of this work root left in their slots; returns how many."""
        killed = 0
        for folder in _children(self.parents[0]):
            group = SlotGroup([folder], self.version)
            killed += len(group.pids())
            group.kill()
        return killed

    def remove(self) -> None:
        """Remove the (empty) slot folders and their parents: an engine that shut down."""
        for parent in self.parents:
            for folder in [*_children(parent), parent]:
                with suppress(OSError):  # not empty: an attempt still runs; kept for restart
                    folder.rmdir()

    def enable_limits(self) -> bool:
        """v2: hand the memory and pids controllers down to the slots (see the module doc)."""
        if self.version == 1:
            return True
        own, parent = self.hierarchies[0].own, self.parents[0]
        return _delegate(own) and _delegate(parent)


def available(work_root: Path, controllers: tuple[str, ...] = ("pids",),
              mounts: Path = Path("/proc/self/mountinfo"),
              membership: Path = Path("/proc/self/cgroup")) -> Cgroups | None:
    """The cgroups this process may manage for `work_root`, or None where it may not.

    With cgroup v1, only the hierarchies of `controllers` are used (or, if none of them is
    writable, any one of CONTROLLERS): moving a process into a cgroup costs about half a
    millisecond per hierarchy, on every attempt.
    """
    hierarchies = [hierarchy for hierarchy in _hierarchies(mounts, membership)
                   if os.access(hierarchy.own, os.W_OK)]
    v1 = [h for name in controllers for h in hierarchies if h.controller == name]
    v1 = v1 or [h for name in CONTROLLERS for h in hierarchies if h.controller == name][:1]
    chosen = v1 or [h for h in hierarchies if h.version == 2]
    if not chosen:
        return None
    tag = hashlib.sha256(str(work_root).encode()).hexdigest()[:12]
    groups = Cgroups(chosen, tag)
    try:
        for parent in groups.parents:
            parent.mkdir(exist_ok=True)
    except OSError as error:
        _log.info("cgroups unavailable (%s): processes tracked as orphans instead", error)
        return None
    return groups


def _hierarchies(mounts: Path, membership: Path) -> Iterator[Hierarchy]:
    """Every mounted cgroup hierarchy, with this process's group in it."""
    paths = {}
    for line in membership.read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if number != "0" else [""]:
            paths[controller] = path
    for line in mounts.read_text().splitlines():
        fields = line.split()
        kind = fields[fields.index("-") + 1]
        point = Path(fields[4])
        if kind == "cgroup2" and "" in paths:
            yield Hierarchy(2, "", point / paths[""].lstrip("/"))
        elif kind == "cgroup":
            options = fields[-1].split(",")
            for controller in CONTROLLERS:
                if controller in options and controller in paths:
                    yield Hierarchy(1, controller, point / paths[controller].lstrip("/"))


def _children(folder: Path) -> list[Path]:
    try:
        return [entry for entry in folder.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return []


def _delegate(folder: Path) -> bool:
    """Enable memory and pids for `folder`'s children (moving this process out if needed)."""
    control = folder / "cgroup.subtree_control"
    wanted = "+memory +pids"
    try:
        control.write_text(wanted)
        return True
    except OSError as error:
        if error.errno != errno.EBUSY:
            _log.warning("cgroup v2: cannot enable memory and pids in %s (%s): attempts run "
                         "without memory and process limits", folder, error.strerror)
            return False
    leaf = folder / SERVER_LEAF
    try:
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))  # all its threads go along
        control.write_text(wanted)
    except OSError as error:
        _log.warning("cgroup v2: cannot delegate controllers below %s (%s): attempts run "
                     "without memory and process limits", folder, error.strerror)
        return False
    return True
