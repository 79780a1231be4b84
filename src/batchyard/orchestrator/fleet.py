"""The agents the engine runs attempts on, the VMs they host, and the leases each holds.

An agent (a host) runs attempts with the runner. Attempts are leased to *members*, each in a
*pool*: an agent's own slots form a member of the default pool (tasks that name no
ClusterId), and every cluster VM placed on an agent is a member of its cluster's pool, with
one slot (BatchCompute: "each idle VM takes one instance at a time"). A VM placed on an
agent takes one of the agent's own slots away from the default pool, so the agent never
runs more than its slots, however its room is shared.

Every attempt handed out is a lease with a fencing token, unique to that hand-over (tokens
start at the engine's start time in nanoseconds, so an earlier engine's never match). A
report lands only with the token of a lease still held, from the agent holding it: the
report of an attempt already counted lost, or of an agent the engine gave up on, is stale
and ignored.

A member may take leases beyond its slots (`AgentInfo.queue`; VMs do not), started as its
slots free up. The fleet uses that room only while the member's attempts are short
(typically under `SHORT_ATTEMPT`): then it holds about `AHEAD` seconds of work ahead per
slot, so the agent never waits for the engine between two attempts and the engine records
many outcomes per transaction. An attempt of a minute is never queued behind another one.
Leases queued that a better instance of their tenant should go before are taken back
(`recall`); so are those of a VM that drains (`drain`: it finishes what runs, then leaves).

An agent is alive while it heartbeats. One that is `gone` (its transport saw it die) or whose
heartbeats stopped for `MISSED_HEARTBEATS` periods has its leases counted lost; it gets no
new leases until it heartbeats again (a restarted agent process does). An agent whose
`heartbeat` period is 0 (in the engine's own process) never expires.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.ports.agents import Agent, AgentInfo, Report, batch_of
from batchyard.ports.provider import Held, Inheriting

MISSED_HEARTBEATS = 3
"""Heartbeat periods without one after which an agent is counted lost."""
SHORT_ATTEMPT = 0.25
"""Seconds: attempts typically shorter than this are queued ahead on their agent."""
AHEAD = 0.04
"""Seconds of work per slot an agent holds queued ahead while its attempts are short."""
_WEIGHT = 0.2
"""Weight of the newest attempt in an agent's typical attempt time (a moving average)."""
DEFAULT_POOL = ""
"""The pool of tasks that name no ClusterId: the agents' own slots."""


Order = tuple[Any, ...]
"""A leased instance's place in BatchCompute's launch order (`Candidate.order_key`)."""


@dataclass(frozen=True)
class Cost:
    """What a VM (or an instance on an agent's own slots) takes of the machine, in strict
    capacity: its InstanceType's vCPU and memory."""

    vcpu: float = 0.0
    memory_mb: int = 0

    def within(self, left: Cost) -> bool:
        return self.vcpu <= left.vcpu and self.memory_mb <= left.memory_mb

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.vcpu + other.vcpu, self.memory_mb + other.memory_mb)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.vcpu - other.vcpu, self.memory_mb - other.memory_mb)


FREE = Cost()


@dataclass(frozen=True)
class Leased:
    """An attempt a member holds."""

    key: AttemptKey
    retry_count: int
    agent: str
    """The member: a VM's id, or the agent's own id (default pool)."""
    tenant: str
    order: Order = ()
    recalled: bool = False
    """Taken back before it started (a better instance of its tenant came, or its VM
    drains): its report puts the instance back to Waiting, as if it had never been leased."""
    host: str = ""
    """The agent that runs it (whose reports count)."""
    worker: str = ""
    """The VM it runs on ("": the agent itself)."""
    cost: Cost = FREE
    """What it takes of the machine while held (strict capacity, agents' own slots)."""


@dataclass
class _Host:
    """An agent: a process (or the engine's own) that runs the attempts of its members."""

    handle: Agent
    info: AgentInfo
    last_seen: float
    alive: bool = True
    vms: dict[str, None] = field(default_factory=dict)
    """Cluster VMs placed on it, each taking one of its slots."""
    lost: dict[int, AttemptKey] = field(default_factory=dict)
    """Leases counted lost that the agent may still run (killed when it says it does)."""


@dataclass
class _Member:
    host: _Host
    host_id: str
    pool: str
    slots: int
    queue: int
    worker: str = ""
    """The VM id leases name (\"\": the agent itself)."""
    tokens: dict[int, None] = field(default_factory=dict)
    """The leases it holds, oldest first: beyond its slots, the newest wait in its queue."""
    typical: float | None = None
    """The member's typical attempt time in seconds (None: none ended yet)."""
    ahead: int = 0
    """Leases it holds beyond its slots now (at most `queue`)."""
    draining: bool = False
    cost: Cost = FREE
    """What the VM takes of the machine (strict capacity)."""
    instance_type: tuple[str, int] = ("", 0)
    """A VM's InstanceType and memory in bytes (the limit of what runs on it)."""
    held: bool = False
    """Kept for a failed task (AutoCluster ReserveOnFail): it takes no lease."""

    def free(self) -> int:
        if not self.host.alive or self.draining or self.held or self.slots <= 0:
            return 0
        return max(self.slots + self.ahead - len(self.tokens), 0)

    def took(self, seconds: float) -> None:
        """An attempt ran `seconds`: how many leases to hold ahead follows."""
        typical = self.typical = seconds if self.typical is None else (
            self.typical + _WEIGHT * (seconds - self.typical))
        if typical >= SHORT_ATTEMPT or not self.queue:
            self.ahead = 0
            return
        wanted = math.ceil(max(self.slots, 1) * AHEAD / max(typical, 1e-4))
        self.ahead = min(self.queue, wanted)

    def waiting(self) -> list[int]:
        """Its leases surely waiting in the agent's queue (FIFO: the newest). An agent's own
        member may run as many as the agent has slots, VMs placed on it or not."""
        most = self.host.info.slots if not self.worker else self.slots
        count = len(self.tokens) - most
        return list(self.tokens)[-count:] if count > 0 else []


class Fleet:
    """The agents, their members and leases; used by the engine's loop thread, under its
    lock."""

    def __init__(self, agents: Sequence[Agent], now: float, machine: Cost | None = None,
                 cost_of: Callable[[AttemptRequest], Cost] | None = None) -> None:
        """`machine`: in strict capacity, the vCPU and memory the VMs and the instances on
        the agents' own slots share (None: not counted); `cost_of`: what an instance on
        the agents' own slots takes of it."""
        self._left = machine
        self._cost_of = cost_of
        self._hosts: dict[str, _Host] = {}
        self._members: dict[str, _Member] = {}
        self._pools: dict[str, dict[str, _Member]] = {DEFAULT_POOL: {}}
        self.add_agents(agents, now)
        self._leases: dict[int, Leased] = {}
        self._by_key: dict[AttemptKey, int] = {}
        self._running_tasks: Counter[tuple[str, str]] = Counter()
        self._running_tenants: Counter[str] = Counter()
        self._tokens = itertools.count(time.time_ns())
        self._recalled: set[int] = set()

    def add_agents(self, agents: Sequence[Agent], now: float) -> None:
        """Agents that joined (a provider's, as its nodes come): each a host whose own
        slots form a member of the default pool (none, for an agent that hosts only VMs)."""
        for agent in agents:
            info = agent.info()
            host = self._hosts[info.id] = _Host(agent, info, now)
            own = 0 if info.hosts_only_vms else info.slots
            self._add(info.id, _Member(host, info.id, DEFAULT_POOL, own, info.queue))

    def _add(self, member_id: str, member: _Member) -> None:
        self._members[member_id] = member
        self._pools.setdefault(member.pool, {})[member_id] = member

    # ---- capacity ------------------------------------------------------------------------

    def queueing(self) -> set[str]:
        """The pools of which some member holds leases waiting in its agent's queue."""
        return {member.pool for member in self._members.values()
                if len(member.tokens) > member.slots}

    def free_slots(self) -> int:
        """Leases the members take now: free slots, and room queued ahead (see above)."""
        return sum(member.free() for member in self._members.values())

    def free_by_pool(self) -> dict[str, int]:
        """Leases each pool's members take now (pools with room only)."""
        room: dict[str, int] = {}
        for pool, members in self._pools.items():
            free = sum(member.free() for member in members.values())
            if free > 0:
                room[pool] = free
        return room

    def sandbox(self) -> tuple[bool, str]:
        """Whether every agent can sandbox attempts; if not, why (the first one's words)."""
        for host in self._hosts.values():
            info = host.handle.info()  # asked afresh: bubblewrap may come or go
            if not info.sandbox:
                return False, info.sandbox_missing
        return bool(self._hosts), "no agent to run attempts"

    # ---- VMs -----------------------------------------------------------------------------

    def room(self) -> tuple[int, int]:
        """VMs placed on the agents, and how many they can hold (their slots)."""
        return (sum(len(host.vms) for host in self._hosts.values()),
                sum(host.info.slots for host in self._hosts.values()))

    def place(self, vm_id: str, pool: str, held: bool = False, cost: Cost = FREE,
              instance_type: tuple[str, int] = ("", 0)) -> str | None:
        """Place a VM of `pool` on the live agent with most room (None: none has room, or
        in strict capacity the machine has not `cost` left; it waits). Placed already:
        where it is. `held`: it keeps its room and takes no lease (a failed task's
        reserved VM) until `remove`d. `instance_type`: its name and memory in bytes, the
        limit of the instances it runs."""
        member = self._members.get(vm_id)
        if member is not None:
            return member.host_id
        if self._left is not None and not cost.within(self._left):
            return None
        roomy = [(self._members[host_id].slots - self._running_own(host_id), host_id)
                 for host_id, host in self._hosts.items() if host.alive]
        free, host_id = max(roomy, default=(0, ""))
        if free <= 0:
            return None
        host = self._hosts[host_id]
        host.vms[vm_id] = None
        self._members[host_id].slots -= 1
        self._add(vm_id, _Member(host, host_id, pool, 1, 0, worker=vm_id, held=held, cost=cost,
                                 instance_type=instance_type))
        if self._left is not None:
            self._left -= cost
        return host_id

    def remove(self, vm_id: str) -> None:
        """Remove a held VM at once (it runs nothing)."""
        member = self._members.get(vm_id)
        if member is not None and member.held:
            member.draining = True
            self.drained()

    def place_on(self, host_id: str, vm_id: str, pool: str, cost: Cost = FREE,
                 instance_type: tuple[str, int] = ("", 0)) -> bool:
        """Place a VM on the agent its provider reserved it on (an agent hosting only VMs:
        it takes none of the agent's own slots; its `queue` is per VM — the agent starts a
        VM's queued leases one after the other). False: that agent is unknown or lost."""
        host = self._hosts.get(host_id)
        if vm_id in self._members or host is None or not host.alive:
            return vm_id in self._members
        host.vms[vm_id] = None
        member = _Member(host, host_id, pool, 1, host.info.queue, worker=vm_id, cost=cost,
                         instance_type=instance_type)  # its agent queues short work per VM
        self._add(vm_id, member)
        own = self._members[host_id]
        for token in [token for token in own.tokens if self._leases[token].worker == vm_id]:
            del own.tokens[token]  # inherited before the VM was placed again: its own now
            member.tokens[token] = None
            self._leases[token] = replace(self._leases[token], agent=vm_id)
        return True

    def evict(self, host_id: str) -> list[str]:
        """The VMs placed on a lost agent of a provider, taken off it (their leases were
        counted lost with the agent): the provider reserves them again elsewhere."""
        host = self._hosts.get(host_id)
        if host is None or not host.info.hosts_only_vms:
            return []
        evicted = list(host.vms)
        for vm_id in evicted:
            self._unplace(vm_id)
        return evicted

    def _running_own(self, host_id: str) -> int:
        """Attempts running on the agent's own slots (not those queued ahead): a VM is
        placed on a slot none runs on, so nothing waits for another tenant's instance."""
        own = self._members[host_id]
        return min(len(own.tokens), max(own.slots, 0))

    def placed(self, vm_id: str) -> bool:
        return vm_id in self._members and vm_id not in self._hosts

    def drain(self, vm_id: str) -> None:
        """The VM takes no more leases; its queued ones are taken back; it leaves once
        what runs ended (`drained`)."""
        member = self._members.get(vm_id)
        if member is None or member.draining:
            return
        member.draining = True
        taken = [token for token in member.waiting() if token not in self._recalled]
        if taken:
            self._recalled.update(taken)
            member.host.handle.cancel([self._leases[token].key for token in taken])

    def drained(self) -> list[str]:
        """Draining VMs that hold no lease any more: removed from their agents."""
        done = [vm_id for vm_id, member in self._members.items()
                if member.draining and not member.tokens and vm_id not in self._hosts]
        for vm_id in done:
            self._unplace(vm_id)
        return done

    def _unplace(self, vm_id: str) -> None:
        member = self._members.pop(vm_id)
        del self._pools[member.pool][vm_id]
        if not self._pools[member.pool] and member.pool != DEFAULT_POOL:
            del self._pools[member.pool]
        member.host.vms.pop(vm_id, None)
        if not member.host.info.hosts_only_vms:
            self._members[member.host_id].slots += 1
        if self._left is not None:
            self._left += member.cost

    def load(self, pool: str) -> tuple[int, int]:
        """The VMs of a cluster's pool placed on agents (not draining), and how many of them
        hold a lease."""
        members = [member for member in self._pools.get(pool, {}).values()
                   if not member.draining]
        return len(members), sum(1 for member in members if member.tokens)

    def pools(self) -> set[str]:
        """The pools with members (the default pool always)."""
        return set(self._pools)

    def placements(self) -> dict[str, str]:
        """Each placed VM's agent (for operators and tests: where a VM runs)."""
        return {vm_id: member.host_id for vm_id, member in self._members.items()
                if vm_id not in self._hosts}

    def has_vms(self) -> bool:
        """Whether a cluster VM is placed on an agent."""
        return any(host.vms for host in self._hosts.values())

    def draining(self) -> bool:
        """Whether some VM drains."""
        return any(member.draining for member in self._members.values())

    def idle(self, vm_ids: Sequence[str]) -> list[str]:
        """Those of these VMs placed and holding no lease."""
        return [vm_id for vm_id in vm_ids
                if vm_id in self._members and not self._members[vm_id].tokens]

    def default_running(self) -> Counter[str]:
        """Attempts held on the agents' own slots (instances on no cluster), per tenant."""
        counts: Counter[str] = Counter()
        for leased in self._leases.values():
            member = self._members.get(leased.agent)
            if member is not None and member.pool == DEFAULT_POOL:
                counts[leased.tenant] += 1
        return counts

    def busy(self) -> set[str]:
        """VMs holding leases."""
        return {vm_id for vm_id, member in self._members.items()
                if member.tokens and vm_id not in self._hosts}

    def vm_leases(self) -> dict[str, Leased]:
        """What each VM holding leases runs: its oldest lease (a VM of several slots may
        hold more)."""
        return {vm_id: self._leases[next(iter(member.tokens))]
                for vm_id, member in self._members.items()
                if member.tokens and vm_id not in self._hosts}

    # ---- leases --------------------------------------------------------------------------

    def lease(self, requests: Sequence[tuple[AttemptRequest, Order]],
              pool: str = DEFAULT_POOL) -> None:
        """Hand these attempts of `pool` (with their places in the launch order) out,
        filling its members' free room in turn, one batch per agent (callers never pass
        more than the pool's free room)."""
        queue = iter(requests)
        by_host: dict[str, tuple[_Host, list[tuple[int, AttemptRequest]]]] = {}
        for member_id, member in self._pools.get(pool, {}).items():
            pairs = [(self._take(member_id, member, request, order), request)
                     for request, order in itertools.islice(queue, member.free())]
            if pairs and member.worker:  # a VM: its name and its InstanceType's memory
                name, memory = member.instance_type
                vm = ({"worker_id": member.worker, "instance_type": name, "memory_bytes": memory}
                      if name else {"worker_id": member.worker})
                pairs = [(token, replace(request, **vm)) for token, request in pairs]
            if pairs:
                by_host.setdefault(member.host_id, (member.host, []))[1].extend(pairs)
        for host, pairs in by_host.values():  # one batch per agent, its VMs' leases in it
            host.handle.lease(batch_of(pairs))

    def _take(self, member_id: str, member: _Member, request: AttemptRequest,
              order: Order) -> int:
        token = next(self._tokens)
        cost = FREE
        if self._left is not None and self._cost_of is not None and not member.worker:
            cost = self._cost_of(request)
            self._left -= cost
        leased = Leased(request.key, request.retry_count, member_id, request.tenant, order,
                        host=member.host_id, worker=member.worker or request.worker_id,
                        cost=cost)
        self._hold(token, leased, member)
        return token

    def left(self) -> Cost | None:
        """What the machine has left for instances on the agents' own slots (strict
        capacity; None: not counted)."""
        return self._left

    def recall(self, best: Mapping[str, Mapping[str, Order]]) -> None:
        """Take back the leases waiting in an agent's queue that a tenant's `best` instance
        of the same pool, not leased yet (or leased behind them), should go before: the
        agent drops them unstarted and reports each (STOPPED); their instances wait again."""
        for member in self._members.values():
            firsts = best.get(member.pool)
            queued = member.waiting() if firsts else []
            taken = [token for token in queued if token not in self._recalled
                     and _behind(self._leases[token], firsts or {})]
            if taken:
                self._recalled.update(taken)
                member.host.handle.cancel([self._leases[token].key for token in taken])

    def _hold(self, token: int, leased: Leased, member: _Member) -> None:
        self._leases[token] = leased
        self._by_key[leased.key] = token
        member.tokens[token] = None
        self._running_tasks[leased.key.job_id, leased.key.task] += 1
        self._running_tenants[leased.tenant] += 1

    def inherit(self, host_id: str, token: int, key: AttemptKey, retry_count: int,
                tenant: str, worker: str) -> bool:
        """Hold a lease an agent runs for an earlier server (killed and restarted): its
        report lands like any other. On its VM if placed, else on the agent until its VM
        is placed again (`place_on`). False: the agent is unknown."""
        host = self._hosts.get(host_id)
        if host is None:
            return False
        member_id = worker if worker in host.vms else host_id
        self._hold(token, Leased(key, retry_count, member_id, tenant, host=host_id,
                                 worker=worker), self._members[member_id])
        return True

    def land(self, agent_id: str, token: int, key: AttemptKey) -> Leased | None:
        """The lease a report from agent `agent_id` ends (None: stale — not this agent's or
        this attempt's lease, or landed already)."""
        leased = self._leases.get(token)
        if leased is None or leased.host != agent_id or leased.key != key:
            return None
        del self._leases[token]
        self._by_key.pop(leased.key, None)
        member = self._members.get(leased.agent)
        if member is not None:
            member.tokens.pop(token, None)
        _less(self._running_tasks, (leased.key.job_id, leased.key.task))
        _less(self._running_tenants, leased.tenant)
        if self._left is not None:
            self._left += leased.cost
        if token in self._recalled:
            self._recalled.discard(token)
            return replace(leased, recalled=True)
        return leased

    def took(self, member_id: str, seconds: float) -> None:
        """An attempt of the member ran `seconds` (from its start to its end)."""
        member = self._members.get(member_id)
        if member is not None:
            member.took(max(seconds, 0.0))

    def retake(self, token: int, leased: Leased) -> None:
        """Hold a lease again whose report could not be applied (the step rolled back)."""
        member = self._members.get(leased.agent)
        if member is not None:
            self._hold(token, replace(leased, recalled=False), member)
            if self._left is not None:
                self._left -= leased.cost
            if leased.recalled:
                self._recalled.add(token)

    def running(self, job_id: str, task: str) -> int:
        """Attempts of the task held by agents."""
        return self._running_tasks[job_id, task]

    def running_by_tenant(self) -> Counter[str]:
        """Attempts held by agents, per tenant (what fair sharing weighs)."""
        return self._running_tenants

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        """Ask the agents holding these attempts to kill them (each still reports)."""
        by_host: dict[str, list[AttemptKey]] = {}
        for key in keys:
            token = self._by_key.get(key)
            if token is not None:
                by_host.setdefault(self._leases[token].host, []).append(key)
        for host_id, held in by_host.items():
            self._hosts[host_id].handle.cancel(held)

    def cancel_on(self, host_id: str, keys: Sequence[AttemptKey]) -> None:
        """Ask one agent to kill these attempts, held by no lease of this engine."""
        host = self._hosts.get(host_id)
        if host is not None:
            host.handle.cancel(keys)

    # ---- liveness ------------------------------------------------------------------------

    def heartbeat(self, agent_id: str, running: Sequence[int], now: float) -> None:
        """The agent is alive and runs the leases `running`: any it runs that were counted
        lost (they run again elsewhere, or are done with) are killed."""
        host = self._hosts.get(agent_id)
        if host is None:
            return
        host.last_seen = now
        host.alive = True
        host.lost = {token: host.lost[token] for token in sorted(running)
                     if token in host.lost}
        if host.lost:
            host.handle.cancel(list(host.lost.values()))

    def expired(self, now: float) -> list[str]:
        """Live agents whose heartbeats stopped."""
        return [agent_id for agent_id, host in self._hosts.items()
                if host.alive and host.info.heartbeat > 0
                and now - host.last_seen > MISSED_HEARTBEATS * host.info.heartbeat]

    def lose(self, agent_id: str) -> list[tuple[int, Leased]]:
        """The agent is gone: it gets no leases until it heartbeats again; returns the
        leases its members held (still held: the caller lands them as lost). Its VMs stay
        placed on it (a restarted agent process hosts them again)."""
        host = self._hosts.get(agent_id)
        if host is None:
            return []
        host.alive = False
        held = sorted((token, leased) for token, leased in self._leases.items()
                      if leased.host == agent_id)
        host.lost.update((token, leased.key) for token, leased in held)
        return held

    # ---- the rest ------------------------------------------------------------------------

    def inherited(self) -> list[tuple[str, list[Held], list[Report]]]:
        """What agents that outlive their server hold from an earlier one, per agent."""
        return [(host_id, *host.handle.inherited()) for host_id, host in self._hosts.items()
                if isinstance(host.handle, Inheriting)]

    def forget(self, job_id: str) -> None:
        for host in self._hosts.values():
            host.handle.forget(job_id)

    def shutdown(self) -> None:
        for host in self._hosts.values():
            host.handle.shutdown()

    def sizes(self) -> dict[str, int]:
        """Entries kept per lease (for the tests showing none grows with jobs run)."""
        return {"in_flight": len(self._leases), "by_key": len(self._by_key),
                "recalled": len(self._recalled),
                "running_tasks": len(self._running_tasks),
                "running_tenants": len(self._running_tenants)}


Key = TypeVar("Key")


def _behind(leased: Leased, best: Mapping[str, Order]) -> bool:
    """Whether its tenant has an instance that goes before it."""
    first = best.get(leased.tenant)
    return first is not None and bool(leased.order) and first < leased.order


def _less(counts: Counter[Key], key: Key) -> None:
    """One fewer; a key counting none keeps no entry (nothing grows with jobs run)."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
