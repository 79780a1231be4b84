"""A tenant never sees another tenant's jobs: they do not exist for it (404, not 403)."""

from __future__ import annotations

import httpx

from tests.api.conftest import job_body
from tests.api.test_errors import assert_error


def test_another_tenants_job_does_not_exist(alice: httpx.Client, bob: httpx.Client) -> None:
    job_id = alice.post("/jobs", json=job_body(name="private", command="sleep 30")).json()["Id"]
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}?description", f"/jobs/{job_id}/tasks",
                 f"/jobs/{job_id}/tasks/work", f"/jobs/{job_id}/tasks/work/instances",
                 f"/jobs/{job_id}/tasks/work/instances/0"):
        assert_error(bob.get(path), 404, "InvalidResource.NotFound")
    assert_error(bob.post(f"/jobs/{job_id}/stop"), 404, "InvalidResource.NotFound")
    assert_error(bob.post(f"/jobs/{job_id}/start"), 404, "InvalidResource.NotFound")
    assert_error(bob.put(f"/jobs/{job_id}", json={"Priority": 1}), 404,
                 "InvalidResource.NotFound")
    assert_error(bob.delete(f"/jobs/{job_id}"), 404, "InvalidResource.NotFound")
    assert job_id not in {job["Id"] for job in bob.get("/jobs?MaxItemCount=100").json()["Items"]}
    assert alice.get(f"/jobs/{job_id}").json()["Owner"] == "alice"
    assert alice.post(f"/jobs/{job_id}/stop").status_code == 201


def test_lists_hold_only_the_callers_jobs(alice: httpx.Client, bob: httpx.Client) -> None:
    mine = bob.post("/jobs", json=job_body(name="bobs")).json()["Id"]
    owners = {job["Owner"] for job in bob.get("/jobs?MaxItemCount=100").json()["Items"]}
    assert owners == {"bob"}
    assert mine in {job["Id"] for job in bob.get("/jobs").json()["Items"]}
    assert mine not in {job["Id"] for job in alice.get("/jobs?MaxItemCount=100").json()["Items"]}


def test_a_marker_from_another_tenant_reveals_nothing(alice: httpx.Client,
                                                      bob: httpx.Client) -> None:
    alices = alice.post("/jobs", json=job_body(name="marker")).json()["Id"]
    page = bob.get(f"/jobs?Marker={alices}&MaxItemCount=100").json()
    assert {job["Owner"] for job in page["Items"]} <= {"bob"}
