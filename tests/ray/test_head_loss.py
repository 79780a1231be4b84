"""The Ray cluster's head lost while instances run: the server (a Ray driver) exits, as
Ray makes every driver without its GCS do; once a cluster is reachable again, the server
started on it settles the attempts in flight by batchyard's rules — counted lost, with an
event saying so, and run again without using a retry. A cluster of its own: this test
destroys it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from batchyard.domain.states import State
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.ray.cluster import RayCluster, _kill_all, start_ray_cluster
from tests.ray.test_provider import job, processes_with, task, wait_for

HERE = Path(__file__).parent


@pytest.fixture
def clusters() -> Iterator[list[RayCluster]]:
    """Ray clusters this test starts (all stopped at its end)."""
    started: list[RayCluster] = []
    yield started
    for cluster in started:
        cluster.stop()


def new_cluster(clusters: list[RayCluster]) -> RayCluster:
    folder = Path(tempfile.mkdtemp(prefix="by-hl-", dir="/tmp"))  # short: socket paths
    # The token this process already uses (Ray reads it once, when first imported).
    token = os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(16)
    cluster = start_ray_cluster(folder, [("ecs.n1.small", 2)], {}, token)
    clusters.append(cluster)
    cluster.use_as_client()
    return cluster


@pytest.mark.timeout(300)
def test_a_lost_head_ends_the_server_and_the_next_one_reruns_what_was_in_flight(
        clusters: list[RayCluster], tmp_path: Path) -> None:
    first = new_cluster(clusters)
    fields = {"data_dir": str(tmp_path / "data"), "provider": "ray",
              "ray_address": first.address, "ray_namespace": "head-loss",
              "ray_node_root": str(tmp_path / "nodes"), "shared_object_root": True,
              "buckets": {"ray": str(tmp_path / "bucket")}}
    description = tmp_path / "job.json"
    description.write_text(json.dumps(job({"t": task("sleep 6.375", 2)})))
    # Ray ends a driver whose GCS is gone after this many seconds (60 by default).
    environment = {**os.environ, "RAY_gcs_rpc_server_reconnect_timeout_s": "5"}
    server = subprocess.Popen([sys.executable, str(HERE / "engine_process.py"),
                               json.dumps(fields), str(description)], stdout=subprocess.PIPE,
                              text=True, env=environment)
    try:
        assert server.stdout is not None
        job_id = server.stdout.readline().strip()
        wait_for(lambda: len(processes_with(b"6.375")) >= 2, timeout=60,
                 what="both instances running")
        for node in reversed(first.nodes):  # the head, and with it (here) the whole cluster
            _kill_all(partial(first.processes, node))
        assert server.wait(timeout=60) != 0  # the driver's end, not a hang
    finally:
        server.kill()
        server.wait()
    first.stop()
    second = new_cluster(clusters)
    settings = Settings(**{**fields, "ray_address": second.address})
    with open_engine(settings, serving=True) as engine:
        assert engine.wait(job_id, timeout=90).state is State.FINISHED
        lost = [event for event in engine.store.events(job_id)
                if event.kind == "instance" and event.target == "Waiting"
                and event.source == "Running"]
        assert {event.instance_id for event in lost} == {0, 1}, lost
        for event in lost:  # either server's words: the agent died, or no agent ran it on
            assert "attempt lost" in event.message, event
        for instance in engine.instances(job_id, "t"):
            assert instance.retry_count == 0 and instance.state is State.FINISHED
            attempts = engine.attempts(job_id, "t", instance.instance_id)
            assert attempts[-1].exit_code == 0 and attempts[-1].attempt == 2
