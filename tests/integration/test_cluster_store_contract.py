"""The cluster-store port (`ports.clusters`) behaves the same on every store: the MemoryStore
of `batchyard.testing`, SQLite and PostgreSQL — clusters, VMs, their compare-and-set moves,
idempotency tokens and the jobs that use a cluster. Written against the port only."""

from __future__ import annotations

import pytest

from batchyard.domain.clusters import (
    MAX_OPERATION_LOGS,
    ClusterState,
    ForbiddenMove,
    VMState,
    parse_cluster,
)
from batchyard.domain.spec import parse_job
from batchyard.domain.states import ForbiddenTransition, State
from batchyard.errors import TokenTaken
from batchyard.ports.clusters import ClusterRow, VMRow
from batchyard.ports.store import IdempotencyToken, NewJob, StateStore
from tests.integration.conftest import make_job, make_task


@pytest.fixture
def store(each_store: StateStore) -> StateStore:
    return each_store


BODY = {"Name": "c1", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
        "EnvVars": {"A": "1"}, "Extra": {"kept": True},
        "Groups": {"g1": {"DesiredVMCount": 2}, "g2": {"DesiredVMCount": 1}}}


def cluster(cluster_id: str = "cls-1", tenant: str = "alice",
            state: ClusterState = ClusterState.ACTIVE) -> ClusterRow:
    return ClusterRow(cluster_id, tenant, "c1", parse_cluster(BODY), state, 1000.0,
                      ("[t][] created",))


def vm(vm_id: str, cluster_id: str = "cls-1", group: str = "g1",
       state: VMState = VMState.PENDING, created: float = 1000.0) -> VMRow:
    return VMRow(vm_id, cluster_id, group, "alice", "ecs.sn1.medium", state, created, created,
                 reason="waiting")


class Rollback(Exception):
    pass


def test_a_cluster_reads_back_as_written(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_cluster(cluster())
        tx.add_cluster(cluster("cls-2", tenant="bob"))
    with store.transaction() as tx:
        row = tx.cluster("cls-1")
        assert row == cluster()
        assert row is not None and row.description.model_extra == {"Extra": {"kept": True}}
        assert tx.cluster("cls-9") is None
        assert [r.id for r in tx.clusters()] == ["cls-1", "cls-2"]
        assert [r.id for r in tx.clusters("bob")] == ["cls-2"]


def test_a_rolled_back_cluster_was_never_there(store: StateStore) -> None:
    with pytest.raises(Rollback), store.transaction() as tx:
        tx.add_cluster(cluster())
        tx.add_vms([vm("i-1")])
        raise Rollback
    with store.transaction() as tx:
        assert tx.cluster("cls-1") is None
        assert tx.vms() == []


def test_changes_replace_the_description_and_keep_the_newest_logs(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_cluster(cluster())
    smaller = parse_cluster({**BODY, "Groups": {"g1": {"DesiredVMCount": 0}}})
    with store.transaction() as tx:
        assert tx.change_cluster("cls-1", smaller, ["[t][g1] resized"])
        assert not tx.change_cluster("cls-9", smaller)
    with store.transaction() as tx:
        row = tx.cluster("cls-1")
        assert row is not None and row.description == smaller
        assert row.operation_logs == ("[t][] created", "[t][g1] resized")
        for index in range(MAX_OPERATION_LOGS + 5):
            tx.change_cluster("cls-1", logs=[f"line {index}"])
    with store.transaction() as tx:
        row = tx.cluster("cls-1")
        assert row is not None and row.description == smaller  # KEEP: unchanged
        assert len(row.operation_logs) == MAX_OPERATION_LOGS
        assert row.operation_logs[-1] == f"line {MAX_OPERATION_LOGS + 4}"


def test_cluster_moves_follow_the_table(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_cluster(cluster())
        assert tx.move_cluster("cls-1", ClusterState.DELETING, 1001.0, ["[t][] deleting"])
        assert not tx.move_cluster("cls-9", ClusterState.DELETING, 1001.0)
    with store.transaction() as tx:
        row = tx.cluster("cls-1")
        assert row is not None and row.state is ClusterState.DELETING
        assert row.operation_logs[-1] == "[t][] deleting"
        with pytest.raises(ForbiddenTransition):
            tx.move_cluster("cls-1", ClusterState.ACTIVE, 1002.0)
        tx.remove_cluster("cls-1")
    with store.transaction() as tx:
        assert tx.cluster("cls-1") is None


def test_vms_are_listed_by_id_and_filtered(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_vms([vm("i-3", group="g2"), vm("i-1"), vm("i-2", state=VMState.RUNNING),
                    vm("i-4", cluster_id="cls-2")])
    with store.transaction() as tx:
        assert [v.id for v in tx.vms()] == ["i-1", "i-2", "i-3", "i-4"]
        assert [v.id for v in tx.vms("cls-1")] == ["i-1", "i-2", "i-3"]
        assert [v.id for v in tx.vms("cls-1", "g1")] == ["i-1", "i-2"]
        assert [v.id for v in tx.vms(states={VMState.RUNNING})] == ["i-2"]
        assert [v.id for v in tx.vms(states=())] == []
        assert tx.vm("i-3") == vm("i-3", group="g2")
        assert tx.vm("i-9") is None


def test_a_vm_moves_by_compare_and_set_with_its_fields(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_vms([vm("i-1")])
    with store.transaction() as tx:
        assert tx.move_vm("i-1", VMState.STARTING, 1010.0, host="agent-7", reason="")
        assert not tx.move_vm("i-1", VMState.STARTING, 1011.0)  # a no-op
        assert tx.move_vm("i-1", VMState.RUNNING, 1012.0, ip_address="127.0.0.1",
                          host_name="box")
    with store.transaction() as tx:
        moved = tx.vm("i-1")
        assert moved is not None
        assert (moved.state, moved.host, moved.ip_address, moved.host_name, moved.reason,
                moved.updated, moved.created) == (
            VMState.RUNNING, "agent-7", "127.0.0.1", "box", "", 1012.0, 1000.0)
        with pytest.raises(ForbiddenMove):
            tx.move_vm("i-1", VMState.STARTING, 1013.0)
        assert tx.move_vm("i-1", VMState.PENDING, 1014.0, host="", error_code=3,
                          error_message="agent lost", reason="its host went away")
    with store.transaction() as tx:
        lost = tx.vm("i-1")
        assert lost is not None and (lost.state, lost.host, lost.error_code,
                                     lost.error_message) == (VMState.PENDING, "", 3,
                                                             "agent lost")


def test_a_deleted_vm_is_gone(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_vms([vm("i-1"), vm("i-2"), vm("i-3")])
        with pytest.raises(ForbiddenMove):
            tx.move_vm("i-1", VMState.DELETED, 1001.0)  # Pending must go Deleting first
        assert tx.move_vm("i-1", VMState.DELETING, 1001.0)
        assert tx.move_vm("i-1", VMState.DELETED, 1002.0)
        assert not tx.move_vm("i-1", VMState.DELETED, 1003.0)
        assert not tx.move_vm("i-1", VMState.DELETING, 1003.0)
        tx.remove_vm("i-2")
        tx.remove_vm("i-9")  # nothing there: nothing happens
    with store.transaction() as tx:
        assert [v.id for v in tx.vms()] == ["i-3"]


def test_the_tokens_of_clusters_are_per_tenant_and_kind(store: StateStore) -> None:
    token = IdempotencyToken("clusters", "t1", "digest-1")
    with store.transaction() as tx:
        tx.add_cluster(cluster(), token)
        tx.add_cluster(cluster("cls-2", tenant="bob"), token)
    with store.transaction() as tx:
        assert tx.made_by_token("alice", token) == ("digest-1", "cls-1")
        assert tx.made_by_token("bob", token) == ("digest-1", "cls-2")
        assert tx.made_by_token("alice", token._replace(kind="jobs")) is None
    with pytest.raises(TokenTaken), store.transaction() as tx:
        tx.add_cluster(cluster("cls-3"), token)
    with store.transaction() as tx:
        assert tx.cluster("cls-3") is None


def test_active_jobs_on_a_cluster(store: StateStore) -> None:
    on = make_job({"a": make_task("true", ClusterId="cls-1"), "b": make_task("true")})
    off = make_job({"a": make_task("true", ClusterId="cls-2")})
    for job_id, job in (("job-1", on), ("job-2", off), ("job-3", on)):
        store.create_job(NewJob(job_id, "alice", parse_job(job), 1000.0))
    with store.transaction() as tx:
        assert tx.active_jobs_on_cluster("cls-1") == ["job-1", "job-3"]
        assert tx.active_jobs_on_cluster("cls-2") == ["job-2"]
        assert tx.active_jobs_on_cluster("") == []  # "" is no cluster, not a cluster
        assert tx.move_job("job-1", State.STOPPED, 1001.0)
    with store.transaction() as tx:
        assert tx.active_jobs_on_cluster("cls-1") == ["job-3"]


def test_a_bulk_move_moves_only_what_the_table_allows(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_vms([vm("i-1"), vm("i-2", state=VMState.RUNNING),
                    vm("i-3", state=VMState.DELETING), vm(f"i-{'9' * 3}")])
        moved = tx.move_vms(["i-1", "i-2", "i-3", "i-gone", "i-1"], VMState.DELETING, 1005.0,
                            reason="")
        assert moved == ["i-1", "i-2"]  # i-3 is Deleting already, i-gone is not there
        assert tx.move_vms([], VMState.DELETING, 1005.0) == []
    with store.transaction() as tx:
        first = tx.vm("i-1")
        assert first is not None and (first.state, first.updated, first.reason) == (
            VMState.DELETING, 1005.0, "")
        assert tx.move_vms(["i-1", "i-999"], VMState.DELETED, 1006.0) == ["i-1"]
        assert [v.id for v in tx.vms()] == ["i-2", "i-3", "i-999"]


def test_a_bulk_move_of_many_vms(store: StateStore) -> None:
    ids = [f"i-{index:05d}" for index in range(1234)]
    with store.transaction() as tx:
        tx.add_vms([vm(vm_id) for vm_id in ids])
        assert tx.move_vms(ids, VMState.DELETING, 1001.0) == ids
        assert tx.move_vms(ids[::2], VMState.DELETED, 1002.0) == ids[::2]
        assert [v.id for v in tx.vms()] == ids[1::2]


def test_vms_are_counted_per_group_and_state(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.add_vms([vm("i-1"), vm("i-2"), vm("i-3", state=VMState.RUNNING),
                    vm("i-4", group="g2", state=VMState.DELETING),
                    vm("i-5", cluster_id="cls-2")])
        assert tx.vm_counts("cls-1") == {
            "g1": {VMState.PENDING: 2, VMState.RUNNING: 1}, "g2": {VMState.DELETING: 1}}
        assert tx.vm_counts("cls-9") == {}
