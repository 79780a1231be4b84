"""Finding 5, continued: the limits of a confined attempt, the private network option, and
`serve` refusing to run without a sandbox unless told so, loudly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchyard.cli.keys import open_key_store
from batchyard.runner import cgroups
from tests.api.test_serve import free_port
from tests.security.conftest import (
    CANARY_VALUE,  # noqa: F401  (the canaries are set)
    ServeProcess,
    job,
    run_job,
    start_serve,
    stdout_of,
)

MIB = 1 << 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server whose attempts get 64 MiB of memory, 32 MiB of disk and no network."""
    running = start_serve(tmp_path_factory.mktemp("limits") / "data", env={
        "BATCHYARD_SANDBOX__MEMORY_BYTES": str(64 * MIB),
        "BATCHYARD_SANDBOX__DISK_BYTES": str(32 * MIB),
        "BATCHYARD_SANDBOX__NETWORK": "none"})
    yield running
    running.stop()


def tenant(server: ServeProcess) -> httpx.Client:
    return server.client(open_key_store(server.settings).create("limited"))


def test_memory_past_the_limit_fails_the_attempt(limited: ServeProcess) -> None:
    groups = cgroups.available(limited.data_dir, ("memory",))
    if groups is not None:
        groups.remove()
    if groups is None or not any(h.controller in ("memory", "") for h in groups.hierarchies):
        pytest.skip("no memory cgroup this machine lets batchyard manage")
    with tenant(limited) as client:
        hog = "python3 -c 'b = bytearray(256 * 1024 * 1024); print(len(b))'"
        job_id, state = run_job(client, job(hog, bucket="limited-logs"))
        result = client.get(f"/jobs/{job_id}/tasks/attack/instances").json()["Items"][0]
    assert state == "Failed"
    assert result["Result"]["ErrorCode"] == "MemoryLimitExceeded", result


@pytest.mark.parametrize("command", [
    "head -c 64M /dev/zero > big",  # one file: bounded at once (RLIMIT_FSIZE)
    "for i in $(seq 1 80); do head -c 1M /dev/zero > f$i; done; sleep 10",  # many: measured
], ids=["one-file", "many-files"])
def test_disk_past_the_limit_fails_the_attempt(limited: ServeProcess, command: str) -> None:
    with tenant(limited) as client:
        job_id, state = run_job(client, job(command, bucket="limited-logs"))
        result = client.get(f"/jobs/{job_id}/tasks/attack/instances").json()["Items"][0]
    assert state == "Failed"
    assert result["Result"]["ErrorCode"] == "DiskLimitExceeded", result


def test_a_private_network_has_only_loopback(limited: ServeProcess) -> None:
    port = limited.url.rsplit(":", 1)[1]
    probe = (f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)' "
             "2>/dev/null && echo REACHED || echo unreachable; ls /sys/class/net")
    with tenant(limited) as client:
        job_id, state = run_job(client, job(probe, bucket="limited-logs"))
    printed = stdout_of(limited, job_id, bucket="limited-logs")
    assert state == "Finished" and "unreachable" in printed and "REACHED" not in printed
    assert printed.split()[-1] == "lo", printed


def serve_without_bwrap(tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    """`batchyard serve` with a PATH on which bwrap cannot be found."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    for name in ("setpriv", "bash", "sh"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    environment = {**os.environ, "PATH": str(tools)}
    return subprocess.Popen(
        [sys.executable, "-m", "batchyard.cli", "serve", "--port", str(free_port()),
         "--data-dir", str(tmp_path / "data"), *flags], env=environment, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_serve_refuses_to_start_without_bubblewrap(tmp_path: Path) -> None:
    process = serve_without_bwrap(tmp_path)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 2, errors
    assert "bwrap" in errors and "--insecure-no-sandbox" in errors


def test_serve_starts_unconfined_only_when_told_so_loudly(tmp_path: Path) -> None:
    process = serve_without_bwrap(tmp_path, "--insecure-no-sandbox")
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        while "WARNING" not in banner and process.poll() is None:
            banner += process.stderr.readline()
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert "UNCONFINED" in banner and "insecure" in banner, banner
