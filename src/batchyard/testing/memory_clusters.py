"""Clusters and VMs in the memory store (`ports.clusters`), with the semantics of the SQL
store: `MemoryTransaction` mixes `MemoryClusterWrites` in and commits its cluster tables with
the rest of its draft (`ClusterTables`, one frozen value)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from batchyard.domain.clusters import (
    MAX_OPERATION_LOGS,
    ClusterDescription,
    ClusterState,
    VMState,
    check_cluster_move,
    check_vm_move,
    vm_sources,
)
from batchyard.domain.states import ACTIVE
from batchyard.errors import TokenTaken
from batchyard.ports.clusters import ClusterRow, VMRow
from batchyard.ports.store import KEEP, IdempotencyToken, JobRow, Keep, given


@dataclass(frozen=True)
class ClusterTables:
    """Committed clusters and VMs, by id (replaced whole by each commit, never changed)."""

    clusters: Mapping[str, ClusterRow] = field(default_factory=dict)
    vms: Mapping[str, VMRow] = field(default_factory=dict)


class MemoryClusterWrites:
    """The `ClusterTransaction` methods, on the transaction's draft."""

    _tokens: dict[tuple[str, str, str], tuple[str, str]]

    def _job_clusters(self) -> Iterator[tuple[JobRow, Mapping[str, str]]]:
        """Each job's row and the ClusterId of each of its tasks (from the job draft)."""
        raise NotImplementedError

    def _open_clusters(self, tables: ClusterTables) -> None:
        self._clusters = dict(tables.clusters)
        self._vms = dict(tables.vms)

    def _cluster_tables(self) -> ClusterTables:
        return ClusterTables(self._clusters, self._vms)

    # ---- clusters ------------------------------------------------------------------------

    def add_cluster(self, row: ClusterRow, token: IdempotencyToken | None = None) -> None:
        if row.id in self._clusters:
            raise ValueError(f"cluster {row.id} exists already")
        if token is not None:
            key = (row.tenant, token.kind, token.token)
            if key in self._tokens:  # the caller's transaction is rolled back: no cluster
                raise TokenTaken("the IdempotentToken was used by a cluster already")
            self._tokens[key] = (token.digest, row.id)
        self._clusters[row.id] = _stored(row)

    def made_by_token(self, tenant: str, token: IdempotencyToken) -> tuple[str, str] | None:
        return self._tokens.get((tenant, token.kind, token.token))

    def cluster(self, cluster_id: str) -> ClusterRow | None:
        return self._clusters.get(cluster_id)

    def clusters(self, tenant: str | None = None) -> list[ClusterRow]:
        return [row for _, row in sorted(self._clusters.items())
                if tenant is None or row.tenant == tenant]

    def change_cluster(self, cluster_id: str, description: ClusterDescription | Keep = KEEP,
                       logs: Sequence[str] = ()) -> bool:
        current = self._clusters.get(cluster_id)
        if current is None:
            return False
        changed = replace(current, operation_logs=_logs(current, logs))
        if description is not KEEP:
            changed = _stored(replace(changed, description=description))
        self._clusters[cluster_id] = changed
        return True

    def move_cluster(self, cluster_id: str, target: ClusterState, now: float,
                     logs: Sequence[str] = ()) -> bool:
        current = self._clusters.get(cluster_id)
        if current is None:
            return False
        check_cluster_move(cluster_id, current.state, target)
        self._clusters[cluster_id] = replace(current, state=target,
                                             operation_logs=_logs(current, logs))
        return True

    def remove_cluster(self, cluster_id: str) -> None:
        self._clusters.pop(cluster_id, None)

    def active_jobs_on_cluster(self, cluster_id: str) -> list[str]:
        if not cluster_id:
            return []
        return sorted(row.id for row, task_clusters in self._job_clusters()
                      if row.state in ACTIVE and cluster_id in task_clusters.values())

    # ---- VMs -----------------------------------------------------------------------------

    def vms(self, cluster_id: str | None = None, group: str | None = None,
            states: Collection[VMState] | None = None) -> list[VMRow]:
        return [vm for _, vm in sorted(self._vms.items())
                if (cluster_id is None or vm.cluster_id == cluster_id)
                and (group is None or vm.group == group)
                and (states is None or vm.state in states)]

    def vm(self, vm_id: str) -> VMRow | None:
        return self._vms.get(vm_id)

    def add_vms(self, rows: Sequence[VMRow]) -> None:
        for row in rows:
            if row.id in self._vms:
                raise ValueError(f"VM {row.id} exists already")
            self._vms[row.id] = row

    def move_vm(self, vm_id: str, target: VMState, now: float, *,
                host: str | Keep = KEEP, ip_address: str | Keep = KEEP,
                host_name: str | Keep = KEEP, error_code: int | Keep = KEEP,
                error_message: str | Keep = KEEP, reason: str | Keep = KEEP) -> bool:
        current = self._vms.get(vm_id)
        if current is None or current.state is target:
            return False
        check_vm_move(vm_id, current.state, target)
        if target is VMState.DELETED:
            del self._vms[vm_id]
            return True
        self._vms[vm_id] = replace(current, state=target, updated=now, **given(
            host=host, ip_address=ip_address, host_name=host_name, error_code=error_code,
            error_message=error_message, reason=reason))
        return True

    def move_vms(self, vm_ids: Sequence[str], target: VMState, now: float, *,
                 reason: str | Keep = KEEP, host: str | Keep = KEEP,
                 ip_address: str | Keep = KEEP, host_name: str | Keep = KEEP) -> list[str]:
        sources = vm_sources(target)
        moved = sorted(vm_id for vm_id in set(vm_ids)
                       if vm_id in self._vms and self._vms[vm_id].state in sources)
        for vm_id in moved:
            if target is VMState.DELETED:
                del self._vms[vm_id]
            else:
                self._vms[vm_id] = replace(
                    self._vms[vm_id], state=target, updated=now,
                    **given(reason=reason, host=host, ip_address=ip_address,
                            host_name=host_name))
        return moved

    def vm_counts(self, cluster_id: str) -> dict[str, dict[VMState, int]]:
        counts: dict[str, dict[VMState, int]] = {}
        for vm in self._vms.values():
            if vm.cluster_id == cluster_id:
                group = counts.setdefault(vm.group, {})
                group[vm.state] = group.get(vm.state, 0) + 1
        return counts

    def remove_vm(self, vm_id: str) -> None:
        self._vms.pop(vm_id, None)


def _stored(row: ClusterRow) -> ClusterRow:
    """The row as the SQL store gives it back: its description through JSON."""
    return replace(row, description=ClusterDescription.model_validate_json(
        row.description.model_dump_json()))


def _logs(current: ClusterRow, logs: Sequence[str]) -> tuple[str, ...]:
    return (*current.operation_logs, *logs)[-MAX_OPERATION_LOGS:]
