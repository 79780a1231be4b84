"""The cluster API (reference §7, §9.5–§9.9) through the official `batchcompute` SDK 2.1.7
against a live `batchyard serve`: create with a token, get, list page by page, every
change_cluster_* helper and modify_cluster, delete, the VM endpoints, and the errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import LiveServer, echo_task, live_server

batchcompute = pytest.importorskip("batchcompute")
from batchcompute import Client, ClientError  # noqa: E402
from batchcompute.resources import (  # noqa: E402
    ClusterDescription,
    GroupDescription,
    ModifyClusterDescription,
    ModifyGroupDescription,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of this module's own: its VMs are placed on the agent's slots (16, for the
    clusters below), which the shared server's jobs need."""
    with live_server(tmp_path_factory.mktemp("serve-clusters"), slots=16) as live:
        yield live


@pytest.fixture(scope="module")
def alice_key(server: LiveServer) -> AccessKey:
    return server.keys.create("alice", "cluster API tests")


@pytest.fixture(scope="module")
def bob_key(server: LiveServer) -> AccessKey:
    return server.keys.create("bob", "cluster API tests, second tenant")


def running_vms(client: Any, cluster_id: str, group: str, count: int) -> list[Any]:
    """The group's VMs once `count` of them are listed and all Running (placed)."""
    deadline = time.monotonic() + 20
    while True:
        items = client.list_cluster_instances(cluster_id, group, "", 100).Items
        if len(items) == count and all(item.State == "Running" for item in items):
            return list(items)
        assert time.monotonic() < deadline, [(item.Id, item.State) for item in items]
        time.sleep(0.05)


def sdk_client(server: LiveServer, key: AccessKey) -> Any:
    Client.register_region("local", "127.0.0.1", server.port)
    return Client("127.0.0.1", key.id, key.secret)


@pytest.fixture()
def client(server: LiveServer, alice_key: AccessKey) -> Any:
    return sdk_client(server, alice_key)


@pytest.fixture()
def bob_client(server: LiveServer, bob_key: AccessKey) -> Any:
    return sdk_client(server, bob_key)


def description(name: str = "api-cluster", **groups: int) -> Any:
    cluster = ClusterDescription()
    cluster.Name = name
    cluster.ImageId = "img-ubuntu"
    cluster.InstanceType = "ecs.sn1.medium"
    cluster.Description = "made by the API tests"
    for group_name, count in (groups or {"group1": 2}).items():
        group = GroupDescription()
        group.DesiredVMCount = count
        group.InstanceType = "ecs.sn1.medium"
        cluster.add_group(group_name, group)
    return cluster


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as raised:
        call(*args, **kwargs)
    return (raised.value.get_status_code(), raised.value.get_code(),
            raised.value.get_msg())


def test_a_cluster_is_created_read_and_typed_as_the_sdk_requires(client: Any) -> None:
    cluster_id = client.create_cluster(description(group1=2, group2=0)).Id
    assert cluster_id.startswith("cls-")
    cluster = client.get_cluster(cluster_id)
    assert (cluster.Id, cluster.Name, cluster.State, cluster.ImageId) == (
        cluster_id, "api-cluster", "Active", "img-ubuntu")
    assert isinstance(cluster.OwnerId, int) and cluster.CreationTime is not None
    assert cluster.Groups["group1"].DesiredVMCount == 2
    assert cluster.Groups["group2"].DesiredVMCount == 0
    running_vms(client, cluster_id, "group1", 2)  # ActualVMCount follows: placed at once
    cluster = client.get_cluster(cluster_id)
    assert cluster.Groups["group1"].ActualVMCount == 2
    assert cluster.Groups["group2"].ActualVMCount == 0
    assert cluster.Metrics.StartingCount == 0 and cluster.Metrics.RunningCount == 2
    assert cluster.WriteSupport is False and isinstance(cluster.OperationLogs, list)
    assert any("[group1] 2 VM(s) added" in line for line in cluster.OperationLogs)
    assert isinstance(cluster.UserData, dict) and isinstance(cluster.EnvVars, dict)


def test_the_raw_status_object_never_holds_null(server: LiveServer, alice: httpx.Client
                                                ) -> None:
    body = {"Name": "raw", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
            "Groups": {"g": {"DesiredVMCount": 1}}}
    created = alice.post("/clusters", json=body)
    assert created.status_code == 201, created.text
    status = alice.get(f"/clusters/{created.json()['Id']}").json()
    nulls = [key for key, value in status.items() if value is None]
    assert nulls == []
    for key in ("UserData", "EnvVars", "Configs", "Notification", "Metrics", "Groups",
                "InputMapping", "InputMappingConfig"):
        assert isinstance(status[key], dict), key
    assert status["Groups"]["g"]["Disks"] == {}
    assert status["CreationTime"].endswith("Z") and "." in status["CreationTime"]


def test_an_idempotent_token_makes_one_cluster(client: Any) -> None:
    first = client.create_cluster(description("tokened"), "cluster_token_1").Id
    again = client.create_cluster(description("tokened"), "cluster_token_1").Id
    assert again == first
    status, code, _ = error_of(client.create_cluster, description("other"), "cluster_token_1")
    assert (status, code) == (400, "IdempotentTokenMismatch")


def test_clusters_are_listed_page_by_page(client: Any) -> None:
    made = [client.create_cluster(description(f"paged-{index}")).Id for index in range(3)]
    seen: list[str] = []
    marker = ""
    while True:
        page = client.list_clusters(marker, 2)
        assert len(page.Items) <= 2
        seen += [item.Id for item in page.Items]
        marker = page.NextMarker
        if not marker:
            break
    assert seen == sorted(seen) and set(made) <= set(seen)
    status, code, _ = error_of(client.list_clusters, "", 101)
    assert (status, code) == (400, "InvalidMaxItemCount")


def test_every_change_helper_and_modify_cluster(client: Any) -> None:
    cluster_id = client.create_cluster(description(group1=1)).Id
    client.change_cluster_desired_vm_count(cluster_id, group1=3)
    client.change_cluster_env_vars(cluster_id, {"COLOUR": "blue"})
    client.change_cluster_user_data(cluster_id, {"owner": "alice"})
    client.change_cluster_input_mapping(cluster_id, {"oss://api-tests/in/": "/home/in/"})
    client.change_cluster_spot_config(cluster_id, "group1", "SpotAsPriceGo", 0.25)
    cluster = client.get_cluster(cluster_id)
    assert cluster.Groups["group1"].DesiredVMCount == 3
    assert (cluster.EnvVars, cluster.UserData) == ({"COLOUR": "blue"}, {"owner": "alice"})
    assert cluster.InputMapping == {"oss://api-tests/in/": "/home/in/"}
    assert (cluster.Groups["group1"].SpotStrategy,
            cluster.Groups["group1"].SpotPriceLimit) == ("SpotAsPriceGo", 0.25)
    assert len(client.list_cluster_instances(cluster_id, "group1", "", 100).Items) == 3
    modify = ModifyClusterDescription()
    modify.ImageId = "img-newer"
    smaller = ModifyGroupDescription()
    smaller.DesiredVMCount = 1
    modify.add_group("group1", smaller)
    client.modify_cluster(cluster_id, modify)
    client.modify_cluster(cluster_id, ModifyClusterDescription())  # Groups {}: no change
    cluster = client.get_cluster(cluster_id)
    assert cluster.ImageId == "img-newer" and cluster.Groups["group1"].DesiredVMCount == 1
    assert cluster.EnvVars == {"COLOUR": "blue"}  # untouched by a partial change
    assert len(client.list_cluster_instances(cluster_id, "group1", "", 100).Items) == 1
    assert any("[group1] DesiredVMCount 3 -> 1" in line for line in cluster.OperationLogs)


def test_the_vm_endpoints(client: Any) -> None:
    cluster_id = client.create_cluster(description(group1=3)).Id
    running_vms(client, cluster_id, "group1", 3)
    page = client.list_cluster_instances(cluster_id, "group1", "", 2)
    assert [item.State for item in page.Items] == ["Running", "Running"]
    assert page.NextMarker
    rest = client.list_cluster_instances(cluster_id, "group1", page.NextMarker, 2)
    assert len(rest.Items) == 1 and rest.NextMarker == ""
    first = page.Items[0].Id
    vm = client.get_cluster_instance(cluster_id, "group1", first)
    assert (vm.Id, vm.State, vm.ErrorCode) == (first, "Running", 0)
    assert vm.IpAddress == "127.0.0.1" and vm.HostName
    client.recreate_cluster_instance(cluster_id, "group1", first)
    after = [item.Id for item in running_vms(client, cluster_id, "group1", 3)]
    assert first not in after  # drained (it ran nothing) and replaced
    second = after[0]
    client.delete_cluster_instance(cluster_id, "group1", second)
    running_vms(client, cluster_id, "group1", 2)
    status, code, _ = error_of(client.delete_cluster_instance, cluster_id, "group1", second)
    assert (status, code) == (404, "InvalidResource.NotFound")
    assert client.get_cluster(cluster_id).Groups["group1"].DesiredVMCount == 2
    status, code, _ = error_of(client.list_cluster_instances, cluster_id, "nogroup", "", 10)
    assert (status, code) == (404, "InvalidResource.NotFound")


def test_a_cluster_is_deleted(client: Any) -> None:
    cluster_id = client.create_cluster(description("short-lived")).Id
    running_vms(client, cluster_id, "group1", 2)
    client.delete_cluster(cluster_id)
    deadline = time.monotonic() + 20
    while True:  # Deleting while its VMs drain (idle: at the next step), then gone
        try:
            assert client.get_cluster(cluster_id).State == "Deleting"
        except ClientError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, code, _ = error_of(client.get_cluster, cluster_id)
    assert (status, code) == (404, "InvalidResource.NotFound")


def test_invalid_clusters_are_refused_with_section_7_3_codes(alice: httpx.Client) -> None:
    base = {"Name": "bad", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium"}
    cases = [
        (base, "MissingGroups", "Groups"),
        ({**base, "Groups": {"g": {}}}, "MissingDesiredVMCount", "Groups.g.DesiredVMCount"),
        ({**base, "Groups": {"g": {"DesiredVMCount": 70000}}}, "InvalidDesiredVMCount",
         "Groups.g.DesiredVMCount"),
        ({**base, "Groups": {"g": "x"}}, "InvalidGroups.g", "Groups.g"),
        ({**base, "InstanceType": "ecs.nope", "Groups": {"g": {"DesiredVMCount": 1}}},
         "InvalidParameter.InstanceType", "InstanceType"),
    ]
    for body, code, path in cases:
        answer = alice.post("/clusters", json=body)
        assert answer.status_code == 400, answer.text
        error = answer.json()
        assert error["Code"] == code and error["Problems"][0]["Path"] == path, error
    unknown = alice.post("/clusters", json={**base, "InstanceType": "ecs.nope",
                                            "Groups": {"g": {"DesiredVMCount": 1}}}).json()
    assert "GET /available lists them" in unknown["Message"]


def test_invalid_changes_are_refused_and_change_nothing(client: Any,
                                                        alice: httpx.Client) -> None:
    cluster_id = client.create_cluster(description(group1=1)).Id
    cases = [({"Name": "renamed"}, "InvalidParameter"),
             ({"Groups": {"nogroup": {"DesiredVMCount": 1}}}, "InvalidGroups.nogroup"),
             ({"Groups": {"group1": {"DesiredVMCount": -1}}}, "InvalidDesiredVMCount"),
             ({"Groups": {"group1": {"InstanceType": "ecs.nope"}}},
              "InvalidParameter.InstanceType")]
    for body, code in cases:
        answer = alice.put(f"/clusters/{cluster_id}", json=body)
        assert (answer.status_code, answer.json()["Code"]) == (400, code), answer.text
    cluster = client.get_cluster(cluster_id)
    assert cluster.Name == "api-cluster" and cluster.Groups["group1"].DesiredVMCount == 1
    status, code, _ = error_of(client.change_cluster_desired_vm_count, cluster_id, group1=-5)
    assert (status, code) == (400, "InvalidDesiredVMCount")


def test_another_tenants_cluster_is_not_found(client: Any, bob_client: Any) -> None:
    cluster_id = client.create_cluster(description("alices")).Id
    vm_id = client.list_cluster_instances(cluster_id, "group1", "", 10).Items[0].Id
    calls = [(bob_client.get_cluster, (cluster_id,)),
             (bob_client.change_cluster_desired_vm_count, (cluster_id,)),
             (bob_client.delete_cluster, (cluster_id,)),
             (bob_client.list_cluster_instances, (cluster_id, "group1", "", 10)),
             (bob_client.get_cluster_instance, (cluster_id, "group1", vm_id)),
             (bob_client.delete_cluster_instance, (cluster_id, "group1", vm_id)),
             (bob_client.recreate_cluster_instance, (cluster_id, "group1", vm_id))]
    for call, arguments in calls:
        assert error_of(call, *arguments)[:2] == (404, "InvalidResource.NotFound"), call
    assert cluster_id not in [item.Id for item in bob_client.list_clusters("", 100).Items]
    assert client.get_cluster(cluster_id).State == "Active"


def job_on(cluster_id: str) -> dict[str, Any]:
    task = echo_task("echo on a cluster", ClusterId=cluster_id)
    del task["AutoCluster"]
    return {"Name": "on-cluster", "Priority": 0, "Type": "DAG",
            "DAG": {"Tasks": {"work": task}, "Dependencies": {}}}


def test_a_job_naming_a_missing_or_foreign_cluster_is_refused(
        client: Any, bob_client: Any, alice: httpx.Client) -> None:
    theirs = bob_client.create_cluster(description("bobs")).Id
    for cluster_id in ("cls-00000000000000000000000000000000", theirs):
        answer = alice.post("/jobs", json=job_on(cluster_id))
        assert answer.status_code == 400, answer.text
        error = answer.json()
        assert error["Code"] == "InvalidClusterId"
        assert error["Problems"][0]["Path"] == "DAG.Tasks.work.ClusterId"
        assert cluster_id in error["Problems"][0]["Message"]


def test_deleting_a_cluster_with_an_active_job_is_refused(client: Any,
                                                          alice: httpx.Client) -> None:
    cluster_id = client.create_cluster(description("busy")).Id
    created = alice.post("/jobs", json=job_on(cluster_id))
    assert created.status_code == 201, created.text
    job_id = created.json()["Id"]
    try:
        status, code, message = error_of(client.delete_cluster, cluster_id)
        assert (status, code) == (409, "StateConflict") and job_id in message
    finally:
        alice.post(f"/jobs/{job_id}/stop")
    assert json.loads(alice.get(f"/jobs/{job_id}").text)["State"] == "Stopped"
    client.delete_cluster(cluster_id)  # no active job uses it any more
    assert error_of(client.get_cluster, cluster_id)[:2] == (404, "InvalidResource.NotFound")


def test_more_vms_than_the_tenant_s_quota_are_refused(alice: httpx.Client) -> None:
    body = {"Name": "greedy", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
            "Groups": {"g": {"DesiredVMCount": 65536}}}
    answer = alice.post("/clusters", json=body)
    assert answer.status_code == 403, answer.text
    assert answer.json()["Code"] == "QuotaExhausted"
    assert "vm_quota" in answer.json()["Message"]
