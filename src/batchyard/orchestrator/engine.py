"""The engine: accepts jobs and user operations, runs the control loop, reports state.

One thread runs the loop. Each step, in one store transaction: apply the attempt outcomes
reported since the last step, settle task/job states, launch waiting instances into the
agents' free slots. Steps are woken by events (submission, outcome, operation) and by a slow
safety timer; while work keeps coming they start at most every STEP_SPACING seconds, so
that one transaction records all that arrived meanwhile. Every mutation holds the engine
lock, so steps and operations never interleave.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.buckets import Grant
from batchyard.domain.clusters import VMState, check_instance_types
from batchyard.domain.instance_types import (
    DEFAULT_CATALOGUE,
    Capacity,
    Catalogue,
    InstanceType,
    Machine,
    check_job_types,
    infeasible,
)
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.pending import Pending, not_offered, on_reserved
from batchyard.domain.records import AttemptRecord, InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.retry import MOST_LOST, Verdict, decide
from batchyard.domain.spec import JobDescription, parse_job
from batchyard.domain.states import TERMINAL, State
from batchyard.errors import ABSENT, NotFound, Problem, SpecError
from batchyard.ids import new_job_id
from batchyard.orchestrator import operations
from batchyard.orchestrator.autoclusters import RESERVE_SECONDS, AutoClusters
from batchyard.orchestrator.buckets import TenantBuckets
from batchyard.orchestrator.caches import ReleasedJobs, SpecCache
from batchyard.orchestrator.clusters import CLUSTER_QUOTA, VM_QUOTA, Clusters
from batchyard.orchestrator.fleet import DEFAULT_POOL, Cost, Fleet, Leased, Order
from batchyard.orchestrator.launching import LaunchQueues, attempt_request
from batchyard.orchestrator.listeners import Deliveries, WaitWakeups
from batchyard.orchestrator.pending import Explainer
from batchyard.orchestrator.placement import NO_DEMAND, Demand, Placement
from batchyard.orchestrator.reserved_groups import MOST_VMS, ReservedGroups
from batchyard.orchestrator.settling import settle_job
from batchyard.ports.agents import AgentsFactory, Report
from batchyard.ports.listeners import TransitionListener
from batchyard.ports.meter import EngineMeter, result_of
from batchyard.ports.objects import ObjectStore
from batchyard.ports.provider import Held, Provider
from batchyard.ports.provider import Shape as Reservation
from batchyard.ports.store import (
    AttemptEnd,
    IdempotencyToken,
    InstanceRow,
    JobRow,
    LaunchRow,
    NewJob,
    StaleBatch,
    StateStore,
    StateTransaction,
)

log = logging.getLogger(__name__)

Arrival = tuple[str, Report]
"""A report and the agent it came from."""
Launch = tuple[AttemptRequest, Order]
"""An attempt to lease, with its instance's place in the launch order."""


class Launching(NamedTuple):
    """What a step hands to the agents once it committed."""

    launches: dict[str, list[Launch]]
    """By pool (cluster id, "" for none)."""
    best: dict[str, dict[str, Order]]
    """By pool, each tenant's best instance not leased before this step, when agents hold
    leases queued that it may have to go before (empty when none do): those are taken
    back."""


RESERVED_POOL = "reserved"
"""Where the VMs a failed task keeps (AutoCluster ReserveOnFail) are placed: no lease goes
there."""
RECALLED_MESSAGE = ("taken back from its agent's queue before it started: an instance "
                    "that goes first in the launch order came")
SAFETY_INTERVAL = 1.0
STEP_SPACING = 0.010
"""Seconds from one step's start to the next while work keeps coming: the outcomes and
submissions of that time are recorded in one transaction (a group commit). The first step
after a quiet spell starts at once."""
MOST_WAITING = 256
"""Reports waiting that start a step at once, spacing or not."""
MOST_TRIES = 3
"""Failed steps after which a report that keeps failing on its own is dropped."""


def job_line(record: JobRecord) -> str:
    """`job job-… (name) Finished in 12.3s, tenant alice`: a job's start or end, for the log."""
    text = f"job {record.id} ({record.name}) {record.state.value}"
    if record.ended is not None and record.started is not None:
        text += f" in {(record.ended - record.started).total_seconds():.1f}s"
    return f"{text}, tenant {record.tenant}"


ABANDONED_MESSAGE = ("left {state} by a batchyard run that ended (Ctrl-C or kill -9?); "
                     "batchyard start {job_id} --wait finishes it")


@dataclass(frozen=True)
class Abandoned:
    """A job left Waiting or Running by an engine that ended, as found at start."""

    job_id: str
    name: str
    state: State


class Engine:
    """Runs BatchCompute jobs: the one object the CLI, the API and tests talk to."""

    def __init__(self, store: StateStore, objects: ObjectStore, agents: AgentsFactory,
                 clock: Callable[[], float] = time.time,
                 closers: tuple[Callable[[], None], ...] = (),
                 grants: Mapping[str, Grant] | None = None,
                 listeners: Sequence[TransitionListener] = (),
                 weights: Mapping[str, float] | None = None,
                 catalogue: Catalogue = DEFAULT_CATALOGUE, machine: Machine | None = None,
                 capacity: Capacity = "slots", vm_quota: int = VM_QUOTA,
                 cluster_quota: int = CLUSTER_QUOTA,
                 reserve_seconds: float = RESERVE_SECONDS,
                 provider: Provider | None = None, autocluster_vms: int = MOST_VMS) -> None:
        """`agents`: the agents of this machine (the local provider); `provider`: a provider
        that reserves every VM on nodes of its own (then `agents` is its `agents`)."""
        self.store = store
        self.provider = provider
        self.catalogue = catalogue
        """The instance types offered; a task naming another one is refused."""
        self.machine = machine
        """The machine the VMs run on (None: unknown, every known type is feasible)."""
        self.capacity = capacity
        self.buckets = TenantBuckets(store, grants or {})
        self.objects = objects
        self.clock = clock
        self._closers = closers
        self._lock = threading.RLock()
        self._wakeups = WaitWakeups()
        self._deliveries = Deliveries([self._wakeups, *listeners])
        self._wake = threading.Event()
        self._reports: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self._liveness: queue.SimpleQueue[tuple[str, Sequence[int] | str]] = queue.SimpleQueue()
        """Heartbeats (the agent, the leases it runs) and deaths (the agent, why) not applied
        yet, in the order they came: a restarted agent's first heartbeat follows the death
        of the process before it, and must be applied after it."""
        strict = machine if capacity == "strict" and provider is None else None
        self.fleet = Fleet(agents(self), clock(),
                           machine=_cost_of_machine(strict) if strict else None,
                           cost_of=lambda request: _cost(catalogue.of(request.instance_type)))
        """The agents, the VMs they host and the attempts each holds."""
        self._autoclusters = AutoClusters(reserve=self._reserve_vm, unreserve=self.fleet.remove,
                                          clock=clock, reserve_seconds=reserve_seconds)
        """The VMs of the tasks on no cluster, one group per task."""
        self._tries: Counter[AttemptKey] = Counter()
        """Reports that were in a failed step, and how many failed steps they were in."""
        self._queues = LaunchQueues(weights)
        """The best Waiting instances of each tenant and pool in launch order; invalidated
        whenever something may change that order: a submission, an operation, a retry, a
        settle."""
        self._specs = SpecCache(store)
        """Parsed descriptions and tenants of the jobs used most recently (bounded)."""
        self._started_or_ended: set[str] = set()
        """Jobs the current step started or ended: logged once its transaction committed."""
        self._released = ReleasedJobs()
        self._closing = False
        self.abandoned: list[Abandoned] = []
        """Jobs `start(abandon=True)` found active and Stopped."""
        self._meter: EngineMeter | None = None
        self._thread = threading.Thread(target=self._loop, name="batchyard-engine", daemon=True)
        self._busy_vms: frozenset[str] = frozenset()
        """Cluster VMs running an instance as of the last step (read from any thread)."""
        self._vm_leases: Mapping[str, Leased] = {}
        """What each of them runs (its oldest lease), of the same step."""
        self._cluster_env: dict[str, Mapping[str, str]] = {}
        """Each cluster's EnvVars, as launches last read them (cleared on any change)."""
        self.placement = Placement(self.fleet, self._vm_shape, provider=provider)
        """Cluster VMs on the agents (the data plane)."""
        self._reserved: ReservedGroups | None = None
        """The AutoClusters whose VMs the provider reserves (with a provider only)."""
        self._groups_seen = -1
        """The launch queues' generation the reserved groups were last synced at."""
        self._swept = False
        """Whether the earlier server's unclaimed reservations were given up (once)."""
        if provider is not None:
            self._reserved = ReservedGroups(provider, self.fleet, self._task_shape,
                                            self._reserving, clock, most_vms=autocluster_vms,
                                            reserve_seconds=reserve_seconds,
                                            weights=self._queues.weights)
            provider.watch(self._clusters_changed)
        self._explainer = Explainer(store, self._specs, self.fleet, self._lock,
                                    self._queues.weights, self._reserved_reason)
        """Why what waits is waiting (`why_pending`)."""
        self.clusters = Clusters(
            store, clock, changed=self._clusters_changed, busy=lambda cluster_id: self._busy_vms,
            check_types=lambda description: check_instance_types(description, catalogue,
                                                                 self.infeasible),
            vm_quota=vm_quota, cluster_quota=cluster_quota)
        """Clusters and their VMs (the control plane); every change wakes the loop."""

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self, abandon: bool = False, loop: bool = True) -> Engine:
        """Reconcile attempts lost by a previous run, then start the control loop.

        `abandon`: the jobs still Waiting or Running (left so by an engine that ended) are
        Stopped rather than resumed, and listed in `abandoned` — for `batchyard run`, which
        must not finish other jobs silently in the background; a server resumes them.
        `loop`: False starts no loop thread; the caller then calls `step()` itself (tests on
        `batchyard.testing`, deterministic and without sleeping).
        """
        with self._lock, self._transaction() as tx:
            if abandon:
                self.abandoned = self._abandon(tx, self.clock())
            self._requeue_lost(tx, self.clock(), self._inherited())
        self._deliveries.deliver()
        self._queues.invalidate()
        if loop:
            self._thread.start()
            self.wake()
        return self

    def close(self) -> None:
        """Stop the loop and the agents. Running attempts are killed and re-run next start."""
        self._closing = True
        self.wake()
        if self._thread.is_alive():
            self._thread.join()
        self.fleet.shutdown()
        try:
            with self._lock, self.store.transaction() as tx:
                self.placement.stop(tx, self.clock())
        except Exception:  # the VMs are placed again by the next engine anyway
            log.exception("could not record that the cluster VMs stopped")
        if self.provider is not None:
            self.provider.shutdown()
        self.store.close()
        for closer in self._closers:
            closer()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def wake(self) -> None:
        self._wake.set()

    def running_on(self, vm_ids: Collection[str],
                   tenant: str | None = None) -> dict[str, AttemptKey]:
        """The attempt each of these cluster VMs runs, as of the engine's last step (VMs
        idle, unknown or running another tenant's instance are left out). Any thread; the
        database does not know it: an instance's `node` is only written when its attempt
        ends (the runner's host name), an attempt's `worker` (the VM id) likewise."""
        leases = self._vm_leases
        running = {vm_id: leases[vm_id] for vm_id in vm_ids if vm_id in leases}
        return {vm_id: leased.key for vm_id, leased in running.items()
                if tenant is None or leased.tenant == tenant}

    def listen(self, listener: TransitionListener) -> None:
        """Tell `listener` about every transition committed from now on (see ports)."""
        self._deliveries.add(listener)

    def measure(self, meter: EngineMeter) -> None:
        """Tell `meter` of every step and attempt end from now on (see `ports.meter`)."""
        self._meter = meter

    @contextmanager
    def _transaction(self) -> Iterator[StateTransaction]:
        """A store transaction whose transitions, once committed, wait to be delivered."""
        with self.store.transaction() as tx:
            yield tx
        transitions = tx.transitions
        self._deliveries.committed(transitions)
        self._autoclusters.moved(transitions, self._reserving)
        if self._reserved is not None:
            self._reserved.moved(transitions)

    def table_sizes(self) -> dict[str, int]:
        """Entries in each table the engine keeps about jobs and attempts: for the bench and
        the tests that show none of them grows with the number of jobs run."""
        return {"specs": len(self._specs), "released": len(self._released),
                "tries": len(self._tries), **self.fleet.sizes(),
                **self._autoclusters.sizes()}

    # ---- submissions and operations ------------------------------------------------------

    def submit(self, job: JobDescription | Mapping[str, Any], tenant: str = "default",
               token: IdempotencyToken | None = None) -> str:
        """Store a job description; returns the new job id.

        `job`: parsed at the edge (a JobDescription, used as is) or a raw mapping (parsed
        here). Raises SpecError for an invalid description, BucketForbidden for a bucket
        the tenant may not use, TokenTaken when `token` already made a job.
        """
        spec = job if isinstance(job, JobDescription) else parse_job(job)
        self._check_sandbox(spec)
        self._check_types(spec)
        problems = self.clusters.check_job(spec, tenant)
        if problems:
            raise SpecError(problems)
        claims = self.buckets.claims(tenant, spec)
        job_id = new_job_id()
        # Only new rows are written, so no engine lock: a busy control loop does not hold up
        # submissions (the database serialises writers; concurrent submissions share one
        # transaction).
        self.store.create_job(NewJob(job_id, tenant, spec, self.clock(), token, claims))
        self._deliveries.created(job_id, tenant)
        self.buckets.submitted(tenant)
        self._specs.remember(job_id, spec, tenant)
        self._queues.invalidate()  # the launch order may change
        if self.fleet.has_vms():
            self.placement.changed()  # a tenant's share of the slots may change
        self.wake()
        return job_id

    def _check_sandbox(self, spec: JobDescription) -> None:
        """Refuse a job with mapped paths when the agents cannot sandbox its attempts."""
        mapped = [name for name, task in spec.DAG.Tasks.items() if task.uses_mappings]
        if not mapped:
            return
        sandbox, missing = self.fleet.sandbox()
        if not sandbox:
            raise SpecError([Problem("SandboxUnavailable", f"DAG.Tasks.{name}", ABSENT,
                                     missing) for name in mapped])

    def _check_types(self, spec: JobDescription) -> None:
        """Refuse unknown instance types, and types no machine here can ever supply."""
        problems = check_job_types(spec, self.catalogue, self.infeasible)
        if problems:
            raise SpecError(problems)

    def infeasible(self, shape: InstanceType) -> str | None:
        """Why no VM of `shape` can ever run here, or None (always None without a machine)."""
        return None if self.machine is None else infeasible(shape, self.machine, self.capacity)

    def instance_type_of(self, spec: JobDescription, task: str) -> InstanceType:
        """The instance type of the VMs of `task`'s AutoCluster: the one it names, or the
        default when it names none (or one the catalogue no longer has). A task on a
        cluster runs on its groups' types instead (the VM's, with each lease)."""
        return self.catalogue.of(spec.DAG.Tasks[task].instance_type)

    def stop(self, job_id: str, tenant: str | None = None) -> None:
        with self._lock:
            self.fleet.cancel(self._mutate(operations.stop, job_id, tenant))
        self._deliveries.deliver()
        self._log_jobs({job_id})

    def restart(self, job_id: str, tenant: str | None = None) -> None:
        with self._lock:
            self._mutate(operations.restart, job_id, tenant)
        self._deliveries.deliver()
        self.wake()

    def delete(self, job_id: str, tenant: str | None = None) -> None:
        with self._lock:
            owner = self._specs.job(job_id).tenant  # NotFound as _mutate for a missing job
            self._mutate(operations.delete, job_id, tenant)
            self._forget(job_id)
        self._wakeups.wake_all()  # a deletion moves no state, but a waiter must see it
        self._deliveries.removed(job_id, owner)

    def change_priority(self, job_id: str, priority: int, tenant: str | None = None) -> None:
        with self._lock:
            self._mutate(operations.change_priority, job_id, tenant, priority)

    def _mutate(self, operation: Callable[..., operations.Result], job_id: str,
                tenant: str | None, *args: Any) -> list[AttemptKey]:
        self._queues.invalidate()
        with self._transaction() as tx:
            result = operation(tx, self._owned_job(tx, job_id, tenant), self.clock(), *args)
            if result.settle:
                self._settle(tx, job_id)
            tx.flush_events()
            return result.cancel

    @staticmethod
    def _owned_job(tx: StateTransaction, job_id: str, tenant: str | None) -> JobRow:
        row = tx.job_row(job_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound(f"job {job_id} does not exist")
        return row

    # ---- reads ---------------------------------------------------------------------------

    def job(self, job_id: str, tenant: str | None = None) -> JobRecord:
        record = self.store.job(job_id, tenant)
        if record is None:
            raise NotFound(f"job {job_id} does not exist")
        return record

    def tasks(self, job_id: str, tenant: str | None = None) -> list[TaskRecord]:
        self._exists(job_id, tenant)
        return self.store.tasks(job_id)

    def instances(self, job_id: str, task: str, tenant: str | None = None) -> list[InstanceRecord]:
        self._exists(job_id, tenant)
        return self.store.instances(job_id, task)

    def attempts(self, job_id: str, task: str, instance_id: int,
                 tenant: str | None = None) -> list[AttemptRecord]:
        self._exists(job_id, tenant)
        return self.store.attempts(job_id, task, instance_id)

    def why_pending(self, job_id: str, tenant: str | None = None) -> dict[str, Pending]:
        """Why the job's tasks with Waiting instances have them (by task name; see
        `domain.pending`). NotFound unless the job exists (and is `tenant`'s)."""
        return self._explainer.reasons(job_id, self.tasks(job_id, tenant))

    def explain_tasks(self, job_id: str, tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
        """These tasks of the job, each with why it has Waiting instances, if it has."""
        return self._explainer.tasks(job_id, tasks)

    def explain_instances(self, job_id: str, task: str, instances: Sequence[InstanceRecord]
                          ) -> list[InstanceRecord]:
        """These instances of the task, each Waiting one with why."""
        return self._explainer.instances(job_id, task, instances)

    def _exists(self, job_id: str, tenant: str | None) -> None:
        """NotFound unless the job exists (and is `tenant`'s): its state only, not its record
        (whose description the progress display would parse again at every refresh)."""
        if self.store.job_state(job_id, tenant) is None:
            raise NotFound(f"job {job_id} does not exist")

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job is Finished, Failed or Stopped (or `timeout` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self._state(job_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if state in TERMINAL or (remaining is not None and remaining <= 0):
                return self._final_or_current(job_id)
            self._wakeups.wait(0.5 if remaining is None else min(0.5, remaining))

    def _state(self, job_id: str) -> State:
        released = self._released.get(job_id)
        state = released.state if released is not None else self.store.job_state(job_id)
        if state is None:
            raise NotFound(f"job {job_id} does not exist")
        return state

    def _final_or_current(self, job_id: str) -> JobRecord:
        """The job's record; its final one if AutoRelease deleted it, even between our reads
        (the final record is kept before the row is deleted)."""
        released = self._released.get(job_id)
        if released is not None:
            return released
        try:
            return self.job(job_id)
        except NotFound:
            released = self._released.get(job_id)
            if released is None:
                raise
            return released

    # ---- what agents report (AgentListener; any thread) ----------------------------------

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        """Attempts an agent ran to their end: queued for the loop, which is woken."""
        for report in reports:
            self._reports.put((agent_id, report))
        self._wake.set()

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        """The agent is alive (applied by the loop, before it looks for silent agents)."""
        self._liveness.put((agent_id, tuple(running)))

    def gone(self, agent_id: str, reason: str) -> None:
        """The agent died: its attempts are counted lost at the next step."""
        self._liveness.put((agent_id, reason))
        self._wake.set()

    # ---- the control loop ----------------------------------------------------------------

    def _loop(self) -> None:
        last = -STEP_SPACING
        while not self._closing:
            self._wake.wait(SAFETY_INTERVAL)
            pause = last + STEP_SPACING - time.monotonic()
            if pause > 0 and self._reports.qsize() < MOST_WAITING and not self._closing:
                time.sleep(pause)  # group commit: what comes meanwhile joins this step
            self._wake.clear()
            if self._closing:
                break
            last = time.monotonic()
            try:
                self.step()
            except Exception:  # keep the loop alive; the next step retries
                log.exception("engine step failed")
                time.sleep(0.1)

    def step(self) -> None:
        """Apply outcomes, settle states, launch into free slots — one transaction.

        A step that fails is rolled back and its reports are tried again. Reports that have
        failed once are then applied one per transaction, and one that fails MOST_TRIES
        times is dropped (logged), so one bad report cannot stop the engine for good.
        """
        began = time.perf_counter()
        with self._lock:
            self._count_lost()
            self._autoclusters.expire()
            if self._reserved is not None:
                self._reserved.expire()
            reports = self._drain()
            if (not reports and self.fleet.free_slots() <= 0 and not self.fleet.queueing()
                    and not self._placing()):
                return  # a submission to a busy engine: nothing to record, nowhere to launch
            suspect = any(report.key in self._tries for _, report in reports)
            failure = None
            for batch in [[report] for report in reports] if suspect else [reports]:
                failure = self._try_step(batch) or failure
        self._deliveries.deliver()  # after AutoRelease, so `wait()` finds the final record
        if self._meter is not None:
            self._meter.stepped(time.perf_counter() - began)
        if failure is not None:
            raise failure

    def _try_step(self, batch: list[Arrival]) -> Exception | None:
        """A step with these reports; the error it failed with, if it did (its reports are
        tried again at the next step, or dropped). A batch of which the store cannot tell
        which attempts were current is applied again one report per transaction."""
        try:
            self._step_with(batch)
        except StaleBatch:
            failures = [self._try_step([arrival]) for arrival in batch]
            return next((failure for failure in failures if failure is not None), None)
        except Exception as error:
            self._retry_or_drop(batch)
            return error
        return None

    def _count_lost(self) -> None:
        """Agents gone or silent: each attempt they held is reported lost (re-run without
        using a retry, a bounded number of times; see `domain.retry`)."""
        now = self.clock()
        if self.provider is not None:
            self.fleet.add_agents(self.provider.agents(self), now)
        for agent_id, news in _drained(self._liveness):
            if isinstance(news, str):
                self._lose(agent_id, news)
            else:
                self.fleet.heartbeat(agent_id, news, now)
        for agent_id in self.fleet.expired(now):
            self._lose(agent_id, "stopped heartbeating")

    def _lose(self, agent_id: str, reason: str) -> None:
        held = self.fleet.lose(agent_id)
        if held:
            log.warning("agent %s %s: %d attempt(s) lost", agent_id, reason, len(held))
        evicted = self.fleet.evict(agent_id)  # a provider's node: its VMs go elsewhere
        if evicted and self._reserved is not None:
            log.warning("agent %s %s: its %d VM(s) are reserved again", agent_id, reason,
                        len(evicted))
            self.placement.evicted(self._reserved.evicted(evicted))
        for token, leased in held:
            self._reports.put((agent_id, Report(leased.key, token, Outcome(
                None, ErrorCode.LOST, f"attempt lost: agent {agent_id} {reason}"))))

    def _step_with(self, reports: list[Arrival]) -> None:
        landed = [(report, self.fleet.land(agent_id, report.token, report.key))
                  for agent_id, report in reports]  # their slots are free again
        fresh = [(report, leased) for report, leased in landed if leased is not None]
        if fresh and self.placement.waiting:
            self.placement.changed()  # a VM waiting for room takes a slot this frees
        for report, leased in fresh:
            outcome = report.outcome
            if outcome.started_at is not None and outcome.ended_at is not None:
                self.fleet.took(leased.agent,
                                (outcome.ended_at - outcome.started_at).total_seconds())
        try:
            finished, cancels, launching = self._transact(fresh)
        except Exception:
            self._queues.invalidate()
            self._started_or_ended.clear()
            for report, leased in fresh:  # nothing was recorded
                self.fleet.retake(report.token, leased)
            raise
        for _, report in reports:
            self._tries.pop(report.key, None)
        for report, leased in fresh:
            self._autoclusters.landed(leased.key.job_id, leased.key.task, leased.worker)
            if self._meter is not None:
                self._meter.ended(result_of(report.outcome, leased.recalled),
                                  _ran_for(report.outcome))
        self._dispatch(launching, cancels)
        if self.fleet.has_vms():
            self._vm_leases = self.fleet.vm_leases()
            self._busy_vms = frozenset(self._vm_leases)
        self._log_jobs(self._started_or_ended)
        self._started_or_ended.clear()
        self._release(finished)

    def _retry_or_drop(self, batch: list[Arrival]) -> None:
        for agent_id, report in batch:
            key = report.key
            self._tries[key] += 1
            if self._tries[key] < MOST_TRIES or len(batch) > 1:
                self._reports.put((agent_id, report))
                continue
            del self._tries[key]
            self.fleet.land(agent_id, report.token, key)
            log.error("dropped the report of attempt %s after %d failed steps; its instance "
                      "stays Running until the engine restarts and re-runs it", key, MOST_TRIES)

    def _transact(self, reports: list[tuple[Report, Leased]]
                  ) -> tuple[set[str], list[AttemptKey], Launching]:
        now = self.clock()
        with self._transaction() as tx:
            touched = self._apply(tx, reports, now)
            finished, cancels = self._settle_all(tx, touched)
            if self._placing():
                self._place(tx, now)
            launching, starting = self._launch(tx, now)
            more_finished, more_cancels = self._settle_all(tx, starting)
            tx.flush_events()
        return finished | more_finished, cancels + more_cancels, launching

    def _placing(self) -> bool:
        """Whether VMs may have to be placed, drained or reserved at this step."""
        return self.placement.due() or (self._reserved is not None
                                        and self._groups_seen != self._queues.generation)

    def _place(self, tx: StateTransaction, now: float) -> None:
        """Bring the VMs in line: cluster VMs with their rows, reserved AutoClusters with the
        tasks waiting for them."""
        if self._reserved is None or self.provider is None:
            self.placement.sync(tx, now, self._demand(tx))
        else:
            self._groups_seen = self._queues.generation
            ready = self._reserved.place(self.provider.ready())
            self.placement.sync_reserved(tx, now, ready)
            self._reserved.sync(tx)
            if not self._swept:  # what an earlier server reserved and no VM holds now
                self._swept = True
                self.provider.sweep()
        self._queues.keep(self.fleet.pools())

    def _drain(self) -> list[Arrival]:
        return _drained(self._reports)

    def _apply(self, tx: StateTransaction, reports: list[tuple[Report, Leased]], now: float
               ) -> dict[str, set[str] | None]:
        """Record each reported attempt and move its instance as the retry rules decide
        (one batch); returns, by job, the tasks whose state this may have changed."""
        judged = [(leased, report.outcome, *self._judge(tx, report.outcome, leased, now))
                  for report, leased in reports]
        ending = [end for _, _, end, _ in judged if end.target is not None]
        moved = iter(tx.end_attempts(ending, now))
        touched: dict[str, set[str] | None] = {}
        checked: set[tuple[str, str]] = set()
        recorded = []
        for leased, outcome, end, verdict in judged:
            key = leased.key
            ended = verdict.target is not None and next(moved)
            ran = not leased.recalled or outcome.started_at is not None
            if ran and (ended or tx.instance_row(key.job_id, key.task, key.instance_id)):
                # not when the job is gone; a recalled attempt as it really ended
                ran_as = outcome if leased.recalled else end.outcome
                if leased.worker:
                    ran_as = replace(ran_as, worker=leased.worker)
                recorded.append((key, ran_as))
            if verdict is not Verdict.FINISH:
                self._queues.invalidate()  # an instance may be Waiting again, or its job failing
            if ended and (verdict is Verdict.FAIL or (key.job_id, key.task) not in checked):
                checked.add((key.job_id, key.task))  # once per task: the batch is written
                if self._may_change_task(tx, key, verdict):
                    _add(touched, key.job_id, key.task)
        tx.record_attempts(recorded)
        return touched

    def _judge(self, tx: StateTransaction, outcome: Outcome, leased: Leased, now: float
               ) -> tuple[AttemptEnd, Verdict]:
        """How the attempt's end changes its instance (a deleted job's: not at all)."""
        key, retry_count = leased.key, leased.retry_count
        spec = self._known_spec(key.job_id)
        if spec is None:
            return _attempt_end(key, outcome, now, retry_count, Verdict.DISCARD), Verdict.DISCARD
        if leased.recalled and not outcome.succeeded:  # as if it had never been leased
            return AttemptEnd(key, Outcome(None, started_at=outcome.started_at), retry_count,
                              now, target=State.WAITING, message=RECALLED_MESSAGE
                              ), Verdict.REQUEUE
        if outcome.error_code is not ErrorCode.LOST:
            verdict = decide(outcome, retry_count, spec.DAG.Tasks[key.task].MaxRetryCount)
            return _attempt_end(key, outcome, now, retry_count, verdict), verdict
        row = tx.instance_row(key.job_id, key.task, key.instance_id)
        lost = row.lost if row is not None else 0
        verdict = decide(outcome, retry_count, 0, lost)
        if verdict is Verdict.FAIL:
            outcome = replace(outcome, error_message=f"{outcome.error_message}; lost "
                              f"{lost + 1} times, not re-run again")
        end = _attempt_end(key, outcome, now, retry_count, verdict)
        return replace(end, lost=lost + 1), verdict

    def _may_change_task(self, tx: StateTransaction, key: AttemptKey, verdict: Verdict) -> bool:
        """Whether this instance's new state can change its task's (and so its job's) state.

        A Running task stays Running while any instance is active, unless one failed; an
        attempt of the task still in flight proves one is, else an index lookup tells.
        Skipping the settle saves counting every instance of the job on each outcome.
        """
        if verdict is Verdict.FAIL:
            return True
        if self.fleet.running(key.job_id, key.task) > 0:
            return False
        return not tx.has_active_instances(key.job_id, key.task)

    def _settle_all(self, tx: StateTransaction, job_ids: Mapping[str, set[str] | None]
                    ) -> tuple[set[str], list[AttemptKey]]:
        """Settle each job: only the given tasks of it, or all of them (None)."""
        finished: set[str] = set()
        cancels: list[AttemptKey] = []
        if job_ids:
            self._queues.invalidate()  # tasks may become ready, jobs end
        for job_id in sorted(job_ids):
            settlement = settle_job(tx, job_id, self._specs.job(job_id), self.clock(),
                                    job_ids[job_id])
            cancels += settlement.to_cancel
            if settlement.finished:
                finished.add(job_id)
            if settlement.moved_to is State.RUNNING or settlement.moved_to in TERMINAL:
                self._started_or_ended.add(job_id)
        return finished, cancels

    def _log_jobs(self, job_ids: set[str]) -> None:
        """One INFO line per job that started or ended (`serve` shows them, `run` does not)."""
        if not job_ids or not log.isEnabledFor(logging.INFO):
            return
        for job_id in sorted(job_ids):
            record = self.store.job(job_id)
            if record is not None:
                log.info("%s", job_line(record))

    def _settle(self, tx: StateTransaction, job_id: str) -> None:
        self._settle_all(tx, {job_id: None})

    def _launch(self, tx: StateTransaction, now: float
                ) -> tuple[Launching, dict[str, set[str] | None]]:
        """Start the best waiting instances of each pool with room; also returns jobs whose
        tasks start running."""
        running = self.fleet.running_by_tenant()
        queueing = self.fleet.queueing()
        launching = Launching({}, {})
        starting: dict[str, set[str] | None] = {}
        room = self.fleet.free_by_pool()
        for pool in sorted(room.keys() | queueing):
            queue = self._queues.of(pool, None if self._reserved is None
                                    else self._reserved.task_of(pool))
            admit = self._admission() if pool == DEFAULT_POOL else None
            picked = queue.take(tx, room[pool], running, now, admit) if pool in room else []
            best = queue.heads(tx) if pool in queueing else {}
            launches = launching.launches[pool] = []
            for row in picked:
                candidate = row.candidate
                if row.starts_task:
                    _add(starting, candidate.job_id, candidate.task)
                order = candidate.order_key()
                if pool in queueing and (candidate.tenant not in best
                                         or order < best[candidate.tenant]):
                    best[candidate.tenant] = order
                launches.append((self._request(tx, row), order))
            if best:
                launching.best[pool] = best
        return launching, starting

    def _admission(self) -> Callable[[LaunchRow], bool] | None:
        """In strict capacity, what admits instances on the agents' own slots while the
        machine has their InstanceType's vCPU and memory left (None: not counted)."""
        left = self.fleet.left()
        if left is None:
            return None
        budget = [left]

        def admit(row: LaunchRow) -> bool:
            spec = self._spec(row.candidate.job_id)
            cost = _cost(self.instance_type_of(spec, row.candidate.task))
            if not cost.within(budget[0]):
                return False
            budget[0] -= cost
            return True
        return admit

    def _dispatch(self, launching: Launching, cancels: list[AttemptKey]) -> None:
        self.fleet.cancel(cancels)
        if launching.best:  # before the new leases: they go ahead of those taken back
            self.fleet.recall(launching.best)
        for pool, launches in launching.launches.items():
            self.fleet.lease(launches, pool)

    def _release(self, finished: set[str]) -> None:
        """AutoRelease: delete jobs that reached Finished (keeping their final record for wait)."""
        for job_id in finished:
            if not self._spec(job_id).AutoRelease:
                continue
            record = self.job(job_id)
            self._released.put(job_id, record)
            with self.store.transaction() as tx:
                tx.delete_job(job_id)
            self._forget(job_id)
            self._deliveries.removed(job_id, record.tenant)

    def _forget(self, job_id: str) -> None:
        """A deleted job: drop its description, its VMs and what the agents keep of it."""
        self._specs.forget(job_id)
        self._autoclusters.forget(job_id)
        if self._reserved is not None:
            self._reserved.forget(job_id)
        self.fleet.forget(job_id)

    def _demand(self, tx: StateTransaction) -> Demand:
        """What instances on no cluster use of the agents' slots and want, per tenant
        (cluster VMs share the slots with them fairly); nothing to weigh while no VM is
        placed or wanted."""
        if not self.fleet.has_vms() and not tx.vms(states=[VMState.PENDING]):
            return NO_DEMAND
        waiting = {row.candidate.tenant for row in tx.launch_rows(1, 1, "")}
        return Demand(self.fleet.default_running(), waiting, self._queues.weights)

    def _clusters_changed(self) -> None:
        """A cluster or VM changed (any thread): place, drain and launch again."""
        self.placement.changed()
        self._cluster_env.clear()
        self._queues.invalidate()
        self.wake()

    def _vm_shape(self, name: str) -> tuple[Cost, int]:
        """What a VM of InstanceType `name` takes of the machine, and its memory in bytes."""
        shape = self.catalogue.of(name)
        return _cost(shape), shape.memory_bytes

    def _reserve_vm(self, vm: str, key: tuple[str, str]) -> bool:
        """Keep a VM of a failed task (ReserveOnFail): placed, idle, holding its room."""
        spec = self._known_spec(key[0])
        shape = self.catalogue.default if spec is None else self.instance_type_of(spec, key[1])
        return self.fleet.place(vm, RESERVED_POOL, held=True, cost=_cost(shape)) is not None

    def _group_size(self, spec: JobDescription, task: str) -> int:
        """The VMs of a task's AutoCluster: min(InstanceCount, the agents' slots, and in
        strict capacity how many of its InstanceType the machine holds)."""
        size = min(spec.DAG.Tasks[task].InstanceCount, self.fleet.room()[1])
        if self.capacity == "strict" and self.machine is not None:
            shape = self.instance_type_of(spec, task)
            whole = _cost_of_machine(self.machine)
            size = min(size, int(min(whole.vcpu // max(shape.vcpu, 1),
                                     whole.memory_mb // max(shape.memory_mb, 1))))
        return size

    def _task_shape(self, job_id: str, task: str) -> tuple[Reservation, int] | None:
        """A task's InstanceType as a provider reserves it, and its InstanceCount (None: the
        job is gone)."""
        spec = self._known_spec(job_id)
        if spec is None or task not in spec.DAG.Tasks:
            return None
        shape = self.instance_type_of(spec, task)
        return (Reservation(shape.name, shape.vcpu, shape.memory_bytes),
                spec.DAG.Tasks[task].InstanceCount)

    def _reserved_reason(self, job_id: str, task: str) -> Pending | None:
        """Why a task on no cluster waits for its reserved AutoCluster (None: VMs come from
        this machine's agents). Any thread: reads the groups under the engine's lock."""
        if self.provider is None or self._reserved is None:
            return None
        name = self.instance_type_of(self._spec(job_id), task).name
        if not self.provider.offers(name):
            return not_offered(name)
        with self._lock:
            size, vms = self._reserved.vms_of(job_id, task)
            placed = [vm for vm in vms if self.fleet.placed(vm)]
            busy = self.fleet.busy()
        return on_reserved(name, size, len(placed), sum(vm in busy for vm in placed))

    def _reserving(self, job_id: str, task: str) -> bool:
        """Whether the task's AutoCluster asks to keep its VMs when it fails."""
        spec = self._known_spec(job_id)
        return (spec is not None and task in spec.DAG.Tasks
                and spec.DAG.Tasks[task].AutoCluster.get("ReserveOnFail") is True)

    def _request(self, tx: StateTransaction, row: LaunchRow) -> AttemptRequest:
        candidate = row.candidate
        known = self._specs.job(candidate.job_id)
        task = known.spec.DAG.Tasks[candidate.task]
        if task.ClusterId:  # its VM's InstanceType and name come with its lease (Fleet.lease)
            return attempt_request(row, known, self.buckets.reachable(known.tenant),
                                   task.ClusterId,
                                   cluster_env=self._environment_of(tx, task.ClusterId))
        if self._reserved is not None:  # its VM's name comes with its lease (Fleet.lease)
            return attempt_request(row, known, self.buckets.reachable(known.tenant),
                                   self._reserved.group_id(candidate.job_id, candidate.task),
                                   "", self.instance_type_of(known.spec, candidate.task))
        cluster, worker = self._autoclusters.worker(
            candidate.job_id, candidate.task,
            lambda: self._group_size(known.spec, candidate.task))
        return attempt_request(row, known, self.buckets.reachable(known.tenant), cluster,
                               worker, self.instance_type_of(known.spec, candidate.task))

    def _environment_of(self, tx: StateTransaction, cluster_id: str) -> Mapping[str, str]:
        """The cluster's EnvVars (read once per change of any cluster)."""
        environment = self._cluster_env.get(cluster_id)
        if environment is None:
            row = tx.cluster(cluster_id)
            environment = self._cluster_env[cluster_id] = (
                dict(row.description.EnvVars) if row is not None else {})
        return environment

    def _known_spec(self, job_id: str) -> JobDescription | None:
        """The description of a job, or None if it was deleted (its late reports are moot)."""
        try:
            return self._spec(job_id)
        except NotFound:
            return None

    def _spec(self, job_id: str) -> JobDescription:
        return self._specs.job(job_id).spec

    @staticmethod
    def _abandon(tx: StateTransaction, now: float) -> list[Abandoned]:
        found = []
        for job_id in tx.active_job_ids():
            row = tx.job_row(job_id)
            if row is None:
                continue
            found.append(Abandoned(row.id, row.name, row.state))
            operations.stop(tx, row, now, message=ABANDONED_MESSAGE.format(
                state=row.state.value, job_id=row.id))
        return found

    def _inherited(self) -> Inherited:
        """What agents that outlived the previous server run or ran for it, by instance."""
        found: Inherited = {}
        for host_id, held, reports in self.fleet.inherited():
            for item in held:
                key = item.key
                found[key.job_id, key.task, key.instance_id] = (host_id, item, None)
            for report in reports:
                key = report.key
                found[key.job_id, key.task, key.instance_id] = (
                    host_id, Held(report.token, key, report.outcome.worker), report)
        return found

    def _inherit(self, tx: StateTransaction, row: InstanceRow, inherited: Inherited) -> bool:
        """Take over the instance's attempt if an agent runs it (or ran it to its end) for
        the previous server; False if none does (it was lost with that server)."""
        where = (row.job_id, row.task, row.instance_id)
        found = inherited.get(where)
        if found is None or found[1].key.attempt != row.attempts:
            return False  # left in `inherited`: a stale attempt, killed
        host_id, held, report = found
        try:
            tenant = self._specs.job(row.job_id).tenant
        except NotFound:
            return False
        if not self.fleet.inherit(host_id, held.token, held.key, row.retry_count, tenant,
                                  held.worker):
            return False
        del inherited[where]
        if (self._reserved is not None and held.worker
                and tx.vm(held.worker) is None):  # a VM of the task's AutoCluster
            self._reserved.inherit(row.job_id, row.task, held.worker, tenant)
        if report is not None:
            self._reports.put((host_id, report))  # it ended while no server listened
        return True

    def _requeue_lost(self, tx: StateTransaction, now: float,
                      inherited: Inherited | None = None) -> None:
        """Instances left Running by a previous process go back to Waiting, their retries
        untouched — or fail, when this was their MOST_LOST-th lost attempt. Those whose
        attempts agents still run for it (or ran to their end) are taken over instead."""
        inherited = dict(inherited or {})
        adopted = 0
        for row in tx.running_instances():
            if inherited and self._inherit(tx, row, inherited):
                adopted += 1
                continue
            lost = row.lost + 1
            message = LOST_WITH_ENGINE if self.provider is None else LOST_WITH_CLUSTER
            again = lost < MOST_LOST
            tx.move_instance(
                row.job_id, row.task, row.instance_id, State.WAITING if again else State.FAILED,
                now, ended=now, error_code=ErrorCode.LOST.value, lost=lost,
                error_message=f"{message}; re-run" if again else
                f"{message}; lost {lost} times, not re-run again",
                message=message)
        for job_id in tx.active_job_ids():
            self._settle(tx, job_id)
        tx.flush_events()
        if adopted:
            log.info("took over %d attempt(s) agents ran for the previous server", adopted)
        for host_id, held, _ in inherited.values():  # re-run (or done with) already: killed
            self.fleet.cancel_on(host_id, [held.key])


LOST_WITH_ENGINE = "attempt lost: the engine stopped while it ran"
LOST_WITH_CLUSTER = ("attempt lost: the server stopped while it ran, and no agent of the "
                     "cluster runs it or ran it to its end (its node, or the Ray cluster's "
                     "head, was lost meanwhile)")
Inherited = dict[tuple[str, str, int], tuple[str, Held, Report | None]]
"""(job, task, instance) -> the agent, the attempt it holds for the previous server, and its
report if it ended."""
Item = TypeVar("Item")


def _drained(items: queue.SimpleQueue[Item]) -> list[Item]:
    """Everything in the queue now (what arrives meanwhile waits for the next step)."""
    found = []
    while True:
        try:
            found.append(items.get_nowait())
        except queue.Empty:
            return found


def _add(tasks: dict[str, set[str] | None], job_id: str, task: str) -> None:
    """Note that `task` of `job_id` needs settling."""
    named = tasks.setdefault(job_id, set())
    if named is not None:
        named.add(task)


def _attempt_end(key: AttemptKey, outcome: Outcome, now: float, retry_count: int,
                 verdict: Verdict) -> AttemptEnd:
    """The attempt's end as its instance records it (a retry uses one more of its retries)."""
    ended = outcome.ended_at.timestamp() if outcome.ended_at else now
    return AttemptEnd(key, outcome, retry_count + 1 if verdict is Verdict.RETRY else retry_count,
                      ended, target=verdict.target, message=outcome.error_message)


def _ran_for(outcome: Outcome) -> float | None:
    """Seconds from the attempt's start to its end, as its runner reported them."""
    if outcome.started_at is None or outcome.ended_at is None:
        return None
    return max(0.0, (outcome.ended_at - outcome.started_at).total_seconds())


def _cost(shape: InstanceType) -> Cost:
    return Cost(shape.vcpu, shape.memory_mb)


def _cost_of_machine(machine: Machine) -> Cost:
    return Cost(machine.cpus, machine.sold_memory_bytes >> 20)
