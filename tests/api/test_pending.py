"""Why pending through the API: Waiting tasks and instances carry a `PendingReason`, and the
official SDK reads them as it reads any status (it ignores the extra field)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import LiveServer, Signer, echo_task, wait_for_state

batchcompute = pytest.importorskip("batchcompute")
from batchcompute import Client  # noqa: E402


def test_a_task_waiting_for_its_upstream_says_so_and_the_sdk_reads_it(
        server: LiveServer, alice_key: AccessKey) -> None:
    body = {"Name": "pending", "Type": "DAG", "DAG": {
        "Tasks": {"first": echo_task("sleep 30"), "second": echo_task("true", count=2)},
        "Dependencies": {"first": ["second"]}}}
    with httpx.Client(base_url=server.url, auth=Signer(alice_key.id, alice_key.secret)) as http:
        job_id = http.post("/jobs", json=body).json()["Id"]
        try:
            wait_for_state(http, job_id, {"Running"})
            task: dict[str, Any] = http.get(f"/jobs/{job_id}/tasks/second").json()
            assert task["PendingReason"]["Code"] == "DependencyNotMet"
            assert task["PendingReason"]["Tasks"] == ["first"]
            listed = http.get(f"/jobs/{job_id}/tasks").json()["Items"]
            reasons = {item["TaskName"]: item.get("PendingReason") for item in listed}
            assert reasons["first"] is None and reasons["second"]["Code"] == "DependencyNotMet"
            instances = http.get(f"/jobs/{job_id}/tasks/second/instances").json()["Items"]
            assert [item["PendingReason"]["Code"] for item in instances] == [
                "DependencyNotMet"] * 2
            one = http.get(f"/jobs/{job_id}/tasks/second/instances/1").json()
            assert "first" in one["PendingReason"]["Message"]

            Client.register_region("local", "127.0.0.1", server.port)
            sdk = Client("127.0.0.1", alice_key.id, alice_key.secret)
            assert sdk.get_task(job_id, "second").State == "Waiting"
            assert [i.State for i in sdk.list_instances(job_id, "second", "", 10).Items] == [
                "Waiting"] * 2
        finally:
            http.post(f"/jobs/{job_id}/stop")
            http.delete(f"/jobs/{job_id}")


def test_batchyard_job_says_why_a_task_waits(server: LiveServer, tmp_path: Path) -> None:
    from tests.api.test_client_inspect import run, submit, tenant

    environment = tenant(server, tmp_path)
    body = {"Name": "why", "Type": "DAG", "DAG": {
        "Tasks": {"first": echo_task("sleep 30"), "second": echo_task("true")},
        "Dependencies": {"first": ["second"]}}}
    job_id = submit(environment, tmp_path / "job", body, wait=False)
    try:
        shown = run(environment, "job", job_id)
        assert shown.returncode == 0, shown.stderr
        assert "Why waiting" in shown.stdout
        assert "second" in shown.stdout and "DependencyNotMet" in shown.stdout
        task = run(environment, "job", job_id, "second")
        assert "waits for task first to finish" in task.stdout
        as_json = json.loads(run(environment, "job", job_id, "second", "--json").stdout)
        assert as_json["PendingReason"]["Code"] == "DependencyNotMet"
    finally:
        run(environment, "stop", job_id)
