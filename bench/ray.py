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
import os
import subprocess
import time

from ray_cluster import connect, in_netns, start_cluster

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


def run_batchyard(address: str, token: str, count: int, nodes: int) -> float:
    """Seconds batchyard's Ray provider takes to run COUNT × `true` on this cluster.

    To write (the lead, once the provider is merged): start an S3 server on 127.0.0.1 (as
    tests/ray do) and `batchyard serve --provider ray --ray-address ADDRESS` with
    `RAY_AUTH_TOKEN=TOKEN` and the `BATCHYARD_S3_*` variables in its environment (the same
    ones the nodes need — start the cluster with them: `start_cluster(..., env)`), its
    buckets on that S3 server; wait until it answers. Then time from submitting ONE job of
    one task, `InstanceCount` COUNT, `CommandLine` `true`, on an AutoCluster of
    `ecs.n1.small` VMs (as many as the NODES nodes' CPUs hold: 2 per node), until the job
    is Finished; check every instance Finished once. Stop the server; return the seconds.
    """
    raise NotImplementedError("batchyard's half of this benchmark is not written yet")


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
