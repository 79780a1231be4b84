"""What to launch next: the launch queues, and the attempt an instance's launch hands out.

A `LaunchQueue` keeps the best Waiting instances of each tenant in one pool (the tasks on
one cluster, or those on none), in launch order, fetched ahead from the store (LOOKAHEAD
per tenant), so most steps launch without a query. `LaunchQueues` holds one per pool.
Anything that may change the order — a submission, an operation, a retry, a settle — calls
its one `invalidate()`, and the next launch of every pool fetches again. Free slots are
shared between tenants by `domain.scheduling.fair_share`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from batchyard.domain.attempt import AttemptKey, AttemptRequest, BucketAccess, PathMapping
from batchyard.domain.instance_types import InstanceType
from batchyard.domain.scheduling import Candidate, fair_share
from batchyard.domain.spec import TaskDescription
from batchyard.orchestrator.caches import KnownJob
from batchyard.ports.store import LaunchRow, StateTransaction

LOOKAHEAD = 64
"""At most this many Waiting instances are fetched ahead per tenant, in launch order. The
look-ahead follows use: after an invalidation it is twice what was launched from the last
fetch (a job of one-instance tasks invalidates the queue at every settle: fetching 64 rows
each time would cost more than it saves), and it doubles when a queue runs dry."""


class StaleLaunchQueue(Exception):
    """An instance taken from the launch queue was no longer Waiting (a missed invalidation):
    the step is rolled back and the queue fetched afresh."""


class LaunchQueues:
    """A launch queue per pool, invalidated together."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {})
        """Each tenant's share of the slots relative to others (absent: 1)."""
        self.generation = 0
        """Moved by every invalidation; a queue is good while it is the one fetched at."""
        self._queues: dict[str, LaunchQueue] = {}

    def invalidate(self) -> None:
        """The launch order may have changed: fetch again before the next launch. Safe from
        any thread, so submissions need no engine lock: one landing during a fetch moves the
        generation past the one the fetch began at, so it is never missed."""
        self.generation += 1

    def of(self, pool: str, task: tuple[str, str] | None = None) -> LaunchQueue:
        """The queue of the tasks on cluster `pool` ("": on none), or of the one `task`
        (job id, task name) whose reserved AutoCluster `pool` is."""
        queue = self._queues.get(pool)
        if queue is None:
            queue = self._queues[pool] = LaunchQueue(self, pool, task)
        return queue

    def keep(self, pools: Collection[str]) -> None:
        """Drop the queues of pools that are gone (deleted clusters)."""
        for pool in [pool for pool in self._queues if pool not in pools]:
            del self._queues[pool]


class LaunchQueue:
    """The best Waiting instances per tenant of one pool, in launch order."""

    def __init__(self, queues: LaunchQueues, pool: str,
                 task: tuple[str, str] | None = None) -> None:
        self._queues = queues
        """Its siblings: their generation (moved by `invalidate`) and tenants' weights."""
        self._pool = pool
        self._task = task
        self._rows: dict[str, list[LaunchRow]] = {}
        self._complete: set[str] = set()
        """Tenants whose every launchable instance is in the queue (the store had no more)."""
        self._fetched_at = -1
        self._ahead = LOOKAHEAD
        self._used = 0
        """Instances launched from the queue since it was fetched."""

    @property
    def _generation(self) -> int:
        return self._queues.generation

    def take(self, tx: StateTransaction, free: int, running: Mapping[str, int], now: float,
             admit: Callable[[LaunchRow], bool] | None = None) -> list[LaunchRow]:
        """Up to `free` instances to launch now, shared fairly between tenants given what
        each runs, each `admit`ted (in launch order: strict capacity); marked Running in
        `tx` (StaleLaunchQueue if one was not Waiting)."""
        rows = self._rows
        stale = self._fetched_at != self._generation
        if stale or self._short(rows, free):
            self._ahead = (max(1, min(LOOKAHEAD, 2 * self._used)) if stale
                           else min(LOOKAHEAD, 2 * self._ahead))
            self._fetched_at = self._generation  # read before the fetch (see invalidate)
            rows = self._rows = self._fetch(tx, free)
        queues = {tenant: [row.candidate for row in mine] for tenant, mine in rows.items()}
        picked = fair_share(queues, running, free, self._queues.weights)
        taken: dict[str, int] = {}
        for candidate in picked:
            taken[candidate.tenant] = taken.get(candidate.tenant, 0) + 1
        chosen = _chosen(rows, taken)
        if admit is not None:
            admitted = [row for row in chosen if admit(row)]
            if len(admitted) < len(chosen):
                self._queues.invalidate()  # those not admitted wait: fetch them again
            chosen = admitted
        self._used += len(chosen)
        if not tx.mark_running(chosen, now):
            raise StaleLaunchQueue("an instance of the launch queue was no longer Waiting")
        return chosen

    def heads(self, tx: StateTransaction) -> dict[str, tuple[Any, ...]]:
        """The place in the launch order of each tenant's best Waiting instance (fetched
        again first if the order may have changed)."""
        if self._fetched_at != self._generation:
            self._fetched_at = self._generation
            self._rows = self._fetch(tx, 1)
        return {tenant: mine[0].candidate.order_key() for tenant, mine in self._rows.items()
                if mine}

    def _short(self, rows: dict[str, list[LaunchRow]], free: int) -> bool:
        """Whether a tenant may have more to launch than the queue holds of it."""
        return any(len(mine) < free and tenant not in self._complete
                   for tenant, mine in rows.items())

    def _fetch(self, tx: StateTransaction, free: int) -> dict[str, list[LaunchRow]]:
        limit = max(free, self._ahead)
        self._used = 0
        rows: dict[str, list[LaunchRow]] = {}
        found = (tx.launch_rows(limit, free, self._pool) if self._task is None
                 else tx.task_launch_rows(*self._task, limit))
        for row in found:
            rows.setdefault(row.candidate.tenant, []).append(row)
        self._complete = {tenant for tenant, mine in rows.items()
                          if len(mine) < limit and len({r.candidate.job_id for r in mine}) < free}
        return rows


def _chosen(rows: dict[str, list[LaunchRow]], taken: dict[str, int]) -> list[LaunchRow]:
    """Take the first `taken[tenant]` rows of each tenant's queue off it, in launch order."""
    chosen = []
    for tenant, count in taken.items():
        chosen += rows[tenant][:count]
        del rows[tenant][:count]
    return sorted(chosen, key=lambda row: row.candidate.order_key())


def attempt_request(row: LaunchRow, known: KnownJob, buckets: tuple[BucketAccess, ...],
                    cluster_id: str, worker_id: str = "", shape: InstanceType | None = None,
                    cluster_env: Mapping[str, str] | None = None) -> AttemptRequest:
    """The attempt the launch of `row` hands to an agent, on cluster `cluster_id` (a
    ClusterId, or the task's AutoCluster group) and VM `worker_id` ("": the one the agent
    leases to), limited to the memory of `shape` (its InstanceType) where confined. The
    cluster's EnvVars (`cluster_env`) reach the program, the task's own winning a clash."""
    candidate: Candidate = row.candidate
    task = known.spec.DAG.Tasks[candidate.task]
    parameters = task.Parameters
    inputs, outputs, logs = _mappings(task)
    return AttemptRequest(
        key=AttemptKey(candidate.job_id, candidate.task, candidate.instance_id,
                       row.attempts + 1),
        instance_count=task.InstanceCount,
        command_line=parameters.Command.CommandLine,
        package_path=parameters.Command.PackagePath,
        env_vars={**(cluster_env or {}), **parameters.Command.EnvVars},
        timeout=task.Timeout,
        stdout_dir=_as_directory(parameters.StdoutRedirectPath),
        stderr_dir=_as_directory(parameters.StderrRedirectPath),
        retry_count=row.retry_count,
        tenant=known.tenant, buckets=buckets,
        cluster_id=cluster_id, worker_id=worker_id,
        memory_bytes=shape.memory_bytes if shape else 0,
        instance_type=shape.name if shape else "",
        inputs=inputs, outputs=outputs, logs=logs,
    )


Mappings = tuple[PathMapping, ...]


def _mappings(task: TaskDescription) -> tuple[Mappings, Mappings, Mappings]:
    """A task's InputMapping + Mounts, OutputMapping and LogMapping for its AttemptRequest."""
    if not task.uses_mappings:
        return (), (), ()
    writable = bool(task.WriteSupport)
    inputs = [PathMapping(url, path, writable) for url, path in task.InputMapping.items()]
    inputs += [PathMapping(entry["Source"], entry["Destination"],
                           entry.get("WriteSupport") is True) for entry in task.mount_entries]
    return (tuple(inputs),
            tuple(PathMapping(url, path) for path, url in task.OutputMapping.items()),
            tuple(PathMapping(url, path) for path, url in task.LogMapping.items()))


def _as_directory(url: str) -> str:
    return url if url.endswith("/") else url + "/"
