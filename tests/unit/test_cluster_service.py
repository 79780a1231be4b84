"""The cluster control plane (`orchestrator.clusters`) on the MemoryStore with a fake clock:
VM rows follow DesiredVMCount up and down, deletion is refused while jobs use a cluster,
tenants see only their own clusters, and a job naming a missing cluster is refused."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.domain.clusters import (
    ClusterSpecError,
    ClusterState,
    VMState,
    parse_cluster,
    parse_cluster_change,
)
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.errors import IdempotentTokenMismatch, NotFound, SpecError, StateConflict
from batchyard.orchestrator.clusters import (
    Clusters,
    finish_deletions,
    reconcile,
)
from batchyard.ports.clusters import VMRow
from batchyard.ports.store import IdempotencyToken
from batchyard.testing import FakeClock, Harness, MemoryStore
from tests.integration.conftest import make_job, make_task


def body(**groups: int) -> dict[str, Any]:
    return {"Name": "c1", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
            "Groups": {name: {"DesiredVMCount": count} for name, count in
                       (groups or {"g1": 2}).items()}}


class Service:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.wakes = 0
        self.clusters = Clusters(self.store, self.clock, changed=self._woken)

    def _woken(self) -> None:
        self.wakes += 1

    def create(self, tenant: str = "alice", **groups: int) -> str:
        return self.clusters.create(parse_cluster(body(**groups)), tenant)

    def resize(self, cluster_id: str, **groups: int) -> None:
        change = {"Groups": {name: {"DesiredVMCount": n} for name, n in groups.items()}}
        self.clusters.change(cluster_id, parse_cluster_change(change), "alice")

    def vms(self, cluster_id: str, group: str = "g1") -> list[VMRow]:
        with self.store.transaction() as tx:
            return tx.vms(cluster_id, group)

    def states(self, cluster_id: str, group: str = "g1") -> list[VMState]:
        return [vm.state for vm in self.vms(cluster_id, group)]

    def move(self, vm_id: str, *targets: VMState) -> None:
        with self.store.transaction() as tx:
            for target in targets:
                assert tx.move_vm(vm_id, target, self.clock())


@pytest.fixture()
def service() -> Service:
    return Service()


def test_a_new_cluster_has_pending_vms_for_each_group(service: Service) -> None:
    cluster_id = service.create(g1=2, g2=1)
    assert cluster_id.startswith("cls-")
    assert service.states(cluster_id) == [VMState.PENDING] * 2
    vm = service.vms(cluster_id, "g2")[0]
    assert (vm.tenant, vm.instance_type, vm.host, vm.reason != "") == (
        "alice", "ecs.sn1.medium", "", True)
    status = service.clusters.get(cluster_id, "alice")
    assert status.row.state is ClusterState.ACTIVE
    assert status.actual("g1") == 0 and status.count(VMState.PENDING) == 3
    assert status.row.operation_logs[0].endswith("][] created")
    assert any("[g1] 2 VM(s) added" in line for line in status.row.operation_logs)
    assert service.wakes == 1


def test_scaling_up_adds_pending_vms_and_down_sheds_pending_first(service: Service) -> None:
    cluster_id = service.create(g1=2)
    first, _ = (vm.id for vm in service.vms(cluster_id))
    service.move(first, VMState.STARTING, VMState.RUNNING)
    service.resize(cluster_id, g1=4)
    assert service.states(cluster_id) == [VMState.RUNNING] + [VMState.PENDING] * 3
    service.resize(cluster_id, g1=1)
    assert [vm.id for vm in service.vms(cluster_id)] == [first]  # Pending ones: gone at once
    service.resize(cluster_id, g1=0)
    assert service.states(cluster_id) == [VMState.DELETING]  # a Running one drains
    service.resize(cluster_id, g1=1)  # a Deleting VM does not count: a new one comes
    assert service.states(cluster_id) == [VMState.DELETING, VMState.PENDING]
    assert service.clusters.get(cluster_id, "alice").row.description.Groups[
        "g1"].DesiredVMCount == 1
    assert service.wakes == 5


def test_reconcile_never_leaves_more_live_vms_than_desired_and_sheds_busy_last(
        service: Service) -> None:
    cluster_id = service.create(g1=3)
    ids = [vm.id for vm in service.vms(cluster_id)]
    for vm_id in ids:
        service.move(vm_id, VMState.STARTING, VMState.RUNNING)
    with service.store.transaction() as tx:
        tx.change_cluster(cluster_id, parse_cluster(body(g1=1)))
        done = reconcile(tx, cluster_id, service.clock(), busy={ids[2]})
    assert done.shed == {"g1": [ids[1], ids[0]]}  # idle ones, newest first; the busy one stays
    assert service.states(cluster_id) == [VMState.DELETING, VMState.DELETING, VMState.RUNNING]
    with service.store.transaction() as tx:
        assert not reconcile(tx, cluster_id, service.clock())  # nothing left to do
        assert not reconcile(tx, "cls-none", service.clock())


def test_a_group_not_in_the_description_any_more_is_emptied(service: Service) -> None:
    cluster_id = service.create(g1=1)
    with service.store.transaction() as tx:
        tx.add_vms([VMRow("i-stray", cluster_id, "old", "alice", "t", VMState.PENDING, 1, 1)])
        reconcile(tx, cluster_id, service.clock())
        assert tx.vm("i-stray") is None


def test_a_change_that_fails_changes_nothing(service: Service) -> None:
    cluster_id = service.create(g1=1)
    before = service.clusters.get(cluster_id, "alice")
    with pytest.raises(ClusterSpecError):
        service.clusters.change(cluster_id, parse_cluster_change(
            {"Groups": {"g1": {"InstanceType": "ecs.huge", "DesiredVMCount": 5}}}),
            "alice")
    with pytest.raises(ClusterSpecError):
        service.resize(cluster_id, nope=1)
    assert service.clusters.get(cluster_id, "alice") == before
    assert len(service.vms(cluster_id)) == 1


def test_a_change_is_logged_per_group(service: Service) -> None:
    cluster_id = service.create(g1=1)
    service.clusters.change(cluster_id, parse_cluster_change(
        {"EnvVars": {"A": "1"}, "Groups": {"g1": {"DesiredVMCount": 2,
                                                   "InstanceType": "ecs.sn1.large"}}}),
        "alice")
    row = service.clusters.get(cluster_id, "alice").row
    assert row.description.EnvVars == {"A": "1"}
    assert row.operation_logs[-3].endswith("[] changed EnvVars")
    assert row.operation_logs[-2].endswith(
        "[g1] DesiredVMCount 1 -> 2, InstanceType ecs.sn1.medium -> ecs.sn1.large")
    assert [vm.instance_type for vm in service.vms(cluster_id)] == [
        "ecs.sn1.medium", "ecs.sn1.large"]


def test_unknown_instance_types_are_refused_at_creation(service: Service) -> None:
    with pytest.raises(ClusterSpecError) as caught:
        service.clusters.create(parse_cluster({**body(), "InstanceType": "ecs.nope"}),
                                "alice")
    assert [p.code for p in caught.value.problems] == ["InvalidParameter.InstanceType"]
    with service.store.transaction() as tx:
        assert tx.clusters() == []


def test_a_token_makes_one_cluster(service: Service) -> None:
    token = IdempotencyToken("clusters", "tok", "digest")
    description = parse_cluster(body())
    first = service.clusters.create(description, "alice", token)
    assert service.clusters.create(description, "alice", token) == first
    with pytest.raises(IdempotentTokenMismatch):
        service.clusters.create(description, "alice", token._replace(digest="other"))
    assert service.clusters.create(description, "bob", token) != first
    assert len(service.clusters.list("alice").items) == 1


def test_another_tenants_cluster_does_not_exist(service: Service) -> None:
    cluster_id = service.create(g1=1)
    vm_id = service.vms(cluster_id)[0].id
    calls = [lambda: service.clusters.get(cluster_id, "bob"),
             lambda: service.clusters.change(cluster_id, parse_cluster_change({}), "bob"),
             lambda: service.clusters.delete(cluster_id, "bob"),
             lambda: service.clusters.vms(cluster_id, "g1", "bob"),
             lambda: service.clusters.vm(cluster_id, "g1", vm_id, "bob"),
             lambda: service.clusters.delete_vm(cluster_id, "g1", vm_id, "bob"),
             lambda: service.clusters.recreate_vm(cluster_id, "g1", vm_id, "bob")]
    for call in calls:
        with pytest.raises(NotFound, match=f"cluster {cluster_id} does not exist"):
            call()
    assert service.clusters.list("bob").items == []
    assert service.clusters.get(cluster_id, None).row.tenant == "alice"  # no tenant: any


def test_clusters_and_vms_are_paged_from_an_inclusive_marker(service: Service) -> None:
    ids = [service.create(g1=3) for _ in range(3)]
    page = service.clusters.list("alice", "", 2)
    assert [s.row.id for s in page.items] == ids[:2] and page.next_marker == ids[2]
    page = service.clusters.list("alice", page.next_marker, 2)
    assert [s.row.id for s in page.items] == ids[2:] and page.next_marker == ""
    vms = [vm.id for vm in service.vms(ids[0])]
    page_of_vms = service.clusters.vms(ids[0], "g1", "alice", vms[1], 1)
    assert [vm.id for vm in page_of_vms.items] == [vms[1]]
    assert page_of_vms.next_marker == vms[2]
    with pytest.raises(NotFound, match="has no group 'g9'"):
        service.clusters.vms(ids[0], "g9", "alice")


def test_deleting_a_vm_lowers_the_desired_count(service: Service) -> None:
    cluster_id = service.create(g1=2)
    pending, running = (vm.id for vm in service.vms(cluster_id))
    service.move(running, VMState.STARTING, VMState.RUNNING)
    service.clusters.delete_vm(cluster_id, "g1", pending, "alice")
    assert [vm.id for vm in service.vms(cluster_id)] == [running]
    with pytest.raises(NotFound):
        service.clusters.delete_vm(cluster_id, "g1", pending, "alice")  # twice: an error
    service.clusters.delete_vm(cluster_id, "g1", running, "alice")
    assert service.states(cluster_id) == [VMState.DELETING]
    with pytest.raises(StateConflict, match="is Deleting already"):
        service.clusters.delete_vm(cluster_id, "g1", running, "alice")
    row = service.clusters.get(cluster_id, "alice").row
    assert row.description.Groups["g1"].DesiredVMCount == 0
    assert row.operation_logs[-1].endswith(f"[g1] VM {running} deleted; DesiredVMCount 1 -> 0")


def test_recreating_a_vm_replaces_it(service: Service) -> None:
    cluster_id = service.create(g1=1)
    old = service.vms(cluster_id)[0].id
    service.move(old, VMState.STARTING, VMState.RUNNING)
    service.clusters.recreate_vm(cluster_id, "g1", old, "alice")
    after = service.vms(cluster_id)
    assert [(vm.id == old, vm.state) for vm in after] == [
        (True, VMState.DELETING), (False, VMState.PENDING)]
    with pytest.raises(NotFound):
        service.clusters.recreate_vm(cluster_id, "g2", old, "alice")


def test_deleting_a_cluster_drains_its_vms_then_removes_it(service: Service) -> None:
    cluster_id = service.create(g1=2)
    running = service.vms(cluster_id)[0].id
    service.move(running, VMState.STARTING, VMState.RUNNING)
    service.clusters.delete(cluster_id, "alice")
    status = service.clusters.get(cluster_id, "alice")
    assert status.row.state is ClusterState.DELETING
    assert service.states(cluster_id) == [VMState.DELETING]
    with pytest.raises(StateConflict, match="is Deleting"):
        service.clusters.delete(cluster_id, "alice")
    with pytest.raises(StateConflict):
        service.resize(cluster_id, g1=3)
    service.move(running, VMState.DELETED)  # the data plane drained it
    with service.store.transaction() as tx:
        assert finish_deletions(tx) == [cluster_id]
        assert finish_deletions(tx) == []
    with pytest.raises(NotFound):
        service.clusters.get(cluster_id, "alice")


def test_a_cluster_of_pending_vms_is_deleted_at_once(service: Service) -> None:
    cluster_id = service.create(g1=3)
    service.clusters.delete(cluster_id, "alice")
    with pytest.raises(NotFound):
        service.clusters.get(cluster_id, "alice")


def test_deleting_a_cluster_with_active_jobs_is_refused_naming_them() -> None:
    harness = Harness.build(slots=1)
    clusters = harness.engine.clusters
    cluster_id = clusters.create(parse_cluster(body()), "default")
    job = make_job({"t": make_task("true", ClusterId=cluster_id)})
    job_id = harness.engine.submit(parse_job(job))
    with pytest.raises(StateConflict) as caught:
        clusters.delete(cluster_id, "default")
    assert job_id in caught.value.message and "stop them" in caught.value.message
    harness.engine.stop(job_id)
    assert harness.engine.job(job_id).state is State.STOPPED
    clusters.delete(cluster_id, "default")
    with pytest.raises(NotFound):
        clusters.get(cluster_id, "default")


def test_a_job_naming_a_missing_or_foreign_cluster_is_refused_at_submission() -> None:
    harness = Harness.build(slots=1)
    mine = harness.engine.clusters.create(parse_cluster(body()), "default")
    theirs = harness.engine.clusters.create(parse_cluster(body()), "bob")
    job = make_job({"a": make_task("true", ClusterId=mine),
                    "b": make_task("true", ClusterId=theirs),
                    "c": make_task("true", ClusterId="cls-missing"),
                    "d": make_task("true")})
    with pytest.raises(SpecError) as caught:
        harness.engine.submit(parse_job(job))
    assert [(p.code, p.path, p.value) for p in caught.value.problems] == [
        ("InvalidClusterId", "DAG.Tasks.b.ClusterId", theirs),
        ("InvalidClusterId", "DAG.Tasks.c.ClusterId", "cls-missing")]
    assert harness.engine.store.jobs() == []
    harness.engine.clusters.delete(mine, "default")
    with pytest.raises(SpecError):  # a Deleting (or deleted) cluster takes no jobs
        harness.engine.submit(parse_job(make_job({"a": make_task("true", ClusterId=mine)})))


def test_a_tenant_s_clusters_want_at_most_its_vm_quota() -> None:
    from batchyard.errors import QuotaExhausted

    service = Service()
    service.clusters.vm_quota = 5
    first = service.create(g1=3)
    with pytest.raises(QuotaExhausted) as caught:
        service.create(g1=3)  # 6 in all
    assert caught.value.status == 403 and "quota is 5" in caught.value.message
    with pytest.raises(QuotaExhausted):
        service.resize(first, g1=6)
    service.resize(first, g1=5)  # its own count is replaced, not added
    assert service.create(tenant="bob", g1=5)  # another tenant has a quota of its own
    with service.store.transaction() as tx:
        assert len(tx.clusters("alice")) == 1


def test_a_tenant_has_at_most_its_cluster_quota_of_clusters() -> None:
    from batchyard.errors import QuotaExhausted

    service = Service()
    service.clusters.cluster_quota = 2
    first = service.create(g1=0)
    service.create(g1=0)
    with pytest.raises(QuotaExhausted) as caught:
        service.create(g1=0)
    assert "cluster_quota" in caught.value.message
    service.resize(first, g1=1)  # a change is not a new cluster
    assert service.create(tenant="bob", g1=0)
