"""Restart safety: `kill -9` the server while a job runs, start it again, and the job goes on.

Instances that were running are re-run without using their retry budget, none is lost or
finished twice, and no program outlives the dead server (each sandbox dies with it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from batchyard.adapters.store import SqlStore
from batchyard.agent.process import agent_processes
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import Signer, echo_task
from tests.api.test_serve import LAUNCH, free_port, wait_until_up
from tests.security.conftest import processes_running

TWO_SLOTS = LAUNCH.replace("slots=1", "slots=2")


def start_server(data_dir: Path, port: int) -> subprocess.Popen[str]:
    code = TWO_SLOTS.format(port=port, data_dir=str(data_dir))
    return subprocess.Popen([sys.executable, "-c", code], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def restart_job(marker: int) -> dict[str, Any]:
    # The first attempt of each instance starts a long grandchild and waits for it; later
    # attempts finish at once.
    command = (f'if [ "$BATCH_COMPUTE_DAG_ATTEMPT" = 1 ]; then sleep {marker} & wait; fi; '
               "echo done")
    return {"Name": "restart", "Priority": 1, "Type": "DAG", "JobFailOnInstanceFail": True,
            "DAG": {"Tasks": {"work": echo_task(command, 2), "after": echo_task("echo after")},
                    "Dependencies": {"work": ["after"]}}}


def assert_each_instance_finished_once(data_dir: Path, job_id: str) -> SqlStore:
    """Every instance of `restart_job` Finished once, the `work` ones at their second
    attempt; returns the (open) store for more checks."""
    store = SqlStore(Settings(data_dir=data_dir).resolved_database_url)
    finished = Counter((e.task, e.instance_id) for e in store.events(job_id)
                       if e.kind == "instance" and e.target == "Finished")
    assert finished == {("work", 0): 1, ("work", 1): 1, ("after", 0): 1}
    assert [i.attempts for i in store.instances(job_id, "work")] == [2, 2]
    return store


def signed_client(data_dir: Path, port: int) -> httpx.Client:
    """A client of the server on `port` with a new key of a tenant of its own."""
    key = open_key_store(Settings(data_dir=data_dir)).create("restart", "restart test")
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=Signer(key.id, key.secret))


def running_restart_job(client: httpx.Client, marker: int) -> str:
    """Submit `restart_job(marker)` and wait until both its sleeps run; its id."""
    job_id: str = client.post("/jobs", json=restart_job(marker)).json()["Id"]
    until(lambda: len(processes_running(f"sleep {marker}")) == 2)
    return job_id


def assert_finished_without_retries(client: httpx.Client, job_id: str) -> None:
    """The job ends Finished, and no lost attempt used one of its instances' retries."""
    until(lambda: client.get(f"/jobs/{job_id}").json()["State"] == "Finished", 60)
    instances = client.get(f"/jobs/{job_id}/tasks/work/instances").json()["Items"]
    assert [i["RetryCount"] for i in instances] == [0, 0]


def test_kill_9_then_restart_finishes_every_instance_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    marker = random.randrange(5_000_000, 6_000_000)
    port = free_port()
    server = start_server(data_dir, port)
    try:
        with signed_client(data_dir, port) as client:
            wait_until_up(str(client.base_url), server)
            job_id = running_restart_job(client, marker)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            until(lambda: not processes_running(f"sleep {marker}"), 10)

            server = start_server(data_dir, port)
            wait_until_up(str(client.base_url), server)
            assert_finished_without_retries(client, job_id)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    assert_each_instance_finished_once(data_dir, job_id).close()
    assert os.path.exists(data_dir / "engine.lock")


def test_kill_9_of_the_agent_process_reruns_its_attempts_once(tmp_path: Path) -> None:
    """The server runs its instances in an agent process: killed, its attempts are counted
    lost at once, a new agent process starts, and each instance runs again exactly once."""
    data_dir = tmp_path / "data"
    marker = random.randrange(6_000_000, 7_000_000)
    port = free_port()
    server = start_server(data_dir, port)
    try:
        with signed_client(data_dir, port) as client:
            wait_until_up(str(client.base_url), server)
            job_id = running_restart_job(client, marker)
            agent, = agent_processes(server.pid)
            os.kill(agent, signal.SIGKILL)
            until(lambda: not processes_running(f"sleep {marker}"), 10)
            assert_finished_without_retries(client, job_id)
            assert agent not in agent_processes(server.pid) and agent_processes(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    store = assert_each_instance_finished_once(data_dir, job_id)
    lost = [a for a in store.attempts(job_id, "work", 0) if a.attempt == 1]
    assert lost[0].error_code == "AttemptLost" and "SIGKILL" in lost[0].error_message
    store.close()
