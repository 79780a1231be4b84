"""The Ray provider on a real three-node Ray cluster with real S3 (SeaweedFS).

One batchyard engine (the server's, `open_engine(serving=True)`, provider "ray") per module,
pointed at the session's cluster; instances run confined on the worker nodes, their logs go
to S3. The node-killing test comes last: it takes a node it started itself away.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.domain.clusters import parse_cluster
from batchyard.domain.states import State
from batchyard.orchestrator.engine import Engine
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.ray.cluster import RayCluster
from tests.ray.conftest import BUCKETS
from tests.s3server import SeaweedServer

SMALL, MEDIUM = "ecs.n1.small", "ecs.n1.medium"
HERE = Path(__file__).parent
LOGS = "oss://ray/logs/"


def ray_fields(folder: Path, cluster: RayCluster, s3: SeaweedServer) -> dict[str, Any]:
    """The settings of a server using the Ray provider (one namespace per data dir)."""
    return {"data_dir": str(folder), "provider": "ray", "ray_address": cluster.address,
            "ray_namespace": f"by-{folder.name[-12:]}", "ray_node_root": str(folder / "nodes"),
            "buckets": BUCKETS, "s3_endpoint_url": s3.url, "s3_region": s3.region,
            "s3_access_key_id": s3.key_id, "s3_secret_access_key": s3.secret,
            "s3_addressing_style": "path"}


def ray_settings(folder: Path, cluster: RayCluster, s3: SeaweedServer) -> Settings:
    return Settings(**ray_fields(folder, cluster, s3))


@pytest.fixture(scope="module")
def engine(ray_cluster: RayCluster, s3: SeaweedServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("ray-engine")
    with open_engine(ray_settings(folder, ray_cluster, s3), serving=True) as started:
        yield started


def task(command: str, count: int = 1, instance_type: str = SMALL, **fields: Any
         ) -> dict[str, Any]:
    return {"InstanceCount": count, "AutoCluster": {"InstanceType": instance_type},
            "Parameters": {"Command": {"CommandLine": command},
                           "StdoutRedirectPath": LOGS, "StderrRedirectPath": LOGS}, **fields}


def job(tasks: dict[str, dict[str, Any]], dependencies: dict[str, list[str]] | None = None,
        name: str = "ray-test") -> dict[str, Any]:
    return {"Name": name, "DAG": {"Tasks": tasks, "Dependencies": dependencies or {}}}


def node_agent(cluster: RayCluster, instance_type: str) -> str:
    """The engine's name of the agent of the node offering `instance_type`."""
    return "node-" + cluster.node(instance_type).node_id[:12]


def wait_for(check: Any, timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def processes_with(marker: bytes) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def test_instances_of_each_type_land_on_a_node_offering_it(
        engine: Engine, ray_cluster: RayCluster) -> None:
    seen: dict[str, set[str]] = {}

    def note() -> bool:
        with engine._lock:  # where each VM runs while the job runs
            for vm_id, host in engine.fleet.placements().items():
                seen.setdefault(vm_id, set()).add(host)
        return False

    job_id = engine.submit(job({"small": task("sleep 1", 2, SMALL),
                                "medium": task("sleep 1", 2, MEDIUM)}))
    deadline = time.monotonic() + 90
    while engine.job(job_id).state not in (State.FINISHED, State.FAILED):
        note()
        assert time.monotonic() < deadline, "the job did not end within 90 s"
        time.sleep(0.05)
    assert engine.job(job_id).state is State.FINISHED
    workers = {name: {attempt.worker for instance in engine.instances(job_id, name)
                      for attempt in engine.attempts(job_id, name, instance.instance_id)}
               for name in ("small", "medium")}
    for name, instance_type in (("small", SMALL), ("medium", MEDIUM)):
        assert workers[name] and all(worker in seen for worker in workers[name]), workers
        assert {host for worker in workers[name] for host in seen[worker]} == {
            node_agent(ray_cluster, instance_type)}
    assert not workers["small"] & workers["medium"]


def test_a_two_vm_cluster_never_runs_more_than_two_at_once(engine: Engine) -> None:
    cluster = engine.clusters.create(parse_cluster({
        "Name": "two", "InstanceType": SMALL, "ImageId": "img-ubuntu",
        "Groups": {"group1": {"DesiredVMCount": 2}}}), "default")
    try:
        job_id = engine.submit(job({"work": {**task("sleep 0.5", 6), "ClusterId": cluster}}))
        assert engine.wait(job_id, timeout=120).state is State.FINISHED
        spans = [(instance.started, instance.ended)
                 for instance in engine.instances(job_id, "work")]
        assert all(start and end for start, end in spans)
        events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        running, most = 0, 0
        for _, step in events:
            running += step
            most = max(most, running)
        assert most == 2, spans
        workers = {attempt.worker for instance in engine.instances(job_id, "work")
                   for attempt in engine.attempts(job_id, "work", instance.instance_id)}
        assert len(workers) == 2
    finally:
        engine.clusters.delete(cluster, "default")


def placement_groups() -> dict[str, dict[str, Any]]:
    """batchyard's placement groups on the cluster, by name, as Ray sees them."""
    from ray.util.placement_group import placement_group_table

    return {table["name"]: table for table in placement_group_table().values()
            if table["name"].startswith("batchyard-vm-")}


def test_autocluster_reservations_are_made_for_the_task_and_given_up_after_it(
        engine: Engine) -> None:
    before = set(placement_groups())
    job_id = engine.submit(job({"wide": task("sleep 2", 3, MEDIUM)}))
    held = wait_for(lambda: {name: table for name, table in placement_groups().items()
                             if name not in before and table["state"] == "CREATED"}
                    if len(placement_groups()) >= len(before) + 2 else None,
                    what="two reservations")
    # One per VM of the AutoCluster: min(InstanceCount 3, 64, the 2 VMs of its type the
    # medium node (4 CPUs, 8 GiB) holds).
    assert len(held) == 2
    assert len(placement_groups()) == len(before) + 2
    for table in held.values():
        assert table["bundles"] == {0: {"CPU": 2.0, "memory": float(4 << 30)}}
    assert engine.wait(job_id, timeout=120).state is State.FINISHED
    wait_for(lambda: all(placement_groups().get(name, {}).get("state", "REMOVED") == "REMOVED"
                         for name in held), timeout=30, what="the reservations given up")


def sleepers() -> set[int]:
    """Processes running the stop test's program, on any node (all on this machine)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"301.25" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def test_stop_kills_the_whole_remote_tree(engine: Engine) -> None:
    job_id = engine.submit(job({"tree": task("sh -c 'sleep 301.25 & sleep 301.25; wait'",
                                             2)}))
    wait_for(lambda: len(sleepers()) >= 2, timeout=60, what="the programs running")
    engine.stop(job_id)
    wait_for(lambda: not sleepers(), timeout=30, what="every process of the job killed")
    assert engine.wait(job_id, timeout=30).state is State.STOPPED


def test_a_timeout_kills_the_whole_remote_tree(engine: Engine) -> None:
    """Ray has no task timeout: batchyard's agent keeps the Timeout on the node."""
    job_id = engine.submit(job({"slow": task("sh -c 'sleep 302.75 & sleep 302.75; wait'",
                                             1, Timeout=1)}))
    assert engine.wait(job_id, timeout=60).state is State.FAILED
    (instance,) = engine.instances(job_id, "slow")
    assert instance.error_code == "InstanceTimeout", instance
    wait_for(lambda: not processes_with(b"302.75"), timeout=15, what="the tree killed")


def test_diamond_with_a_flaky_instance(engine: Engine) -> None:
    flaky = ('sh -c \'[ "$BATCH_COMPUTE_DAG_INSTANCE_ID" = 1 ] && '
             '[ "$BATCH_COMPUTE_DAG_ATTEMPT" = 1 ] && exit 3; '
             'echo "$BATCH_COMPUTE_DAG_TASK_ID $BATCH_COMPUTE_DAG_INSTANCE_ID"\'')
    job_id = engine.submit(job({"a": task("echo a"), "b": task(flaky, 3, MaxRetryCount=1),
                                "c": task("echo c", 2, MEDIUM), "d": task("echo d")},
                               {"a": ["b", "c"], "b": ["d"], "c": ["d"]}))
    assert engine.wait(job_id, timeout=120).state is State.FINISHED
    attempts = engine.attempts(job_id, "b", 1)
    assert [attempt.exit_code for attempt in attempts] == [3, 0]
    out = engine.instances(job_id, "b")[1].stdout_path
    assert engine.objects.read_bytes(out) == b"b 1\n"


def test_a_node_killed_mid_task_loses_nothing(
        engine: Engine, ray_cluster: RayCluster) -> None:
    extra = ray_cluster.start_node("ecs.n1.large", 4)
    try:
        job_id = engine.submit(job({"long": task("sleep 4", 4, "ecs.n1.large")}))
        wait_for(lambda: engine.tasks(job_id)[0].instance_metrics.running >= 1, timeout=90,
                 what="instances running on the extra node")
        time.sleep(1)
        ray_cluster.kill_node(extra)
        # The type's only node is gone: its instances wait (why-pending says so)...
        wait_for(lambda: any(reason.code == "InfeasibleInstanceType"
                             for reason in engine.why_pending(job_id).values()), timeout=30,
                 what="InfeasibleInstanceType reported")
        # ... until a node offering it joins again.
        extra = ray_cluster.start_node("ecs.n1.large", 4)
        assert engine.wait(job_id, timeout=180).state is State.FINISHED
        for instance in engine.instances(job_id, "long"):
            attempts = engine.attempts(job_id, "long", instance.instance_id)
            assert attempts[-1].error_code == ""
            assert sum(1 for attempt in attempts if attempt.exit_code == 0) == 1
    finally:
        if extra in ray_cluster.nodes:
            ray_cluster.kill_node(extra)

