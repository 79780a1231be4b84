"""A provider whose nodes are `InlineAgent`s: the engine's rules for reserved VMs, tested
in milliseconds (`ports.provider`; the real one is `batchyard.onray`, tested on a real Ray
cluster in tests/ray).

Each node offers one InstanceType and holds `room` VMs. A reservation holds as soon as a
live node of its type has room (at once, or when one frees or joins); `kill` makes a node
die as a Ray node does — its agent reported gone, its reservations gone with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from batchyard.ports.agents import AgentListener, Report
from batchyard.ports.provider import Held, Ready, Shape
from batchyard.testing.agent import InlineAgent


@dataclass
class InlineNodeAgent(InlineAgent):
    """A node's agent; `held_before`: what it runs for an earlier server (inherited)."""

    held_before: list[Held] = field(default_factory=list)
    ended_before: list[Report] = field(default_factory=list)

    def inherited(self) -> tuple[list[Held], list[Report]]:
        found = (self.held_before, self.ended_before)
        self.held_before, self.ended_before = [], []
        return found


@dataclass
class InlineNode:
    agent: InlineNodeAgent
    instance_type: str
    room: int
    vms: set[str] = field(default_factory=set)
    alive: bool = True


class InlineProvider:
    """See the module docstring."""

    def __init__(self, nodes: list[tuple[str, int]], autoscaler: bool = False) -> None:
        self._planned = list(nodes)
        self._autoscaler = autoscaler
        self._listener: AgentListener | None = None
        self.nodes: list[InlineNode] = []
        self._new: list[InlineNodeAgent] = []
        self._wanted: dict[str, Shape] = {}
        self._ready: list[Ready] = []
        self._changed: Callable[[], None] = lambda: None
        self._names = itertools.count(1)
        self.sweeps = 0
        self.released: list[str] = []

    def agents(self, listener: AgentListener) -> list[InlineNodeAgent]:
        if self._listener is None:
            self._listener = listener
            for instance_type, room in self._planned:
                self.add_node(instance_type, room)
        new, self._new = self._new, []
        return new

    def add_node(self, instance_type: str, room: int,
                 held_before: list[Held] | None = None) -> InlineNode:
        """A node joins (its agent reaches the engine at its next step)."""
        assert self._listener is not None, "call agents() first (the engine does)"
        agent = InlineNodeAgent(self._listener, id=f"node-{next(self._names)}", slots=room,
                                queue=8, hosts_only_vms=True,
                                held_before=list(held_before or []))
        node = InlineNode(agent, instance_type, room)
        self.nodes.append(node)
        self._new.append(agent)
        self._place()
        return node

    def kill(self, node: InlineNode) -> None:
        """The node dies: its agent is gone, its reservations with it."""
        node.alive = False
        node.vms.clear()
        assert self._listener is not None
        self._listener.gone(node.agent.id, "(a test node) died")

    def node_of(self, agent_id: str) -> InlineNode:
        return next(node for node in self.nodes if node.agent.id == agent_id)

    # ---- Provider ------------------------------------------------------------------------

    def reserve(self, vm_id: str, shape: Shape) -> None:
        self._wanted[vm_id] = shape
        self._place()

    def ready(self) -> list[Ready]:
        ready, self._ready = self._ready, []
        return ready

    def release(self, vm_id: str) -> None:
        self.released.append(vm_id)
        self._wanted.pop(vm_id, None)
        for node in self.nodes:
            node.vms.discard(vm_id)
        self._place()

    def offers(self, instance_type: str) -> bool:
        return self._autoscaler or any(node.alive and node.instance_type == instance_type
                                       for node in self.nodes)

    def room(self, shape: Shape) -> int | None:
        if self._autoscaler:
            return None
        return sum(node.room for node in self.nodes
                   if node.alive and node.instance_type == shape.instance_type)

    def watch(self, changed: Callable[[], None]) -> None:
        self._changed = changed

    def sweep(self) -> None:
        self.sweeps += 1

    def shutdown(self) -> None:
        for node in self.nodes:
            node.agent.shutdown()

    def _place(self) -> None:
        for vm_id, shape in list(self._wanted.items()):
            node = next((node for node in self.nodes if node.alive
                         and node.instance_type == shape.instance_type
                         and len(node.vms) < node.room), None)
            if node is None:
                continue
            del self._wanted[vm_id]
            node.vms.add(vm_id)
            self._ready.append(Ready(vm_id, node.agent.id, "127.0.0.1", "inline"))
            self._changed()


__all__ = ["InlineNode", "InlineNodeAgent", "InlineProvider"]
