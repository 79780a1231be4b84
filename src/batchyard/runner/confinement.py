"""How attempts are confined, and the slots they run in.

`Confinement` is the policy of an installation: whether every attempt runs in the bubblewrap
sandbox (always under `serve`; with `run --sandbox`), the network it gets, its limits. A
`Slot` is one of the agent's places to run an attempt, with what the policy needs there:

- the unprivileged user the program runs as (`user_base + 1 + index`, group `user_base`),
  when this process is root — a slot's uid is never shared by two running attempts, so the
  limit on processes per user (`RLIMIT_NPROC`) is a limit per attempt;
- the slot's cgroup (see `cgroups`), which holds every process of its attempt and carries
  the memory and process limits; or, where no cgroup can be made, the process-wide
  `orphans` tracker.

A confined attempt's memory limit is its own: its request's `memory_bytes` (its
InstanceType's memory), or `Limits.memory_bytes` when the request names none
(`Limits.with_memory`); the runner sets it on the slot's cgroup before the program starts
(`SlotGroup.set_memory`). Where the slots have no memory controller (no cgroup delegation,
not root, `tracking="subreaper"`), no memory limit is enforced, and the pool says so once
in the log when it is made.

Slots are made once, when the agent starts, and reused attempt after attempt: nothing is
created per attempt.
"""

from __future__ import annotations

import logging
import os
import queue
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from batchyard.errors import BatchyardError
from batchyard.runner import cgroups
from batchyard.runner.cgroups import Cgroups, SlotGroup
from batchyard.runner.orphans import OrphanTracker, tracker

_log = logging.getLogger(__name__)

Tracking = Literal["auto", "cgroup", "subreaper"]


@dataclass(frozen=True)
class Limits:
    """What one confined attempt may use; 0 means no limit."""

    memory_bytes: int = 0
    max_processes: int = 0
    disk_bytes: int = 0
    """Bytes the attempt may write to its working directory, /tmp and mapped folders."""
    memory_cap: int | None = None
    """The operator's limit on every attempt's memory, whatever its InstanceType (None: an
    attempt gets its InstanceType's; 0: no memory limit at all)."""

    def with_memory(self, requested: int) -> Limits:
        """The limits of an attempt whose request asks for `requested` bytes of memory (its
        InstanceType's; 0: these limits' own), within the operator's cap."""
        if requested <= 0 or self.memory_cap == 0:
            return self
        if self.memory_cap is not None:
            requested = min(requested, self.memory_cap)
        return replace(self, memory_bytes=requested)


@dataclass(frozen=True)
class Confinement:
    """The confinement policy of an installation (built from `Settings`)."""

    sandbox: bool = False
    """Every attempt in the bubblewrap sandbox, mapped or not (`serve`; `run --sandbox`)."""
    user_base: int = 720_000
    """Confined programs run as uid `user_base + 1 + slot`, gid `user_base` (when root)."""
    network: bool = True
    """False: a private network namespace with loopback only."""
    limits: Limits = field(default_factory=Limits)
    tracking: Tracking = "auto"
    """How processes are tracked: a cgroup per slot where possible, else as orphans."""


@dataclass(frozen=True)
class Slot:
    """One place to run an attempt, with the user and process tracking it comes with."""

    index: int
    user: tuple[int, int] | None = None
    """(uid, gid) the confined program runs as; None: as this process's user."""
    group: SlotGroup | None = None
    orphans: OrphanTracker | None = None


class SlotPool:
    """The slots of one agent: taken by an attempt when it starts, given back at its end."""

    def __init__(self, count: int, confinement: Confinement, work_root: Path) -> None:
        self.confinement = confinement
        groups = self._cgroups(work_root) if confinement.tracking != "subreaper" else None
        if groups is None and confinement.tracking == "cgroup":
            raise BatchyardError(
                "process_tracking is 'cgroup' but this process may not make cgroups here (run "
                "as root, or in a delegated cgroup); use 'auto' to track processes as orphans",
                code="InvalidConfiguration")
        self.groups = groups
        orphans = tracker() if groups is None else None
        self._free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
        self._groups: list[SlotGroup] = []
        for index in range(count):
            group = self._group(index)
            if group is not None:
                self._groups.append(group)
            self._free.put(Slot(index, self._user(index), group, orphans))
        self.memory_limits = bool(self._groups) and all(
            group.memory is not None for group in self._groups)
        """Whether confined attempts' memory limits are enforced (every slot has a memory
        controller)."""
        if confinement.sandbox and not self.memory_limits:
            _log.warning("memory limits are not enforced on this machine: %s; confined "
                         "attempts may use any memory (see docs/security.md)",
                         self._no_memory_because())

    @property
    def tracking(self) -> str:
        return "cgroup" if self.groups is not None else "subreaper"

    def take(self) -> Slot:
        return self._free.get()

    def give(self, slot: Slot) -> None:
        self._free.put(slot)

    def close(self) -> None:
        """Every attempt ended: remove the slots' cgroups (a killed engine leaves them, and
        the next one kills what is still in them)."""
        for group in self._groups:
            group.close()
        if self.groups is not None:
            self.groups.remove()

    def _no_memory_because(self) -> str:
        if self.confinement.tracking == "subreaper":
            return "process_tracking is 'subreaper', so attempts get no cgroup"
        if self.groups is None:
            return ("this process may not make cgroups here (run as root, or in a cgroup "
                    "delegated to it)")
        return ("the slots' cgroups have no memory controller (cgroup v2: it is not "
                "delegated to batchyard's cgroup; v1: no writable memory hierarchy)")

    def _cgroups(self, work_root: Path) -> Cgroups | None:
        groups = cgroups.available(work_root, self._controllers())
        if groups is None:
            return None
        killed = groups.kill_leftovers()
        if killed:
            _log.warning("killed %d process(es) left in the cgroups of an earlier engine", killed)
        if self.confinement.sandbox:  # any confined attempt may bring a memory limit
            groups.enable_limits()
        return groups

    def _controllers(self) -> tuple[str, ...]:
        """The v1 hierarchies worth their cost: for confined attempts memory (each may bring
        its own memory limit), and pids for a process limit unless each slot has its own
        uid (RLIMIT_NPROC does it then); for others, pids to track processes."""
        confinement = self.confinement
        if not confinement.sandbox:
            return ("pids",)
        wanted = ["memory"]
        if confinement.limits.max_processes and os.geteuid() != 0:
            wanted.append("pids")
        return tuple(wanted)

    def _group(self, index: int) -> SlotGroup | None:
        if self.groups is None:
            return None
        group = self.groups.slot(index)
        if self.confinement.sandbox:
            limits = self.confinement.limits
            processes = limits.max_processes if os.geteuid() != 0 else 0  # else RLIMIT_NPROC
            missing = group.limit(limits.memory_bytes, processes)
            if "pids" in missing and index == 0:  # memory: see __init__
                _log.warning("cgroup limits not available here: pids")
        return group

    def _user(self, index: int) -> tuple[int, int] | None:
        if not self.confinement.sandbox or os.geteuid() != 0:
            return None
        base = self.confinement.user_base
        return base + 1 + index, base
