"""The cluster-store port: clusters and their VMs, in typed values (reference §7).

Implemented by the very transactions of the state store (`adapters.store.StoreTransaction`
through `adapters.clusters.SqlClusterWrites`, `testing.MemoryTransaction` through
`testing.memory_clusters.MemoryClusterWrites`): a `StateTransaction` is a
`ClusterTransaction`, so the engine moves VMs and instances in one transaction. The contract
suite is `tests/integration/test_cluster_store_contract.py`.

Rules every implementation keeps (those of `ports.store`):

- Callers name only the target state; the allowed sources come from the tables of
  `domain.clusters`. A current state the tables do not allow raises `ForbiddenMove`; a row
  that moved on or went away (a race) makes the write return False.
- Times are UTC epoch seconds (float). A Deleted VM's row is removed.
- A field a write may leave as it is defaults to `ports.store.KEEP` in the implementations
  (written `...` here: this module cannot import `ports.store`, which imports it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from batchyard.domain.clusters import ClusterDescription, ClusterState, VMState
from batchyard.ports.writes import IdempotencyToken, Keep

__all__ = ["ClusterRow", "ClusterStore", "ClusterTransaction", "VMRow"]


@dataclass(frozen=True)
class ClusterRow:
    id: str
    tenant: str
    name: str
    description: ClusterDescription
    """The whole description as created, with every change merged in."""
    state: ClusterState
    created: float
    operation_logs: tuple[str, ...] = ()
    """`[<time>][<group>]…` lines, oldest first, the newest MAX_OPERATION_LOGS."""


@dataclass(frozen=True)
class VMRow:
    """A VM of a cluster group: what the data plane places, starts and drains."""

    id: str
    cluster_id: str
    group: str
    tenant: str
    instance_type: str
    state: VMState
    created: float
    updated: float
    host: str = ""
    """The agent (host) it runs on; "" until placed."""
    ip_address: str = ""
    host_name: str = ""
    error_code: int = 0
    error_message: str = ""
    reason: str = ""
    """Why it is Pending (free text for people; "" otherwise)."""


class ClusterTransaction(Protocol):
    """Cluster and VM reads and writes, inside a store transaction."""

    # clusters
    def add_cluster(self, row: ClusterRow, token: IdempotencyToken | None = None) -> None:
        """Insert a cluster, recording the idempotency token that made it (TokenTaken if the
        token made something already: the caller rolls back)."""
        ...

    def made_by_token(self, tenant: str, token: IdempotencyToken) -> tuple[str, str] | None:
        """(digest, resource id) of what `token` (of its kind) made for `tenant`, or None."""
        ...

    def cluster(self, cluster_id: str) -> ClusterRow | None: ...

    def clusters(self, tenant: str | None = None) -> list[ClusterRow]:
        """Clusters by id (oldest first), of one tenant if given."""
        ...

    def change_cluster(self, cluster_id: str, description: ClusterDescription | Keep = ...,
                       logs: Sequence[str] = ()) -> bool:
        """Replace the description (unless KEEP) and append `logs` to the OperationLogs
        (the newest MAX_OPERATION_LOGS kept); False if the cluster is gone."""
        ...

    def move_cluster(self, cluster_id: str, target: ClusterState, now: float,
                     logs: Sequence[str] = ()) -> bool:
        """Compare-and-set the state as the cluster table allows; False if gone or moved."""
        ...

    def remove_cluster(self, cluster_id: str) -> None:
        """Delete the cluster's row (its VMs' rows stay: remove them first)."""
        ...

    def active_jobs_on_cluster(self, cluster_id: str) -> list[str]:
        """Ids of Waiting or Running jobs with a task whose ClusterId is `cluster_id`."""
        ...

    # VMs
    def vms(self, cluster_id: str | None = None, group: str | None = None,
            states: Collection[VMState] | None = None) -> list[VMRow]:
        """VMs by id (oldest first), of one cluster / group / set of states if given."""
        ...

    def vm(self, vm_id: str) -> VMRow | None: ...

    def add_vms(self, rows: Sequence[VMRow]) -> None: ...

    def move_vm(self, vm_id: str, target: VMState, now: float, *,
                host: str | Keep = ..., ip_address: str | Keep = ...,
                host_name: str | Keep = ..., error_code: int | Keep = ...,
                error_message: str | Keep = ..., reason: str | Keep = ...) -> bool:
        """Compare-and-set the VM's state (sets `updated` to `now`, and the fields given);
        False if the VM is gone, moved on meanwhile, or already in `target` (a no-op).
        ForbiddenMove if the VM table does not allow the move. Moving to Deleted removes
        the row."""
        ...

    def move_vms(self, vm_ids: Sequence[str], target: VMState, now: float, *,
                 reason: str | Keep = ..., host: str | Keep = ...,
                 ip_address: str | Keep = ..., host_name: str | Keep = ...) -> list[str]:
        """Move each of these VMs whose state the VM table allows to `target` (the others
        are left as they are: a bulk move selects its rows), setting the fields given; the
        ids it moved. Moving to Deleted removes the rows."""
        ...

    def vm_counts(self, cluster_id: str) -> dict[str, dict[VMState, int]]:
        """The cluster's VMs per group and state (groups with none left out)."""
        ...

    def remove_vm(self, vm_id: str) -> None:
        """Delete the VM's row, whatever its state."""
        ...


class ClusterStore(Protocol):
    """Anything whose transactions are cluster transactions (the state stores are)."""

    def transaction(self) -> AbstractContextManager[ClusterTransaction]: ...
