"""Settings as a user meets them: a configuration file for `run`, and bad values refused
with one `error:` line (exit 2, no traceback) by every command that reads settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import make_job, make_task
from tests.integration.test_cli import TIMEOUT, command, write_job


def run_batchyard(cwd: Path, *arguments: str, **variables: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith("BATCHYARD_")}
    return subprocess.run([*command(), *arguments], cwd=cwd, capture_output=True, text=True,
                          env={**clean, "HOME": str(cwd), "COLUMNS": "80", **variables},
                          timeout=TIMEOUT, check=False)


def test_run_takes_data_dir_slots_and_buckets_from_its_config_file(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket-folder"
    config = tmp_path / "settings.toml"
    config.write_text(f'data_dir = "{tmp_path / "state"}"\nslots = 1\n[buckets]\n'
                      f'test = "{bucket}"\n', encoding="utf-8")
    script = "echo start $(date +%s%N); sleep 0.3; echo end $(date +%s%N)"
    job = make_job({"hello": make_task(script, 2)})
    result = run_batchyard(tmp_path, "run", "--config", str(config),
                           str(write_job(tmp_path, job)))
    assert result.returncode == 0, result.stdout + result.stderr
    logs = sorted(bucket.glob("logs/stdout.job-*.hello.*"))
    assert len(logs) == 2 and (tmp_path / "state" / "batchyard.db").exists()
    first, second = ([int(line.split()[1]) for line in log.read_text().splitlines()]
                     for log in logs)
    assert first[1] <= second[0] or second[1] <= first[0]  # one slot: never at the same time


@pytest.mark.parametrize("arguments", [
    ("run", "JOB"), ("serve",), ("oss", "ls", "oss://test/"), ("keys", "list"),
    ("keys", "create"), ("log", "job-18ED51D78DEC5A59EB3DB3E0AE38BEC5"),
], ids=" ".join)
@pytest.mark.parametrize(("variable", "value"), [
    ("BATCHYARD_BUCKETS", "demo=/srv/demo"), ("BATCHYARD_SLOTS", "abc"),
    ("BATCHYARD_SANDBOX__MEMORY_BYTES", "x"), ("BATCHYARD_BUCKET_GRANTS", "{bad"),
])
def test_a_bad_setting_is_one_error_line_and_exit_2(
        tmp_path: Path, arguments: tuple[str, ...], variable: str, value: str) -> None:
    job = str(write_job(tmp_path, make_job({"hello": make_task("true")})))
    result = run_batchyard(tmp_path, *(job if part == "JOB" else part for part in arguments),
                           **{variable: value, "BATCHYARD_ENDPOINT": "http://127.0.0.1:9",
                              "BATCHYARD_KEY_ID": "BYEXAMPLE", "BATCHYARD_KEY_SECRET": "x"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {variable}={value!r}: "), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_unknown_key_in_the_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "batchyard.toml").write_text("slots = 2\nslotz = 3\n", encoding="utf-8")
    result = run_batchyard(tmp_path, "oss", "ls", "oss://test/")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: batchyard.toml:2: slotz: unknown setting 'slotz'; "
                                     "did you mean 'slots'?")
