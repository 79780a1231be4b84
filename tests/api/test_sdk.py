"""The official `batchcompute` SDK (2.1.7) against a live `batchyard serve`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import LiveServer, job_body

batchcompute = pytest.importorskip("batchcompute")
from batchcompute import Client, ClientError  # noqa: E402
from batchcompute.resources import (  # noqa: E402
    DAG,
    AutoCluster,
    JobDescription,
    TaskDescription,
)


def sdk_client(server: LiveServer, key_id: str, secret: str) -> Any:
    Client.register_region("local", "127.0.0.1", server.port)
    return Client("127.0.0.1", key_id, secret)


@pytest.fixture()
def client(server: LiveServer, alice_key: AccessKey) -> Any:
    return sdk_client(server, alice_key.id, alice_key.secret)


def sdk_task(command: str, count: int = 1) -> Any:
    task = TaskDescription()
    task.Parameters.Command.CommandLine = command
    task.Parameters.Command.PackagePath = ""
    task.Parameters.StdoutRedirectPath = "oss://api-tests/log-count/logs/"
    task.Parameters.StderrRedirectPath = "oss://api-tests/log-count/logs/"
    task.InstanceCount = count
    task.Timeout = 600
    cluster = AutoCluster()
    cluster.ImageId = "img-ubuntu"
    cluster.InstanceType = "ecs.sn1.medium"
    cluster.ResourceType = "OnDemand"
    task.AutoCluster = cluster
    return task


def log_count_job(command: str = "echo {task} $BATCH_COMPUTE_DAG_INSTANCE_ID") -> Any:
    """The quick-start shape (§11): split -> count (3 instances) -> merge."""
    dag = DAG()
    for name, count in (("split", 1), ("count", 3), ("merge", 1)):
        dag.add_task(task_name=name, task=sdk_task(command.format(task=name), count))
    dag.Dependencies = {"split": ["count"], "count": ["merge"]}
    job = JobDescription()
    job.DAG = dag
    job.Name = "log-count"
    job.Priority = 99
    job.JobFailOnInstanceFail = True
    return job


def one_task_job(command: str, name: str = "sdk-job", count: int = 1) -> Any:
    dag = DAG()
    dag.add_task(task_name="work", task=sdk_task(command, count))
    job = JobDescription()
    job.DAG = dag
    job.Name = name
    job.Priority = 1
    job.JobFailOnInstanceFail = True
    return job


def test_log_count_job_runs_to_finished(client: Any) -> None:
    job_id = client.create_job(log_count_job()).Id
    assert job_id.startswith("job-")
    assert client.poll(job_id, timeout=30, interval=0.1) == []
    job = client.get_job(job_id)
    assert (job.State, job.Name, job.Priority, job.Owner) == ("Finished", "log-count", 99, "alice")
    assert job.CreationTime is not None and job.EndTime is not None  # times parsed by the SDK
    assert job.TaskMetrics.FinishedCount == 3 and job.InstanceMetrics.FinishedCount == 5
    tasks = client.list_tasks(job_id, "", 100)
    assert [task.TaskName for task in tasks.Items] == ["count", "merge", "split"]
    assert tasks.NextMarker == ""
    assert client.get_task(job_id, "count").InstanceMetrics.FinishedCount == 3


def test_instances_are_listed_page_by_page(client: Any) -> None:
    job_id = client.create_job(one_task_job("echo $BATCH_COMPUTE_DAG_INSTANCE_ID", count=7)).Id
    assert client.poll(job_id, timeout=30, interval=0.1) == []
    first = client.list_instances(job_id, "work", 0, 3)
    assert [item.InstanceId for item in first.Items] == [0, 1, 2]
    second = client.list_instances(job_id, "work", first.NextMarker, 3)
    assert [item.InstanceId for item in second.Items] == [3, 4, 5]
    every = list(client.easy_list("instances", job_id, "work"))
    assert [item.InstanceId for item in every] == list(range(7))
    instance = client.get_instance(job_id, "work", 4)
    assert instance.State == "Finished" and instance.Result.ExitCode == 0
    assert instance.RetryCount == 0 and instance.Progress == 100
    assert instance.StdoutRedirectPath.endswith(f"stdout.{job_id}.work.4")
    assert instance.StartTime is not None and instance.EndTime is not None


def test_easy_list_walks_every_page(server: LiveServer) -> None:
    key = server.keys.create("pager")
    client = sdk_client(server, key.id, key.secret)
    created = [client.create_job(one_task_job("true", name=f"page-{n}")).Id for n in range(105)]
    listed = [job.Id for job in client.easy_list("jobs")]
    assert listed == list(reversed(created))  # newest first, across two pages of 100
    page = client.list_jobs("", 40)
    assert len(page.Items) == 40 and page.NextMarker == created[-41]
    oldest = client.list_jobs("", 2, IsReverse="True")
    assert [job.Id for job in oldest.Items] == created[:2]


def test_stop_priority_start_and_delete(client: Any) -> None:
    job_id = client.create_job(one_task_job("sleep 30")).Id
    assert client.stop_job(job_id).StatusCode == 201
    assert client.get_job(job_id).State == "Stopped"
    assert client.change_job_priority(job_id, 7).StatusCode == 200
    assert client.get_job(job_id).Priority == 7
    description = client.get_job_description(job_id)
    assert (description.Name, description.Priority) == ("sdk-job", 7)
    assert description.DAG.Tasks["work"].Parameters.Command.CommandLine == "sleep 30"
    assert client.start_job(job_id).StatusCode == 201
    assert client.get_job(job_id).State in ("Waiting", "Running")
    client.stop_job(job_id)
    assert client.delete_job(job_id).StatusCode == 204
    with pytest.raises(ClientError) as raised:
        client.get_job(job_id)
    assert raised.value.get_status_code() == 404


def test_documented_client_errors(server: LiveServer, client: Any) -> None:
    with pytest.raises(ClientError) as missing:
        client.get_job("job-00000000000000000000000000000001")
    assert (missing.value.get_status_code(), missing.value.get_code()) == (
        404, "InvalidResource.NotFound")
    assert missing.value.get_requestid()
    job_id = client.create_job(one_task_job("true")).Id
    assert client.poll(job_id, timeout=30, interval=0.1) == []
    with pytest.raises(ClientError) as conflict:
        client.stop_job(job_id)
    assert (conflict.value.get_status_code(), conflict.value.get_code()) == (409, "StateConflict")
    assert "Finished" in conflict.value.get_msg()


def test_a_wrong_secret_is_refused(server: LiveServer, alice_key: AccessKey) -> None:
    forger = sdk_client(server, alice_key.id, "not-the-secret")
    with pytest.raises(ClientError) as raised:
        forger.list_jobs("", 10)
    assert (raised.value.get_status_code(), raised.value.get_code()) == (400, "InvalidSignature")
    stranger = sdk_client(server, "BYNOSUCHKEY", "whatever")
    with pytest.raises(ClientError) as unknown:
        stranger.list_jobs("", 10)
    assert (unknown.value.get_status_code(), unknown.value.get_code()) == (
        403, "InvalidAccessKeyId.NotFound")


def test_quotas_and_available_resources(client: Any) -> None:
    quotas = client.get_quotas()
    assert "ecs.sn1.medium" in quotas.AvailableClusterInstanceType
    assert quotas.AvailableClusterResourceType == ["OnDemand"]
    medium = next(shape for shape in client.get_available_resource().AvailableClusterInstanceType
                  if shape.InstanceType == "ecs.sn1.medium")
    assert (medium.CpuCore, medium.MemorySize) == (2, 4)


def test_the_sdk_signs_as_the_server_verifies(server: LiveServer) -> None:
    """The SDK's own signer and ours agree on the SDK's query encoding (§9.4)."""
    from batchcompute.core.api import Api

    from batchyard.api.signature import authorization

    Client.register_region("local", "127.0.0.1", server.port)
    api = Api("127.0.0.1", "testid", "testsecret", "", False)
    params = {"Marker": "", "MaxItemCount": "50", "State": "Running", "Cluster_Id": "a/b c"}
    headers = api.raw_headers("")
    expected = api.get_auth("GET", "/jobs", params, "", headers)
    target = api.rc.get_url("/jobs", params)
    assert target == "/jobs?Cluster-Id=a%2Fb%20c&Marker&MaxItemCount=50&State=Running"
    lowered = {name.lower(): str(value) for name, value in headers.items()}
    assert authorization("testid", "testsecret", "GET", target, lowered) == expected


def test_idempotent_token_through_the_sdk(client: Any) -> None:
    job = one_task_job("true", name="sdk-idem")
    first = client.create_job(job, token="sdk_token_1").Id
    assert client.create_job(job, token="sdk_token_1").Id == first
    with pytest.raises(ClientError) as raised:
        client.create_job(one_task_job("false", name="sdk-idem"), token="sdk_token_1")
    assert (raised.value.get_status_code(), raised.value.get_code()) == (
        400, "IdempotentTokenMismatch")


def test_warnings_about_unknown_fields_do_not_break_the_sdk(client: Any) -> None:
    """The SDK's models drop fields they do not know before sending, so typos reach the
    server from other clients; the answer they get is what the SDK must still read. The
    SDK's own transport and response class (as its `create_job` uses them) send a body with
    150 unknown fields and read the answer: its Warning headers and Warnings list."""
    from batchcompute.client.response import CreateResponse

    body = job_body(name="sdk-typos", command="echo $BATCH_COMPUTE_DAG_INSTANCE_ID")
    task = body["DAG"]["Tasks"]["work"]
    task.update({"InstanceCont": 3, "MaxRetryCont": 2})
    task.update({f"Extra{n}": n for n in range(148)})
    created = CreateResponse(client._sa.post("jobs", body=json.dumps(body)), client._h)
    assert created.StatusCode == 201 and created.Id.startswith("job-")
    assert "Warnings" in created.content  # the SDK read the body that carries them
    assert client.poll(created.Id, timeout=30, interval=0.1) == []
    assert client.get_job(created.Id).State == "Finished"


def test_sdk_jobs_get_no_warnings(server: LiveServer, alice_key: AccessKey) -> None:
    """What the SDK sends (every field it fills in by default) is all known."""
    from batchcompute.core.api import Api

    Client.register_region("local", "127.0.0.1", server.port)
    api = Api("127.0.0.1", alice_key.id, alice_key.secret, "", False)
    answer = api.post("jobs", body=log_count_job().dump())
    assert answer.status == 201 and answer.getheader("Warning") is None
    assert set(json.loads(answer.read())) == {"Id"}
