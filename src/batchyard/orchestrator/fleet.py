"""The agents the engine runs attempts on, and the leases each holds (in-flight bookkeeping).

Every attempt handed to an agent is a lease with a fencing token, unique to that hand-over
(tokens start at the engine's start time in nanoseconds, so an earlier engine's never match).
A report lands only with the token of a lease still held: the report of an attempt already
counted lost, or of an agent the engine gave up on, is stale and ignored.

An agent may take leases beyond its slots (`AgentInfo.queue`), started as its slots free
up. The fleet uses that room only while the agent's attempts are short (typically under
`SHORT_ATTEMPT`): then it holds about `AHEAD` seconds of work ahead per slot, so the agent
never waits for the engine between two attempts and the engine records many outcomes per
transaction. An attempt of a minute is never queued behind another one. Leases queued
that a better instance of their tenant should go before are taken back (`recall`).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.ports.agents import Agent, AgentInfo, batch_of

MISSED_HEARTBEATS = 3
"""Heartbeat periods without one after which an agent is counted lost."""
SHORT_ATTEMPT = 0.25
"""Seconds: attempts typically shorter than this are queued ahead on their agent."""
AHEAD = 0.04
"""Seconds of work per slot an agent holds queued ahead while its attempts are short."""
_WEIGHT = 0.2
"""Weight of the newest attempt in an agent's typical attempt time (a moving average)."""


Order = tuple[Any, ...]
"""A leased instance's place in BatchCompute's launch order (`Candidate.order_key`)."""


@dataclass(frozen=True)
class Leased:
    """An attempt an agent holds."""

    key: AttemptKey
    retry_count: int
    agent: str
    tenant: str
    order: Order = ()
    recalled: bool = False
    """Taken back before it started (a better instance of its tenant came): its report
    puts the instance back to Waiting, as if it had never been leased."""


@dataclass
class _Member:
    handle: Agent
    info: AgentInfo
    last_seen: float
    alive: bool = True
    tokens: dict[int, None] = field(default_factory=dict)
    """The leases it holds, oldest first: beyond its slots, the newest wait in its queue."""
    lost: dict[int, AttemptKey] = field(default_factory=dict)
    """Leases counted lost that the agent may still run (killed when it says it does)."""
    typical: float | None = None
    """The agent's typical attempt time in seconds (None: none ended yet)."""
    ahead: int = 0
    """Leases it holds beyond its slots now (at most `info.queue`)."""

    def free(self) -> int:
        if not self.alive:
            return 0
        return max(self.info.slots + self.ahead - len(self.tokens), 0)

    def took(self, seconds: float) -> None:
        """An attempt ran `seconds`: how many leases to hold ahead follows."""
        typical = self.typical = seconds if self.typical is None else (
            self.typical + _WEIGHT * (seconds - self.typical))
        if typical >= SHORT_ATTEMPT or not self.info.queue:
            self.ahead = 0
            return
        wanted = math.ceil(self.info.slots * AHEAD / max(typical, 1e-4))
        self.ahead = min(self.info.queue, wanted)


class Fleet:
    """The agents and their leases; used by the engine's loop thread, under its lock."""

    def __init__(self, agents: Sequence[Agent], now: float) -> None:
        self._members: dict[str, _Member] = {}
        for agent in agents:
            info = agent.info()
            self._members[info.id] = _Member(agent, info, now)
        self._leases: dict[int, Leased] = {}
        self._by_key: dict[AttemptKey, int] = {}
        self._running_tasks: Counter[tuple[str, str]] = Counter()
        self._running_tenants: Counter[str] = Counter()
        self._tokens = itertools.count(time.time_ns())
        self._recalled: set[int] = set()

    # ---- capacity ------------------------------------------------------------------------

    def queueing(self) -> bool:
        """Whether some agent holds leases waiting in its queue."""
        return any(len(member.tokens) > member.info.slots for member in self._members.values())

    def free_slots(self) -> int:
        """Leases the agents take now: free slots, and room queued ahead (see above)."""
        return sum(member.free() for member in self._members.values())

    def sandbox(self) -> tuple[bool, str]:
        """Whether every agent can sandbox attempts; if not, why (the first one's words)."""
        for member in self._members.values():
            info = member.handle.info()  # asked afresh: bubblewrap may come or go
            if not info.sandbox:
                return False, info.sandbox_missing
        return bool(self._members), "no agent to run attempts"

    # ---- leases --------------------------------------------------------------------------

    def lease(self, requests: Sequence[tuple[AttemptRequest, Order]]) -> None:
        """Hand these attempts (with their places in the launch order) out, filling the
        agents' free room in turn, one batch per agent (callers never pass more than
        `free_slots()`)."""
        queue = iter(requests)
        for agent_id, member in self._members.items():
            pairs = [(self._take(agent_id, member, request, order), request)
                     for request, order in itertools.islice(queue, member.free())]
            if pairs:
                member.handle.lease(batch_of(pairs))

    def _take(self, agent_id: str, member: _Member, request: AttemptRequest,
              order: Order) -> int:
        token = next(self._tokens)
        leased = Leased(request.key, request.retry_count, agent_id, request.tenant, order)
        self._hold(token, leased, member)
        return token

    def recall(self, best: Mapping[str, Order]) -> None:
        """Take back the leases waiting in an agent's queue that a tenant's `best` instance
        not leased yet (or leased behind them) should go before: the agent drops them
        unstarted and reports each (STOPPED); their instances wait again."""
        for member in self._members.values():
            waiting = len(member.tokens) - member.info.slots
            if waiting <= 0 or not best:
                continue
            queued = list(member.tokens)[-waiting:]  # FIFO: the newest wait
            taken = [token for token in queued if token not in self._recalled
                     and _behind(self._leases[token], best)]
            if taken:
                self._recalled.update(taken)
                member.handle.cancel([self._leases[token].key for token in taken])

    def _hold(self, token: int, leased: Leased, member: _Member) -> None:
        self._leases[token] = leased
        self._by_key[leased.key] = token
        member.tokens[token] = None
        self._running_tasks[leased.key.job_id, leased.key.task] += 1
        self._running_tenants[leased.tenant] += 1

    def land(self, agent_id: str, token: int, key: AttemptKey) -> Leased | None:
        """The lease a report ends (None: stale — not this agent's or this attempt's lease,
        or landed already)."""
        leased = self._leases.get(token)
        if leased is None or leased.agent != agent_id or leased.key != key:
            return None
        del self._leases[token]
        self._by_key.pop(leased.key, None)
        self._members[agent_id].tokens.pop(token, None)
        _less(self._running_tasks, (leased.key.job_id, leased.key.task))
        _less(self._running_tenants, leased.tenant)
        if token in self._recalled:
            self._recalled.discard(token)
            return replace(leased, recalled=True)
        return leased

    def took(self, agent_id: str, seconds: float) -> None:
        """An attempt of the agent ran `seconds` (from its start to its end)."""
        member = self._members.get(agent_id)
        if member is not None:
            member.took(max(seconds, 0.0))

    def retake(self, token: int, leased: Leased) -> None:
        """Hold a lease again whose report could not be applied (the step rolled back)."""
        member = self._members.get(leased.agent)
        if member is not None:
            self._hold(token, replace(leased, recalled=False), member)
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
        by_agent: dict[str, list[AttemptKey]] = {}
        for key in keys:
            token = self._by_key.get(key)
            if token is not None:
                by_agent.setdefault(self._leases[token].agent, []).append(key)
        for agent_id, held in by_agent.items():
            self._members[agent_id].handle.cancel(held)

    # ---- liveness ------------------------------------------------------------------------

    def heartbeat(self, agent_id: str, running: Sequence[int], now: float) -> None:
        """The agent is alive and runs the leases `running`: any it runs that were counted
        lost (they run again elsewhere, or are done with) are killed."""
        member = self._members.get(agent_id)
        if member is None:
            return
        member.last_seen = now
        member.alive = True
        member.lost = {token: member.lost[token] for token in sorted(running)
                       if token in member.lost}
        if member.lost:
            member.handle.cancel(list(member.lost.values()))

    def expired(self, now: float) -> list[str]:
        """Live agents whose heartbeats stopped."""
        return [agent_id for agent_id, member in self._members.items()
                if member.alive and member.info.heartbeat > 0
                and now - member.last_seen > MISSED_HEARTBEATS * member.info.heartbeat]

    def lose(self, agent_id: str) -> list[tuple[int, Leased]]:
        """The agent is gone: it gets no leases until it heartbeats again; returns the
        leases it held (still held: the caller lands them as lost)."""
        member = self._members.get(agent_id)
        if member is None:
            return []
        member.alive = False
        held = [(token, self._leases[token]) for token in sorted(member.tokens)]
        member.lost.update((token, leased.key) for token, leased in held)
        return held

    # ---- the rest ------------------------------------------------------------------------

    def forget(self, job_id: str) -> None:
        for member in self._members.values():
            member.handle.forget(job_id)

    def shutdown(self) -> None:
        for member in self._members.values():
            member.handle.shutdown()

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
