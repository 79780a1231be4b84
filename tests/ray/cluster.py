"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

Every node is a `ray start` of its own (the head, then one worker node per InstanceType) with
its own `--temp-dir` folder under the cluster's, its own ports (free ports of 127.0.0.1 picked
up front, so nodes started at once never collide) and the environment batchyard's deployment
guide asks for: token authentication, recursive child reaping, no usage stats. A worker node
offers an InstanceType the way a cloud machine would: `--labels=batchyard.io/instance-type=T`,
with the vCPUs and memory of a whole number of VMs of that type. A node's environment is
this process's (so its PYTHONPATH reaches the Ray workers, and batchyard imports there), minus
RAY_ADDRESS and RAY_NAMESPACE, plus NODE_ENV, RAY_AUTH_TOKEN, the caller's `env` (the object
store's credentials) and a marker (below); the head's also has HEAD_ENV (1-second health
checks, so a killed node is declared dead in ~7 s rather than ~15 s).

Ray replaces 127.0.0.1 with the machine's address when a node joins, so use this only inside
a network namespace that has nothing but `lo` (`in_loopback_namespace()`; run the tests as
`unshare -n sh -c 'ip link set lo up && python3 -m pytest tests/ray'`). There every server
listens on 127.0.0.1 and nothing can phone home.

How a node's processes are found (`RayCluster.processes`, for `kill_node` and `stop`): every
node is started with `BATCHYARD_TEST_RAY_NODE=<cluster tag>/<node name>` in its environment,
which the raylet, its agents and its Ray workers inherit (Ray retitles workers `ray::IDLE`,
so their command lines cannot be trusted; their initial environment, in /proc/PID/environ,
can). Processes that cleared their environment (a batchyard instance, say) are found as
descendants of those. They are all frozen with SIGSTOP first, the scan repeated until it finds
nothing new (a frozen process can neither fork nor be reparented away), then killed with
SIGKILL — the `kill -9` of a machine that dies.

Python API (ray is imported lazily: the module imports without Ray installed):
    in_loopback_namespace() -> bool
    start_ray_cluster(temp_dir, node_types, env, token) -> RayCluster
    RayCluster: address, token, temp_dir, env, nodes (head first), head, workers,
        node(instance_type) -> RayNode, start_node(instance_type, num_cpus, env_extra=None,
        memory=None) -> RayNode, kill_node(node, timeout=60), stop(), wait_nodes(count,
        timeout) and alive_nodes() -> {node id: labels}, lost_nodes() -> [RayNode],
        processes(node=None) -> {pid}, client_env() -> {var: value}, use_as_client()
    RayNode: name, node_id, instance_type ("" for the head), pid (its raylet's), env,
        temp_dir, num_cpus
    vm_memory(instance_type, num_cpus) -> bytes; running(pid) -> bool; LABEL; RayClusterError
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from batchyard.domain.instance_types import DEFAULT_CATALOGUE
from tests.s3server import free_ports

LABEL = "batchyard.io/instance-type"
MARKER = "BATCHYARD_TEST_RAY_NODE"
OBJECT_STORE_BYTES = 80_000_000
START_TIMEOUT = 90.0
WORKER_PORTS = 400
"""Each node gets its own range of this many ports for its Ray workers (10002-19999 overall)."""
NODE_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}
HEAD_ENV = {
    # The GCS declares a node dead after 5 missed health checks 1 s apart (Ray's defaults,
    # 3 s apart, make a node-loss test wait ~15 s).
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "5",
}
CLIENT_ENV_DROP = ("RAY_ADDRESS", "RAY_NAMESPACE")


class RayClusterError(RuntimeError):
    """A node did not start, or did not join, or did not die."""


def in_loopback_namespace() -> bool:
    """True in a network namespace whose only interface is `lo` (`unshare -n`). Asked of the
    kernel (/sys/class/net shows the namespace sysfs was mounted in, not this one's)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@dataclass
class RayNode:
    """One `ray start`: `instance_type` is "" for the head; `pid` is its raylet's."""

    name: str
    node_id: str
    instance_type: str
    pid: int
    env: dict[str, str]
    temp_dir: Path
    num_cpus: int


@dataclass
class RayCluster:
    """A running cluster. `address` is the GCS's, "127.0.0.1:PORT"."""

    address: str
    token: str
    temp_dir: Path
    env: dict[str, str]
    nodes: list[RayNode] = field(default_factory=list)
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    _started: int = 0

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[RayNode]:
        return self.nodes[1:]

    def node(self, instance_type: str) -> RayNode:
        """The first live node offering `instance_type`."""
        return next(node for node in self.nodes if node.instance_type == instance_type)

    def client_env(self) -> dict[str, str]:
        """What a Ray client of this cluster (a driver, `batchyard serve`) needs in its
        environment: the token and the auth mode."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_USAGE_STATS_ENABLED": "0"}

    def use_as_client(self) -> None:
        """Make this process (and the processes it starts) a client of this cluster. Ray
        reads RAY_AUTH_MODE when it is first imported: call this before `import ray`."""
        for name in CLIENT_ENV_DROP:
            os.environ.pop(name, None)
        os.environ.update(self.client_env())

    def start_node(self, instance_type: str, num_cpus: int,
                   env_extra: Mapping[str, str] | None = None,
                   memory: int | None = None) -> RayNode:
        """Start one worker node offering `instance_type` with `num_cpus` logical CPUs and
        `memory` bytes (default: as many whole VMs of the type as the CPUs hold)."""
        node = self._start_nodes([(instance_type, num_cpus, dict(env_extra or {}), memory)])[0]
        self.wait_nodes(len(self.nodes))
        return node

    def kill_node(self, node: RayNode, timeout: float = 60.0) -> None:
        """`kill -9` a node: its raylet and every process of it (see the module's docstring),
        then wait until the GCS declares it dead."""
        _kill_all(partial(self.processes, node))
        self.nodes.remove(node)
        deadline = time.monotonic() + timeout
        while node.node_id in self.alive_nodes():
            if time.monotonic() > deadline:
                raise RayClusterError(f"node {node.name} still alive {timeout:.0f} s after kill")
            time.sleep(0.2)

    def processes(self, node: RayNode | None = None) -> set[int]:
        """The live processes of `node` (default: of the whole cluster) and their
        descendants."""
        prefix = f"{self.tag}/{node.name}" if node else f"{self.tag}/"
        return _tree({pid for pid, marker in _markers().items()
                      if marker == prefix or (node is None and marker.startswith(prefix))})

    def stop(self) -> None:
        """Kill every process of this cluster (workers, then the head) and remove its temp
        folder; other Ray clusters on the machine are left alone."""
        for node in reversed(self.nodes):
            _kill_all(partial(self.processes, node))
        _kill_all(self.processes)
        self.nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def lost_nodes(self) -> list[RayNode]:
        """The nodes whose raylet is gone though `kill_node` was not called (something else
        killed it: `ray stop --force` run elsewhere on the machine stops every Ray cluster
        of it, this one included)."""
        return [node for node in self.nodes if not running(node.pid)]

    def alive_nodes(self) -> dict[str, dict[str, str]]:
        """The GCS's alive nodes: node id -> labels."""
        self.use_as_client()
        from ray._raylet import GcsClient

        infos = GcsClient(address=self.address).get_all_node_info(timeout=10)
        return {node_id.hex(): dict(info.labels) for node_id, info in infos.items()
                if info.state == 0}  # GcsNodeInfo.ALIVE

    def wait_nodes(self, count: int, timeout: float = START_TIMEOUT) -> dict[str, dict[str, str]]:
        """Wait until exactly `count` nodes are alive; returns them (node id -> labels)."""
        deadline = time.monotonic() + timeout
        while len(alive := self.alive_nodes()) != count:
            if time.monotonic() > deadline:
                raise RayClusterError(f"{len(alive)} nodes alive, not {count}, after "
                                      f"{timeout:.0f} s: {sorted(alive)}")
            time.sleep(0.2)
        return alive

    def _start_nodes(self, specs: Sequence[tuple[str, int, dict[str, str], int | None]]
                     ) -> list[RayNode]:
        commands = [self._worker_command(*spec) for spec in specs]
        with ThreadPoolExecutor(max(1, len(commands))) as pool:
            started = list(pool.map(lambda item: _start(*item), commands))
        self.nodes.extend(started)
        return started

    def _worker_command(self, instance_type: str, num_cpus: int, env_extra: dict[str, str],
                        memory: int | None) -> tuple[str, str, int, list[str], dict[str, str],
                                                     Path]:
        index = self._started = self._started + 1
        name = f"w{index}"  # short: Ray's socket paths live under the node's temp folder
        temp = self.temp_dir / name
        ports = free_ports(6)
        low = 10002 + WORKER_PORTS * index
        if memory is None:
            memory = vm_memory(instance_type, num_cpus)
        command = [ray_binary(), "start", f"--address={self.address}", f"--num-cpus={num_cpus}",
                   f"--labels={LABEL}={instance_type}", f"--memory={memory}",
                   *_common_options(temp),
                   f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
                   f"--metrics-export-port={ports[2]}",
                   f"--dashboard-agent-listen-port={ports[3]}",
                   f"--dashboard-agent-grpc-port={ports[4]}",
                   f"--runtime-env-agent-port={ports[5]}",
                   f"--min-worker-port={low}", f"--max-worker-port={low + WORKER_PORTS - 1}"]
        env = self._node_env(name, env_extra)
        return name, instance_type, num_cpus, command, env, temp

    def _node_env(self, name: str, extra: Mapping[str, str]) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in CLIENT_ENV_DROP}
        env.update(NODE_ENV, RAY_AUTH_TOKEN=self.token, **self.env, **extra)
        env[MARKER] = f"{self.tag}/{name}"
        return env


def ray_binary() -> str:
    """The `ray` command of this Python (beside it in a virtual environment), else PATH's."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


def vm_memory(instance_type: str, num_cpus: int) -> int:
    """The memory of as many VMs of `instance_type` as `num_cpus` CPUs hold (at least one),
    for `ray start --memory`; 1 GiB for a type the default catalogue does not have."""
    shape = DEFAULT_CATALOGUE.get(instance_type)
    if shape is None:
        return 1 << 30
    return max(1, num_cpus // shape.vcpu) * shape.memory_bytes


def start_ray_cluster(temp_dir: Path, node_types: Sequence[tuple[str, int]],
                      env: Mapping[str, str], token: str) -> RayCluster:
    """Start a head (no CPUs, so no VM lands there; no dashboard; an 80 MB object store) and,
    all at once, one worker node per (instance type, logical CPUs), each with the memory of
    the VMs its CPUs hold; wait until the GCS lists them all. `env` (the object store's
    credentials) reaches every node's environment, never Ray's task arguments. `temp_dir`
    must be short: Ray's Unix socket paths live under it (at most 107 bytes in all)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    port, client_port, dashboard_port = free_ports(3)
    cluster = RayCluster(f"127.0.0.1:{port}", token, temp_dir, dict(env))
    head = [ray_binary(), "start", "--head", f"--port={port}", "--num-cpus=0", "--memory=0",
            "--include-dashboard=false", f"--ray-client-server-port={client_port}",
            f"--dashboard-port={dashboard_port}",
            "--min-worker-port=10002", f"--max-worker-port={10002 + WORKER_PORTS - 1}",
            *_common_options(temp_dir / "head")]
    try:
        head_env = {**cluster._node_env("head", {}), **HEAD_ENV}
        with ThreadPoolExecutor(1) as pool:
            # The workers join as soon as the GCS answers, while the head starts the rest.
            started = pool.submit(_start, "head", "", 0, head, head_env, temp_dir / "head")
            _wait_for_port(port, started)
            workers = cluster._start_nodes([(kind, cpus, {}, None) for kind, cpus in node_types])
            cluster.nodes[:] = [started.result(), *workers]
        alive = cluster.wait_nodes(len(cluster.nodes))
        _check_labels(cluster, alive)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_port(port: int, starting: Future[RayNode]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not starting.done():
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    starting.result(0)  # the head's failure, if it failed


def _common_options(temp: Path) -> list[str]:
    return [f"--temp-dir={temp}", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
            f"--object-store-memory={OBJECT_STORE_BYTES}"]


def _start(name: str, instance_type: str, num_cpus: int, command: list[str],
           env: dict[str, str], temp: Path) -> RayNode:
    temp.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True,
                                timeout=START_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as late:
        raise RayClusterError(f"`{' '.join(command)}` did not finish within "
                              f"{START_TIMEOUT:.0f} s (was the head killed, by a `ray stop` "
                              f"elsewhere on this machine?):\n{_tail(late.stdout)}\n"
                              f"{_tail(late.stderr)}") from None
    if result.returncode != 0:
        raise RayClusterError(f"`{' '.join(command)}` failed ({result.returncode}):\n"
                              f"{_tail(result.stdout)}\n{_tail(result.stderr)}")
    pid, node_id = _raylet_of(temp)
    return RayNode(name, node_id, instance_type, pid, env, temp, num_cpus)


def _tail(output: str | bytes | None) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return text[-3000:]


def _raylet_of(temp: Path) -> tuple[int, str]:
    """The pid and node id of the raylet whose --temp_dir is `temp`."""
    wanted = f"--temp_dir={temp}"
    for pid in _pids():
        args = _cmdline(pid)
        if args and args[0].endswith("/raylet") and wanted in args:
            node_id = next(arg.split("=", 1)[1] for arg in args if arg.startswith("--node_id="))
            return pid, node_id
    raise RayClusterError(f"no raylet runs with {wanted}")


def _check_labels(cluster: RayCluster, alive: Mapping[str, Mapping[str, str]]) -> None:
    for node in cluster.nodes:
        offered = alive.get(node.node_id, {}).get(LABEL, "")
        if offered != node.instance_type:
            raise RayClusterError(f"node {node.name} offers {offered!r}, not "
                                  f"{node.instance_type!r}: {alive}")


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _markers() -> dict[int, str]:
    """pid -> the MARKER of its initial environment, for the processes that have one."""
    found: dict[int, str] = {}
    needle = f"{MARKER}=".encode()
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(needle):
                found[pid] = entry[len(needle):].decode(errors="replace")
    return found


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process."""
    table: dict[int, tuple[int, str]] = {}
    for pid in _pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[pid] = (int(fields[1]), fields[0])
    return table


def running(pid: int) -> bool:
    """True unless the process is gone or a zombie (dead, not yet reaped)."""
    state = _parents().get(pid)
    return state is not None and state[1] != "Z"


def _tree(roots: set[int]) -> set[int]:
    """`roots` and their descendants, zombies left out (they are dead already)."""
    table = _parents()
    found = {pid for pid in roots if pid in table}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return {pid for pid in found if table[pid][1] != "Z"}


def _kill_all(find: Callable[[], set[int]], rounds: int = 50) -> None:
    """Freeze (SIGSTOP) what `find()` returns until it returns nothing new, then SIGKILL it
    all; repeat until nothing is left."""
    for _ in range(rounds):
        frozen: set[int] = set()
        while fresh := set(find()) - frozen:
            _signal(fresh, signal.SIGSTOP)
            frozen |= fresh
        if not frozen:
            return
        _signal(frozen, signal.SIGKILL)
        time.sleep(0.05)
    raise RayClusterError(f"processes still alive after {rounds} rounds of SIGKILL: {find()}")


def _signal(pids: set[int], number: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)
