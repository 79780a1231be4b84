"""Why an instance or task is not running yet: a machine-readable reason, and words.

Every Waiting instance (and every task with instances Waiting) has exactly one reason at a
time, the first of these that holds:

| Code | When |
|---|---|
| `DependencyNotMet` | an upstream task has not Finished (`Tasks` names them) |
| `ClusterDeleting` | its cluster is being deleted |
| `NoVM` | its cluster's groups want no VM (DesiredVMCount 0 everywhere) |
| `WaitingForVM` | its cluster has no VM running yet: being created, or waiting for room |
| `AllVMsBusy` | every VM of its cluster runs an instance (one at a time) |
| `FairShareReached` | its tenant runs its share of the agents' slots while others wait |
| `AllSlotsBusy` | every slot of the agents runs an instance |
| `Launching` | there is room: it starts at the engine's next step |

An instance waiting again after a failed attempt says so in its message ("retry 1 of 3").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Why(StrEnum):
    DEPENDENCY = "DependencyNotMet"
    CLUSTER_DELETING = "ClusterDeleting"
    NO_VM = "NoVM"
    WAITING_FOR_VM = "WaitingForVM"
    VMS_BUSY = "AllVMsBusy"
    FAIR_SHARE = "FairShareReached"
    SLOTS_BUSY = "AllSlotsBusy"
    LAUNCHING = "Launching"
    INFEASIBLE = "InfeasibleInstanceType"


@dataclass(frozen=True)
class Pending:
    """One reason, with the figures behind it (names as the API shows them)."""

    code: str
    """A `Why` (or, read from a newer server, a code this client does not know)."""
    message: str
    figures: Mapping[str, Any] = field(default_factory=dict)

    def as_api(self) -> dict[str, Any]:
        """`{"Code": …, "Message": …, …figures}`: the `PendingReason` of a status object."""
        return {"Code": str(self.code), "Message": self.message, **self.figures}

    def retrying(self, retry_count: int, max_retry_count: int) -> Pending:
        """The reason of an instance waiting again after `retry_count` failed attempts."""
        if retry_count <= 0:
            return self
        return Pending(self.code, f"retry {retry_count} of {max_retry_count}: {self.message}",
                       {**self.figures, "RetryCount": retry_count})


def dependency(waiting_for: list[str]) -> Pending:
    names = ", ".join(waiting_for)
    return Pending(Why.DEPENDENCY, f"waits for task{'s' if len(waiting_for) > 1 else ''} "
                   f"{names} to finish", {"Tasks": waiting_for})


def not_offered(instance_type: str) -> Pending:
    """The reason of an instance whose InstanceType no node can host (a provider's)."""
    return Pending(Why.INFEASIBLE, f"no node offers InstanceType {instance_type}: start one "
                   f"with the label batchyard.io/instance-type={instance_type} (or let an "
                   "autoscaler add one); until then its VMs cannot be reserved",
                   {"InstanceType": instance_type})


def on_reserved(instance_type: str, size: int, placed: int, busy: int) -> Pending:
    """The reason of an instance of a task whose AutoCluster's VMs a provider reserves:
    `size` VMs wanted, `placed` of them held on nodes, `busy` of those running one."""
    figures = {"InstanceType": instance_type, "DesiredVMCount": size,
               "ActualVMCount": placed, "BusyVMCount": busy}
    if placed > busy:
        return Pending(Why.LAUNCHING, "a VM of its AutoCluster is free: it starts at the "
                       "next step", figures)
    if placed < size:
        return Pending(Why.WAITING_FOR_VM, f"{placed} of the {size} VMs of its AutoCluster "
                       f"are reserved ({instance_type}); the others wait for room on a node "
                       "offering that type", figures)
    return Pending(Why.VMS_BUSY, f"all {size} VMs of its AutoCluster run an instance; it "
                   "starts when one ends, in instance order", figures)


def on_cluster(cluster_id: str, deleting: bool, desired: int, running: int, busy: int,
               starting_reason: str = "") -> Pending:
    """The reason of an instance of a task on cluster `cluster_id` that has no free VM."""
    figures = {"ClusterId": cluster_id, "DesiredVMCount": desired, "ActualVMCount": running,
               "BusyVMCount": busy}
    if deleting:
        return Pending(Why.CLUSTER_DELETING, f"cluster {cluster_id} is being deleted",
                       figures)
    if desired == 0 and running == 0:
        return Pending(Why.NO_VM, f"cluster {cluster_id} wants no VM (DesiredVMCount 0): "
                       "resize it (batchyard clusters resize)", figures)
    if running == 0:
        detail = f": {starting_reason}" if starting_reason else ""
        return Pending(Why.WAITING_FOR_VM, f"cluster {cluster_id} has no VM running yet "
                       f"(0 of {desired}){detail}", figures)
    return Pending(Why.VMS_BUSY, f"all {running} VMs of cluster {cluster_id} run an "
                   "instance (one at a time each)", figures)


def on_slots(tenant: str, running: Mapping[str, int], slots: int, free: int,
             weights: Mapping[str, float]) -> Pending:
    """The reason of an instance of a task on no cluster (its AutoCluster's VMs share the
    agents' slots with every other such task)."""
    mine = running.get(tenant, 0)
    used = sum(running.values())
    figures = {"Slots": slots, "RunningCount": used, "TenantRunningCount": mine}
    if free > 0:
        return Pending(Why.LAUNCHING, "there is room: it starts at the next step", figures)
    total = sum(weights.get(name, 1.0) for name in running.keys() | {tenant})
    share = slots * weights.get(tenant, 1.0) / total if total else slots
    if len(running.keys() - {tenant}) and mine >= share:
        return Pending(Why.FAIR_SHARE, f"tenant {tenant} runs {mine} of the {slots} slots, "
                       f"its fair share ({share:g}) while other tenants run theirs", figures)
    return Pending(Why.SLOTS_BUSY, f"all {slots} slots run an instance ({mine} of them "
                   f"tenant {tenant}'s); it starts when one frees, in launch order", figures)
