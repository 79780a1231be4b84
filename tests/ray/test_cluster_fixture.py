"""The Ray test cluster itself: nodes, labels, placement, token auth, and a node's death."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.ray.cluster import LABEL, RayCluster, running

GIB = 1 << 30
CONNECT = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
           "print('nodes', len(ray.nodes()))")


def test_the_cluster_has_a_head_and_one_node_per_instance_type(
        ray_cluster: RayCluster, ray_driver: Any) -> None:
    alive = ray_cluster.alive_nodes()
    assert sorted(labels.get(LABEL, "") for labels in alive.values()) == [
        "", "ecs.n1.medium", "ecs.n1.small"]
    resources = {node["Labels"].get(LABEL, ""): node["Resources"]
                 for node in ray_driver.nodes() if node["Alive"]}
    assert "CPU" not in resources[""]  # the head runs no VM
    assert resources["ecs.n1.small"]["CPU"] == 2
    assert resources["ecs.n1.small"]["memory"] == 4 * GIB  # two VMs of 1 vCPU, 2 GiB
    assert resources["ecs.n1.medium"]["CPU"] == 4
    assert resources["ecs.n1.medium"]["memory"] == 8 * GIB  # two VMs of 2 vCPU, 4 GiB


def test_a_task_with_a_label_selector_runs_on_the_node_offering_the_type(
        ray_cluster: RayCluster, ray_driver: Any) -> None:
    @ray_driver.remote(num_cpus=1)
    def where() -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    for kind in ("ecs.n1.medium", "ecs.n1.small"):
        task = where.options(label_selector={LABEL: kind})
        assert ray_driver.get(task.remote(), timeout=60) == ray_cluster.node(kind).node_id


def test_placement_groups_land_on_the_labelled_node_and_two_vms_fill_it(
        ray_cluster: RayCluster, ray_driver: Any) -> None:
    from ray.util import placement_group, placement_group_table, remove_placement_group

    small = ray_cluster.node("ecs.n1.small")
    vm = {"CPU": 1, "memory": 2 * GIB}  # one ecs.n1.small
    groups = [placement_group([vm], bundle_label_selector=[{LABEL: "ecs.n1.small"}])
              for _ in range(3)]
    try:
        ray_driver.get([group.ready() for group in groups[:2]], timeout=60)
        for group in groups[:2]:
            assert placement_group_table(group)["bundles_to_node_id"] == {0: small.node_id}
        ready, _ = ray_driver.wait([groups[2].ready()], timeout=2)
        assert not ready, "a third ecs.n1.small VM fitted on a node sized for two"
        assert placement_group_table(groups[2])["state"] == "PENDING"
    finally:
        for group in groups:
            remove_placement_group(group)


def test_a_client_without_the_token_is_refused(ray_cluster: RayCluster, tmp_path: Path) -> None:
    base = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    base["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    base["RAY_gcs_server_port_wait_time_s"] = "2"  # ray.init's retries: 2 s, not 20
    with_token = subprocess.run([sys.executable, "-c", CONNECT, ray_cluster.address],
                                env={**base, **ray_cluster.client_env()}, capture_output=True,
                                text=True, timeout=90, check=False)
    assert with_token.returncode == 0 and "nodes 3" in with_token.stdout, with_token.stderr
    without = subprocess.run([sys.executable, "-c", CONNECT, ray_cluster.address],
                             env=base, capture_output=True, text=True, timeout=90, check=False)
    assert without.returncode != 0
    assert "AuthenticationError" in without.stderr, without.stderr[-3000:]
    assert "nodes" not in without.stdout


def test_kill_node_kills_every_process_of_the_node_and_the_gcs_sees_it_dead(
        ray_cluster: RayCluster, ray_driver: Any) -> None:
    node = ray_cluster.start_node("ecs.n1.tiny", 1)  # its own node: the others stay up

    @ray_driver.remote(num_cpus=1, max_restarts=0)
    class Holder:
        def spawn(self) -> tuple[int, int]:
            """This worker's pid, and a detached grandchild's: its own session, no
            environment (so no node marker), the way an escaped instance would be."""
            child = subprocess.Popen(["sleep", "1000"], env={}, start_new_session=True)
            return os.getpid(), child.pid

    holder = Holder.options(label_selector={LABEL: "ecs.n1.tiny"}).remote()  # type: ignore[attr-defined]
    worker, grandchild = ray_driver.get(holder.spawn.remote(), timeout=60)
    before = ray_cluster.processes(node)
    assert {node.pid, worker, grandchild} <= before
    began = time.monotonic()
    ray_cluster.kill_node(node, timeout=60)
    assert node.node_id not in ray_cluster.alive_nodes()
    print(f"node declared dead {time.monotonic() - began:.1f} s after kill -9")
    assert [pid for pid in before if running(pid)] == []
    assert ray_cluster.processes(node) == set()
    assert len(ray_cluster.alive_nodes()) == 3  # the session's nodes are untouched

