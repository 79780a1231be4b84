"""AutoClusters: the VMs a task gets for itself (BatchCompute's `AutoCluster`).

A task that names no ClusterId gets a group of min(InstanceCount, room) VMs of its
InstanceType, where room is how many VMs the agents can hold (their slots): created when
its first instance launches, released when the task ends. The local provider's VMs are
virtual — a VM here is a name and a share of the agents' room, not a machine booted — so
a group costs nothing to create, and its instances share the agents' slots with every
other task on no cluster, tenants served fairly (`domain.scheduling.fair_share`). Each
instance runs on the group's VM with the fewest instances in flight; that VM's id is its
BATCH_COMPUTE_WORKER_ID and the group's its BATCH_COMPUTE_CLUSTER_ID, and its attempt
records it.

A task that fails with `AutoCluster.ReserveOnFail` keeps its VMs: they keep their share of
the agents' room (nothing else runs there) until the job is restarted or deleted, or for at
most `reserve_seconds` (a tenant's failures must not hold a shared machine for good), so
what the failed attempts left (their work folders) stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from batchyard.domain.states import TERMINAL, Entity, State, Transition
from batchyard.ids import new_cluster_id, new_vm_id

GroupKey = tuple[str, str]
"""(job id, task name)."""
RESERVE_SECONDS = 3600.0
"""How long a failed task keeps its VMs (ReserveOnFail) at most, by default."""


@dataclass
class Group:
    """One task's VMs and the instances in flight on each."""

    id: str
    vms: dict[str, int] = field(default_factory=dict)
    """VM id -> instances in flight on it."""

    def pick(self) -> str:
        """The VM with the fewest instances in flight (the first of equals)."""
        vm = min(self.vms, key=self.vms.__getitem__)
        self.vms[vm] += 1
        return vm

    def landed(self, vm: str) -> None:
        if self.vms.get(vm, 0) > 0:
            self.vms[vm] -= 1


class AutoClusters:
    """The groups of the tasks on no cluster (used under the engine's lock)."""

    def __init__(self, reserve: Callable[[str, GroupKey], bool],
                 unreserve: Callable[[str], None], clock: Callable[[], float],
                 reserve_seconds: float = RESERVE_SECONDS) -> None:
        self._reserve = reserve
        """Keep a VM of the task's share of the agents' room (False: no room left)."""
        self._unreserve = unreserve
        self._clock = clock
        self._reserve_seconds = reserve_seconds
        self._groups: dict[GroupKey, Group] = {}
        self._reserved: dict[GroupKey, tuple[Group, float]] = {}
        """Kept groups, each with the time it is released at the latest."""

    def worker(self, job_id: str, task: str, size: Callable[[], int]) -> tuple[str, str]:
        """(cluster id, VM id) for the next instance of the task, its group made if new
        with `size()` VMs (at least one)."""
        group = self._groups.get((job_id, task))
        if group is None:
            group = self._groups[job_id, task] = Group(
                new_cluster_id(), {new_vm_id(): 0 for _ in range(max(1, size()))})
        return group.id, group.pick()

    def landed(self, job_id: str, task: str, vm: str) -> None:
        """An attempt of the task on VM `vm` ended."""
        group = self._groups.get((job_id, task))
        if group is not None:
            group.landed(vm)

    def moved(self, transitions: Iterable[Transition], reserving: Callable[[str, str], bool]
              ) -> None:
        """Release the groups of tasks that ended (reserve them when `reserving(job, task)`
        says the task's AutoCluster asks for it and the task failed); release reserved
        groups of tasks that run again (the job restarted)."""
        for change in transitions:
            if change.entity is not Entity.TASK:
                continue
            key = (change.job_id, change.task)
            if change.target in TERMINAL:
                group = self._groups.pop(key, None)
                if (group is not None and change.target is State.FAILED
                        and reserving(*key)):
                    self._keep(key, group)
            elif key in self._reserved:
                self._release(key)

    def forget(self, job_id: str) -> None:
        """The job was deleted: its groups go, reserved or not."""
        for key in [key for key in self._groups if key[0] == job_id]:
            del self._groups[key]
        for key in [key for key in self._reserved if key[0] == job_id]:
            self._release(key)

    def expire(self) -> None:
        """Release the kept groups whose time is up."""
        if self._reserved:
            now = self._clock()
            for key in [key for key, (_, until) in self._reserved.items() if until <= now]:
                self._release(key)

    def sizes(self) -> dict[str, int]:
        return {"autoclusters": len(self._groups), "reserved": len(self._reserved)}

    def _keep(self, key: GroupKey, group: Group) -> None:
        kept = Group(group.id, {vm: 0 for vm in group.vms if self._reserve(vm, key)})
        if kept.vms:
            self._reserved[key] = (kept, self._clock() + self._reserve_seconds)

    def _release(self, key: GroupKey) -> None:
        group, _ = self._reserved.pop(key)
        for vm in group.vms:
            self._unreserve(vm)
