"""Why what waits is waiting: the reason of each task with Waiting instances, and of each
Waiting instance (`domain.pending` has the codes and the words).

Reads the tasks' states from the store, the agents' room and what each tenant runs from the
fleet (under the engine's lock, briefly), and a cluster's VM counts from the store; called
by the API and the command line, from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from batchyard.domain.clusters import ClusterState, VMState
from batchyard.domain.pending import (
    Pending,
    Why,
    dependency,
    on_cluster,
    on_slots,
)
from batchyard.domain.records import InstanceRecord, TaskRecord
from batchyard.domain.states import ACTIVE, State
from batchyard.orchestrator.caches import SpecCache
from batchyard.orchestrator.fleet import DEFAULT_POOL, Fleet
from batchyard.ports.store import StateStore


class Explainer:
    """The reasons of the tasks and instances of jobs (see the module docstring)."""

    def __init__(self, store: StateStore, specs: SpecCache, fleet: Fleet,
                 lock: threading.RLock, weights: Mapping[str, float],
                 reserved: Callable[[str, str], Pending | None] = lambda job_id, task: None
                 ) -> None:
        self._store = store
        self._reserved = reserved
        """Why a task on no cluster whose AutoCluster a provider reserves waits (None: VMs
        come from this machine's agents)."""
        self._specs = specs
        self._fleet = fleet
        self._lock = lock
        self._weights = weights

    def tasks(self, job_id: str, tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
        """These tasks of the job, each with why it has Waiting instances, if it has."""
        reasons = self.reasons(job_id, tasks)
        return [replace(task, pending=reasons[task.name]) if task.name in reasons else task
                for task in tasks]

    def instances(self, job_id: str, task: str, instances: Sequence[InstanceRecord]
                  ) -> list[InstanceRecord]:
        """These instances of the task, each Waiting one with why ("retry N of M" when it
        waits again after a failed attempt)."""
        if not any(instance.state is State.WAITING for instance in instances):
            return list(instances)
        reason = self.reasons(job_id, self._store.tasks(job_id)).get(task)
        if reason is None:
            return list(instances)
        retries = self._specs.job(job_id).spec.DAG.Tasks[task].MaxRetryCount
        return [replace(instance, pending=reason.retrying(instance.retry_count, retries))
                if instance.state is State.WAITING else instance for instance in instances]

    def reasons(self, job_id: str, tasks: Sequence[TaskRecord]) -> dict[str, Pending]:
        """Why each of these tasks with Waiting instances has them (`tasks` may be some of
        the job's; their upstreams' states are read when not among them)."""
        waiting = [task for task in tasks
                   if task.state in ACTIVE and task.instance_metrics.waiting > 0]
        if not waiting:
            return {}
        known = self._specs.job(job_id)
        states = {task.name: task.state for task in tasks}
        if any(name not in states for task in waiting for name in known.upstreams[task.name]):
            states = {task.name: task.state for task in self._store.tasks(job_id)}
        with self._lock:
            room = self._fleet.free_by_pool()
            running = dict(self._fleet.running_by_tenant())
            placed, slots = self._fleet.room()
        reasons = {}
        for task in waiting:
            upstream = sorted(name for name in known.upstreams[task.name]
                              if states.get(name) is not State.FINISHED)
            cluster = known.spec.DAG.Tasks[task.name].ClusterId
            if upstream:
                reasons[task.name] = dependency(upstream)
            elif cluster:
                reasons[task.name] = self._on_cluster(cluster, room.get(cluster, 0))
            elif (reason := self._reserved(job_id, task.name)) is not None:
                reasons[task.name] = reason
            else:
                reasons[task.name] = on_slots(known.tenant, running, slots - placed,
                                              room.get(DEFAULT_POOL, 0), self._weights)
        return reasons

    def _on_cluster(self, cluster_id: str, free: int) -> Pending:
        """Why an instance of a task on a cluster waits (its cluster's VMs as they are)."""
        if free > 0:
            return Pending(Why.LAUNCHING, "there is room: it starts at the next step")
        with self._lock:
            placed, busy = self._fleet.load(cluster_id)
            used, slots = self._fleet.room()
        with self._store.transaction() as tx:
            row = tx.cluster(cluster_id)
            counts = tx.vm_counts(cluster_id)
        if row is None:
            return on_cluster(cluster_id, True, 0, 0, 0)
        desired = sum(group.DesiredVMCount for group in row.description.Groups.values())
        waiting = sum(states.get(VMState.PENDING, 0) for states in counts.values())
        reason = (f"{waiting} VM(s) wait for room: the agents hold {slots} VMs and "
                  f"{used} are placed" if waiting and used >= slots else "")
        return on_cluster(cluster_id, row.state is not ClusterState.ACTIVE, desired,
                          placed, busy, reason)
