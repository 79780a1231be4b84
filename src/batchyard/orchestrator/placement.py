"""Cluster VMs on the agents: the data plane of clusters.

The control plane (`orchestrator.clusters`) keeps each group's VM rows in line with its
DesiredVMCount: it adds `Pending` rows and marks surplus ones `Deleting`. `Placement`
makes the rows true, in the engine's step, whenever something changed:

- a `Pending` VM is placed on the agent with most room — the local provider offers as many
  VMs as the agents have slots (in strict capacity, also while the machine has its
  InstanceType's vCPU and memory left) — and moves to `Starting`, then `Running`. With no
  room it stays `Pending` (`why_pending` of the instances waiting for it says so);
- a `Deleting` VM drains: it takes no new instance, finishes the one it runs, then leaves
  (its row is removed: `Deleted`); a Deleting cluster with no VM left is removed;
- when the engine stops, its VMs go back to `Pending` (a local VM lives while an engine
  hosts it); the next engine places them again. Those left `Running` by an engine killed
  are placed again the same way (their attempts were lost with it and are re-run).

With a provider that reserves capacity per VM (`ports.provider`, the Ray provider), a
`Pending` VM is reserved on a node offering its InstanceType and stays `Pending` until the
reservation holds; then it joins its cluster's pool on that node's agent (`Running`). A
drained VM's reservation is given up; a VM whose node was lost goes back to `Pending` and is
reserved again. The provider's reservations are the only limit: tenants' slot shares do not
apply.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from batchyard.domain.clusters import VMState
from batchyard.domain.scheduling import over_share, slot_shares, starved
from batchyard.orchestrator.clusters import finish_deletions
from batchyard.orchestrator.fleet import Cost, Fleet
from batchyard.ports.clusters import ClusterTransaction, VMRow
from batchyard.ports.provider import Provider, Ready
from batchyard.ports.provider import Shape as Reservation

LOCAL_ADDRESS = "127.0.0.1"
PLACEABLE = (VMState.PENDING, VMState.STARTING, VMState.RUNNING)
RESYNC = 2.0
"""Seconds after which a step looks at the VM rows again, changed or not."""
STOPPED_REASON = "no engine runs to host it (batchyard serve, or a batchyard run, places it)"

LOST_REASON = "its node was lost: it is reserved again on another one"
YIELDED_REASON = ("gave its slot back: its tenant held more than its share of the slots "
                  "while another tenant waited; it is placed again when there is room")

Shape = Callable[[str], tuple[Cost, int]]
"""An InstanceType's name -> what a VM of it takes of the machine, and its memory in bytes."""


@dataclass(frozen=True)
class Demand:
    """What the instances on no cluster use of the agents' slots and want, per tenant."""

    running: Mapping[str, int] = field(default_factory=dict)
    waiting: Collection[str] = ()
    """Tenants with Waiting instances on no cluster."""
    weights: Mapping[str, float] = field(default_factory=dict)


NO_DEMAND = Demand()


@dataclass
class _Shares:
    usage: Counter[str]
    excess: dict[str, int]
    shares: dict[str, int]
    starved: bool
    """Whether a tenant waits below its share (only then do shares bind)."""

    def room(self, tenant: str) -> int:
        """How many more VMs the tenant may have placed now."""
        if not self.starved:
            return 1 << 30
        return self.shares.get(tenant, 0) - self.usage[tenant]

    def took(self, tenant: str) -> None:
        self.usage[tenant] += 1


class Placement:
    """Places and drains cluster VMs on the fleet's agents (the engine's loop, its lock)."""

    def __init__(self, fleet: Fleet, shape: Shape, clock: Callable[[], float] = time.monotonic,
                 provider: Provider | None = None) -> None:
        self._yielding: set[str] = set()
        """VMs draining to give their slot back (Pending again once drained), not to go."""
        self._fleet = fleet
        self._shape = shape
        self._clock = clock
        self._synced = -RESYNC
        self._host_name = socket.gethostname()
        self._dirty = True
        """Something may have changed: a cluster, a VM, an agent's room. True at first:
        the VMs of an earlier engine are placed again."""
        self.waiting = False
        """A VM waits for room: the engine calls `changed` when an attempt ends, so the
        slot it frees goes to the VM before the launches of that step refill it."""
        self._provider = provider
        self._reserved: set[str] = set()
        """VMs asked of the provider, not given up since."""
        self._evicted: set[str] = set()
        """VMs whose node was lost: Pending again at the next sync."""

    def changed(self) -> None:
        """A cluster or VM changed (any thread): look again at the next step."""
        self._dirty = True

    def due(self) -> bool:
        """Whether a step has placement work: a change, a draining VM, or RESYNC seconds
        since the last look (a cluster changed by another process: `batchyard clusters`
        on the data dir of a `batchyard run`)."""
        return (self._dirty or self._fleet.draining()
                or self._clock() - self._synced >= RESYNC)

    def sync(self, tx: ClusterTransaction, now: float, others: Demand = NO_DEMAND) -> None:
        """Place, drain and remove VMs as their rows say (each move one statement for all
        the VMs it moves), tenants sharing the agents' slots fairly (`others`: what
        instances on no cluster use and want of them). Safe to repeat: after a step that
        rolled back, the next one brings the rows in line with the agents again."""
        self._dirty = False
        self.waiting = False
        self._synced = self._clock()
        gone = self._drain_deleting(tx)
        drained = self._fleet.drained()  # what they ran ended: their room is free again
        given_back = [vm_id for vm_id in drained if vm_id in self._yielding]
        self._yielding.difference_update(drained)
        tx.move_vms(given_back, VMState.PENDING, now, reason=YIELDED_REASON)
        tx.move_vms(gone + [vm_id for vm_id in drained if vm_id not in given_back],
                    VMState.DELETED, now)
        live = tx.vms(states=PLACEABLE)  # oldest first
        shares = self._shares(live, others)
        self._give_back(live, shares)
        placed: dict[str, list[VMRow]] = {}
        for vm in live:
            if self._fleet.placed(vm.id) and vm.state is VMState.RUNNING:
                continue
            if not self._fleet.placed(vm.id) and shares.room(vm.tenant) <= 0:
                self.waiting = True
                continue  # its tenant holds its share while another waits
            cost, memory = self._shape(vm.instance_type)
            host = self._fleet.place(vm.id, vm.cluster_id, cost=cost,
                                     instance_type=(vm.instance_type, memory))
            if host is None:
                self.waiting = True  # placed when an attempt ends (see `due`)
                break  # no room for it: none for a younger one either (first come, first
                # placed)
            shares.took(vm.tenant)
            placed.setdefault(host, []).append(vm)
        for host, vms in placed.items():
            tx.move_vms([vm.id for vm in vms if vm.state is VMState.PENDING],
                        VMState.STARTING, now, host=host, reason="")
            tx.move_vms([vm.id for vm in vms], VMState.RUNNING, now, host=host,
                        ip_address=LOCAL_ADDRESS, host_name=self._host_name, reason="")
        if gone or drained:
            finish_deletions(tx)
            self._dirty = True  # the room they left may take a Pending VM

    def sync_reserved(self, tx: ClusterTransaction, now: float, ready: Sequence[Ready]) -> None:
        """`sync` with a provider: reserve Pending VMs, place those whose reservations hold
        (`ready`), drain Deleting ones and give up the reservations of those drained."""
        assert self._provider is not None
        provider = self._provider
        self._dirty = False
        self._synced = self._clock()
        tx.move_vms(sorted(self._evicted), VMState.PENDING, now, reason=LOST_REASON)
        self._reserved.difference_update(self._evicted)
        self._evicted.clear()
        gone = self._drain_deleting(tx)
        drained = self._fleet.drained()
        for vm_id in gone + drained:
            self._give_up(vm_id)
        tx.move_vms(gone + drained, VMState.DELETED, now)
        live = {vm.id: vm for vm in tx.vms(states=PLACEABLE)}
        for holding in ready:
            self._place_reserved(tx, now, holding, live.get(holding.vm_id))
        for vm in live.values():
            if vm.id not in self._reserved and not self._fleet.placed(vm.id):
                cost, memory = self._shape(vm.instance_type)
                provider.reserve(vm.id, Reservation(vm.instance_type, cost.vcpu, memory))
                self._reserved.add(vm.id)
        if gone or drained:
            finish_deletions(tx)

    def _drain_deleting(self, tx: ClusterTransaction) -> list[str]:
        """Deleting VMs placed on an agent drain (no new lease); the others are gone now."""
        gone = []
        for vm in tx.vms(states=[VMState.DELETING]):
            if self._fleet.placed(vm.id):
                self._fleet.drain(vm.id)
            else:
                gone.append(vm.id)
        return gone

    def _place_reserved(self, tx: ClusterTransaction, now: float, ready: Ready,
                        vm: VMRow | None) -> None:
        if vm is None:  # deleted meanwhile
            self._give_up(ready.vm_id)
            return
        cost, memory = self._shape(vm.instance_type)
        if not self._fleet.place_on(ready.host, vm.id, vm.cluster_id, cost=cost,
                                    instance_type=(vm.instance_type, memory)):
            self._give_up(vm.id)  # its node's agent was lost meanwhile: reserved again
            return
        if vm.state is VMState.PENDING:
            tx.move_vm(vm.id, VMState.STARTING, now, host=ready.host, reason="")
        tx.move_vm(vm.id, VMState.RUNNING, now, host=ready.host, ip_address=ready.address,
                   host_name=ready.host_name, reason="")

    def _give_up(self, vm_id: str) -> None:
        assert self._provider is not None
        self._provider.release(vm_id)
        self._reserved.discard(vm_id)

    def evicted(self, vm_ids: Collection[str]) -> None:
        """Cluster VMs whose node was lost (taken off the fleet): reserved again."""
        assert self._provider is not None
        for vm_id in vm_ids:
            self._provider.release(vm_id)
        self._evicted.update(vm_ids)
        self._dirty = True

    def _shares(self, live: list[VMRow], others: Demand) -> _Shares:
        """Each tenant's use of the slots (its placed VMs and its instances on no cluster)
        against its share, given who waits (Pending VMs, instances on no cluster)."""
        usage: Counter[str] = Counter(others.running)
        wanting = set(others.waiting)
        for vm in live:
            if self._fleet.placed(vm.id) and vm.id not in self._yielding:
                usage[vm.tenant] += 1
            else:
                wanting.add(vm.tenant)
        shares = slot_shares(self._fleet.room()[1], usage, wanting, others.weights)
        return _Shares(usage, over_share(usage, wanting, shares), shares,
                       starved(usage, wanting, shares))

    def _give_back(self, live: list[VMRow], shares: _Shares) -> None:
        """VMs of tenants beyond their share, while another waits below its own, drain and
        go back to Pending: those running nothing first, the newest first."""
        for tenant, excess in shares.excess.items():
            mine = [vm for vm in reversed(live) if vm.tenant == tenant
                    and self._fleet.placed(vm.id) and vm.id not in self._yielding]
            idle = set(self._fleet.idle([vm.id for vm in mine]))
            ordered = [vm for vm in mine if vm.id in idle] + [
                vm for vm in mine if vm.id not in idle]
            for vm in ordered[:excess]:
                self._yielding.add(vm.id)
                self._fleet.drain(vm.id)
                shares.usage[tenant] -= 1

    def stop(self, tx: ClusterTransaction, now: float) -> None:
        """The engine stops: its VMs have no host any more. Running ones wait (`Pending`)
        for the next engine to place them; Deleting ones are gone."""
        for vm in tx.vms(states=(VMState.STARTING, VMState.RUNNING)):
            tx.move_vm(vm.id, VMState.PENDING, now, reason=STOPPED_REASON)
        for vm in tx.vms(states=[VMState.DELETING]):
            tx.move_vm(vm.id, VMState.DELETED, now)
        finish_deletions(tx)
