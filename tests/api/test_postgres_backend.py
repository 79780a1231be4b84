"""The REST API on a PostgreSQL state database: keys, idempotent submission, a job to
Finished, and paged listings (the rest of the API suite runs on SQLite)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from batchyard.adapters.credentials import KeyStore, master_key, open_database
from batchyard.api import create_app
from batchyard.settings import Settings
from tests.api.conftest import Signer, job_body, wait_for_state


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        listener.close()


def test_the_api_runs_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url, slots=2)
    key = KeyStore(open_database(postgres_url), master_key(settings.data_dir)).create("alice")
    with serving(settings) as url, httpx.Client(
            base_url=url, auth=Signer(key.id, key.secret), timeout=30) as client:
        created = [client.post("/jobs", params={"IdempotentToken": "pg-1"},
                               json=job_body(name="on-postgres", count=2)) for _ in range(2)]
        assert [r.status_code for r in created] == [201, 201]
        job_id = created[0].json()["Id"]
        assert created[1].json()["Id"] == job_id
        assert wait_for_state(client, job_id, {"Finished", "Failed"})["State"] == "Finished"
        listed = client.get("/jobs", params={"MaxItemCount": 10}).json()
        assert [item["Id"] for item in listed["Items"]] == [job_id]
        instances = client.get(f"/jobs/{job_id}/tasks/work/instances").json()["Items"]
        assert [i["State"] for i in instances] == ["Finished", "Finished"]
