"""`batchyard serve --provider ray --ray-address …`, the command an operator runs: a real
server process on the session's Ray cluster, buckets on S3, jobs through the signed REST
API. Its own module: the server is another process (its own Ray driver)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import Signer, wait_for_state
from tests.api.test_serve import free_port, wait_until_up
from tests.ray.cluster import RayCluster
from tests.ray.conftest import BUCKETS
from tests.ray.test_provider import task
from tests.s3server import SeaweedServer


def test_serve_with_the_ray_provider_runs_a_job_on_the_cluster(
        ray_cluster: RayCluster, s3: SeaweedServer, tmp_path: Path) -> None:
    key = open_key_store(Settings(data_dir=tmp_path)).create("alice")
    port = free_port()
    environment = {**os.environ, **s3.env(BUCKETS), "BATCHYARD_DATA_DIR": str(tmp_path),
                   "BATCHYARD_RAY_NAMESPACE": f"serve-{port}",
                   "BATCHYARD_RAY_NODE_ROOT": str(tmp_path / "nodes"),
                   "BATCHYARD_BUCKET_GRANTS": json.dumps({"ray": {"owner": "alice"}})}
    process = subprocess.Popen(
        [sys.executable, "-m", "batchyard.cli", "serve", "--port", str(port), "--provider",
         "ray", "--ray-address", ray_cluster.address], env=environment,
        stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/quotas", process)
        body = {"Name": "on-ray", "Type": "DAG", "DAG": {"Dependencies": {}, "Tasks": {
            "work": task("sh -c 'echo $BATCH_COMPUTE_DAG_INSTANCE_ID'", 3, "ecs.n1.medium")}}}
        with httpx.Client(base_url=base, auth=Signer(key.id, key.secret), timeout=10) as client:
            job_id = client.post("/jobs", json=body).json()["Id"]
            job = wait_for_state(client, job_id, {"Finished", "Failed"}, timeout=90)
            assert job["State"] == "Finished", job
            instances = client.get(f"/jobs/{job_id}/tasks/work/instances").json()["Items"]
        assert sorted(item["InstanceId"] for item in instances) == [0, 1, 2]
        assert all(item["State"] == "Finished" for item in instances)
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    assert f"VMs on the Ray cluster at {ray_cluster.address}" in errors, errors
    assert s3.secret not in errors and key.secret not in errors


def test_serve_refuses_the_ray_provider_with_buckets_only_it_reaches(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchyard.cli", "serve", "--provider", "ray",
         "--ray-address", "127.0.0.1:1", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "BATCHYARD_BUCKETS": json.dumps({"data": str(tmp_path / "b")})})
    assert result.returncode == 2
    assert "every node can reach" in result.stderr and "data" in result.stderr
