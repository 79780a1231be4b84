"""COUNT × `true` on Ray: batchyard's Ray provider against plain Ray tasks.

    python bench/ray.py                       # 1,000 and 10,000, one worker node of 2 CPUs
    python bench/ray.py --count 1000 --nodes 2

Starts its own Ray cluster (a head with no CPUs, then NODES worker nodes of 2 CPUs offering
`ecs.n1.small`, in a loopback-only network namespace: see `ray_cluster.py`). The baseline
of the same invocation: COUNT plain Ray tasks (`@ray.remote(num_cpus=1, max_retries=0)`)
that each run `subprocess.run(["true"])`, all submitted, then `ray.get` — one Ray task per
process, what batchyard's agents must beat. Then batchyard (`run_batchyard`): the same COUNT
instances as one job on the Ray provider. Prints instances/s of both and the ratio
batchyard / plain Ray (target: at most 1.0×), or only the baseline while `run_batchyard`
is not written.

Note the name: this script is `bench/ray.py`, so `ray_cluster` (imported first) takes
bench/ off sys.path before anything imports the real `ray`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from ray_cluster import BENCH, connect, in_netns, node_environment, start_cluster

INSTANCE_TYPE = "ecs.n1.small"


def run_plain_ray(count: int) -> float:
    """Seconds for COUNT Ray tasks of one CPU that each run `true`, submitted at once."""
    import ray

    @ray.remote(num_cpus=1, max_retries=0)
    def instance() -> int:
        return subprocess.run(["true"], check=False).returncode

    ray.get([instance.remote() for _ in range(2)])  # the workers started before timing
    began = time.perf_counter()
    codes = ray.get([instance.remote() for _ in range(count)])
    seconds = time.perf_counter() - began
    assert codes == [0] * count, "a `true` failed"
    return seconds


ENGINE = """
import json, os, sys, time
sys.path.append(sys.argv[3])  # bench/, last: its ray.py must not shadow Ray
from ray_cluster import ray_process_kinds
def cpu_by_kind():
    # CPU seconds of the Ray processes by kind
    found = {}
    for pid, kind in ray_process_kinds().items():
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        found[kind] = found.get(kind, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return found
from batchyard.service import open_engine
from batchyard.settings import Settings
from batchyard.domain.states import State
fields, count = json.loads(sys.argv[1]), int(sys.argv[2])
with open_engine(Settings(**fields), serving=True) as engine:
    job = {"Name": "bench", "DAG": {"Tasks": {"t": {
        "InstanceCount": count, "AutoCluster": {"InstanceType": "ecs.n1.small"},
        "Parameters": {"Command": {"CommandLine": "true"},
                       "StdoutRedirectPath": "oss://bench/logs/",
                       "StderrRedirectPath": "oss://bench/logs/"}}}}}
    before, own = cpu_by_kind(), time.process_time()
    began = time.perf_counter()
    job_id = engine.submit(job)
    record = engine.wait(job_id, timeout=3600)
    seconds = time.perf_counter() - began
    after, own = cpu_by_kind(), time.process_time() - own
    finished = engine.tasks(job_id)[0].instance_metrics.finished
    assert record.state is State.FINISHED and finished == count, (record.state, finished)
    cpu = {kind: after.get(kind, 0.0) - before.get(kind, 0.0) for kind in after}
    cpu["server (engine)"] = own
    print(json.dumps({"seconds": seconds, "cpu": cpu}), flush=True)
"""


def run_batchyard(address: str, token: str, count: int, nodes: int) -> float:
    """Seconds batchyard's Ray provider takes to run COUNT × `true` on this cluster: from
    submitting ONE job (one task, `InstanceCount` COUNT, on an AutoCluster of `ecs.n1.small`
    VMs — two per node of 2 CPUs) to its end, every instance checked Finished.

    The server's engine runs in a process of its own (a process holds one Ray driver, and
    this one is the baseline's), with the token in its environment. Its buckets are a local
    folder declared shared (`shared_object_root`: every node is on this machine), and the
    attempts run unconfined (`insecure_no_sandbox`), as the plain Ray tasks do: the figure is
    the launch path's, not bubblewrap's (~2.6 ms per process, bench/README.md)."""
    with tempfile.TemporaryDirectory(prefix="by-bench-") as folder:
        fields = {"data_dir": folder, "provider": "ray", "ray_address": address,
                  "ray_namespace": f"bench-{os.getpid()}-{count}", "shared_object_root": True,
                  "ray_node_root": f"{folder}/nodes", "insecure_no_sandbox": True,
                  "buckets": {"bench": f"{folder}/bucket"}}
        environment = {**os.environ, **node_environment(token)}
        done = subprocess.run([sys.executable, "-c", ENGINE, json.dumps(fields), str(count),
                               str(BENCH)],
                              env=environment, capture_output=True, text=True, check=False,
                              cwd=folder)  # not bench/: its ray.py would shadow Ray
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"the batchyard engine failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        cpu = ", ".join(f"{kind} {seconds / count * 1000:.2f}"
                        for kind, seconds in sorted(result["cpu"].items()))
        print(f"{'':18}batchyard CPU per instance (ms): {cpu}")
        seconds: float = result["seconds"]
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, nargs="+", default=[1000, 10_000],
                        help="instances per run (default: 1000 10000)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="worker nodes of 2 CPUs (default: 1)")
    options = parser.parse_args()
    in_netns()
    began = time.perf_counter()
    cluster = start_cluster([(INSTANCE_TYPE, 2)] * options.nodes)
    print(f"Ray cluster up in {time.perf_counter() - began:.1f} s: a head with no CPUs, "
          f"{options.nodes} worker node(s) of 2 CPUs offering {INSTANCE_TYPE}")
    try:
        connect(cluster)
        for count in options.count:
            compare(cluster.address, cluster.token, count, options.nodes)
    finally:
        import ray

        ray.shutdown()  # before the cluster goes: a driver without its GCS waits 60 s
        cluster.stop()


def compare(address: str, token: str, count: int, nodes: int) -> None:
    plain = run_plain_ray(count)
    print(f"{count:6} × true, plain Ray tasks: {plain:7.2f} s, {count / plain:7.1f} "
          f"instances/s (load {os.getloadavg()[0]:.1f})")
    try:
        ours = run_batchyard(address, token, count, nodes)
    except NotImplementedError as missing:
        print(f"{'':6}            batchyard: not measured ({missing})")
        return
    print(f"{'':6}            batchyard: {ours:7.2f} s, {count / ours:7.1f} instances/s; "
          f"ratio batchyard / plain Ray {ours / plain:.2f}× (target ≤ 1.0×)")


if __name__ == "__main__":
    main()
