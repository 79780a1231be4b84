"""The data plane of clusters on the MemoryStore with the fake clock: cluster VMs placed on
the agents' slots, each running one instance at a time of its cluster's tasks only, in
BatchCompute's order; scaling up at once, down with drain; EnvVars; why pending."""

from __future__ import annotations

from collections import Counter
from typing import Any

from batchyard.domain.clusters import VMState, parse_cluster, parse_cluster_change
from batchyard.domain.pending import Why
from batchyard.domain.states import State
from batchyard.ports.clusters import VMRow
from batchyard.testing import Harness

TENANT = "default"


def cluster_body(desired: int = 2, instance_type: str = "ecs.sn1.medium") -> dict[str, Any]:
    return {"Name": "c", "ImageId": "img-ubuntu", "InstanceType": instance_type,
            "EnvVars": {"FROM_CLUSTER": "yes", "BOTH": "cluster"},
            "Groups": {"g": {"DesiredVMCount": desired}}}


def job(cluster_id: str = "", count: int = 1, priority: int = 0, name: str = "j"
        ) -> dict[str, Any]:
    task: dict[str, Any] = {
        "InstanceCount": count, "MaxRetryCount": 0,
        "Parameters": {"Command": {"CommandLine": "true", "PackagePath": "",
                                   "EnvVars": {"BOTH": "task"}},
                       "StdoutRedirectPath": "oss://test/logs/",
                       "StderrRedirectPath": "oss://test/logs/"}}
    if cluster_id:
        task["ClusterId"] = cluster_id
    return {"Name": name, "Priority": priority, "DAG": {"Tasks": {"work": task}}}


def make_cluster(harness: Harness, desired: int = 2, **extra: Any) -> str:
    cluster_id = harness.engine.clusters.create(
        parse_cluster(cluster_body(desired, **extra)), TENANT)
    harness.engine.step()
    return cluster_id


def vms(harness: Harness, cluster_id: str) -> list[VMRow]:
    with harness.store.transaction() as tx:
        return tx.vms(cluster_id)


def resize(harness: Harness, cluster_id: str, desired: int) -> None:
    harness.engine.clusters.change(cluster_id, parse_cluster_change(
        {"Groups": {"g": {"DesiredVMCount": desired}}}), TENANT)
    harness.engine.step()


def test_a_cluster_runs_one_instance_per_vm_and_only_its_tasks() -> None:
    harness = Harness.build(slots=4)
    cluster_id = make_cluster(harness)
    assert [vm.state for vm in vms(harness, cluster_id)] == [VMState.RUNNING] * 2
    on_cluster = harness.submit(job(cluster_id, count=5))
    running = harness.agent.running()
    assert [r.key.instance_id for r in running] == [0, 1]
    assert {r.worker_id for r in running} == {vm.id for vm in vms(harness, cluster_id)}
    assert {r.cluster_id for r in running} == {cluster_id}
    assert running[0].env_vars == {"FROM_CLUSTER": "yes", "BOTH": "task"}
    assert running[0].memory_bytes == 4 << 30  # ecs.sn1.medium
    other = harness.submit(job(count=3, name="auto"))  # on no cluster: the 2 other slots
    assert len([r for r in harness.agent.running() if r.key.job_id == other]) == 2
    first_vm = running[0].worker_id
    harness.finish(f"{on_cluster}/work/0")
    (third,) = [r for r in harness.agent.running() if r.key.instance_id == 2]
    assert third.worker_id == first_vm  # the VM that came free
    harness.run_all()
    assert harness.engine.job(on_cluster).state is State.FINISHED


def test_priority_orders_the_instances_waiting_for_a_cluster() -> None:
    harness = Harness.build(slots=2)
    cluster_id = make_cluster(harness, desired=1)
    low = harness.submit(job(cluster_id, count=2, name="low"))
    high = harness.submit(job(cluster_id, count=2, priority=10, name="high"))
    assert [r.key.job_id for r in harness.agent.running()] == [low]
    harness.finish(f"{low}/work/0")
    assert [r.key.job_id for r in harness.agent.running()] == [high]
    harness.finish(f"{high}/work/0")
    assert [r.key.job_id for r in harness.agent.running()] == [high]


def test_scaling_up_places_vms_at_once_and_beyond_the_slots_they_wait() -> None:
    harness = Harness.build(slots=3)
    cluster_id = make_cluster(harness)
    job_id = harness.submit(job(cluster_id, count=6))
    assert len(harness.agent.running()) == 2
    resize(harness, cluster_id, 3)
    assert len(harness.agent.running()) == 3
    resize(harness, cluster_id, 4)  # three slots: the fourth VM waits for room
    assert Counter(vm.state for vm in vms(harness, cluster_id)) == {
        VMState.PENDING: 1, VMState.RUNNING: 3}
    reason = harness.engine.why_pending(job_id)["work"]
    assert reason.code is Why.VMS_BUSY and reason.as_api()["DesiredVMCount"] == 4


def test_scaling_down_drains_busy_vms_and_never_runs_more_than_desired() -> None:
    harness = Harness.build(slots=3)
    cluster_id = make_cluster(harness, desired=3)
    job_id = harness.submit(job(cluster_id, count=6))
    assert len(harness.agent.running()) == 3
    resize(harness, cluster_id, 1)
    states = Counter(vm.state for vm in vms(harness, cluster_id))
    assert states == {VMState.RUNNING: 1, VMState.DELETING: 2}  # busy: they drain
    kept = next(vm.id for vm in vms(harness, cluster_id) if vm.state is VMState.RUNNING)
    on_kept = next(r.key for r in harness.agent.running() if r.worker_id == kept)
    harness.finish(on_kept)  # the VM kept takes the next instance
    draining = [r.key for r in harness.agent.running() if r.worker_id != kept]
    assert len(draining) == 2
    harness.finish(draining[0])  # a draining VM takes nothing new: it leaves
    assert len(harness.agent.running()) == 2
    assert Counter(vm.state for vm in vms(harness, cluster_id)) == {
        VMState.RUNNING: 1, VMState.DELETING: 1}
    harness.finish(draining[1])
    assert [vm.state for vm in vms(harness, cluster_id)] == [VMState.RUNNING]
    assert [r.worker_id for r in harness.agent.running()] == [kept]
    harness.run_all()
    assert harness.engine.job(job_id).state is State.FINISHED


def test_a_cluster_with_no_vm_says_so_and_a_deleted_one_goes_when_drained() -> None:
    harness = Harness.build(slots=2)
    cluster_id = make_cluster(harness, desired=0)
    job_id = harness.submit(job(cluster_id, count=1))
    assert harness.engine.why_pending(job_id)["work"].code is Why.NO_VM
    harness.engine.stop(job_id)
    harness.engine.clusters.delete(cluster_id, TENANT)
    harness.engine.step()
    with harness.store.transaction() as tx:
        assert tx.cluster(cluster_id) is None


def test_cluster_vms_take_the_agents_slots_from_tasks_on_no_cluster() -> None:
    harness = Harness.build(slots=3)
    make_cluster(harness, desired=2)
    harness.submit(job(count=5))
    assert len(harness.agent.running()) == 1


def test_after_a_restart_the_vms_are_placed_again() -> None:
    harness = Harness.build(slots=2)
    cluster_id = make_cluster(harness, desired=2)
    harness.engine.close()
    assert [vm.state for vm in vms(harness, cluster_id)] == [VMState.PENDING] * 2
    again = Harness.build(slots=2, store=harness.store)
    again.engine.step()
    assert [vm.state for vm in vms(again, cluster_id)] == [VMState.RUNNING] * 2


def test_each_attempt_records_the_vm_it_ran_on() -> None:
    harness = Harness.build(slots=2)
    cluster_id = make_cluster(harness, desired=1)
    on_cluster = harness.submit(job(cluster_id))
    auto = harness.submit(job(name="auto"))
    workers = {r.key.job_id: r.worker_id for r in harness.agent.running()}
    harness.run_all()
    (vm,) = vms(harness, cluster_id)
    assert [a.worker for a in harness.engine.attempts(on_cluster, "work", 0)] == [vm.id]
    assert [a.worker for a in harness.engine.attempts(auto, "work", 0)] == [workers[auto]]
    assert workers[auto].startswith("i-") and workers[auto] != vm.id


def test_a_tenant_s_cluster_gives_slots_back_while_another_tenant_waits() -> None:
    harness = Harness.build(slots=4)
    alice = harness.engine.clusters.create(parse_cluster(cluster_body(4)), "alice")
    harness.engine.step()
    assert Counter(vm.state for vm in vms(harness, alice)) == {VMState.RUNNING: 4}
    bob_job = job(count=4, name="bob")
    for name in ("StdoutRedirectPath", "StderrRedirectPath"):
        bob_job["DAG"]["Tasks"]["work"]["Parameters"][name] = "oss://bob/logs/"
    bob = harness.engine.submit(bob_job, tenant="bob")
    harness.engine.step()  # alice's idle VMs beyond her share (2 of 4) drain
    harness.engine.step()  # ... and give their slots back
    states = Counter(vm.state for vm in vms(harness, alice))
    assert states == {VMState.RUNNING: 2, VMState.PENDING: 2}
    assert len([r for r in harness.agent.running() if r.key.job_id == bob]) == 2
    waiting = [vm for vm in vms(harness, alice) if vm.state is VMState.PENDING]
    assert all("share of the slots" in vm.reason for vm in waiting)
    harness.run_all()  # bob's job ends: nobody else waits
    harness.engine.placement.changed()
    harness.engine.step()
    assert Counter(vm.state for vm in vms(harness, alice)) == {VMState.RUNNING: 4}


def test_a_busy_vm_gives_its_slot_back_once_its_instance_ended() -> None:
    harness = Harness.build(slots=2)
    alice = harness.engine.clusters.create(parse_cluster(cluster_body(2)), "alice")
    harness.engine.step()
    on_alice = harness.engine.submit(job(alice, count=4, name="a"), tenant="alice")
    harness.engine.step()
    assert len(harness.agent.running()) == 2
    bob_job = job(count=1, name="bob")
    for name in ("StdoutRedirectPath", "StderrRedirectPath"):
        bob_job["DAG"]["Tasks"]["work"]["Parameters"][name] = "oss://bob/logs/"
    bob = harness.engine.submit(bob_job, tenant="bob")
    harness.engine.step()
    assert {r.key.job_id for r in harness.agent.running()} == {on_alice}  # nothing killed
    harness.finish(f"{on_alice}/work/1")  # the newest VM's instance ends: it gives back
    harness.engine.step()
    assert {r.key.job_id for r in harness.agent.running()} == {on_alice, bob}
    assert Counter(vm.state for vm in vms(harness, alice)) == {
        VMState.RUNNING: 1, VMState.PENDING: 1}


def test_a_vm_waiting_for_room_takes_the_next_slot_instances_on_no_cluster_free() -> None:
    harness = Harness.build(slots=2)
    auto = harness.submit(job(count=10, name="auto"))
    assert len(harness.agent.running()) == 2
    cluster_id = make_cluster(harness, desired=1)
    assert [vm.state for vm in vms(harness, cluster_id)] == [VMState.PENDING]  # no free slot
    harness.finish(f"{auto}/work/0")  # the slot it frees goes to the VM, not to auto
    assert [vm.state for vm in vms(harness, cluster_id)] == [VMState.RUNNING]
    assert len(harness.agent.running()) == 1
