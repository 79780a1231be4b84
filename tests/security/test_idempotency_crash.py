"""Finding 7: an IdempotentToken creates exactly one job, even across `kill -9` of the server.

Many tokens are submitted while the server is killed with SIGKILL; after a restart every
token is sent again. Each retry must answer at once with the id of the job the token made
(if it made one), and no token may have made two jobs.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from batchyard.cli.keys import open_key_store
from tests.security.conftest import job, start_serve

TOKENS = 150


def body(index: int) -> dict[str, Any]:
    submitted = job("true")
    submitted["Name"] = f"idem-{index}"
    return submitted


def submit(client: httpx.Client, index: int) -> httpx.Response | None:
    try:
        return client.post("/jobs", params={"IdempotentToken": f"token-{index}"},
                           json=body(index), timeout=30)
    except httpx.TransportError:
        return None  # the server died under this request


def all_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    marker = ""
    while True:
        page = client.get("/jobs", params={"Marker": marker, "MaxItemCount": 100}).json()
        jobs += page["Items"]
        marker = page["NextMarker"]
        if not marker:
            return jobs


def test_tokens_survive_kill_9_exactly_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_serve(data, slots=4)
    key = open_key_store(server.settings).create("tokens")
    client = server.client(key)
    killer = threading.Timer(1.0, lambda: server.process.send_signal(signal.SIGKILL))
    killer.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda index: submit(client, index), range(TOKENS)))
    server.process.wait(10)
    client.close()

    server = start_serve(data, slots=4)
    client = server.client(key)
    try:
        started = time.monotonic()
        retries = {index: submit(client, index) for index in range(TOKENS)}
        elapsed = time.monotonic() - started
        statuses = Counter(response.status_code for response in retries.values() if response)
        assert statuses == {201: TOKENS}, statuses
        assert elapsed < 30, f"retries took {elapsed:.0f} s: tokens left 'in progress'"
        names = Counter(item["Name"] for item in all_jobs(client))
        assert max(names.values()) == 1, [name for name, n in names.items() if n > 1]
        for index, response in retries.items():
            assert response is not None
            job_id = response.json()["Id"]
            assert client.get(f"/jobs/{job_id}").json()["Name"] == f"idem-{index}"
    finally:
        client.close()
        server.stop()
