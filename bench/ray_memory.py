"""What a VM costs in memory on Ray: one agent actor per VM, or one per node with a
placement group per VM.

    python bench/ray_memory.py                # N = 10 and 50 VMs
    python bench/ray_memory.py --vms 10 50 100

Starts its own Ray cluster (a head with no CPUs and one worker node offering
`ecs.n1.small`, in a loopback-only network namespace: see `ray_cluster.py`), then, for each
N:

- per VM (the design first proposed): N detached actors (`lifetime="detached"`,
  `max_restarts=0`, `max_task_retries=0`, on the node by its label), each importing
  `batchyard.agent.agent` and `batchyard.hosting` and hosting a started `LocalAgent` of one
  slot — what an agent actor holds before it runs anything;
- per node (the design chosen): one such actor, plus N placement groups of one bundle
  `{"CPU": 0.01}` on the node (`bundle_label_selector`) as the VMs' reservations.

For both it sums the USS (memory only that process holds) and the RSS of the actors'
processes, and the growth of the RSS of the GCS and the node's raylet over the run (what
Ray itself keeps per actor or placement group), and prints the cost per VM and the ratio
per VM / per node. The baseline of the same invocation is the per-node design. The RSS of
the head's and the worker node's Ray processes, idle, is printed first.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_cluster import LABEL, Cluster, connect, in_netns, ray_processes, start_cluster

INSTANCE_TYPE = "ecs.n1.small"
MB = 1024 * 1024


class AgentHost:
    """What an agent actor holds: batchyard's agent imported and one started."""

    def __init__(self, data_dir: str) -> None:
        from batchyard.hosting import agent_info, hosted_agent
        from batchyard.settings import Settings

        class Silent:
            def reported(self, agent_id: str, reports: Sequence[Any]) -> None: ...

            def heartbeat(self, agent_id: str, running: Sequence[int]) -> None: ...

            def gone(self, agent_id: str, reason: str) -> None: ...

        settings = Settings(data_dir=Path(data_dir), slots=1, process_tracking="subreaper")
        self.agent = hosted_agent(agent_info(settings, False), settings, False, Silent())

    def pid(self) -> int:
        return os.getpid()


@dataclass
class Sample:
    uss: int
    rss: int
    ray_growth: int
    """RSS the GCS and the node's raylet gained."""


def memory(pids: Iterable[int]) -> tuple[int, int]:
    """USS and RSS summed over these processes."""
    import psutil  # Ray ships it (ray/thirdparty_files), on sys.path once ray is imported

    uss = rss = 0
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        uss, rss = uss + info.uss, rss + info.rss
    return uss, rss


def title(command: list[str]) -> str:
    """A Ray process's readable name: its title, script or module."""
    if command[0].startswith("ray::"):
        return command[0][5:]
    for before, part in itertools.pairwise(command):
        if part.endswith(".py") or before == "-m":
            return Path(part).name
    return Path(command[0]).name


def node_of(pid: int, temp_dir: Path) -> str:
    """`head` or `worker0`: the node folder (`ray_cluster`) named in the process's command
    line, or in its parent's (a Ray agent's title replaces its command line); `head` for
    the head's processes that name neither (Ray's client server)."""
    for _ in range(2):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        for node in ("head", "worker0"):
            if f"{temp_dir}/{node}/" in command:
                return node
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return "head"


def daemons(temp_dir: Path) -> dict[str, int]:
    """Pid of each long-lived Ray process of the cluster (not its workers), by name."""
    found = {}
    for pid in ray_processes():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        if command[0] in ("ray::IDLE", "ray::AgentHost"):
            continue  # a worker: counted with the actors
        found[f"{node_of(pid, temp_dir)}: {title(command)}"] = pid
    return found


def core_rss(table: dict[str, int]) -> int:
    pids = [pid for name, pid in table.items()
            if name.endswith("gcs_server") or name == "worker0: raylet"]
    return memory(pids)[1]


def settle() -> None:
    time.sleep(2.0)  # let Ray's processes finish their allocations


def agent_actor(name: str) -> Any:
    """An `AgentHost` actor as batchyard makes them: detached, never restarted nor retried,
    on a node offering the type (no CPU: the reservation is not what is measured)."""
    import ray

    return ray.remote(AgentHost).options(
        name=name, lifetime="detached", max_restarts=0, max_task_retries=0, num_cpus=0,
        label_selector={LABEL: INSTANCE_TYPE})


def per_vm(count: int, data_dir: str, table: dict[str, int]) -> Sample:
    import ray

    before = core_rss(table)
    actors = [agent_actor(f"bench-vm-{number}").remote(data_dir) for number in range(count)]
    pids = ray.get([actor.pid.remote() for actor in actors], timeout=600)
    settle()
    uss, rss = memory(pids)
    sample = Sample(uss, rss, core_rss(table) - before)
    for actor in actors:
        ray.kill(actor)
    return sample


def per_node(count: int, data_dir: str, table: dict[str, int]) -> Sample:
    from ray.util.placement_group import placement_group, remove_placement_group

    import ray

    before = core_rss(table)
    host = agent_actor("bench-node").remote(data_dir)
    groups = [placement_group([{"CPU": 0.01}], name=f"bench-vm-{number}",
                              bundle_label_selector=[{LABEL: INSTANCE_TYPE}])
              for number in range(count)]
    ray.get([group.ready() for group in groups], timeout=600)
    pids = [ray.get(host.pid.remote())]
    settle()
    uss, rss = memory(pids)
    sample = Sample(uss, rss, core_rss(table) - before)
    for group in groups:
        remove_placement_group(group)
    ray.kill(host)
    return sample


def show_daemons(table: dict[str, int]) -> None:
    print("Ray's own processes, idle (RSS):")
    for name, pid in sorted(table.items()):
        print(f"  {name:34} {memory([pid])[1] / MB:7.1f} MB")
    total = memory(table.values())[1]
    print(f"  {'all of them':34} {total / MB:7.1f} MB")


def row(design: str, count: int, sample: Sample) -> float:
    cost = (sample.uss + sample.ray_growth) / count
    print(f"{design:9} {count:5} {sample.uss / MB:11.1f} {sample.rss / MB:11.1f} "
          f"{sample.ray_growth / MB:13.1f} {cost / MB:14.2f}")
    return cost


def measure(cluster: Cluster, counts: Sequence[int]) -> None:
    connect(cluster)
    table = daemons(cluster.temp_dir)
    show_daemons(table)
    print(f"\n{'design':9} {'VMs':>5} {'USS (MB)':>11} {'RSS (MB)':>11} "
          f"{'GCS+raylet Δ':>13} {'per VM (MB)':>14}")
    with tempfile.TemporaryDirectory() as data_dir:
        os.chmod(data_dir, 0o777)
        for count in counts:
            placed = per_node(count, data_dir, table)
            node = row("per node", count, placed)
            settle()
            vm = row("per VM", count, per_vm(count, data_dir, table))
            settle()
            print(f"{'':9} {count:5}  per VM / per node: {vm / node:.1f}× "
                  f"(a placement group adds {placed.ray_growth / count / MB:.2f} MB to the GCS "
                  f"and raylet; load {os.getloadavg()[0]:.1f})")
    print("\nper VM (MB) = (USS of the actors' processes + what the GCS and the node's raylet "
          "grew) / VMs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[10, 50],
                        help="numbers of VMs alive at once (default: 10 50)")
    options = parser.parse_args()
    in_netns()
    began = time.perf_counter()
    cluster = start_cluster([(INSTANCE_TYPE, 2)])
    print(f"Ray cluster up in {time.perf_counter() - began:.1f} s "
          f"(head with no CPUs, one worker node of 2 CPUs offering {INSTANCE_TYPE})\n")
    try:
        measure(cluster, options.vms)
    finally:
        import ray

        ray.shutdown()  # before the cluster goes: a driver without its GCS waits 60 s
        cluster.stop()


if __name__ == "__main__":
    main()
