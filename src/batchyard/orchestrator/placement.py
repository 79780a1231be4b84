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
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from batchyard.domain.clusters import VMState
from batchyard.orchestrator.clusters import finish_deletions
from batchyard.orchestrator.fleet import Cost, Fleet
from batchyard.ports.clusters import ClusterTransaction, VMRow

LOCAL_ADDRESS = "127.0.0.1"
PLACEABLE = (VMState.PENDING, VMState.STARTING, VMState.RUNNING)
RESYNC = 2.0
"""Seconds after which a step looks at the VM rows again, changed or not."""
STOPPED_REASON = "no engine runs to host it (batchyard serve, or a batchyard run, places it)"

Shape = Callable[[str], tuple[Cost, int]]
"""An InstanceType's name -> what a VM of it takes of the machine, and its memory in bytes."""


class Placement:
    """Places and drains cluster VMs on the fleet's agents (the engine's loop, its lock)."""

    def __init__(self, fleet: Fleet, shape: Shape, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._fleet = fleet
        self._shape = shape
        self._clock = clock
        self._synced = -RESYNC
        self._host_name = socket.gethostname()
        self._dirty = True
        """Something may have changed: a cluster, a VM, an agent's room. True at first:
        the VMs of an earlier engine are placed again."""

    def changed(self) -> None:
        """A cluster or VM changed (any thread): look again at the next step."""
        self._dirty = True

    def due(self) -> bool:
        """Whether a step has placement work: a change, a draining VM, or RESYNC seconds
        since the last look (a cluster changed by another process: `batchyard clusters`
        on the data dir of a `batchyard run`)."""
        return (self._dirty or self._fleet.draining()
                or self._clock() - self._synced >= RESYNC)

    def sync(self, tx: ClusterTransaction, now: float) -> None:
        """Place, drain and remove VMs as their rows say (each move one statement for all
        the VMs it moves). Safe to repeat: after a step that rolled back, the next one
        brings the rows in line with the agents again."""
        self._dirty = False
        self._synced = self._clock()
        gone = []
        for vm in tx.vms(states=[VMState.DELETING]):
            if self._fleet.placed(vm.id):
                self._fleet.drain(vm.id)
            else:
                gone.append(vm.id)
        drained = self._fleet.drained()  # what they ran ended: their room is free again
        tx.move_vms(gone + drained, VMState.DELETED, now)
        placed: dict[str, list[VMRow]] = {}
        for vm in tx.vms(states=PLACEABLE):  # oldest first
            if vm.state is VMState.RUNNING and self._fleet.placed(vm.id):
                continue
            cost, memory = self._shape(vm.instance_type)
            host = self._fleet.place(vm.id, vm.cluster_id, cost=cost,
                                     instance_type=(vm.instance_type, memory))
            if host is None:
                break  # no room for it: none for a younger one either (first come, first
                # placed)
            placed.setdefault(host, []).append(vm)
        for host, vms in placed.items():
            tx.move_vms([vm.id for vm in vms if vm.state is VMState.PENDING],
                        VMState.STARTING, now, host=host, reason="")
            tx.move_vms([vm.id for vm in vms], VMState.RUNNING, now, host=host,
                        ip_address=LOCAL_ADDRESS, host_name=self._host_name, reason="")
        if gone or drained:
            finish_deletions(tx)
            self._dirty = True  # the room they left may take a Pending VM

    def stop(self, tx: ClusterTransaction, now: float) -> None:
        """The engine stops: its VMs have no host any more. Running ones wait (`Pending`)
        for the next engine to place them; Deleting ones are gone."""
        for vm in tx.vms(states=(VMState.STARTING, VMState.RUNNING)):
            tx.move_vm(vm.id, VMState.PENDING, now, reason=STOPPED_REASON)
        for vm in tx.vms(states=[VMState.DELETING]):
            tx.move_vm(vm.id, VMState.DELETED, now)
        finish_deletions(tx)
