"""The meter port's counts (`ports.meter.Tallies`) on SQLAlchemy Core, for `/metrics`.

A scrape reads the counts the store keeps in rows, never the instances: jobs per state and
their tasks per state in one grouped query over the jobs table (`TASK_COUNT_COLUMNS`),
instances per state in one grouped query over the tasks table (`COUNT_COLUMNS`). Its cost
grows with jobs and tasks, whatever their instance counts. Clusters and their VMs are few
(bounded by the quotas): three small queries.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from batchyard.adapters.schema import COUNT_COLUMNS, TASK_COUNT_COLUMNS, clusters, jobs, tasks, vms
from batchyard.domain.clusters import VMState
from batchyard.domain.states import State
from batchyard.ports.meter import GroupTally, StateTally

_JOBS = (select(jobs.c.tenant, jobs.c.state, func.count(),
                *(func.sum(jobs.c[column]) for column in TASK_COUNT_COLUMNS.values()))
         .group_by(jobs.c.tenant, jobs.c.state))
_INSTANCES = (select(jobs.c.tenant,
                     *(func.sum(tasks.c[column]) for column in COUNT_COLUMNS.values()))
              .select_from(tasks.join(jobs, tasks.c.job_id == jobs.c.id))
              .group_by(jobs.c.tenant))
_CLUSTERS = select(clusters.c.id, clusters.c.tenant, clusters.c.description)
_VM_COUNTS = (select(vms.c.cluster_id, vms.c.group_name, vms.c.state, func.count())
              .group_by(vms.c.cluster_id, vms.c.group_name, vms.c.state))
_RUNNING_VMS = select(vms.c.id, vms.c.cluster_id, vms.c.group_name).where(
    vms.c.state == VMState.RUNNING.value)


class SqlTallies:
    """`Tallies` of the database behind `engine` (each read on a connection of its own)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def states(self) -> list[StateTally]:
        with self.engine.connect() as connection:
            return [*_job_and_task_tallies(connection), *_instance_tallies(connection)]

    def groups(self) -> list[GroupTally]:
        with self.engine.connect() as connection:
            counts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
            for cluster_id, group, state, count in connection.execute(_VM_COUNTS):
                counts[cluster_id, group][state] = count
            running: dict[tuple[str, str], list[str]] = defaultdict(list)
            for vm_id, cluster_id, group in connection.execute(_RUNNING_VMS):
                running[cluster_id, group].append(vm_id)
            return [GroupTally(cluster_id, tenant, group, desired,
                               counts.get((cluster_id, group), {}),
                               tuple(sorted(running.get((cluster_id, group), ()))))
                    for cluster_id, tenant, description in connection.execute(_CLUSTERS)
                    for group, desired in _desired(description).items()]


def _job_and_task_tallies(connection: Connection) -> list[StateTally]:
    found: list[StateTally] = []
    tasks_by_tenant: dict[tuple[str, State], int] = defaultdict(int)
    for row in connection.execute(_JOBS):
        tenant, state, count, *task_counts = row
        found.append(StateTally("job", tenant, State(state), count))
        for task_state, tasks_in_state in zip(TASK_COUNT_COLUMNS, task_counts, strict=True):
            tasks_by_tenant[tenant, task_state] += int(tasks_in_state or 0)
    return found + _nonzero("task", tasks_by_tenant)


def _instance_tallies(connection: Connection) -> list[StateTally]:
    by_tenant: dict[tuple[str, State], int] = {}
    for row in connection.execute(_INSTANCES):
        tenant, *counts = row
        for state, count in zip(COUNT_COLUMNS, counts, strict=True):
            by_tenant[tenant, state] = int(count or 0)
    return _nonzero("instance", by_tenant)


def _nonzero(kind: str, counts: dict[tuple[str, State], int]) -> list[StateTally]:
    return [StateTally(kind, tenant, state, count)
            for (tenant, state), count in sorted(counts.items()) if count]


def _desired(description: str) -> dict[str, int]:
    """Each group's DesiredVMCount, from a cluster row's description (JSON)."""
    groups: Any = json.loads(description).get("Groups") or {}
    return {name: int(group.get("DesiredVMCount") or 0) for name, group in groups.items()}
