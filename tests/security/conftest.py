"""The security suite: a real `batchyard serve` process on 127.0.0.1 with two tenants.

`alice` is the victim, `mallory` the attacker. The server runs as its own process (as in
production), with canary secrets in its environment that no task program may ever see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import Signer, echo_task, wait_for_state
from tests.api.test_serve import free_port

CANARY_SECRET = "canary-s3-secret-0123456789"
"""Put in the server's BATCHYARD_S3_SECRET_ACCESS_KEY: no program may read it."""
CANARY_VARIABLE = "BATCHYARD_TEST_SERVER_CANARY"
CANARY_VALUE = "canary-server-variable-9876543210"

__all__ = ["CANARY_SECRET", "CANARY_VALUE", "CANARY_VARIABLE", "ServeProcess", "echo_task",
           "job", "wait_for_state"]


@dataclass
class ServeProcess:
    """A `batchyard serve` subprocess and what a test needs to talk to it."""

    process: subprocess.Popen[str]
    url: str
    data_dir: Path
    settings: Settings
    log: Path

    def client(self, key: AccessKey) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=Signer(key.id, key.secret), timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_serve(data_dir: Path, *extra: str, env: dict[str, str] | None = None,
                slots: int = 2) -> ServeProcess:
    """Start `batchyard serve` on a free port (with the canaries in its environment)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir.parent / f"serve-{port}.log"
    environment = {**os.environ, "BATCHYARD_S3_SECRET_ACCESS_KEY": CANARY_SECRET,
                   CANARY_VARIABLE: CANARY_VALUE, **(env or {})}
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "batchyard.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir), "--slots", str(slots), "--log-level", "warning",
             *extra],
            env=environment, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}: {log.read_text()}")
        try:
            httpx.get(url + "/quotas", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"serve did not start: {log.read_text()}"
            time.sleep(0.05)
    return ServeProcess(process, url, data_dir, Settings(data_dir=data_dir), log)


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    running = start_serve(tmp_path_factory.mktemp("security") / "data")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def alice_key(serve: ServeProcess) -> AccessKey:
    return open_key_store(serve.settings).create("alice", "security tests: the victim")


@pytest.fixture(scope="session")
def mallory_key(serve: ServeProcess) -> AccessKey:
    return open_key_store(serve.settings).create("mallory", "security tests: the attacker")


@pytest.fixture()
def alice(serve: ServeProcess, alice_key: AccessKey) -> Iterator[httpx.Client]:
    with serve.client(alice_key) as client:
        yield client


@pytest.fixture()
def mallory(serve: ServeProcess, mallory_key: AccessKey) -> Iterator[httpx.Client]:
    with serve.client(mallory_key) as client:
        yield client


def job(command: str, bucket: str = "mallory-logs", count: int = 1,
        **task: Any) -> dict[str, Any]:
    """A one-task job whose logs go to `bucket`."""
    body = echo_task(command, count, **task)
    body["Parameters"]["StdoutRedirectPath"] = f"oss://{bucket}/logs/"
    body["Parameters"]["StderrRedirectPath"] = f"oss://{bucket}/logs/"
    return {"Name": "security", "Priority": 0, "Type": "DAG", "JobFailOnInstanceFail": True,
            "DAG": {"Tasks": {"attack": body}, "Dependencies": {}}}


def run_job(client: httpx.Client, body: dict[str, Any], timeout: float = 60) -> tuple[str, str]:
    """Submit `body`, wait until it ends; returns (job id, final state)."""
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id = str(response.json()["Id"])
    final = wait_for_state(client, job_id, {"Finished", "Failed", "Stopped"}, timeout)
    return job_id, str(final["State"])


def stdout_of(serve: ServeProcess, job_id: str, bucket: str = "mallory-logs",
              task: str = "attack", instance: int = 0) -> str:
    """What an instance printed, read straight from the local object store."""
    path = serve.data_dir / "objects" / bucket / "logs" / f"stdout.{job_id}.{task}.{instance}"
    return path.read_text()


def processes_running(command: str) -> list[int]:
    """Pids of live processes whose command line (arguments joined by spaces) is `command`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b" ".join(arguments).decode(errors="replace") == command and state != "Z":
            found.append(int(entry.name))
    return found


def until(predicate: Any, timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
