"""Instance types over the wire: `/quotas` and `/available` through the official SDK, typed
as it requires (§9.9); an unknown or infeasible InstanceType refused by `POST /jobs` with its
code and path; a configured catalogue served; a task naming no cluster runs (issue 11)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from batchyard.cli.keys import open_key_store
from batchyard.domain.instance_types import DEFAULT_CATALOGUE, INFEASIBLE_CODE, UNKNOWN_CODE
from batchyard.settings import Settings
from tests.api.conftest import (
    LiveServer,
    Signer,
    echo_task,
    job_body,
    serving,
    wait_for_state,
)
from tests.api.test_client_cli import cli_environment, command
from tests.api.test_errors import assert_error

batchcompute = pytest.importorskip("batchcompute")
from batchcompute import Client, ClientError  # noqa: E402
from batchcompute.resources import DAG, JobDescription, TaskDescription  # noqa: E402

TYPE_PATH = "DAG.Tasks.work.AutoCluster.InstanceType"


def sdk_client(port: int, key: AccessKey) -> Any:
    Client.register_region("local", "127.0.0.1", port)
    return Client("127.0.0.1", key.id, key.secret)


@pytest.fixture()
def sdk(server: LiveServer, alice_key: AccessKey) -> Any:
    return sdk_client(server.port, alice_key)


def typed_job(instance_type: Any) -> dict[str, Any]:
    body = job_body("types")
    body["DAG"]["Tasks"]["work"]["AutoCluster"]["InstanceType"] = instance_type
    return body


def test_the_sdk_reads_every_built_in_type(sdk: Any) -> None:
    quotas = sdk.get_quotas()
    assert quotas.AvailableClusterInstanceType == list(DEFAULT_CATALOGUE.names)
    available = sdk.get_available_resource().AvailableClusterInstanceType
    assert [shape.InstanceType for shape in available] == list(DEFAULT_CATALOGUE.names)
    sizes = {shape.InstanceType: (shape.CpuCore, shape.MemorySize) for shape in available}
    assert sizes["ecs.sn1.medium"] == (2, 4)
    assert sizes["ecs.sn2.13xlarge"] == (56, 224)
    assert sizes["ecs.e3.small"] == (1, 8)
    assert sizes["ecs.gn4-c4g1.xlarge"] == (4, 30)
    assert all(isinstance(cores, int) and isinstance(memory, int)
               for cores, memory in sizes.values())


def test_available_shows_gpus_and_families_beside_the_documented_fields(
        alice: httpx.Client) -> None:
    shapes = {shape["InstanceType"]: shape
              for shape in alice.get("/available").json()["AvailableClusterInstanceType"]}
    assert shapes["ecs.gn4.14xlarge"] == {
        "InstanceType": "ecs.gn4.14xlarge", "CpuCore": 56, "MemorySize": 96, "GpuCount": 2,
        "Family": "gn4", "Default": False, "Network": {"Classic": False, "Vpc": True}}
    assert [name for name, shape in shapes.items() if shape["Default"]] == ["ecs.n1.small"]


def test_an_unknown_type_is_refused_with_its_code_and_path(alice: httpx.Client) -> None:
    body = assert_error(alice.post("/jobs", json=typed_job("ecs.sn1.smal")), 400, UNKNOWN_CODE)
    assert TYPE_PATH in body["Message"] and "'ecs.sn1.smal'" in body["Message"]
    assert "ecs.sn1.medium" in body["Message"] and "GET /available" in body["Message"]
    body = assert_error(alice.post("/jobs", json=typed_job(["x"])), 400, UNKNOWN_CODE)
    assert TYPE_PATH in body["Message"]


def test_a_type_bigger_than_the_machine_is_refused_at_once(alice: httpx.Client) -> None:
    huge = Settings().catalogue().of("ecs.sn2.13xlarge")  # 224 GiB
    body = assert_error(alice.post("/jobs", json=typed_job(huge.name)), 400, INFEASIBLE_CODE)
    assert TYPE_PATH in body["Message"] and "GiB of memory" in body["Message"]
    assert "can never run here" in body["Message"]


def test_the_sdk_sees_the_refusal(sdk: Any) -> None:
    job = JobDescription()
    dag = DAG()
    task = TaskDescription()
    task.Parameters.Command.CommandLine = "true"
    task.Parameters.StdoutRedirectPath = "oss://api-tests/logs/"
    task.Parameters.StderrRedirectPath = "oss://api-tests/logs/"
    task.AutoCluster.InstanceType = "ecs.nothing"
    dag.add_task(task_name="work", task=task)
    job.DAG = dag
    job.Name = "refused"
    job.Priority = 0
    with pytest.raises(ClientError) as refused:
        sdk.create_job(job)
    assert (refused.value.get_status_code(), refused.value.get_code()) == (400, UNKNOWN_CODE)
    assert TYPE_PATH in refused.value.get_msg()


def test_a_task_naming_no_cluster_runs(sdk: Any, alice: httpx.Client) -> None:
    """What the SDK sends for a task with neither ClusterId nor AutoCluster set (§4.7)."""
    job = JobDescription()
    dag = DAG()
    task = TaskDescription()
    task.Parameters.Command.CommandLine = "echo plain"
    task.Parameters.Command.PackagePath = ""
    task.Parameters.StdoutRedirectPath = "oss://api-tests/logs/"
    task.Parameters.StderrRedirectPath = "oss://api-tests/logs/"
    dag.add_task(task_name="work", task=task)
    job.DAG = dag
    job.Name = "no-cluster"
    job.Priority = 0
    job_id = sdk.create_job(job).Id
    assert wait_for_state(alice, job_id, {"Finished", "Failed"})["State"] == "Finished"


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AccessKey]]:
    """A server offering only two types of its own."""
    data_dir: Path = tmp_path_factory.mktemp("typed")
    settings = Settings(data_dir=data_dir, slots=2, default_instance_type="lab.small",
                        instance_types_replace=True, instance_types={
                            "lab.small": {"vcpu": 1, "memory_mb": 512},
                            "lab.gpu": {"vcpu": 2, "memory_mb": 1536, "gpu": 1}})
    with serving(settings) as url:
        yield url, open_key_store(settings).create("carol", "instance type tests")


def test_a_configured_catalogue_is_served_and_enforced(
        configured: tuple[str, AccessKey]) -> None:
    url, key = configured
    sdk = sdk_client(int(url.rsplit(":", 1)[1]), key)
    assert sdk.get_quotas().AvailableClusterInstanceType == ["lab.small", "lab.gpu"]
    shapes = sdk.get_available_resource().AvailableClusterInstanceType
    assert [(s.InstanceType, s.CpuCore, s.MemorySize) for s in shapes] == [
        ("lab.small", 1, 0.5), ("lab.gpu", 2, 1.5)]
    with httpx.Client(base_url=url, auth=Signer(key.id, key.secret), timeout=30) as client:
        refused = assert_error(client.post("/jobs", json=typed_job("ecs.sn1.medium")), 400,
                               UNKNOWN_CODE)
        assert "lab.small" in refused["Message"] or "families: lab.small" in refused["Message"]
        body = job_body("lab", "echo ok")
        body["DAG"]["Tasks"]["gpu"] = echo_task("echo gpu")
        body["DAG"]["Tasks"]["gpu"]["AutoCluster"]["InstanceType"] = "lab.gpu"
        del body["DAG"]["Tasks"]["work"]["AutoCluster"]
        created = client.post("/jobs", json=body)
        assert created.status_code == 201, created.text
        job_id = created.json()["Id"]
        assert wait_for_state(client, job_id, {"Finished", "Failed"})["State"] == "Finished"


def test_the_command_line_lists_a_servers_types(configured: tuple[str, AccessKey],
                                                server: LiveServer, tmp_path: Path) -> None:
    url, key = configured
    environment = {**cli_environment(server, key, tmp_path), "BATCHYARD_ENDPOINT": url}
    listed = subprocess.run([*command(), "instance-types"], env=environment, text=True,
                            capture_output=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[2:]]
    assert rows == [["lab.small", "(default)", "1", "0.5", "GiB", "lab.small"],
                    ["lab.gpu", "2", "1.5", "GiB", "1", "lab.gpu"]]
    as_json = subprocess.run([*command(), "instance-types", "--json"], env=environment,
                             text=True, capture_output=True, timeout=60, check=False)
    names = [item["InstanceType"]
             for item in json.loads(as_json.stdout)["AvailableClusterInstanceType"]]
    assert names == ["lab.small", "lab.gpu"]
    wrong = {**environment, "BATCHYARD_KEY_SECRET": "wrong"}
    refused = subprocess.run([*command(), "instance-types"], env=wrong, text=True,
                             capture_output=True, timeout=60, check=False)
    assert refused.returncode == 1 and "InvalidSignature" in refused.stderr
