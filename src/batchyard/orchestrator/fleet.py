"""The agents the engine runs attempts on, and the leases each holds (in-flight bookkeeping).

Every attempt handed to an agent is a lease with a fencing token, unique to that hand-over
(tokens start at the engine's start time in nanoseconds, so an earlier engine's never match).
A report lands only with the token of a lease still held: the report of an attempt already
counted lost, or of an agent the engine gave up on, is stale and ignored.

An agent is alive while it heartbeats. One that is `gone` (its transport saw it die) or whose
heartbeats stopped for `MISSED_HEARTBEATS` periods has its leases counted lost; it gets no
new leases until it heartbeats again (a restarted agent process does). An agent whose
`heartbeat` period is 0 (in the engine's own process) never expires.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.ports.agents import Agent, AgentInfo, batch_of

MISSED_HEARTBEATS = 3
"""Heartbeat periods without one after which an agent is counted lost."""


@dataclass(frozen=True)
class Leased:
    """An attempt an agent holds."""

    key: AttemptKey
    retry_count: int
    agent: str
    tenant: str


@dataclass
class _Member:
    handle: Agent
    info: AgentInfo
    last_seen: float
    alive: bool = True
    tokens: set[int] = field(default_factory=set)
    lost: dict[int, AttemptKey] = field(default_factory=dict)
    """Leases counted lost that the agent may still run (killed when it says it does)."""

    def free(self) -> int:
        return self.info.slots - len(self.tokens) if self.alive else 0


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

    # ---- capacity ------------------------------------------------------------------------

    def free_slots(self) -> int:
        return sum(member.free() for member in self._members.values())

    def sandbox(self) -> tuple[bool, str]:
        """Whether every agent can sandbox attempts; if not, why (the first one's words)."""
        for member in self._members.values():
            info = member.handle.info()  # asked afresh: bubblewrap may come or go
            if not info.sandbox:
                return False, info.sandbox_missing
        return bool(self._members), "no agent to run attempts"

    # ---- leases --------------------------------------------------------------------------

    def lease(self, requests: Sequence[AttemptRequest]) -> None:
        """Hand these attempts out, filling the agents' free slots in turn, one batch per
        agent (callers never pass more than `free_slots()`)."""
        queue = iter(requests)
        for agent_id, member in self._members.items():
            pairs = [(self._take(agent_id, member, request), request)
                     for request in itertools.islice(queue, member.free())]
            if pairs:
                member.handle.lease(batch_of(pairs))

    def _take(self, agent_id: str, member: _Member, request: AttemptRequest) -> int:
        token = next(self._tokens)
        leased = Leased(request.key, request.retry_count, agent_id, request.tenant)
        self._hold(token, leased, member)
        return token

    def _hold(self, token: int, leased: Leased, member: _Member) -> None:
        self._leases[token] = leased
        self._by_key[leased.key] = token
        member.tokens.add(token)
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
        self._members[agent_id].tokens.discard(token)
        _less(self._running_tasks, (leased.key.job_id, leased.key.task))
        _less(self._running_tenants, leased.tenant)
        return leased

    def retake(self, token: int, leased: Leased) -> None:
        """Hold a lease again whose report could not be applied (the step rolled back)."""
        member = self._members.get(leased.agent)
        if member is not None:
            self._hold(token, leased, member)

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
                "running_tasks": len(self._running_tasks),
                "running_tenants": len(self._running_tenants)}


Key = TypeVar("Key")


def _less(counts: Counter[Key], key: Key) -> None:
    """One fewer; a key counting none keeps no entry (nothing grows with jobs run)."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
