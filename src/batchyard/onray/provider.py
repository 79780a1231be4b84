"""The Ray provider (engine side): node agents, VM reservations and the lease transport.

`RayProvider` implements `ports.provider.Provider` for `batchyard serve --provider ray`:

- **Nodes.** Every alive node labelled `batchyard.io/instance-type` gets one node agent: a
  detached actor (`onray.node.NodeAgent`) named `batchyard-node-<node id>` in the
  provider's namespace, pinned to its node, `num_cpus=0`, `max_restarts=0`,
  `max_task_retries=0` — Ray never starts it again nor re-runs a call on its own; batchyard
  counts what it ran lost and re-runs it by its own rules. A restarted server finds the
  agents by name (`get_if_exists`). Nodes are looked at again every `DISCOVER` seconds.
- **VMs.** A VM is a detached placement group `batchyard-vm-<vm id>` of one bundle of its
  InstanceType's CPU and memory, on a node labelled with that type; when it holds, the VM is
  hosted by that node's agent. A restarted server takes back a VM's group by its name.
- **Transport.** `NodeHandle` is the engine's `Agent` for one node agent: a lease batch, a
  cancel or a forget is one actor call (numbered, applied in order); one thread per node
  long-polls its reports and heartbeat; a dead actor (its node died, or it was killed) is
  reported `gone`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from batchyard.domain.attempt import AttemptKey
from batchyard.errors import BatchyardError
from batchyard.ports.agents import AgentInfo, AgentListener, LeaseBatch, Report
from batchyard.ports.provider import Held, Ready, Shape
from batchyard.settings import Settings

log = logging.getLogger(__name__)

LABEL = "batchyard.io/instance-type"
"""The node label naming the InstanceType a node offers (`ray start --labels=...`)."""
ACTOR_PREFIX = "batchyard-node-"
GROUP_PREFIX = "batchyard-vm-"
COLLECT = 0.1
"""Seconds the watcher waits at most for a reservation to hold before it looks again at
what it watches (a reservation made meanwhile joins then)."""
DISCOVER = 2.0
"""Seconds between looks at the cluster's nodes (joins, types offered)."""
POLL = 1.0
"""Seconds a node agent's long poll waits for reports (it answers at once when some come)."""
HEARTBEAT = 2.0
"""The heartbeat period the engine expects of a node handle (a poll answers in POLL)."""
START_TIMEOUT = 60.0
UNREACHABLE = 5.0
"""Seconds a node agent's poll may fail (the cluster does not answer) before its attempts
are counted lost, with a message that says so."""
"""Seconds a new node agent may take to start (import batchyard, build its agent)."""
MOST_SLOTS = 256
QUEUED_PER_VM = 16
"""Short attempts a VM may hold queued behind the one it runs (see `orchestrator.fleet`)."""


class RayUnavailable(BatchyardError):
    """Ray is not installed, or the cluster cannot be reached."""


@dataclass(frozen=True)
class _Node:
    node_id: str
    address: str
    host_name: str
    instance_type: str
    cpus: float
    memory: float


def secretless(settings: Settings) -> dict[str, Any]:
    """The settings a node agent is built from, without any secret: the node's own
    environment supplies those (they never travel through Ray)."""
    from pydantic import SecretStr

    secret = {name for name, field in Settings.model_fields.items()
              if field.annotation in (SecretStr, "SecretStr")}
    return settings.model_dump(exclude=secret, exclude_unset=False)


class RayProvider:
    """See the module docstring. One per engine; `shutdown` when the engine closes."""

    def __init__(self, settings: Settings, address: str, namespace: str = "batchyard",
                 autoscaler: bool = False, node_root: str = "/var/tmp/batchyard") -> None:
        try:
            import ray
        except ImportError as error:
            raise RayUnavailable("the Ray provider needs Ray: pip install 'batchyard[ray]'"
                                 ) from error
        self._ray: Any = ray
        if ray.is_initialized():
            raise RayUnavailable("this process is a Ray driver already: one engine with the "
                                 "Ray provider per process")
        try:
            ray.init(address=address or "auto", namespace=namespace, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except Exception as error:
            raise RayUnavailable(f"cannot reach the Ray cluster at {address or 'auto'}: "
                                 f"{error}") from error
        self._namespace = namespace
        self._autoscaler = autoscaler
        self._node_root = node_root
        self._fields = secretless(settings)
        self._object_root = str(settings.object_root)
        self._session = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._listener: AgentListener | None = None
        self._handles: dict[str, NodeHandle] = {}
        """Node id -> its agent's handle (alive or not)."""
        self._new: list[NodeHandle] = []
        self._starting: dict[str, tuple[Any, Any, _Node]] = {}
        """Node id -> (its agent's actor, the ref of its `attach`, the node), while the
        agent starts (importing batchyard takes a second or more)."""
        self._offered: set[str] = set()
        self._nodes: list[_Node] = []
        self._earlier: set[str] = set()
        """Names of this namespace's placement groups made before this server started (a
        restarted server takes back the VMs' ones by name)."""
        self._groups: dict[str, tuple[Any, Any, Shape]] = {}
        """VM id -> (placement group, its ready() ref, shape), while not held yet."""
        self._held: dict[str, Any] = {}
        self._wanted: dict[str, Shape] = {}
        """VMs asked for whose placement group the cluster did not take yet."""
        self._ready: list[Ready] = []
        self._changed: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="batchyard-ray-watcher",
                                         daemon=True)

    # ---- Provider ------------------------------------------------------------------------

    def agents(self, listener: AgentListener) -> list[NodeHandle]:
        if self._listener is None:
            self._listener = listener
            self._earlier = self._namespace_groups()
            self._discover()
            self._await_agents(START_TIMEOUT)
            self._watcher.start()
        with self._lock:
            new, self._new = self._new, []
        return new

    def watch(self, changed: Callable[[], None]) -> None:
        self._changed = changed

    def offers(self, instance_type: str) -> bool:
        return self._autoscaler or instance_type in self._offered

    def room(self, shape: Shape) -> int | None:
        if self._autoscaler:
            return None
        return sum(int(min(node.cpus // max(shape.vcpu, 0.001),
                           node.memory // max(shape.memory_bytes, 1)))
                   for node in self._nodes if node.instance_type == shape.instance_type)

    def reserve(self, vm_id: str, shape: Shape) -> None:
        """Ask Ray for the VM's placement group (taken back by name if an earlier server
        made it). Never raises: while the cluster does not answer, the watcher asks again."""
        with self._lock:
            self._wanted[vm_id] = shape
        try:
            self._make_group(vm_id, shape)
        except Exception as error:
            log.warning("could not reserve VM %s yet (the watcher tries again): %s", vm_id,
                        error)
        self._wake.set()

    def _make_group(self, vm_id: str, shape: Shape) -> None:
        from ray.util.placement_group import get_placement_group, placement_group

        name = self._group_name(vm_id)
        group = None
        if name in self._earlier:  # a restarted server takes it back
            with contextlib.suppress(ValueError):
                group = get_placement_group(name)
        if group is None:
            bundle = {"CPU": float(shape.vcpu), "memory": float(shape.memory_bytes)}
            group = placement_group([bundle], strategy="PACK", name=name, lifetime="detached",
                                    bundle_label_selector=[{LABEL: shape.instance_type}])
        with self._lock:
            if self._wanted.pop(vm_id, None) is not None:
                self._groups[vm_id] = (group, group.ready(), shape)
                return
        self._remove(group)  # released meanwhile

    def _retry_wanted(self) -> None:
        """Reservations the cluster could not take when asked (it did not answer)."""
        with self._lock:
            wanted = dict(self._wanted)
        for vm_id, shape in wanted.items():
            self._make_group(vm_id, shape)

    def _group_name(self, vm_id: str) -> str:
        """`batchyard-vm-<namespace>-<vm id>`: a restarted server finds it again; another
        server (another namespace) never takes it for its own."""
        return f"{GROUP_PREFIX}{self._namespace}-{vm_id}"

    def _namespace_groups(self) -> set[str]:
        """The names of this namespace's placement groups that are not removed."""
        from ray.util.placement_group import placement_group_table

        prefix = f"{GROUP_PREFIX}{self._namespace}-"
        return {table["name"] for table in placement_group_table().values()
                if table.get("name", "").startswith(prefix) and table["state"] != "REMOVED"}

    def sweep(self) -> None:
        """Remove the placement groups of this namespace no VM of this engine holds."""
        from ray.util.placement_group import get_placement_group, remove_placement_group

        with self._lock:
            claimed = {self._group_name(vm_id)
                       for vm_id in [*self._groups, *self._held, *self._wanted]}
        for name in self._namespace_groups() - claimed:
            try:
                remove_placement_group(get_placement_group(name))
            except Exception:
                continue
            log.info("gave up %s: an earlier server's reservation no VM holds now", name)

    def ready(self) -> list[Ready]:
        with self._lock:
            ready, self._ready = self._ready, []
        return ready

    def release(self, vm_id: str) -> None:
        with self._lock:
            self._wanted.pop(vm_id, None)
            pending = self._groups.pop(vm_id, None)
            group = pending[0] if pending else self._held.pop(vm_id, None)
        if group is not None:
            self._remove(group)

    def _remove(self, group: Any) -> None:
        from ray.util.placement_group import remove_placement_group

        try:
            remove_placement_group(group)
        except Exception:  # gone with its node, or the cluster: nothing is held
            log.debug("placement group %s already gone", group, exc_info=True)

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        for vm_id in list(self._groups) + list(self._held):
            self.release(vm_id)
        for handle in list(self._handles.values()):
            handle.shutdown()
        if self._watcher.is_alive():
            self._watcher.join(5)
        self._ray.shutdown()

    # ---- the watcher thread --------------------------------------------------------------

    def _await_agents(self, timeout: float) -> None:
        """At start: wait (bounded) for the agents of the nodes found, so that the engine
        begins with them."""
        deadline = time.monotonic() + timeout
        while self._starting and time.monotonic() < deadline:
            refs = {ref: node_id for node_id, (_, ref, _) in self._starting.items()}
            done, _ = self._ray.wait(list(refs), num_returns=len(refs),
                                     timeout=max(0.0, deadline - time.monotonic()))
            for ref in done:
                self._started(refs[ref], ref)

    def _watch(self) -> None:
        discovered = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - discovered >= DISCOVER:
                    discovered = time.monotonic()
                    self._discover()
                    self._retry_wanted()
                self._collect()
            except Exception:
                log.exception("the Ray provider's watcher failed; trying again")
                self._stop.wait(1.0)

    def _collect(self) -> None:
        """Wait (briefly) for agents to start and reservations to hold; hand those that did
        on (`agents`, `ready`)."""
        with self._lock:
            groups = {ref: vm_id for vm_id, (_, ref, _) in self._groups.items()}
        starting = {ref: node_id for node_id, (_, ref, _) in self._starting.items()}
        refs = [*groups, *starting]
        if not refs:
            self._wake.wait(COLLECT)
            self._wake.clear()
            return
        done, _ = self._ray.wait(refs, num_returns=1, timeout=COLLECT)
        if done and len(refs) > 1:  # and every other one that holds by now
            done, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        started = [self._started(starting[ref], ref) for ref in done if ref in starting]
        found = [ready for ref in done if ref in groups
                 if (ready := self._held_now(groups[ref])) is not None]
        if found:
            with self._lock:
                self._ready += found
        if found or any(started):
            self._changed()
        elif done:
            self._stop.wait(0.2)  # reservations on a node whose agent is not up yet

    def _held_now(self, vm_id: str) -> Ready | None:
        """The VM whose reservation holds, once its node's agent is up (else None: looked
        at again)."""
        with self._lock:
            pending = self._groups.get(vm_id)
        if pending is None:
            return None
        node = self._node_of(pending[0])
        handle = self._handles.get(node) if node else None
        if handle is None or not handle.alive:
            return None
        with self._lock:
            if self._groups.pop(vm_id, None) is None:
                return None
            self._held[vm_id] = pending[0]
        return Ready(vm_id, handle.info().id, handle.address, handle.host_name)

    def _node_of(self, group: Any) -> str | None:
        from ray.util.placement_group import placement_group_table

        nodes = placement_group_table(group).get("bundles_to_node_id", {})
        return next(iter(nodes.values()), None)

    def _discover(self) -> None:
        """Start (or find) the agent of every node offering a type; note the types."""
        nodes = [_Node(node["NodeID"], node["NodeManagerAddress"],
                       node.get("NodeManagerHostname", ""), node["Labels"][LABEL],
                       node.get("Resources", {}).get("CPU", 1.0),
                       node.get("Resources", {}).get("memory", 0.0))
                 for node in self._ray.nodes()
                 if node.get("Alive") and LABEL in (node.get("Labels") or {})]
        self._offered = {node.instance_type for node in nodes}
        self._nodes = nodes
        for node in nodes:
            if node.node_id not in self._handles and node.node_id not in self._starting:
                self._start_agent(node)

    def _start_agent(self, node: _Node) -> None:
        """Create (or find, after a restart) the node's agent; `_started` when it answers."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from batchyard.onray.node import NodeAgent

        slots = max(1, min(MOST_SLOTS, int(node.cpus * 4)))
        remote: Any = self._ray.remote(NodeAgent)
        remote = remote.options(
            name=ACTOR_PREFIX + node.node_id, namespace=self._namespace, lifetime="detached",
            get_if_exists=True, max_restarts=0, max_task_retries=0, num_cpus=0,
            max_concurrency=8,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False))
        fields = {**self._fields, "data_dir": f"{self._node_root}/{node.node_id[:12]}"}
        actor = remote.remote(fields, node.node_id, slots, self._object_root)
        self._starting[node.node_id] = (actor, actor.attach.remote(self._session), node)

    def _started(self, node_id: str, ref: Any) -> bool:
        """The node's agent answered `attach` (True), or failed to start (logged; tried
        again at the next look at the nodes)."""
        actor, _, node = self._starting.pop(node_id)
        try:
            found: dict[str, Any] = self._ray.get(ref)
        except Exception as error:
            log.error("the agent of Ray node %s did not start: %s", node_id[:12], error)
            return False
        slots = max(1, min(MOST_SLOTS, int(node.cpus * 4)))
        assert self._listener is not None
        info = AgentInfo(f"node-{node.node_id[:12]}", slots, heartbeat=HEARTBEAT,
                         queue=QUEUED_PER_VM,
                         hosts_only_vms=True, sandbox=bool(found.get("sandbox", True)),
                         labels={LABEL: node.instance_type})
        log.info("agent of Ray node %s (%s) up: process %s", node.node_id[:12],
                 node.instance_type, found.get("pid"))
        handle = NodeHandle(self._ray, actor, info, self._listener, node.address,
                            node.host_name or str(found.get("host_name", "")),
                            (list(found.get("held", [])), list(found.get("reports", []))),
                            int(found.get("acked", 0)))
        self._handles[node_id] = handle
        with self._lock:
            self._new.append(handle)
        return True


class NodeHandle:
    """The engine's `Agent` for one node agent (see the module docstring)."""

    def __init__(self, ray: Any, actor: Any, info: AgentInfo, listener: AgentListener,
                 address: str, host_name: str,
                 inherited: tuple[list[Held], list[Report]] = ([], []), acked: int = 0
                 ) -> None:
        self._ray = ray
        self._actor = actor
        self._info = info
        self._listener = listener
        self.address = address
        self.host_name = host_name
        self.alive = True
        self._inherited = inherited
        self._acked = acked
        """The last report batch the attach answered with (the poll goes on from it)."""
        self._numbers = itertools.count(1)
        self._send = threading.Lock()
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True,
                                        name=f"batchyard-ray-{info.id}")
        self._poller.start()

    def info(self) -> AgentInfo:
        return self._info

    def inherited(self) -> tuple[list[Held], list[Report]]:
        """What the node agent held from an earlier server when this one attached (once)."""
        inherited, self._inherited = self._inherited, ([], [])
        return inherited

    def lease(self, batch: LeaseBatch) -> None:
        self._call("lease", batch)

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        self._call("cancel", tuple(keys))

    def forget(self, job_id: str) -> None:
        self._call("forget", job_id)

    def shutdown(self) -> None:
        """Stop the node agent (what runs is killed) and the actor."""
        self._stopping.set()
        if not self.alive:
            return
        self.alive = False
        try:
            self._ray.get(self._actor.stop.remote(), timeout=30)
        except Exception:
            log.debug("node agent %s did not stop cleanly", self._info.id, exc_info=True)
        try:
            self._ray.kill(self._actor, no_restart=True)
        except Exception:
            log.debug("node agent %s already gone", self._info.id, exc_info=True)

    def _call(self, kind: str, payload: object) -> None:
        """One numbered actor call (fire and forget: a dead actor shows in the poll)."""
        with self._send:
            self._actor.control.remote(next(self._numbers), kind, payload)

    def _poll(self) -> None:
        ray = self._ray
        ack = self._acked
        failing = 0.0
        """When the cluster stopped answering (0: it answers)."""
        while not self._stopping.is_set():
            try:
                ack, reports, running = ray.get(self._actor.poll.remote(ack, POLL),
                                                timeout=POLL + 30)
            except ray.exceptions.GetTimeoutError:
                continue  # its heartbeats are late: the engine counts it lost if it lasts
            except ray.exceptions.RayActorError as error:
                if not self._stopping.is_set():
                    self._gone(_why(error))
                return
            except Exception as error:  # the cluster does not answer: its head lost?
                failing = failing or time.monotonic()
                if time.monotonic() - failing > UNREACHABLE and not self._stopping.is_set():
                    self._gone(f"does not answer: the Ray cluster has not answered for "
                               f"{UNREACHABLE:g} s (its head lost?): {_first_line(error)}")
                    return
                log.warning("polling %s failed: %s", self._info.id, error)
                self._stopping.wait(1.0)
                continue
            failing = 0.0
            if reports:
                self._listener.reported(self._info.id, reports)
            self._listener.heartbeat(self._info.id, running)

    def _gone(self, reason: str) -> None:
        self.alive = False
        log.error("agent %s %s", self._info.id, reason)
        self._listener.gone(self._info.id, reason)


def _why(error: Exception) -> str:
    """A phrase after "agent <id>" for the lost attempts' message."""
    return f"(a Ray actor) died: {_first_line(error)}"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def local_buckets(settings: Settings) -> list[str]:
    """Buckets that are folders of this machine (every node must reach the object store)."""
    folders = [name for name, url in settings.buckets.items()
               if "://" not in url or url.startswith("file://")]
    return sorted(folders)


def check_object_store(settings: Settings, shared: bool) -> None:
    """Refuse a Ray provider whose buckets are folders of the server only."""
    if shared:
        return
    folders = local_buckets(settings)
    if folders or not settings.buckets:
        named = ", ".join(folders) if folders else "every bucket (none is mapped)"
        raise BatchyardError(
            f"the Ray provider needs object storage every node can reach, and these buckets "
            f"are folders of this machine: {named}. Map every bucket to S3 or OSS "
            f"(`buckets = {{NAME = \"s3://...\"}}` in the configuration file, or "
            f"BATCHYARD_BUCKETS='{{\"NAME\": \"s3://...\"}}') with the S3 endpoint and keys "
            f"on the server and on every node (docs/deploy-ray.md), or declare the folders "
            f"mounted at the same path on every node: shared_object_root = true "
            f"(BATCHYARD_SHARED_OBJECT_ROOT=1).")


__all__ = ["LABEL", "NodeHandle", "RayProvider", "RayUnavailable", "check_object_store",
           "secretless"]
