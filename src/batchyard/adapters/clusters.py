"""Clusters and VMs in the SQL store (`ports.clusters`), written by the state store's own
transaction (`adapters.store.StoreTransaction` mixes `SqlClusterWrites` in), so that the
engine changes VMs and instances in one transaction.

Every state write is a compare-and-set (`UPDATE … WHERE state = source`) whose source the
tables of `domain.clusters` must allow.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from batchyard.adapters.credentials import idempotency_tokens
from batchyard.adapters.schema import clusters, jobs, tasks, vms
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
from batchyard.ports.store import KEEP, IdempotencyToken, Keep, given


class SqlClusterWrites:
    """The `ClusterTransaction` methods, on the transaction's `connection`."""

    connection: Connection

    # ---- clusters ------------------------------------------------------------------------

    def add_cluster(self, row: ClusterRow, token: IdempotencyToken | None = None) -> None:
        if token is not None:
            try:
                self.connection.execute(idempotency_tokens.insert(), [{
                    "tenant": row.tenant, "kind": token.kind, "token": token.token,
                    "digest": token.digest, "resource_id": row.id, "created": row.created}])
            except IntegrityError:  # the caller's transaction is rolled back: no cluster
                raise TokenTaken("the IdempotentToken was used by a cluster already") from None
        self.connection.execute(clusters.insert(), [{
            "id": row.id, "tenant": row.tenant, "name": row.name,
            "description": json.dumps(row.description.echo()), "state": row.state.value,
            "created": row.created, "operation_logs": json.dumps(list(row.operation_logs))}])

    def made_by_token(self, tenant: str, token: IdempotencyToken) -> tuple[str, str] | None:
        found = self.connection.execute(
            select(idempotency_tokens.c.digest, idempotency_tokens.c.resource_id).where(
                idempotency_tokens.c.tenant == tenant, idempotency_tokens.c.kind == token.kind,
                idempotency_tokens.c.token == token.token)).first()
        return None if found is None else (found.digest, found.resource_id)

    def cluster(self, cluster_id: str) -> ClusterRow | None:
        found = self.connection.execute(
            select(clusters).where(clusters.c.id == cluster_id)).first()
        return None if found is None else _cluster_row(found)

    def clusters(self, tenant: str | None = None) -> list[ClusterRow]:
        query = select(clusters).order_by(clusters.c.id)
        if tenant is not None:
            query = query.where(clusters.c.tenant == tenant)
        return [_cluster_row(found) for found in self.connection.execute(query)]

    def change_cluster(self, cluster_id: str, description: ClusterDescription | Keep = KEEP,
                       logs: Sequence[str] = ()) -> bool:
        current = self.cluster(cluster_id)
        if current is None:
            return False
        values: dict[str, Any] = {"operation_logs": _logs(current, logs)}
        if description is not KEEP:
            values["description"] = json.dumps(description.echo())
        self.connection.execute(clusters.update().where(clusters.c.id == cluster_id)
                                .values(**values))
        return True

    def move_cluster(self, cluster_id: str, target: ClusterState, now: float,
                     logs: Sequence[str] = ()) -> bool:
        current = self.cluster(cluster_id)
        if current is None:
            return False
        check_cluster_move(cluster_id, current.state, target)
        moved = self.connection.execute(
            clusters.update().where(clusters.c.id == cluster_id,
                                    clusters.c.state == current.state.value)
            .values(state=target.value, operation_logs=_logs(current, logs))).rowcount
        return bool(moved)

    def remove_cluster(self, cluster_id: str) -> None:
        self.connection.execute(clusters.delete().where(clusters.c.id == cluster_id))

    def active_jobs_on_cluster(self, cluster_id: str) -> list[str]:
        if not cluster_id:
            return []
        found = self.connection.execute(
            select(tasks.c.job_id).distinct()
            .join(jobs, jobs.c.id == tasks.c.job_id)
            .where(tasks.c.cluster_id == cluster_id,
                   jobs.c.state.in_([state.value for state in ACTIVE]))
            .order_by(tasks.c.job_id))
        return list(found.scalars())

    # ---- VMs -----------------------------------------------------------------------------

    def vms(self, cluster_id: str | None = None, group: str | None = None,
            states: Collection[VMState] | None = None) -> list[VMRow]:
        query = select(vms).order_by(vms.c.id)
        if cluster_id is not None:
            query = query.where(vms.c.cluster_id == cluster_id)
        if group is not None:
            query = query.where(vms.c.group_name == group)
        if states is not None:
            query = query.where(vms.c.state.in_(sorted(state.value for state in states)))
        return [_vm_row(found) for found in self.connection.execute(query)]

    def vm(self, vm_id: str) -> VMRow | None:
        found = self.connection.execute(select(vms).where(vms.c.id == vm_id)).first()
        return None if found is None else _vm_row(found)

    def add_vms(self, rows: Sequence[VMRow]) -> None:
        if rows:
            self.connection.execute(vms.insert(), [_vm_values(row) for row in rows])

    def move_vm(self, vm_id: str, target: VMState, now: float, *,
                host: str | Keep = KEEP, ip_address: str | Keep = KEEP,
                host_name: str | Keep = KEEP, error_code: int | Keep = KEEP,
                error_message: str | Keep = KEEP, reason: str | Keep = KEEP) -> bool:
        source = self.connection.execute(select(vms.c.state).where(vms.c.id == vm_id)).scalar()
        if source is None or source == target.value:
            return False
        check_vm_move(vm_id, VMState(source), target)
        where = (vms.c.id == vm_id, vms.c.state == source)
        if target is VMState.DELETED:
            return bool(self.connection.execute(vms.delete().where(*where)).rowcount)
        fields = given(host=host, ip_address=ip_address, host_name=host_name,
                       error_code=error_code, error_message=error_message, reason=reason)
        return bool(self.connection.execute(
            vms.update().where(*where).values(state=target.value, updated=now, **fields)
        ).rowcount)

    def move_vms(self, vm_ids: Sequence[str], target: VMState, now: float, *,
                 reason: str | Keep = KEEP, host: str | Keep = KEEP,
                 ip_address: str | Keep = KEEP, host_name: str | Keep = KEEP) -> list[str]:
        sources = sorted(source.value for source in vm_sources(target))
        ids = sorted(set(vm_ids))
        moved: list[str] = []
        for start in range(0, len(ids), MOST_IDS):
            where = (vms.c.id.in_(ids[start:start + MOST_IDS]), vms.c.state.in_(sources))
            found = list(self.connection.execute(select(vms.c.id).where(*where)).scalars())
            if found and target is VMState.DELETED:
                self.connection.execute(vms.delete().where(*where))
            elif found:
                self.connection.execute(vms.update().where(*where).values(
                    state=target.value, updated=now,
                    **given(reason=reason, host=host, ip_address=ip_address,
                            host_name=host_name)))
            moved += found
        return moved

    def vm_counts(self, cluster_id: str) -> dict[str, dict[VMState, int]]:
        counts: dict[str, dict[VMState, int]] = {}
        for group, state, count in self.connection.execute(
                select(vms.c.group_name, vms.c.state, func.count())
                .where(vms.c.cluster_id == cluster_id)
                .group_by(vms.c.group_name, vms.c.state)):
            counts.setdefault(group, {})[VMState(state)] = count
        return counts

    def remove_vm(self, vm_id: str) -> None:
        self.connection.execute(vms.delete().where(vms.c.id == vm_id))


MOST_IDS = 500
"""VM ids sent in one IN list."""


def _logs(current: ClusterRow, logs: Sequence[str]) -> str:
    return json.dumps([*current.operation_logs, *logs][-MAX_OPERATION_LOGS:])


def _cluster_row(found: Row[Any]) -> ClusterRow:
    return ClusterRow(found.id, found.tenant, found.name,
                      ClusterDescription.model_validate_json(found.description),
                      ClusterState(found.state), found.created,
                      tuple(json.loads(found.operation_logs)))


def _vm_row(found: Row[Any]) -> VMRow:
    return VMRow(found.id, found.cluster_id, found.group_name, found.tenant,
                 found.instance_type, VMState(found.state), found.created, found.updated,
                 found.host, found.ip_address, found.host_name, found.error_code,
                 found.error_message, found.reason)


def _vm_values(row: VMRow) -> dict[str, Any]:
    return {"id": row.id, "cluster_id": row.cluster_id, "group_name": row.group,
            "tenant": row.tenant, "instance_type": row.instance_type,
            "state": row.state.value, "created": row.created, "updated": row.updated,
            "host": row.host, "ip_address": row.ip_address, "host_name": row.host_name,
            "error_code": row.error_code, "error_message": row.error_message,
            "reason": row.reason}
