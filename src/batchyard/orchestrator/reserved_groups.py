"""AutoClusters whose VMs a provider reserves (the Ray provider): one launch pool per task.

With the local provider an AutoCluster's VMs are names sharing the agents' slots
(`orchestrator.autoclusters`). With a provider that reserves capacity per VM, each VM of a
task's AutoCluster is a real reservation of its InstanceType on a node offering it, and the
task's instances run only on its own VMs: the group is a launch pool of its own (the pool's
name is the group's id; its launch queue holds only that task's instances).

- A ready task on no cluster with Waiting instances gets its group: min(InstanceCount,
  `most_vms`, what the nodes of its type hold) VMs, each reserved at once; a VM joins the
  pool when its reservation holds.
- When the task ends, its VMs drain (what runs finishes) and their reservations are given
  up; those not placed yet are given up at once. ReserveOnFail keeps a failed task's VMs
  reserved, idle, until the job runs again or is deleted, or for `reserve_seconds`.
- A VM whose node was lost is reserved again while its task still runs.
- Tenants share the nodes of a type fairly (`domain.scheduling.slot_shares`, by their
  weights): while a tenant with tasks waiting holds less than its share of what those nodes
  hold, the groups of tenants above their shares shrink to them — VMs not placed yet are
  given up at once, idle ones drain first, busy ones after their instance. Within a tenant,
  tasks get VMs in launch order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from batchyard.domain.scheduling import slot_shares, starved
from batchyard.domain.states import TERMINAL, Entity, State, Transition
from batchyard.ids import new_cluster_id, new_vm_id
from batchyard.orchestrator.fleet import Fleet
from batchyard.ports.provider import Provider, Ready, Shape
from batchyard.ports.store import StateTransaction

GroupKey = tuple[str, str]
"""(job id, task name)."""
MOST_VMS = 64
"""VMs an AutoCluster reserves at most (the rest of its instances wait their turn)."""
SCAN = 256
"""Ready tasks on no cluster looked at per sync (in launch order)."""


@dataclass
class ReservedGroup:
    id: str
    shape: Shape
    size: int
    """How many VMs it keeps reserved (at most: its tenant's share may bind)."""
    tenant: str = "default"
    vms: list[str] = field(default_factory=list)
    kept_until: float | None = None
    """ReserveOnFail: the task failed; its VMs stay reserved until then."""
    target: int | None = None
    """Its tenant's share binds: how many VMs it may keep now (None: `size`)."""


class ReservedGroups:
    """The reserved AutoClusters of the tasks on no cluster (under the engine's lock)."""

    def __init__(self, provider: Provider, fleet: Fleet,
                 shape_of: Callable[[str, str], tuple[Shape, int] | None],
                 reserving: Callable[[str, str], bool], clock: Callable[[], float],
                 most_vms: int = MOST_VMS, reserve_seconds: float = 3600.0,
                 weights: Mapping[str, float] | None = None) -> None:
        self._weights = weights if weights is not None else {}
        """Each tenant's share of a type's nodes relative to others (absent: 1)."""
        self._provider = provider
        self._fleet = fleet
        self._shape_of = shape_of
        """A task's InstanceType and InstanceCount (None: its job is gone)."""
        self._reserving = reserving
        self._clock = clock
        self._most_vms = most_vms
        self._reserve_seconds = reserve_seconds
        self._groups: dict[GroupKey, ReservedGroup] = {}
        self._by_pool: dict[str, GroupKey] = {}
        self._by_vm: dict[str, GroupKey] = {}

    def sync(self, tx: StateTransaction) -> None:
        """Give each ready task on no cluster with Waiting instances its group, each tenant
        its share of the nodes of a type (see the module docstring)."""
        waiting: list[GroupKey] = []
        for task in tx.waiting_tasks(SCAN):
            key = (task.job_id, task.task)
            group = self._groups.get(key) or self._new_group(key, task.tenant)
            if group is not None and group.kept_until is None:
                waiting.append(key)
        for instance_type in {self._groups[key].shape.instance_type for key in waiting}:
            self._share(instance_type, waiting)
        for key in waiting:
            group = self._groups[key]
            while len(group.vms) < self._target(group):
                self._reserve(key, group, new_vm_id())

    def _share(self, instance_type: str, waiting: list[GroupKey]) -> None:
        """Set the targets of the type's groups: their sizes, unless a tenant that waits
        holds less than its share; then each tenant's share, to its tasks in launch order
        (groups above their targets shrink)."""
        live = [(key, group) for key, group in self._groups.items()
                if group.shape.instance_type == instance_type and group.kept_until is None]
        room = self._provider.room(live[0][1].shape) if live else None
        for _, group in live:
            group.target = None
        if room is None:
            return
        usage: Counter[str] = Counter()
        for _, group in live:
            usage[group.tenant] += len(group.vms)
        wanting = {self._groups[key].tenant for key in waiting
                   if self._groups[key].shape.instance_type == instance_type}
        shares = slot_shares(room, usage, wanting, self._weights)
        if not starved(usage, wanting, shares):
            return
        left = dict(shares)
        for key, group in sorted(live, key=lambda item: item[0] not in waiting):
            group.target = min(group.size, max(left.get(group.tenant, 0), 0))
            left[group.tenant] = left.get(group.tenant, 0) - group.target
            self._shrink(key, group, group.target)

    def _target(self, group: ReservedGroup) -> int:
        return group.size if group.target is None else group.target

    def _shrink(self, key: GroupKey, group: ReservedGroup, target: int) -> None:
        """Give up VMs beyond `target`: those not placed first, then idle ones, then busy
        ones (they drain: their instance ends first)."""
        excess = len(group.vms) - target
        if excess <= 0:
            return
        placed = [vm for vm in group.vms if self._fleet.placed(vm)]
        idle = set(self._fleet.idle(placed))
        order = ([vm for vm in reversed(group.vms) if vm not in placed]
                 + [vm for vm in placed if vm in idle]
                 + [vm for vm in placed if vm not in idle])
        for vm_id in order[:excess]:
            group.vms.remove(vm_id)
            self._give_up(vm_id)

    def _new_group(self, key: GroupKey, tenant: str = "default") -> ReservedGroup | None:
        found = self._shape_of(*key)
        if found is None:
            return None
        shape, instance_count = found
        room = self._provider.room(shape)  # no more than the nodes of its type hold
        size = min(instance_count, self._most_vms, self._most_vms if room is None else room)
        group = self._groups[key] = ReservedGroup(new_cluster_id(), shape, max(1, size),
                                                  tenant)
        self._by_pool[group.id] = key
        return group

    def inherit(self, job_id: str, task: str, vm_id: str, tenant: str) -> None:
        """A VM of the task's group of an earlier server (killed and restarted) runs one of
        its instances: it joins the task's group (its reservation taken back by name)."""
        key = (job_id, task)
        group = self._groups.get(key) or self._new_group(key, tenant)
        if group is not None and vm_id not in self._by_vm:
            self._reserve(key, group, vm_id)

    def _reserve(self, key: GroupKey, group: ReservedGroup, vm_id: str) -> None:
        group.vms.append(vm_id)
        self._by_vm[vm_id] = key
        self._provider.reserve(vm_id, group.shape)

    def place(self, ready: Sequence[Ready]) -> list[Ready]:
        """Put the VMs of groups whose reservations hold into their pools; returns the
        others (cluster VMs: `Placement`'s)."""
        others = []
        for vm in ready:
            key = self._by_vm.get(vm.vm_id)
            if key is None:
                others.append(vm)
                continue
            group = self._groups[key]
            shape = group.shape
            if not self._fleet.place_on(vm.host, vm.vm_id, group.id,
                                        instance_type=(shape.instance_type,
                                                       shape.memory_bytes)):
                self._provider.release(vm.vm_id)  # its agent was lost meanwhile
                self._again(key, group, vm.vm_id)
        return others

    def task_of(self, pool: str) -> GroupKey | None:
        """The task whose group `pool` is (None: not a reserved group)."""
        return self._by_pool.get(pool)

    def vms_of(self, job_id: str, task: str) -> tuple[int, list[str]]:
        """How many VMs the task's group may have now, and its VMs (0, []: none yet)."""
        group = self._groups.get((job_id, task))
        return (0, []) if group is None else (self._target(group), list(group.vms))

    def group_id(self, job_id: str, task: str) -> str:
        group = self._groups.get((job_id, task))
        return "" if group is None else group.id

    def moved(self, transitions: Iterable[Transition]) -> None:
        """Tasks that ended give their VMs up (or keep them: ReserveOnFail); tasks of a job
        run again find their kept VMs given up, and get a new group."""
        for change in transitions:
            if change.entity is not Entity.TASK:
                continue
            key = (change.job_id, change.task)
            group = self._groups.get(key)
            if group is None:
                continue
            if change.target in TERMINAL:
                if change.target is State.FAILED and self._reserving(*key):
                    group.kept_until = self._clock() + self._reserve_seconds  # idle, kept
                else:
                    self._release(key)
            elif group.kept_until is not None:
                self._release(key)

    def evicted(self, vm_ids: Sequence[str]) -> list[str]:
        """VMs whose node was lost: reserved again for tasks that still run; returns those
        not of a reserved group (cluster VMs)."""
        others = []
        for vm_id in vm_ids:
            key = self._by_vm.get(vm_id)
            if key is None:
                others.append(vm_id)
                continue
            self._provider.release(vm_id)
            group = self._groups[key]
            if group.kept_until is None:
                self._again(key, group, vm_id)
            else:
                group.vms.remove(vm_id)
                del self._by_vm[vm_id]
        return others

    def _again(self, key: GroupKey, group: ReservedGroup, vm_id: str) -> None:
        group.vms.remove(vm_id)
        del self._by_vm[vm_id]
        self._reserve(key, group, vm_id)

    def forget(self, job_id: str) -> None:
        for key in [key for key in self._groups if key[0] == job_id]:
            self._release(key)

    def expire(self) -> None:
        now = self._clock()
        for key in [key for key, group in self._groups.items()
                    if group.kept_until is not None and group.kept_until <= now]:
            self._release(key)

    def _release(self, key: GroupKey) -> None:
        """The group goes: placed VMs drain (given up once drained: `drained`), the others
        are given up now."""
        group = self._groups.pop(key)
        del self._by_pool[group.id]
        for vm_id in group.vms:
            self._give_up(vm_id)

    def _give_up(self, vm_id: str) -> None:
        """A VM leaves its group: placed, it drains (given up once drained: Placement);
        not placed yet, its reservation goes now."""
        del self._by_vm[vm_id]
        if self._fleet.placed(vm_id):
            self._fleet.drain(vm_id)
        else:
            self._provider.release(vm_id)

    def sizes(self) -> dict[str, int]:
        return {"reserved_groups": len(self._groups), "reserved_vms": len(self._by_vm)}


__all__ = ["MOST_VMS", "ReservedGroup", "ReservedGroups"]
