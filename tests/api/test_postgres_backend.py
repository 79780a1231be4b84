"""The REST API on a PostgreSQL state database: keys, idempotent submission, a job to
Finished, and paged listings (the rest of the API suite runs on SQLite)."""

from __future__ import annotations

from pathlib import Path

import httpx

from batchyard.adapters.credentials import KeyStore, master_key, open_database
from batchyard.settings import Settings
from tests.api.conftest import Signer, job_body, serving, wait_for_state


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
