"""AutoClusters and fair share on the MemoryStore with the fake clock: each task on no
cluster gets its own group of VMs, released when it ends (kept on ReserveOnFail); tenants
share the agents' slots by their weights."""

from __future__ import annotations

from typing import Any

from batchyard.domain.instance_types import Machine
from batchyard.domain.states import State
from batchyard.testing import Harness

Job = dict[str, Any]


def job(count: int = 1, retries: int = 0, reserve: bool = False, name: str = "work",
        priority: int = 0, bucket: str = "test") -> Job:
    auto: dict[str, Any] = {"InstanceType": "ecs.sn1.medium"}
    if reserve:
        auto["ReserveOnFail"] = True
    task = {"InstanceCount": count, "MaxRetryCount": retries, "AutoCluster": auto,
            "Parameters": {"Command": {"CommandLine": "true", "PackagePath": ""},
                           "StdoutRedirectPath": f"oss://{bucket}/logs/",
                           "StderrRedirectPath": f"oss://{bucket}/logs/"}}
    return {"Name": name, "Priority": priority, "DAG": {"Tasks": {"work": task}}}


def test_a_task_runs_on_its_own_group_of_vms_each_instance_on_the_least_busy_one() -> None:
    harness = Harness.build(slots=2)
    job_id = harness.submit(job(count=3))
    first = harness.agent.running()
    assert len(first) == 2
    clusters = {request.cluster_id for request in first}
    assert len(clusters) == 1 and next(iter(clusters)).startswith("cls-")
    vms = {request.worker_id for request in first}
    assert len(vms) == 2 and all(vm.startswith("i-") for vm in vms)
    harness.finish(f"{job_id}/work/0")
    (third,) = [r for r in harness.agent.running() if r.key.instance_id == 2]
    assert third.worker_id == first[0].worker_id  # the VM instance 0 left
    assert third.cluster_id in clusters
    harness.run_all()
    assert harness.engine.table_sizes()["autoclusters"] == 0  # released at the task's end


def test_a_group_has_at_most_instance_count_vms_and_another_task_gets_its_own() -> None:
    harness = Harness.build(slots=4)
    one = harness.submit(job(count=1, name="one"))
    two = harness.submit(job(count=1, name="two"))
    running = {request.key.job_id: request for request in harness.agent.running()}
    assert running[one].cluster_id != running[two].cluster_id
    assert running[one].worker_id != running[two].worker_id
    assert harness.engine.table_sizes()["autoclusters"] == 2


def test_a_failed_task_with_reserve_on_fail_keeps_its_vms_until_the_job_is_deleted() -> None:
    harness = Harness.build(slots=2)
    failing = harness.submit(job(count=2, reserve=True, name="keep"))
    harness.finish(failing, exit_code=3)
    assert harness.engine.job(failing).state is State.FAILED
    assert harness.engine.table_sizes()["reserved"] == 1
    other = harness.submit(job(count=2, name="other"))
    assert harness.agent.running() == []  # both slots are the failed task's VMs
    harness.engine.delete(failing)
    harness.engine.step()
    assert len(harness.agent.running()) == 2
    assert harness.engine.table_sizes()["reserved"] == 0
    harness.run_all()
    assert harness.engine.job(other).state is State.FINISHED


def test_a_failed_task_without_reserve_on_fail_gives_its_vms_back() -> None:
    harness = Harness.build(slots=2)
    failing = harness.submit(job(count=2, name="drop"))
    harness.finish(failing, exit_code=3)
    assert harness.engine.table_sizes()["reserved"] == 0
    harness.submit(job(count=2, name="other"))
    assert len(harness.agent.running()) == 2


def test_restarting_the_job_releases_the_reserved_vms() -> None:
    harness = Harness.build(slots=2)
    failing = harness.submit(job(count=2, reserve=True))
    harness.finish(failing, exit_code=3)
    harness.engine.restart(failing)
    harness.engine.step()
    assert harness.engine.table_sizes()["reserved"] == 0
    assert len(harness.agent.running()) == 2


def test_tenants_share_the_slots_by_their_weights() -> None:
    harness = Harness.build(slots=6, weights={"bob": 2.0})
    alice = harness.engine.submit(job(count=50, name="a", bucket="a"), tenant="alice")
    bob = harness.engine.submit(job(count=50, name="b", bucket="b"), tenant="bob")
    harness.engine.step()
    tenants = [request.key.job_id for request in harness.agent.running()]
    assert tenants.count(bob) == 4 and tenants.count(alice) == 2
    harness.finish(f"{bob}/work/0")  # bob's slot goes back to bob: 4 for 2 holds
    assert [r.key.job_id for r in harness.agent.running()].count(bob) == 4


def test_strict_capacity_counts_each_instances_vcpu_and_memory() -> None:
    machine = Machine(cpus=4, memory_bytes=16 << 30)
    harness = Harness.build(slots=4, capacity="strict", machine=machine)
    job_id = harness.submit(job(count=5))  # ecs.sn1.medium: 2 vCPU, 4 GiB
    running = harness.agent.running()
    assert len(running) == 2  # 4 CPUs hold two of them, whatever the slots
    assert len({request.worker_id for request in running}) == 2
    assert all(request.memory_bytes == 4 << 30 for request in running)
    assert all(request.instance_type == "ecs.sn1.medium" for request in running)
    harness.finish(f"{job_id}/work/0")
    assert len(harness.agent.running()) == 2
    harness.run_all()
    assert harness.engine.fleet.left() is not None
    assert harness.engine.fleet.left().vcpu == 4  # every instance gave its share back


def test_slots_capacity_runs_as_many_as_the_slots() -> None:
    machine = Machine(cpus=2, memory_bytes=8 << 30)
    harness = Harness.build(slots=3, machine=machine)  # "slots": vCPU not counted
    harness.submit(job(count=5))
    assert len(harness.agent.running()) == 3


def test_reserved_vms_are_released_after_reserve_seconds() -> None:
    harness = Harness.build(slots=2, reserve_seconds=600)
    failing = harness.submit(job(count=2, reserve=True))
    harness.finish(failing, exit_code=3)
    harness.submit(job(count=2, name="other"))
    assert harness.agent.running() == []
    harness.clock.advance(597)
    harness.engine.step()
    assert harness.agent.running() == []  # still kept
    harness.clock.advance(2)
    harness.engine.step()
    assert len(harness.agent.running()) == 2  # its time is up: the slots are free again
    assert harness.engine.table_sizes()["reserved"] == 0
