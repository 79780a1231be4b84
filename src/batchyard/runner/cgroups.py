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

A confined attempt's memory limit is its own (its InstanceType's, `AttemptRequest.memory_bytes`,
or the installation's default): `SlotGroup.set_memory` writes it, with the swap limit, into
the slot's memory controller before the program starts (nothing when the slot's previous
attempt had the same one), and `SlotGroup.memory_count` read before and after says whether
the kernel's OOM killer acted in the slot meanwhile (`MemoryCount.oom_killed_since`).

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


@dataclass(frozen=True)
class MemoryCount:
    """What the kernel counted in a slot's memory cgroup, read before and after an attempt."""

    oom_kills: int | None
    """Processes the OOM killer killed there: v2 `memory.events` `oom_kill`, v1
    `memory.oom_control` `oom_kill` (Linux 4.13 and later); None where it is not counted."""
    limit_hits: int = 0
    """Times its usage reached the limit: v1 `memory.failcnt` (read only where `oom_kills`
    is not counted), v2 `memory.events` `max`."""

    def oom_killed_since(self, before: MemoryCount, sigkilled: bool) -> bool:
        """Whether the OOM killer acted between `before` and this count. Where the kernel
        does not count its kills (v1 before Linux 4.13), a program that died of SIGKILL
        after its usage reached the limit counts as killed by it."""
        if self.oom_kills is not None and before.oom_kills is not None:
            return self.oom_kills > before.oom_kills
        return sigkilled and self.limit_hits > before.limit_hits


_UNKNOWN = -1
"""`SlotGroup._memory_limit` before a limit was set (or while one is being written)."""


class SlotGroup:
    """The cgroup folders of one slot (one per hierarchy), the first one tracking members."""

    def __init__(self, folders: list[Path], version: int) -> None:
        self.folders = folders
        self.version = version
        self._memory: Path | bool | None = False
        """The folder with the memory controller's files (False: not looked for yet)."""
        self._memory_limit = _UNKNOWN
        """The limit last written by `set_memory` (0: none), so an equal one costs nothing."""
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
        if memory_bytes and not self.set_memory(memory_bytes):
            missing.append("memory")
        if max_processes and not self._write_first(["pids.max"], str(max_processes)):
            missing.append("pids")
        return missing

    @property
    def memory(self) -> Path | None:
        """The folder of the slot's memory controller (v1: its memory hierarchy's; v2: its
        own, once the controller is handed down); None where memory cannot be limited."""
        found = self._memory
        if found is False:
            found = self._memory = next(
                (folder for folder in self.folders
                 for name in ("memory.max", "memory.limit_in_bytes")
                 if (folder / name).exists()), None)
        assert not isinstance(found, bool)
        return found

    def set_memory(self, limit: int) -> bool:
        """Limit what the slot's processes may use to `limit` bytes (0: no limit), swap
        included, for the attempt about to start there (none runs meanwhile); no write
        when it is the limit already set. False where the slot has no memory controller;
        OSError where the kernel refuses the value."""
        folder = self.memory
        if folder is None:
            return False
        if limit == self._memory_limit:
            return True
        self._memory_limit = _UNKNOWN  # until every file says the new limit
        if self.version == 2:
            _write(folder / "memory.max", str(limit) if limit else "max")
            with suppress(FileNotFoundError):  # no swap controller: no swap to escape into
                _write(folder / "memory.swap.max", "0" if limit else "max")
        else:
            _set_v1_memory(folder, limit)
        self._memory_limit = limit
        return True

    def memory_count(self) -> MemoryCount | None:
        """The kernel's counts of the slot's memory cgroup (None: it has none)."""
        folder = self.memory
        if folder is None:
            return None
        try:
            if self.version == 2:
                events = _keyed(folder / "memory.events")
                return MemoryCount(events.get("oom_kill"), events.get("max", 0))
            kills = _keyed(folder / "memory.oom_control").get("oom_kill")
            if kills is not None:
                return MemoryCount(kills)
            return MemoryCount(None, int((folder / "memory.failcnt").read_text()))
        except (OSError, ValueError):
            return None

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


def _set_v1_memory(folder: Path, limit: int) -> None:
    """v1: `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` (memory plus swap,
    where swap is accounted) to the same value, so that swap adds nothing. memsw may never
    be below the memory limit, so it is lifted first. Lowering the limit below what the
    slot's previous attempt left charged (its page cache) makes the kernel reclaim it; if
    that is refused (EBUSY), the empty slot's charges are dropped (`memory.force_empty`)
    and the limit written again."""
    value = str(limit) if limit else "-1"
    swap = folder / "memory.memsw.limit_in_bytes"
    swapped = swap.exists()
    if swapped:
        _write(swap, "-1")
    try:
        _write(folder / "memory.limit_in_bytes", value)
    except OSError as error:
        if error.errno != errno.EBUSY:
            raise
        _write(folder / "memory.force_empty", "0")
        _write(folder / "memory.limit_in_bytes", value)
    if swapped and limit:
        _write(swap, value)


def _write(path: Path, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(descriptor, value.encode())
    finally:
        os.close(descriptor)


def _keyed(path: Path) -> dict[str, int]:
    """A cgroup file of `key value` lines (`memory.events`, `memory.oom_control`)."""
    found = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        found[key] = int(value)
    return found


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
