"""How long is one scheduling step with many clusters, VMs, tenants and waiting instances?

    python bench/scheduling.py [--clusters 100] [--vms 10] [--tenants 20] [--instances 10000]
                               [--repeat 5]

An engine on a real SQLite state store (a fresh temporary file) with one agent that runs
nothing (`batchyard.testing.InlineAgent`, as many slots as there are VMs: the figures are the
engine's, not the processes'), stepped by hand:

- CLUSTERS clusters of one group of VMS VMs, each owned by one of TENANTS tenants, and
  INSTANCES Waiting instances spread over them (one job per cluster, of INSTANCES /
  CLUSTERS instances). The first step places every VM and launches one instance on each.
- Then, REPEAT times, one instance on every tenth VM ends and a step records the outcomes
  and launches the next instances on those VMs (the steady state of a busy installation).

Baseline, in the same invocation: the same tenants, jobs and instances on no cluster (each
task its AutoCluster), on an agent of as many slots — the scheduling step without clusters.
Prints the time of the first step and the median steady step of both, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchyard.adapters.store import SqlStore
from batchyard.domain.clusters import parse_cluster
from batchyard.orchestrator.engine import Engine
from batchyard.ports.agents import AgentListener
from batchyard.testing import InlineAgent, MemoryObjectStore


def job(cluster_id: str, count: int, bucket: str) -> dict[str, Any]:
    task: dict[str, Any] = {
        "InstanceCount": count, "MaxRetryCount": 0,
        "Parameters": {"Command": {"CommandLine": "true", "PackagePath": ""},
                       "StdoutRedirectPath": f"oss://{bucket}/logs/",
                       "StderrRedirectPath": f"oss://{bucket}/logs/"}}
    if cluster_id:
        task["ClusterId"] = cluster_id
    return {"Name": "bench", "DAG": {"Tasks": {"work": task}}}


def engine_on(folder: Path, slots: int) -> tuple[Engine, InlineAgent]:
    made: list[InlineAgent] = []

    def agents(listener: AgentListener) -> list[InlineAgent]:
        made.append(InlineAgent(listener, slots=slots))
        return made

    store = SqlStore(f"sqlite:///{folder / 'state.db'}")
    engine = Engine(store, MemoryObjectStore(), agents)
    return engine.start(loop=False), made[0]


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(arguments: argparse.Namespace, clusters: bool) -> tuple[float, float, int]:
    """(first step, median steady step, instances running after the first step)."""
    vms = arguments.clusters * arguments.vms
    per_job = arguments.instances // arguments.clusters
    with tempfile.TemporaryDirectory() as folder:
        engine, agent = engine_on(Path(folder), vms)
        for number in range(arguments.clusters):
            tenant = f"tenant-{number % arguments.tenants}"
            cluster_id = ""
            if clusters:
                cluster_id = engine.clusters.create(parse_cluster({
                    "Name": f"c{number}", "ImageId": "img-ubuntu",
                    "InstanceType": "ecs.sn1.medium",
                    "Groups": {"g": {"DesiredVMCount": arguments.vms}}}), tenant)
            engine.submit(job(cluster_id, per_job, f"b{number % arguments.tenants}"), tenant)
        first = timed(engine.step)
        running = len(agent.running())
        steady = []
        for _ in range(arguments.repeat):
            ending = agent.running()[::10]
            for request in ending:
                agent.finish(request.key)
            steady.append(timed(engine.step))
        engine.close()
    return first, statistics.median(steady), running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    print(f"{arguments.clusters} clusters x {arguments.vms} VMs, {arguments.tenants} tenants, "
          f"{arguments.instances} waiting instances (SQLite, an agent that runs nothing)")
    base_first, base_steady, base_running = measure(arguments, clusters=False)
    first, steady, running = measure(arguments, clusters=True)
    ending = arguments.clusters * arguments.vms // 10
    print(f"  on clusters   : first step {first * 1000:8.1f} ms (places "
          f"{arguments.clusters * arguments.vms} VMs, launches {running}); "
          f"steady step {steady * 1000:6.1f} ms ({ending} outcomes, {ending} launches)")
    print(f"  no cluster    : first step {base_first * 1000:8.1f} ms (launches {base_running});"
          f" steady step {base_steady * 1000:6.1f} ms")
    print(f"  ratio clusters / no cluster: first step {first / base_first:.2f}x, "
          f"steady step {steady / base_steady:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
