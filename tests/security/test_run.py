"""`batchyard run`: one user's own jobs. Plain ones run directly, as the user, with the user's
environment minus batchyard's own settings; `--sandbox` confines them as `serve` does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration.conftest import make_job, make_task
from tests.integration.test_cli import batchyard, job_id_in, write_job

PROBE = "id -u; env"


def printed(data: Path, job_id: str) -> str:
    return (data / "objects" / "test" / "logs" / f"stdout.{job_id}.t.0").read_text()


def run_probe(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], str]:
    job = write_job(tmp_path, make_job({"t": make_task(PROBE)}))
    os.environ["USERS_OWN_VARIABLE"] = "kept"
    os.environ["BATCHYARD_S3_SECRET_ACCESS_KEY"] = "never-shown-to-programs"
    try:
        result = batchyard(tmp_path / "data", "run", str(job), *options)
    finally:
        del os.environ["USERS_OWN_VARIABLE"], os.environ["BATCHYARD_S3_SECRET_ACCESS_KEY"]
    assert result.returncode == 0, result.stdout + result.stderr
    return result, printed(tmp_path / "data", job_id_in(result.stdout))


def test_plain_jobs_inherit_the_users_environment_but_not_batchyards(tmp_path: Path) -> None:
    _, output = run_probe(tmp_path)
    assert "USERS_OWN_VARIABLE=kept" in output
    assert "never-shown-to-programs" not in output
    assert output.splitlines()[0] == str(os.geteuid())


def test_sandboxed_jobs_are_confined_like_served_ones(tmp_path: Path) -> None:
    _, output = run_probe(tmp_path, "--sandbox")
    assert "USERS_OWN_VARIABLE" not in output and "never-shown-to-programs" not in output
    if os.geteuid() == 0:
        assert output.splitlines()[0] != "0", "a sandboxed program must not run as root"
