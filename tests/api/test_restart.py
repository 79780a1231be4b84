"""Restart safety: `kill -9` the server while a job runs, start it again, and the job goes on.

Instances that were running are re-run without using their retry budget, none is lost or
finished twice, and the programs the dead server left behind are killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from batchyard.adapters.store import SqlStore
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import Signer, echo_task
from tests.api.test_serve import LAUNCH, free_port, wait_until_up

TWO_SLOTS = LAUNCH.replace("slots=1", "slots=2")


def start_server(data_dir: Path, port: int) -> subprocess.Popen[str]:
    code = TWO_SLOTS.format(port=port, data_dir=str(data_dir))
    return subprocess.Popen([sys.executable, "-c", code], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def restart_job(pids: Path) -> dict[str, Any]:
    # The first attempt of each instance starts a long grandchild and waits for it; later
    # attempts finish at once. Every program notes its pids so the test can find orphans.
    command = (f'sleep 300 & echo "$$ $!" >> {pids}/$BATCH_COMPUTE_DAG_INSTANCE_ID; '
               'if [ "$BATCH_COMPUTE_DAG_ATTEMPT" = 1 ]; then wait; fi; echo done')
    return {"Name": "restart", "Priority": 1, "Type": "DAG", "JobFailOnInstanceFail": True,
            "DAG": {"Tasks": {"work": echo_task(command, 2), "after": echo_task("echo after")},
                    "Dependencies": {"work": ["after"]}}}


def test_kill_9_then_restart_finishes_every_instance_once(tmp_path: Path) -> None:
    data_dir, pids = tmp_path / "data", tmp_path / "pids"
    pids.mkdir()
    key = open_key_store(Settings(data_dir=data_dir)).create("restart", "restart test")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(data_dir, port)
    try:
        wait_until_up(url, server)
        with httpx.Client(base_url=url, auth=Signer(key.id, key.secret)) as client:
            job_id = client.post("/jobs", json=restart_job(pids)).json()["Id"]
            until(lambda: len(list(pids.iterdir())) == 2)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            first = [int(p) for f in pids.iterdir() for p in f.read_text().split()]
            assert all(alive(pid) for pid in first), "the dead server's programs should linger"

            server = start_server(data_dir, port)
            wait_until_up(url, server)
            until(lambda: client.get(f"/jobs/{job_id}").json()["State"] == "Finished", 60)
            until(lambda: not any(alive(pid) for pid in first), 10)
            instances = client.get(f"/jobs/{job_id}/tasks/work/instances").json()["Items"]
            assert [i["RetryCount"] for i in instances] == [0, 0]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    store = SqlStore(Settings(data_dir=data_dir).resolved_database_url)
    finished = Counter((e.task, e.instance_id) for e in store.events(job_id)
                       if e.kind == "instance" and e.target == "Finished")
    assert finished == {("work", 0): 1, ("work", 1): 1, ("after", 0): 1}
    assert [i.attempts for i in store.instances(job_id, "work")] == [2, 2]
    store.close()
    assert os.path.exists(data_dir / "engine.lock")
