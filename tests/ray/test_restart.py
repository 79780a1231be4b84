"""A batchyard server killed with `kill -9` and restarted, on the Ray provider: the node
agents outlive it, and the next server takes over what they ran for it — nothing re-run.

Its own module: a process holds one Ray driver, so the restarted server's engine can only
open once test_provider's has closed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from batchyard.domain.states import State
from batchyard.service import open_engine
from tests.ray.cluster import RayCluster
from tests.ray.test_provider import (
    job,
    processes_with,
    ray_fields,
    ray_settings,
    task,
    wait_for,
)
from tests.s3server import SeaweedServer

HERE = Path(__file__).parent


def test_a_server_killed_and_restarted_reruns_nothing(
        ray_cluster: RayCluster, s3: SeaweedServer, tmp_path: Path) -> None:
    """`kill -9` of the server while two instances run: the agents outlive it; the next
    server takes both over — the one that ended meanwhile is collected, the other runs on."""
    fields = ray_fields(tmp_path / "data", ray_cluster, s3)
    program = "sh -c 'sleep $((4 + 8 * BATCH_COMPUTE_DAG_INSTANCE_ID)).125'"  # 4 s, 12 s
    description = tmp_path / "job.json"
    description.write_text(json.dumps(job({"first": task("echo first"),
                                           "b": task(program, 2)}, {"first": ["b"]})))
    server = subprocess.Popen([sys.executable, str(HERE / "engine_process.py"),
                               json.dumps(fields), str(description)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        job_id = server.stdout.readline().strip()
        wait_for(lambda: processes_with(b"4.125") and processes_with(b"12.125"), timeout=90,
                 what="both instances of b running")
    finally:
        server.kill()  # SIGKILL: nothing of the server's runs on
        _, errors = server.communicate()
        print(errors[-4000:])  # shown if the test fails
    wait_for(lambda: not processes_with(b"4.125"), timeout=30, what="b.0 ended, no server")
    assert processes_with(b"12.125"), "b.1 runs on without a server"
    with open_engine(ray_settings(tmp_path / "data", ray_cluster, s3), serving=True) as engine:
        assert engine.wait(job_id, timeout=90).state is State.FINISHED
        for name, count in (("first", 1), ("b", 2)):
            for instance in engine.instances(job_id, name):
                attempts = engine.attempts(job_id, name, instance.instance_id)
                assert [(attempt.attempt, attempt.exit_code) for attempt in attempts] == [
                    (1, 0)], (name, instance.instance_id, attempts)
            assert len(engine.instances(job_id, name)) == count
        assert engine.objects.read_bytes(engine.instances(job_id, "first")[0].stdout_path
                                         ) == b"first\n"
