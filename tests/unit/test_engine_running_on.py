"""`Engine.running_on`: what each cluster VM runs (the console's clusters page), of its
tenant only — with the MemoryStore and the fake clock (the test harness)."""

from __future__ import annotations

from batchyard.domain.clusters import parse_cluster
from batchyard.testing import Harness
from tests.unit.test_cluster_scheduling import TENANT, cluster_body, job, make_cluster, vms


def test_each_busy_vm_names_the_instance_it_runs_to_its_tenant_only() -> None:
    harness = Harness.build(slots=4)
    cluster_id = make_cluster(harness, desired=3)
    vm_ids = [vm.id for vm in vms(harness, cluster_id)]
    assert harness.engine.running_on(vm_ids, TENANT) == {}
    job_id = harness.submit(job(cluster_id, count=2))
    running = {r.worker_id: r.key for r in harness.agent.running()}
    assert len(running) == 2
    assert harness.engine.running_on(vm_ids, TENANT) == running
    assert harness.engine.running_on(vm_ids) == running  # every tenant's
    assert {key.job_id for key in running.values()} == {job_id}
    assert harness.engine.running_on(vm_ids, "another-tenant") == {}
    assert harness.engine.running_on(["vm-unknown"], TENANT) == {}
    harness.run_all()
    assert harness.engine.running_on(vm_ids, TENANT) == {}


def test_another_tenants_vms_show_nothing() -> None:
    harness = Harness.build(slots=4)
    theirs = harness.engine.clusters.create(parse_cluster(cluster_body(1)), "bob")
    harness.engine.step()
    with harness.store.transaction() as tx:
        bobs_vms = [vm.id for vm in tx.vms(theirs)]
    bobs_job = job(theirs)
    harness.engine.submit(bobs_job, "bob")
    harness.engine.step()
    assert len(harness.engine.running_on(bobs_vms, "bob")) == 1
    assert harness.engine.running_on(bobs_vms, TENANT) == {}
