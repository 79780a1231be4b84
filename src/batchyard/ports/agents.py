"""The agent port: how the engine hands attempts to agents (BatchCompute's VMs) and hears back.

An agent holds slots, a capacity (vCPU, memory) and labels, and runs attempts with the
runner. The engine talks to it only through leases, batched both ways:

- `Agent.lease(batch)` hands over attempts: each task's shared part is sent once
  (`TaskPart`), each attempt as a small `Lease` (which part, instance id, attempt number,
  fencing token, RetryCount). Non-blocking: the agent starts them as it can.
- The agent reports to its `AgentListener`: `reported(agent_id, reports)` with the outcomes
  of many attempts at once (each with the token it was leased with), and `heartbeat(...)`
  every `AgentInfo.heartbeat` seconds listing the tokens it is running.
- An outcome whose token is not the instance's current one is stale and ignored (fencing).
  An agent whose heartbeats stop (or whose transport reports it `gone`) has its attempts
  counted lost and re-run, a bounded number of times.

The same protocol fits an agent in the engine's process (`batchyard run`), in a process of
its own beside `batchyard serve`, and in a Ray actor: every value here is a frozen,
picklable dataclass, and every call carries a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from batchyard.domain.attempt import AttemptKey, AttemptRequest, BucketAccess, PathMapping
from batchyard.domain.outcome import Outcome


@dataclass(frozen=True)
class Capacity:
    vcpu: float = 0.0
    memory_mb: int = 0


@dataclass(frozen=True)
class AgentInfo:
    id: str
    slots: int
    """How many attempts it runs at once (1 for a BatchCompute VM)."""
    capacity: Capacity = Capacity()
    labels: Mapping[str, str] = field(default_factory=dict)
    sandbox: bool = False
    """Whether attempts with mapped paths can run (bubblewrap is installed)."""
    sandbox_missing: str = "attempts with mapped paths cannot run here"
    """Why not, and what to do (when `sandbox` is False)."""
    heartbeat: float = 2.0
    """Seconds between heartbeats; the engine counts the agent lost after several missed
    (0: it never misses one — an agent in the engine's own process)."""
    queue: int = 0
    """Leases it takes beyond its slots, started in order as slots free up (0: none). The
    engine uses them only while attempts are short (see `orchestrator.fleet`): then the
    agent never waits for the engine between two attempts, and the engine records many
    outcomes per transaction."""
    hosts_only_vms: bool = False
    """A provider's agent (`ports.provider`): its slots run only the VMs reserved on it,
    none serve tasks on no cluster directly."""


@dataclass(frozen=True)
class TaskPart:
    """What every attempt of one task shares: sent once per batch, not once per attempt."""

    job_id: str
    task: str
    instance_count: int
    command_line: str
    package_path: str
    env_vars: Mapping[str, str]
    timeout: int
    stdout_dir: str
    stderr_dir: str
    tenant: str = "default"
    buckets: tuple[BucketAccess, ...] = ()
    cluster_id: str = ""
    inputs: tuple[PathMapping, ...] = ()
    outputs: tuple[PathMapping, ...] = ()
    logs: tuple[PathMapping, ...] = ()
    memory_bytes: int = 0
    instance_type: str = ""


@dataclass(frozen=True)
class Lease:
    """One attempt handed to an agent: `part` indexes `LeaseBatch.parts`."""

    part: int
    instance_id: int
    attempt: int
    token: int
    """The fencing token: unique per lease; only the current one's outcome counts."""
    retry_count: int = 0
    worker: str = ""
    """The VM it runs on (its BATCH_COMPUTE_WORKER_ID); "": the agent itself."""


@dataclass(frozen=True)
class LeaseBatch:
    parts: tuple[TaskPart, ...]
    leases: tuple[Lease, ...]

    def key(self, lease: Lease) -> AttemptKey:
        part = self.parts[lease.part]
        return AttemptKey(part.job_id, part.task, lease.instance_id, lease.attempt)

    def requests(self) -> Iterator[tuple[Lease, AttemptRequest]]:
        """Each lease with the full request the runner takes."""
        for lease in self.leases:
            part = self.parts[lease.part]
            yield lease, AttemptRequest(
                key=self.key(lease), instance_count=part.instance_count,
                command_line=part.command_line, package_path=part.package_path,
                env_vars=dict(part.env_vars), timeout=part.timeout,
                stdout_dir=part.stdout_dir, stderr_dir=part.stderr_dir,
                retry_count=lease.retry_count, tenant=part.tenant, buckets=part.buckets,
                cluster_id=part.cluster_id, worker_id=lease.worker, inputs=part.inputs,
                outputs=part.outputs, logs=part.logs, memory_bytes=part.memory_bytes,
                instance_type=part.instance_type)


def batch_of(requests: Sequence[tuple[int, AttemptRequest]], worker: str = "") -> LeaseBatch:
    """A batch from (token, request) pairs: requests of one task share one part. `worker`:
    the VM they all run on (else each request's own `worker_id`)."""
    parts: dict[tuple[str, str], int] = {}
    shared: list[TaskPart] = []
    leases = []
    for token, request in requests:
        key = request.key
        index = parts.get((key.job_id, key.task))
        if index is None:
            index = parts[key.job_id, key.task] = len(shared)
            shared.append(TaskPart(
                key.job_id, key.task, request.instance_count, request.command_line,
                request.package_path, request.env_vars, request.timeout, request.stdout_dir,
                request.stderr_dir, request.tenant, request.buckets, request.cluster_id,
                request.inputs, request.outputs, request.logs, request.memory_bytes,
                request.instance_type))
        leases.append(Lease(index, key.instance_id, key.attempt, token, request.retry_count,
                            worker or request.worker_id))
    return LeaseBatch(tuple(shared), tuple(leases))


@dataclass(frozen=True)
class Report:
    """How one leased attempt ended."""

    key: AttemptKey
    token: int
    outcome: Outcome


class AgentListener(Protocol):
    """The engine's side: agents (or their transports) call it from any thread."""

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        """Attempts that ended (each exactly once per lease)."""
        ...

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        """The agent is alive and runs the attempts with these tokens."""
        ...

    def gone(self, agent_id: str, reason: str) -> None:
        """The agent is known dead (its process exited, its actor died): its attempts are
        lost now, without waiting for heartbeats to stop."""
        ...


class Agent(Protocol):
    """The engine's handle on one agent, wherever it runs."""

    def info(self) -> AgentInfo: ...

    def lease(self, batch: LeaseBatch) -> None:
        """Start these attempts, in order, as slots free up (the engine never leases more
        than `slots + queue` at once)."""
        ...

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        """Kill these attempts if they run; each still reports (ErrorCode STOPPED)."""
        ...

    def forget(self, job_id: str) -> None:
        """The job was deleted: remove what the agent keeps of it (work folders)."""
        ...

    def shutdown(self) -> None:
        """Kill what runs (re-run next start) and stop."""
        ...


AgentsFactory = Callable[[AgentListener], Sequence[Agent]]
"""What the engine takes to make its agents, given where they report (the engine itself)."""


__all__ = [
    "Agent",
    "AgentInfo",
    "AgentListener",
    "AgentsFactory",
    "Capacity",
    "Lease",
    "LeaseBatch",
    "Report",
    "TaskPart",
    "batch_of",
]
