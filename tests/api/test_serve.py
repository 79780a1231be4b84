"""`serve` as a process: starts on the given port, tells when no key exists, stops on SIGTERM."""

from __future__ import annotations

import re
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
from tests.api.conftest import Signer, job_body, wait_for_state

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


def test_requests_and_jobs_are_logged_with_a_timestamp(tmp_path: Path) -> None:
    port = free_port()
    key = open_key_store(Settings(data_dir=tmp_path)).create("alice")
    process = subprocess.Popen(
        [sys.executable, "-m", "batchyard.cli", "serve", "--port", str(port), "--data-dir",
         str(tmp_path), "--slots", "1"], stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/quotas", process)
        with httpx.Client(base_url=base, auth=Signer(key.id, key.secret), timeout=10) as client:
            created = client.post("/jobs", json=job_body("logged"),
                                  params={"IdempotentToken": "once"})
            job_id = created.json()["Id"]
            wait_for_state(client, job_id, {"Finished"})
            client.get("/jobs", params={"Marker": "", "MaxItemCount": 5})
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=20)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO "
    assert re.search(stamp + rf"batchyard.requests: POST /jobs 201 [\d.]+ms tenant=alice "
                     rf"key={key.id} request=[0-9A-F-]{{36}}\n", errors), errors
    assert re.search(stamp + r"batchyard.requests: GET /jobs\?Marker=&MaxItemCount=5 200 ",
                     errors), errors
    assert "IdempotentToken" not in errors and key.secret not in errors
    assert "Signature" not in errors and "Authorization" not in errors
    assert re.search(stamp + rf"batchyard.orchestrator.engine: job {job_id} \(logged\) Running, "
                     "tenant alice\n", errors), errors
    assert re.search(stamp + rf"batchyard.orchestrator.engine: job {job_id} \(logged\) Finished "
                     r"in [\d.]+s, tenant alice\n", errors), errors
    assert '"GET /quotas HTTP/1.1"' not in errors  # uvicorn's own access log is replaced


def test_an_unknown_log_level_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchyard.cli", "serve", "--log-level", "loud", "--data-dir",
         str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --log-level 'loud': use one of critical, error, "
                                     "warning, info, debug, trace")
    assert not (tmp_path / "data").exists()
