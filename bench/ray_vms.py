"""What VMs alive cost the server and the node on batchyard's Ray provider.

    python bench/ray_vms.py                  # 10, then 50 VMs alive
    python bench/ray_vms.py --vms 10 50 100

Starts its own Ray cluster (a head with no CPUs and one worker node of 100 logical CPUs
offering `bench.vm`, a type of 1 vCPU and 64 MiB, in a loopback-only network namespace: see
`ray_cluster.py`). A batchyard engine (the server's, in a process of its own: a process
holds one Ray driver) creates a cluster of one group and resizes it to each N in turn,
waits until its N VMs are Running (each a placement group on the node, hosted by the node's
one agent actor), lets things settle, then measures the RSS of the server process, of the
node's agent actor, and of the node's raylet and the GCS. The baseline of the same
invocation is the first N: the cost per further VM is the growth from it, divided by the
VMs added.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from ray_cluster import BENCH, in_netns, node_environment, start_cluster

INSTANCE_TYPE = "bench.vm"
MB = 1024 * 1024

ENGINE = """
import json, os, sys, time
sys.path.append(sys.argv[3])  # bench/, last: its ray.py must not shadow Ray
from ray_cluster import ray_process_kinds
from batchyard.domain.clusters import VMState, parse_cluster, parse_cluster_change
from batchyard.service import open_engine
from batchyard.settings import Settings

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

def ray_rss():
    found = {}
    for pid, kind in ray_process_kinds().items():
        found[kind] = found.get(kind, 0) + rss(pid)
    return found

fields, counts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
with open_engine(Settings(**fields), serving=True) as engine:
    cluster = engine.clusters.create(parse_cluster({
        "Name": "bench", "InstanceType": "bench.vm", "ImageId": "img-ubuntu",
        "Groups": {"g": {"DesiredVMCount": counts[0]}}}), "default")
    for count in counts:
        engine.clusters.change(cluster, parse_cluster_change(
            {"Groups": {"g": {"DesiredVMCount": count}}}), "default")
        began = time.perf_counter()
        while True:
            with engine.store.transaction() as tx:
                up = sum(vm.state is VMState.RUNNING for vm in tx.vms(cluster))
            if up == count:
                break
            if time.perf_counter() - began > 300:
                raise SystemExit(f"{up} of {count} VMs Running after 300 s")
            time.sleep(0.1)
        placed = time.perf_counter() - began
        time.sleep(3)
        print(json.dumps({"vms": count, "placed": placed,
                          "rss": {"server": rss(os.getpid()), **ray_rss()}}), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[10, 50],
                        help="VMs alive, in turn (default: 10 50)")
    options = parser.parse_args()
    in_netns()
    cluster = start_cluster([(INSTANCE_TYPE, max(options.vms))])
    print(f"Ray cluster up: a head with no CPUs, one worker node of {max(options.vms)} "
          f"logical CPUs offering {INSTANCE_TYPE} (1 vCPU, 64 MiB)")
    try:
        with tempfile.TemporaryDirectory(prefix="by-bench-") as folder:
            fields = {"data_dir": folder, "provider": "ray", "ray_address": cluster.address,
                      "ray_namespace": f"bench-vms-{os.getpid()}",
                      "shared_object_root": True, "ray_node_root": f"{folder}/nodes",
                      "buckets": {"bench": f"{folder}/bucket"}, "insecure_no_sandbox": True,
                      "instance_types": {INSTANCE_TYPE: {"vcpu": 1, "memory_mb": 64}}}
            process = subprocess.Popen(
                [sys.executable, "-c", ENGINE, json.dumps(fields), json.dumps(options.vms),
                 str(BENCH)],
                env={**os.environ, **node_environment(cluster.token)}, cwd=folder,
                stdout=subprocess.PIPE, text=True)
            assert process.stdout is not None
            rows = [json.loads(line) for line in process.stdout]
            if process.wait() != 0 or len(rows) != len(options.vms):
                raise SystemExit("the batchyard engine failed (its stderr is above)")
        report(rows)
    finally:
        cluster.stop()


def report(rows: list[dict[str, object]]) -> None:
    kinds = ["server", "node agent", "raylet", "gcs"]
    print(f"{'VMs':>5} {'placed in':>10} " + " ".join(f"{kind + ' MB':>14}" for kind in kinds))
    for row in rows:
        rss: dict[str, int] = row["rss"]  # type: ignore[assignment]
        print(f"{row['vms']:>5} {row['placed']:>9.1f}s " + " ".join(
            f"{rss.get(kind, 0) / MB:>14.1f}" for kind in kinds))
    first, last = rows[0], rows[-1]
    added = int(last["vms"]) - int(first["vms"])  # type: ignore[call-overload]
    if added > 0:
        grown = {kind: (last["rss"].get(kind, 0) - first["rss"].get(kind, 0)) / added / 1024  # type: ignore[attr-defined]
                 for kind in kinds}
        print("per further VM (KB): " + ", ".join(f"{kind} {grown[kind]:.0f}" for kind in kinds))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
