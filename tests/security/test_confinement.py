"""Finding 5: under `serve` every attempt, mapped or not, is confined.

An attacker tenant's program tries to read the database, the master key, the server's
environment, another tenant's working directory and objects; to write to the host; to kill
the server. Each try prints a line only if it succeeded.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from tests.security.conftest import ServeProcess, job, run_job, stdout_of, until, wait_for_state

MAPPED = {"OutputMapping": {"/home/out/": "oss://mallory-logs/out/"}}


def attack_script(serve: ServeProcess, victim_workdir: Path, host_folder: Path) -> str:
    data = serve.data_dir.resolve()
    pid = serve.process.pid
    reads = [data / "batchyard.db", data / "master.key", f"/proc/{pid}/environ",
             victim_workdir / "secret.txt", data / "objects" / "alice-data" / "secret.txt"]
    lines = [f'cat "{path}" >/dev/null 2>&1 && echo "BREACH read {path}"' for path in reads]
    lines += [f'ls "{victim_workdir}" >/dev/null 2>&1 && echo "BREACH listed {victim_workdir}"',
              f'echo x > "{host_folder}/pwned" 2>/dev/null && echo "BREACH wrote {host_folder}"',
              f'echo x > "{data}/pwned" 2>/dev/null && echo "BREACH wrote {data}"',
              f'kill -9 {pid} 2>/dev/null && echo "BREACH killed the server"',
              'echo "uid=$(id -u)"', "echo done"]
    return "; ".join(lines)


@pytest.mark.parametrize("mapped", [False, True], ids=["plain", "mapped"])
def test_an_attacker_cannot_reach_the_server_or_another_tenant(
        serve: ServeProcess, alice: httpx.Client, mallory: httpx.Client, tmp_path: Path,
        mapped: bool) -> None:
    store = FsspecObjectStore(serve.data_dir.resolve() / "objects")
    store.put_bytes("oss://alice-data/secret.txt", b"alice's object")
    victim = alice.post("/jobs", json=job("echo secret > secret.txt; sleep 30",
                                          bucket="alice-logs")).json()["Id"]
    work = serve.data_dir.resolve() / "work" / victim / "attack"
    assert until(lambda: list(work.glob("0.attempt-1/workdir/secret.txt")))
    victim_workdir = next(work.glob("0.attempt-1/workdir"))
    host_folder = tmp_path / "host"
    host_folder.mkdir()
    host_folder.chmod(0o777)
    try:
        body = job(attack_script(serve, victim_workdir, host_folder), **(MAPPED if mapped else {}))
        job_id, state = run_job(mallory, body)
        printed = stdout_of(serve, job_id)
    finally:
        alice.post(f"/jobs/{victim}/stop")
    assert "done" in printed and state == "Finished", printed
    assert "BREACH" not in printed, printed
    assert "uid=0" not in printed
    assert serve.process.poll() is None, "the server died"
    assert not (host_folder / "pwned").exists() and not (serve.data_dir / "pwned").exists()


FORK = """
import os, sys
count = 0
while count < 2000:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.execv("/bin/sleep", ["sleep", "60"])
    count += 1
print(f"started={count}", flush=True)
"""


def test_an_attempt_cannot_fork_without_bound(serve: ServeProcess, mallory: httpx.Client) -> None:
    command = "python3 - <<'PY'\n" + FORK + "PY"
    job_id, state = run_job(mallory, job(command), timeout=120)
    printed = stdout_of(serve, job_id)
    count = int(printed.split("started=")[1].split()[0])
    assert count < 2000, f"an attempt started {count} processes"
    assert state == "Finished"


def test_the_server_data_directory_is_private(serve: ServeProcess) -> None:
    assert os.stat(serve.data_dir).st_mode & 0o077 == 0


def test_killing_the_attempt_leaves_the_server_running(serve: ServeProcess,
                                                       mallory: httpx.Client) -> None:
    # Never run this against an unconfined server as root: it kills every process there is.
    body = job("kill -9 -1; kill -9 0; sleep 2; echo survived")
    job_id = mallory.post("/jobs", json=body).json()["Id"]
    final = wait_for_state(mallory, job_id, {"Finished", "Failed"}, 30)
    assert final["State"] in ("Finished", "Failed") and serve.process.poll() is None
