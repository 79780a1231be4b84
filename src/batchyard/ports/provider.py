"""The provider port: where VMs come from when they are more than a share of this machine.

The local provider needs no port: its VMs take slots of the engine's own agents
(`orchestrator.fleet`). A provider that *reserves* capacity for each VM — the Ray provider
(`batchyard.onray`) — hosts VMs on agents of its own, one per node, and reserves each VM's
InstanceType (vCPU, memory) on a node offering it. The engine then:

- asks it for the agents it hosts (`agents`; new ones as nodes join);
- asks it to `reserve` a VM, and later hears that the reservation is `ready` on one of its
  agents (or waits: no node has room, or none offers the type — `offers` tells which);
- `release`s a VM once nothing runs on it any more.

An agent whose node dies is reported `gone` to the engine's `AgentListener` like any agent:
its attempts are counted lost; the engine takes its VMs back (`Fleet.evict`) and reserves
them again elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from batchyard.domain.attempt import AttemptKey
from batchyard.ports.agents import Agent, AgentListener, Report


@dataclass(frozen=True)
class Shape:
    """What a VM reserves: its InstanceType's name, vCPU and memory."""

    instance_type: str
    vcpu: float
    memory_bytes: int


@dataclass(frozen=True)
class Ready:
    """A VM whose reservation holds: the agent that hosts it, and where that is."""

    vm_id: str
    host: str
    address: str
    host_name: str


@dataclass(frozen=True)
class Held:
    """An attempt an agent runs for an earlier server (one killed and restarted)."""

    token: int
    key: AttemptKey
    worker: str
    """The VM it runs on."""


@runtime_checkable
class Inheriting(Protocol):
    """An agent that outlives its server (a provider's): what it holds from an earlier one."""

    def inherited(self) -> tuple[list[Held], list[Report]]:
        """The attempts it runs for an earlier server, and the reports of those that ended
        while no server listened (each once: asked again, it has none)."""
        ...


class Provider(Protocol):
    """Reserves VMs on nodes and hosts them on its agents (one engine uses it, any thread)."""

    def agents(self, listener: AgentListener) -> Sequence[Agent]:
        """Agents not handed out before (at first: every one it can reach now), each
        reporting to `listener`."""
        ...

    def reserve(self, vm_id: str, shape: Shape) -> None:
        """Ask for a VM of this shape (returns at once; `ready` says when it holds)."""
        ...

    def ready(self) -> list[Ready]:
        """The VMs whose reservations came to hold since the last call."""
        ...

    def release(self, vm_id: str) -> None:
        """Give up the VM's reservation (held or not); unknown ids are ignored."""
        ...

    def offers(self, instance_type: str) -> bool:
        """Whether some node can ever host a VM of this type (or may come, autoscaling)."""
        ...

    def room(self, shape: Shape) -> int | None:
        """How many VMs of this shape the nodes offering its type hold when empty (None: no
        bound — an autoscaler adds nodes on demand)."""
        ...

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` (any thread) when a reservation comes to hold or a node joins."""
        ...

    def sweep(self) -> None:
        """Give up the reservations an earlier server made that this engine did not ask for
        again (called once, after the first placement)."""
        ...

    def shutdown(self) -> None:
        """Stop the agents (what runs is killed) and give every reservation up."""
        ...


__all__ = ["Held", "Inheriting", "Provider", "Ready", "Shape"]
