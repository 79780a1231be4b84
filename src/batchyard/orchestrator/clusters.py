"""The cluster control plane: create, read, change and delete clusters and their VMs, and
keep each group at its DesiredVMCount (reference §7).

`Clusters` is the service the API and the command line call; every call is one store
transaction, and `changed()` (the engine's `wake`) is called after each commit, so scaling
is evaluated on every change rather than on a timer. `reconcile(tx, cluster_id, now, busy)`
and `finish_deletions(tx)` are plain functions the engine's data plane calls in its own
transactions too.

Scaling, as `reconcile` does it: a group with fewer live VMs (Pending, Starting, Running)
than desired gets new Pending ones; a group with more sheds the surplus (`domain.clusters
.surplus`: Pending first, then Starting, then idle Running, then busy Running, newest first).
A shed VM that was never placed (Pending) is removed at once; the others go Deleting and the
data plane drains them (each finishes the instance it runs, then leaves) and removes their
rows. So live VMs never outnumber desired ones.
"""

from __future__ import annotations

import builtins
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from batchyard.documents import time_text
from batchyard.domain.clusters import (
    LIVE_VM_STATES,
    ClusterChange,
    ClusterDescription,
    ClusterSpecError,
    ClusterState,
    VMState,
    change_summary,
    check_instance_types,
    merge,
    surplus,
)
from batchyard.domain.instance_types import DEFAULT_CATALOGUE
from batchyard.domain.spec import JobDescription
from batchyard.errors import (
    IdempotentTokenMismatch,
    NotFound,
    Problem,
    QuotaExhausted,
    StateConflict,
    TokenTaken,
)
from batchyard.ids import new_cluster_id, new_vm_id
from batchyard.ports.clusters import ClusterRow, ClusterStore, ClusterTransaction, VMRow
from batchyard.ports.reads import Page
from batchyard.ports.store import IdempotencyToken

Item = TypeVar("Item")
TypeCheck = Callable[[ClusterDescription], list[Problem]]
"""The problems with a cluster description's InstanceTypes (`check_instance_types` with the
installation's catalogue and machine)."""
PENDING_REASON = "waiting for a host to start it on"
VM_QUOTA = 1000
"""The most VMs one tenant's clusters may want in all, by default (`vm_quota`)."""
CLUSTER_QUOTA = 100
"""The most clusters one tenant may have, by default (`cluster_quota`)."""
MOST_NAMED_JOBS = 10
"""Active jobs named in the refusal of a cluster's deletion."""


@dataclass(frozen=True)
class ClusterStatus:
    """A cluster with its VMs counted per group and state (what `GET /clusters/{id}` shows)."""

    row: ClusterRow
    vm_counts: Mapping[str, Counter[VMState]] = field(default_factory=dict)

    def count(self, state: VMState, group: str | None = None) -> int:
        """VMs in `state` (of one group, or of the whole cluster)."""
        counts = ([self.vm_counts.get(group, Counter())] if group is not None
                  else list(self.vm_counts.values()))
        return sum(counted[state] for counted in counts)

    def actual(self, group: str) -> int:
        """ActualVMCount: the group's Running VMs."""
        return self.count(VMState.RUNNING, group)


@dataclass(frozen=True)
class Reconciled:
    """What `reconcile` did: the VMs it added (Pending) and those it shed, per group."""

    added: dict[str, list[str]] = field(default_factory=dict)
    shed: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.shed)


def log_line(now: float, group: str, text: str) -> str:
    """An OperationLogs line: `[2026-12-02T09:50:00.000000Z][group1] …` ("" for none)."""
    return f"[{time_text(datetime.fromtimestamp(now, UTC))}][{group}] {text}"


def reconcile(tx: ClusterTransaction, cluster_id: str, now: float,
              busy: Collection[str] = ()) -> Reconciled:
    """Bring each group of the cluster to its DesiredVMCount (none for a Deleting cluster):
    add Pending VMs, or shed the surplus (`busy`: VMs that run an instance, shed last).
    Logs what it did in the cluster's OperationLogs."""
    row = tx.cluster(cluster_id)
    if row is None:
        return Reconciled()
    desired = ({name: group.DesiredVMCount for name, group in row.description.Groups.items()}
               if row.state is ClusterState.ACTIVE else {})
    live: dict[str, list[VMRow]] = defaultdict(list)
    for vm in tx.vms(cluster_id, states=LIVE_VM_STATES):
        live[vm.group].append(vm)
    done = Reconciled()
    for group in sorted(set(desired) | set(live)):
        have, want = live.get(group, []), desired.get(group, 0)
        if len(have) < want:
            done.added[group] = _add_vms(tx, row, group, want - len(have), now)
        by_id = {vm.id: vm for vm in have}
        shed = [by_id[vm_id] for vm_id in surplus(have, want, busy)]
        if shed:
            done.shed[group] = retire(tx, shed, now)
    logs = [log_line(now, group, f"{len(ids)} VM(s) added, Pending") for group, ids in
            done.added.items()]
    logs += [log_line(now, group, f"{len(ids)} VM(s) shed") for group, ids in done.shed.items()]
    if logs:
        tx.change_cluster(cluster_id, logs=logs)
    return done


def _add_vms(tx: ClusterTransaction, row: ClusterRow, group: str, count: int,
             now: float) -> list[str]:
    instance_type = row.description.instance_type_of(group)
    rows = [VMRow(new_vm_id(), row.id, group, row.tenant, instance_type, VMState.PENDING,
                  now, now, reason=PENDING_REASON) for _ in range(count)]
    tx.add_vms(rows)
    return [vm.id for vm in rows]


def retire(tx: ClusterTransaction, vms: Sequence[VMRow], now: float) -> list[str]:
    """Move these VMs to Deleting; those never placed on a host (Pending) are removed at
    once (they have nothing to drain). The ids of those that were live, in `vms`' order."""
    moved = set(tx.move_vms([vm.id for vm in vms], VMState.DELETING, now, reason=""))
    tx.move_vms([vm.id for vm in vms if vm.id in moved and vm.state is VMState.PENDING],
                VMState.DELETED, now)
    return [vm.id for vm in vms if vm.id in moved]


def finish_deletions(tx: ClusterTransaction) -> list[str]:
    """Remove the rows of Deleting clusters that have no VM left; their ids."""
    done = [row.id for row in tx.clusters()
            if row.state is ClusterState.DELETING and not tx.vms(row.id)]
    for cluster_id in done:
        tx.remove_cluster(cluster_id)
    return done


class Clusters:
    """Clusters and their VMs, per tenant: another tenant's cluster is NotFound everywhere."""

    def __init__(self, store: ClusterStore, clock: Callable[[], float] = time.time,
                 changed: Callable[[], None] = lambda: None,
                 busy: Callable[[str], Collection[str]] = lambda cluster_id: (),
                 check_types: TypeCheck = lambda description: check_instance_types(
                     description, DEFAULT_CATALOGUE),
                 vm_quota: int = VM_QUOTA, cluster_quota: int = CLUSTER_QUOTA) -> None:
        self.store = store
        self.vm_quota = vm_quota
        """The most VMs a tenant's clusters may want in all (QuotaExhausted beyond)."""
        self.cluster_quota = cluster_quota
        """The most clusters a tenant may have (QuotaExhausted beyond)."""
        self.check_types = check_types
        """The problems with a description's InstanceTypes (the engine's catalogue and
        machine: unknown and infeasible types are refused)."""
        self.clock = clock
        self.changed = changed
        """Called after every commit that changed something (the engine's `wake`)."""
        self.busy = busy
        """The VMs of a cluster that run an instance now (shed last); the data plane's."""

    # ---- clusters ------------------------------------------------------------------------

    def create(self, description: ClusterDescription, tenant: str,
               token: IdempotencyToken | None = None) -> str:
        """Store a new Active cluster and its Pending VMs; its id. With `token`, once: the
        same token and body give the first cluster's id again (IdempotentTokenMismatch for
        another body)."""
        _refuse(self.check_types(description))
        try:
            return self._create(description, tenant, token)
        except TokenTaken:  # another request with the token committed first
            with self.store.transaction() as tx:
                earlier = None if token is None else _made(tx, tenant, token)
            if earlier is None:
                raise
            return earlier

    def _create(self, description: ClusterDescription, tenant: str,
                token: IdempotencyToken | None) -> str:
        now = self.clock()
        with self.store.transaction() as tx:
            earlier = None if token is None else _made(tx, tenant, token)
            if earlier is not None:
                return earlier
            self._within_quota(tx, tenant, description)
            row = ClusterRow(new_cluster_id(), tenant, description.Name, description,
                             ClusterState.ACTIVE, now, (log_line(now, "", "created"),))
            tx.add_cluster(row, token)
            reconcile(tx, row.id, now)
        self.changed()
        return row.id

    def _within_quota(self, tx: ClusterTransaction, tenant: str,
                      description: ClusterDescription, replacing: str = "") -> None:
        """QuotaExhausted when the tenant's Active clusters, with `description` (new, or in
        place of cluster `replacing`), would want more than `vm_quota` VMs in all, or a new
        one would make more than `cluster_quota` clusters."""
        mine = tx.clusters(tenant)
        if not replacing and len(mine) >= self.cluster_quota:
            raise QuotaExhausted(
                f"tenant {tenant} has {len(mine)} clusters; its quota is "
                f"{self.cluster_quota} (cluster_quota): delete one first")
        others = sum(_wanted(row.description) for row in mine
                     if row.id != replacing and row.state is ClusterState.ACTIVE)
        wanted = others + _wanted(description)
        if wanted > self.vm_quota:
            raise QuotaExhausted(
                f"the clusters of tenant {tenant} would want {wanted} VMs in all "
                f"({others} in its other clusters); its quota is {self.vm_quota} "
                "(vm_quota): make the groups smaller or delete a cluster")

    def get(self, cluster_id: str, tenant: str | None) -> ClusterStatus:
        with self.store.transaction() as tx:
            return _status(tx, _owned(tx, cluster_id, tenant))

    def list(self, tenant: str | None, marker: str = "", limit: int = 50
             ) -> Page[ClusterStatus]:
        """The tenant's clusters, oldest first, from `marker` (an id, inclusive)."""
        with self.store.transaction() as tx:
            rows, next_marker = _page(tx.clusters(tenant), marker, limit, lambda row: row.id)
            return Page([_status(tx, row) for row in rows], next_marker)

    def change(self, cluster_id: str, change: ClusterChange, tenant: str | None) -> None:
        """Merge a partial change into the description (an Active cluster's), then scale."""
        now = self.clock()
        with self.store.transaction() as tx:
            row = _owned(tx, cluster_id, tenant)
            _refuse_deleting(row)
            merged = merge(row.description, change)
            _refuse(self.check_types(merged))
            self._within_quota(tx, row.tenant, merged, cluster_id)
            tx.change_cluster(cluster_id, merged, _change_logs(now, row.description, change))
            reconcile(tx, cluster_id, now, self.busy(cluster_id))
        self.changed()

    def delete(self, cluster_id: str, tenant: str | None) -> None:
        """Deleting: refused (StateConflict) while active jobs use the cluster; otherwise
        the cluster goes Deleting, its VMs drain and go, then so does the cluster."""
        now = self.clock()
        with self.store.transaction() as tx:
            row = _owned(tx, cluster_id, tenant)
            _refuse_deleting(row)
            jobs = tx.active_jobs_on_cluster(cluster_id)
            if jobs:
                raise StateConflict(_jobs_on(cluster_id, jobs))
            tx.move_cluster(cluster_id, ClusterState.DELETING, now,
                            [log_line(now, "", "deletion requested")])
            reconcile(tx, cluster_id, now, self.busy(cluster_id))
            finish_deletions(tx)
        self.changed()

    # ---- VMs -----------------------------------------------------------------------------

    def vms(self, cluster_id: str, group: str, tenant: str | None, marker: str = "",
            limit: int = 50) -> Page[VMRow]:
        """The group's VMs, oldest first, from `marker` (a VM id, inclusive)."""
        with self.store.transaction() as tx:
            _owned_group(tx, cluster_id, group, tenant)
            rows, next_marker = _page(tx.vms(cluster_id, group), marker, limit,
                                      lambda vm: vm.id)
            return Page(rows, next_marker)

    def vm(self, cluster_id: str, group: str, vm_id: str, tenant: str | None) -> VMRow:
        with self.store.transaction() as tx:
            return _owned_vm(tx, cluster_id, group, vm_id, tenant)

    def delete_vm(self, cluster_id: str, group: str, vm_id: str, tenant: str | None) -> None:
        """Remove a VM from its group: the group's DesiredVMCount goes down by one (else
        the group would start another at once: that is `recreate_vm`)."""
        now = self.clock()
        with self.store.transaction() as tx:
            vm = _owned_vm(tx, cluster_id, group, vm_id, tenant)
            row = _owned(tx, cluster_id, tenant)
            _refuse_leaving(vm)
            retire(tx, [vm], now)
            wanted = row.description.Groups[group].DesiredVMCount
            smaller = merge(row.description, ClusterChange.model_validate(
                {"Groups": {group: {"DesiredVMCount": max(wanted - 1, 0)}}}))
            tx.change_cluster(cluster_id, smaller, [log_line(
                now, group, f"VM {vm_id} deleted; DesiredVMCount {wanted} -> "
                f"{max(wanted - 1, 0)}")])
            reconcile(tx, cluster_id, now, self.busy(cluster_id))
        self.changed()

    def recreate_vm(self, cluster_id: str, group: str, vm_id: str, tenant: str | None) -> None:
        """Replace a VM: it goes (drained) and a fresh Pending one takes its place."""
        now = self.clock()
        with self.store.transaction() as tx:
            vm = _owned_vm(tx, cluster_id, group, vm_id, tenant)
            _refuse_deleting(_owned(tx, cluster_id, tenant))
            _refuse_leaving(vm)
            retire(tx, [vm], now)
            tx.change_cluster(cluster_id, logs=[log_line(now, group, f"VM {vm_id} recreated")])
            reconcile(tx, cluster_id, now, self.busy(cluster_id))
        self.changed()

    # ---- jobs ----------------------------------------------------------------------------

    def check_job(self, spec: JobDescription, tenant: str) -> builtins.list[Problem]:
        """A problem (`InvalidClusterId`) for each task whose ClusterId names no Active
        cluster of `tenant`. No transaction when no task names a cluster."""
        named = {name: task.ClusterId for name, task in spec.DAG.Tasks.items()
                 if task.ClusterId}
        if not named:
            return []
        with self.store.transaction() as tx:
            usable = {cluster_id for cluster_id in set(named.values())
                      if _usable(tx.cluster(cluster_id), tenant)}
        return [Problem("InvalidClusterId", f"DAG.Tasks.{name}.ClusterId", cluster_id,
                        "names no active cluster of yours (GET /clusters lists them; "
                        "leave ClusterId empty to use AutoCluster)")
                for name, cluster_id in named.items() if cluster_id not in usable]


def _wanted(description: ClusterDescription) -> int:
    return sum(group.DesiredVMCount for group in description.Groups.values())


def _usable(row: ClusterRow | None, tenant: str) -> bool:
    return row is not None and row.tenant == tenant and row.state is ClusterState.ACTIVE


def _made(tx: ClusterTransaction, tenant: str, token: IdempotencyToken) -> str | None:
    """The cluster `token` made already (None: none); IdempotentTokenMismatch for another body."""
    earlier = tx.made_by_token(tenant, token)
    if earlier is None:
        return None
    digest, cluster_id = earlier
    if digest != token.digest:
        raise IdempotentTokenMismatch(f"IdempotentToken {token.token!r} was already used with a "
                            "different request")
    return cluster_id


def _owned(tx: ClusterTransaction, cluster_id: str, tenant: str | None) -> ClusterRow:
    row = tx.cluster(cluster_id)
    if row is None or (tenant is not None and row.tenant != tenant):
        raise NotFound(f"cluster {cluster_id} does not exist")
    return row


def _owned_group(tx: ClusterTransaction, cluster_id: str, group: str,
                 tenant: str | None) -> ClusterRow:
    row = _owned(tx, cluster_id, tenant)
    if group not in row.description.Groups:
        raise NotFound(f"cluster {cluster_id} has no group {group!r} (it has "
                       f"{', '.join(row.description.Groups)})")
    return row


def _owned_vm(tx: ClusterTransaction, cluster_id: str, group: str, vm_id: str,
              tenant: str | None) -> VMRow:
    _owned_group(tx, cluster_id, group, tenant)
    vm = tx.vm(vm_id)
    if vm is None or vm.cluster_id != cluster_id or vm.group != group:
        raise NotFound(f"VM {vm_id} does not exist in group {group} of cluster {cluster_id}")
    return vm


def _refuse_deleting(row: ClusterRow) -> None:
    if row.state is not ClusterState.ACTIVE:
        raise StateConflict(f"cluster {row.id} is {row.state.value}: it cannot be changed")


def _refuse_leaving(vm: VMRow) -> None:
    if vm.state not in LIVE_VM_STATES:
        raise StateConflict(f"VM {vm.id} is {vm.state.value} already")


def _refuse(problems: list[Problem]) -> None:
    if problems:
        raise ClusterSpecError(problems)


def _jobs_on(cluster_id: str, jobs: Sequence[str]) -> str:
    shown = ", ".join(jobs[:MOST_NAMED_JOBS])
    more = f" and {len(jobs) - MOST_NAMED_JOBS} more" if len(jobs) > MOST_NAMED_JOBS else ""
    return (f"cluster {cluster_id} is used by {len(jobs)} active job(s): {shown}{more}; "
            "stop them (or wait for them to end), then delete the cluster")


def _change_logs(now: float, before: ClusterDescription, change: ClusterChange) -> list[str]:
    logs = [log_line(now, "", f"changed {summary}")
            for summary in [change_summary(change)] if summary]
    for name, group in change.Groups.items():
        old = before.Groups[name]
        parts = [f"{key} {getattr(old, key)} -> {value}"
                 for key, value in group.model_dump(exclude_none=True).items()]
        if parts:
            logs.append(log_line(now, name, ", ".join(parts)))
    return logs


def _status(tx: ClusterTransaction, row: ClusterRow) -> ClusterStatus:
    return ClusterStatus(row, {group: Counter(counts)
                               for group, counts in tx.vm_counts(row.id).items()})


def _page(items: list[Item], marker: str, limit: int, key: Callable[[Item], str]
          ) -> tuple[list[Item], str]:
    """Items from the first whose key is at least `marker` (keys ascending), at most
    `limit`, and the key of the next one ("" on the last page)."""
    start = [item for item in items if key(item) >= marker] if marker else items
    return start[:limit], key(start[limit]) if len(start) > limit else ""
