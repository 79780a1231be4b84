"""A throwaway Ray cluster on this machine for the Ray benchmarks (`ray.py`, `ray_memory.py`).

Ray replaces 127.0.0.1 with the machine's address when nodes join, so the cluster runs in a
loopback-only network namespace: `in_netns()` re-executes the benchmark under `unshare -n`
(with `lo` up) when it runs as root outside one, and refuses otherwise. Every node gets the
environment batchyard's deployment guide asks for (docs/deploy-ray.md): token auth, the
recursive child reaping, usage stats off.

Import this module BEFORE `ray`: a script in bench/ has bench/ first on sys.path, where
`ray.py` (the benchmark) would shadow the ray package; importing this module takes bench/
off sys.path again.
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
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.modules.pop("ray", None)  # bench/ray.py, if it was imported as `ray` by mistake

SOURCE = BENCH.parent / "src"
LABEL = "batchyard.io/instance-type"
MARKER = "BATCHYARD_BENCH_NETNS"
RAY_MARKS = (b"/ray/", b"-m ray.", b"/bin/ray ")
"""What the command line of a Ray process holds (its workers' start with `ray::`)."""


def loopback_only() -> bool:
    """Whether this process is in a network namespace with only the loopback interface."""
    return sorted(name for _, name in socket.if_nameindex()) == ["lo"]


def in_netns() -> None:
    """Make sure this process runs in a loopback-only network namespace with `lo` up:
    re-execute the script under `unshare -n` when needed (root only); exit otherwise."""
    if loopback_only():
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        return
    if os.environ.get(MARKER) or os.geteuid() != 0 or not shutil.which("unshare"):
        sys.exit("error: the Ray benchmarks start a Ray cluster in a loopback-only network "
                 "namespace (Ray replaces 127.0.0.1 with the machine's address otherwise); "
                 "run them as root (they re-execute themselves under `unshare -n`), or "
                 "inside such a namespace: unshare -n sh -c 'ip link set lo up && "
                 f"python3 {' '.join(sys.argv)}'")
    os.environ[MARKER] = "1"
    command = 'ip link set lo up && exec "$0" "$@"'
    os.execvp("unshare", ["unshare", "-n", "--", "sh", "-c", command,
                          sys.executable, *sys.argv])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_environment(token: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment of every node (and of the driver): docs/deploy-ray.md."""
    path = os.pathsep.join(filter(None, [str(SOURCE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "true",
            **extra}


@dataclass
class Cluster:
    address: str
    token: str
    temp_dir: Path
    extra: Mapping[str, str] = field(default_factory=dict)
    """More environment for every node (the `BATCHYARD_S3_*` credentials, say)."""
    started: dict[str, float] = field(default_factory=dict)
    """Seconds each `ray start` took, by node name."""

    @property
    def environment(self) -> dict[str, str]:
        return node_environment(self.token, self.extra)

    def stop(self) -> None:
        """Kill every Ray process of this cluster and delete the temp dir.

        Not `ray stop --force`: it kills every Ray process of the machine by name, other
        people's clusters included (network namespaces do not hide processes). This
        cluster's are the Ray processes in this network namespace."""
        for process in ray_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def ray_processes() -> list[int]:
    """The Ray processes in this process's network namespace (every one of a cluster
    started here, and none of another namespace's)."""
    here = os.readlink("/proc/self/ns/net")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            namespace = os.readlink(entry / "ns" / "net")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if namespace == here and (command.startswith(b"ray::")
                                  or any(mark in command for mark in RAY_MARKS)):
            found.append(int(entry.name))
    return found


def ray_process_kinds() -> dict[int, str]:
    """The batchyard node agents, raylets and GCS servers on this machine, by pid (every
    node of a benchmark's cluster is on this machine): what `ray.py` and `ray_vms.py`
    measure, from the engine's process (outside this module's namespace check)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        kind = ("node agent" if name.startswith("ray::NodeAgent") else
                "raylet" if name.endswith("raylet") else
                "gcs" if name.endswith("gcs_server") else None)
        if kind:
            found[int(entry.name)] = kind
    return found


def _ray_start(cluster: Cluster, name: str, arguments: Sequence[str]) -> subprocess.Popen[bytes]:
    node_dir = cluster.temp_dir / name
    node_dir.mkdir()
    ports = [f"--{option}={free_port()}" for option in (
        "node-manager-port", "object-manager-port", "metrics-export-port",
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")]
    command = ["ray", "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
               f"--temp-dir={node_dir}", "--object-store-memory=80000000", *ports, *arguments]
    return subprocess.Popen(command, env=cluster.environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _wait_started(cluster: Cluster, name: str, process: subprocess.Popen[bytes],
                  began: float) -> None:
    output, _ = process.communicate()
    if process.returncode:
        cluster.stop()
        sys.exit(f"error: `ray start` of {name} failed:\n{output.decode(errors='replace')}")
    cluster.started[name] = time.perf_counter() - began


def start_cluster(workers: Sequence[tuple[str, int]], env: Mapping[str, str] = {}) -> Cluster:
    """A head with no CPUs and one worker node per (instance type, CPUs), started in
    parallel after the head, each with `env` added to its environment; returns once every
    node is alive."""
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", secrets.token_hex(16),
                      Path(tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp")), dict(env))
    began = time.perf_counter()
    head = _ray_start(cluster, "head", ["--head", f"--port={port}", "--num-cpus=0",
                                        "--include-dashboard=false",
                                        f"--ray-client-server-port={free_port()}"])
    _wait_started(cluster, "head", head, began)
    nodes = {}
    for number, (instance_type, cpus) in enumerate(workers):
        name = f"worker{number}"
        nodes[name] = (time.perf_counter(), _ray_start(cluster, name, [
            f"--address={cluster.address}", f"--num-cpus={cpus}",
            f"--labels={LABEL}={instance_type}"]))
    for name, (start, process) in nodes.items():
        _wait_started(cluster, name, process, start)
    return cluster


def connect(cluster: Cluster) -> None:
    """`ray.init` as a driver of the cluster. The token must be in the environment before
    `ray` is imported (Ray reads it at import)."""
    os.environ.update(cluster.environment)
    import ray

    ray.init(address=cluster.address, namespace="batchyard", log_to_driver=False,
             logging_level="ERROR")
