"""`serve` as a process: starts on the given port, tells when no key exists, stops on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from batchyard.cli.keys import open_key_store
from batchyard.lock import Holder, holder
from batchyard.settings import Settings
from tests.api.conftest import Signer

LAUNCH = """
from pathlib import Path
from batchyard.cli.server import serve
serve(host="127.0.0.1", port={port}, data_dir=Path({data_dir!r}), database_url=None, slots=1,
      log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)


def test_serve_runs_until_terminated(tmp_path: Path) -> None:
    port = free_port()
    code = LAUNCH.format(port=port, data_dir=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/quotas", process)
        key = open_key_store(Settings(data_dir=tmp_path)).create("late")
        auth = Signer(key.id, key.secret)
        response = httpx.get(f"http://127.0.0.1:{port}/quotas", auth=auth, timeout=10)
        assert response.status_code == 200 and response.headers["x-acs-request-id"]
        assert holder(tmp_path) == Holder(process.pid, "serve", f"http://127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=20)
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises it after shutdown
    assert f"http://127.0.0.1:{port}" in errors and "batchyard keys create" in errors
    assert key.secret not in errors


def _launch(port: int, data_dir: Path) -> subprocess.Popen[str]:
    code = LAUNCH.format(port=port, data_dir=str(data_dir))
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    wait_until_up(f"http://127.0.0.1:{port}/quotas", process)
    return process


def test_a_request_replayed_after_a_restart_is_refused(tmp_path: Path) -> None:
    from batchyard.api.signature import signed_headers

    port = free_port()
    url = f"http://127.0.0.1:{port}/quotas"
    key = open_key_store(Settings(data_dir=tmp_path)).create("replay")
    captured = [signed_headers(key.id, key.secret, "GET", "/quotas") for _ in range(2)]
    for headers, stop in zip(captured, (signal.SIGTERM, signal.SIGKILL), strict=True):
        process = _launch(port, tmp_path)
        try:
            assert httpx.get(url, headers=headers, timeout=10).status_code == 200
            time.sleep(0.5)  # the nonce is saved behind the request, within a moment
        finally:
            process.send_signal(stop)  # a clean stop, then a crash
            process.communicate(timeout=20)
        process = _launch(port, tmp_path)
        try:
            replay = httpx.get(url, headers=headers, timeout=10)
            assert (replay.status_code, replay.json()["Code"]) == (403, "SignatureNonceUsed")
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)
