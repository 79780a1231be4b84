"""Clusters with real processes through a real `batchyard serve` (a server of its own, so
its VMs take no slot of the shared one): a 2-VM cluster never runs more than 2 instances at
once and uses both VMs; resized to 3 it runs 3 at once; an instance whose InstanceType's
memory is exceeded fails with MemoryLimitExceeded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.cli.keys import open_key_store
from batchyard.hosting import open_objects
from batchyard.runner import cgroups
from batchyard.runner.sandbox import bwrap_path
from batchyard.settings import BucketGrant, InstanceTypeSettings, Settings
from tests.api.conftest import Signer, echo_task, serving, wait_for_state

BUCKET = "cluster-runs"
LOGS = f"oss://{BUCKET}/logs/"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Settings]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cluster-runs"), slots=4,
        bucket_grants={BUCKET: BucketGrant(owner="ops")},
        instance_types={"ecs.test.tiny": InstanceTypeSettings(vcpu=1, memory_mb=64)})
    key = open_key_store(settings).create("ops", "cluster run tests")
    with serving(settings) as url, httpx.Client(
            base_url=url, auth=Signer(key.id, key.secret), timeout=30) as client:
        yield client, settings


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def most_at_once(instances: list[dict[str, Any]]) -> int:
    """The most instances whose programs ran at the same time (from StartTime, EndTime)."""
    moments = []
    for item in instances:
        moments += [(datetime.fromisoformat(item["StartTime"].replace("Z", "+00:00")), 1),
                    (datetime.fromisoformat(item["EndTime"].replace("Z", "+00:00")), -1)]
    running = most = 0
    for _, change in sorted(moments, key=lambda moment: (moment[0], moment[1])):
        running += change
        most = max(most, running)
    return most


def run_on(client: httpx.Client, cluster_id: str, count: int, seconds: float
           ) -> tuple[str, list[dict[str, Any]]]:
    command = (f"echo $BATCH_COMPUTE_WORKER_ID $BATCH_COMPUTE_CLUSTER_ID $CLUSTER_VAR; "
               f"sleep {seconds}")
    task = echo_task(command, count=count, ClusterId=cluster_id, AutoCluster={})
    task["Parameters"]["StdoutRedirectPath"] = task["Parameters"]["StderrRedirectPath"] = LOGS
    job_id = client.post("/jobs", json={"Name": "on-cluster", "Type": "DAG",
                                        "DAG": {"Tasks": {"work": task}}}).json()["Id"]
    assert wait_for_state(client, job_id, {"Finished", "Failed"}, 60)["State"] == "Finished"
    items = client.get(f"/jobs/{job_id}/tasks/work/instances").json()["Items"]
    return job_id, items


def test_a_cluster_runs_as_many_instances_at_once_as_it_has_vms(
        served: tuple[httpx.Client, Settings]) -> None:
    client, settings = served
    body = {"Name": "two", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
            "EnvVars": {"CLUSTER_VAR": "from-the-cluster"},
            "Groups": {"g": {"DesiredVMCount": 2}}}
    cluster_id = client.post("/clusters", json=body).json()["Id"]
    group = f"/clusters/{cluster_id}/groups/g/instances"
    wait_for(lambda: client.get(f"/clusters/{cluster_id}").json()
             ["Groups"]["g"]["ActualVMCount"] == 2)
    vms = {vm["Id"] for vm in client.get(group).json()["Items"]}
    job_id, items = run_on(client, cluster_id, 6, 0.5)
    assert most_at_once(items) == 2
    objects = open_objects(settings)
    printed = [objects.read_bytes(f"{LOGS}stdout.{job_id}.work.{n}").decode().split()
               for n in range(6)]
    assert {line[0] for line in printed} == vms  # both VMs, and only them
    assert {tuple(line[1:]) for line in printed} == {(cluster_id, "from-the-cluster")}

    assert client.put(f"/clusters/{cluster_id}", json={
        "Groups": {"g": {"DesiredVMCount": 3}}}).status_code == 200
    wait_for(lambda: client.get(f"/clusters/{cluster_id}").json()
             ["Groups"]["g"]["ActualVMCount"] == 3)
    _, items = run_on(client, cluster_id, 6, 0.8)
    assert most_at_once(items) == 3
    assert client.delete(f"/clusters/{cluster_id}").status_code == 204
    wait_for(lambda: client.get(f"/clusters/{cluster_id}").status_code == 404)


def test_an_instance_past_its_instance_type_s_memory_fails(
        served: tuple[httpx.Client, Settings], tmp_path: Path) -> None:
    client, _ = served
    if bwrap_path() is None:
        pytest.skip("bubblewrap is not installed")
    probe = cgroups.available(tmp_path / "probe", ("memory",))  # not the server's own
    if probe is not None:
        probe.remove()
    if probe is None or (probe.version != 1 and "memory" not in (
            probe.hierarchies[0].own / "cgroup.controllers").read_text().split()):
        pytest.skip("no memory cgroup this machine lets batchyard manage")
    hog = "python3 -c 'b = bytearray(256 * 1024 * 1024); print(len(b))'"
    task = echo_task(hog, AutoCluster={"InstanceType": "ecs.test.tiny"})
    task["Parameters"]["StdoutRedirectPath"] = task["Parameters"]["StderrRedirectPath"] = LOGS
    job_id = client.post("/jobs", json={"Name": "hog", "Type": "DAG",
                                        "DAG": {"Tasks": {"work": task}}}).json()["Id"]
    assert wait_for_state(client, job_id, {"Finished", "Failed"}, 60)["State"] == "Failed"
    instance = client.get(f"/jobs/{job_id}/tasks/work/instances/0").json()
    assert instance["Result"]["ErrorCode"] == "MemoryLimitExceeded", instance["Result"]
    assert "ecs.test.tiny" in instance["Result"]["ErrorMessage"]
