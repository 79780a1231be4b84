"""Which waiting instances start next, given free capacity (reference §7.5).

Order: job Priority (higher first), then job creation (earlier first), then task name, then
instance id. The store hands in candidates from ready tasks only; these functions decide.

Between tenants the slots are shared (`fair_share`): each free slot goes to the tenant with
the fewest attempts running for its weight (1 unless configured), so one tenant's job of
5,000 instances does not hold every slot while another tenant's small job waits behind it; a
tenant of weight 2 gets twice the slots of one of weight 1 when both have work waiting.
Within a tenant, BatchCompute's order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Candidate:
    """A Waiting instance of a task whose upstream tasks are all Finished."""

    job_id: str
    priority: int
    job_created: datetime
    task: str
    instance_id: int
    tenant: str = "default"

    def order_key(self) -> tuple[int, datetime, str, str, int]:
        return (-self.priority, self.job_created, self.job_id, self.task, self.instance_id)


def fair_share(queues: Mapping[str, Sequence[Candidate]], running: Mapping[str, int],
               capacity: int, weights: Mapping[str, float] | None = None) -> list[Candidate]:
    """Up to `capacity` candidates, each slot given to the tenant with the fewest attempts
    running (counting those picked here) for its weight; between equals, to the better next
    candidate.

    `queues`: per tenant, its candidates in launch order (only their heads are taken, so
    each tenant's picks are a prefix of its queue). `weights`: per tenant, its share
    relative to others (absent: 1).
    """
    heads = {tenant: 0 for tenant, queue in queues.items() if queue}
    counts = {tenant: running.get(tenant, 0) for tenant in heads}
    weight = {tenant: (weights or {}).get(tenant, 1.0) for tenant in heads}
    picked: list[Candidate] = []
    while heads and len(picked) < capacity:
        tenant = min(heads, key=lambda t: ((counts[t] + 1) / weight[t],
                                           queues[t][heads[t]].order_key()))
        picked.append(queues[tenant][heads[tenant]])
        counts[tenant] += 1
        heads[tenant] += 1
        if heads[tenant] == len(queues[tenant]):
            del heads[tenant]
    return picked


def slot_shares(slots: int, usage: Mapping[str, int], wanting: Collection[str],
                weights: Mapping[str, float] | None = None) -> dict[str, int]:
    """How many of the agents' `slots` each tenant may hold while others want more: its
    weighted share of them among the tenants that use slots or want some (at least 1).

    `usage`: per tenant, the slots it holds (placed cluster VMs, instances on no cluster);
    `wanting`: tenants with work waiting for a slot (a Pending VM, a Waiting instance on no
    cluster). With no other tenant wanting, a tenant may hold every slot: a share only
    binds while someone else waits.
    """
    competing = {tenant for tenant, used in usage.items() if used > 0} | set(wanting)
    weight = {tenant: (weights or {}).get(tenant, 1.0) for tenant in competing}
    total = sum(weight.values())
    return {tenant: max(1, int(slots * weight[tenant] / total)) for tenant in competing}


def starved(usage: Mapping[str, int], wanting: Collection[str],
            shares: Mapping[str, int]) -> bool:
    """Whether a tenant waits while it holds less than its share (only then do shares bind)."""
    return any(usage.get(tenant, 0) < shares[tenant] for tenant in wanting)


def over_share(usage: Mapping[str, int], wanting: Collection[str],
               shares: Mapping[str, int]) -> dict[str, int]:
    """Per tenant, how many slots beyond its share (`slot_shares`) it holds while a tenant
    below its own share waits (what it should give back); tenants within their shares are
    left out."""
    if not starved(usage, wanting, shares):
        return {}
    return {tenant: used - shares[tenant] for tenant, used in usage.items()
            if tenant in shares and used > shares[tenant]}
